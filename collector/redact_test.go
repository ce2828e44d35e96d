package collector

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantscope/tenantscope/config"
)

func TestRedactorRules(t *testing.T) {
	r, err := NewRedactor([]config.RedactRule{
		{Path: "customer.email", Action: "hash"},
		{Path: "customer.card.number", Action: "drop"},
		{Path: "items.owner", Action: "mask"},
		{Path: "*.ssn", Action: "mask"},
		{Pattern: `\b\d{3}-\d{2}-\d{4}\b`, Action: "mask"},
		{Pattern: `[\w.+-]+@[\w-]+\.[\w.]+`, Action: "hash"},
	}, "salt-acme")
	require.NoError(t, err)
	body := []byte(`{"customer":{"email":"ann@example.com","card":{"number":"4111111111111111","brand":"visa"},"ssn":"123-45-6789"},
		"items":[{"sku":"a","owner":"Ann"},{"sku":"b","owner":"Bob"}],"amount":12.50,"big":12345678901234567890,
		"note":"call ann@example.com or 987-65-4321"}`)
	out, err := r.Apply(body)
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal(out, &got))
	c := got["customer"].(map[string]any)
	require.Equal(t, r.Hash("ann@example.com"), c["email"])
	require.NotContains(t, c["card"].(map[string]any), "number")
	require.Equal(t, "visa", c["card"].(map[string]any)["brand"])
	require.Equal(t, Mask, c["ssn"])
	for _, it := range got["items"].([]any) {
		require.Equal(t, Mask, it.(map[string]any)["owner"])
	}
	require.Equal(t, "call "+r.Hash("ann@example.com")+" or "+Mask, got["note"])
	require.NotContains(t, string(out), "ann@example.com")
	require.Contains(t, string(out), "12345678901234567890", "numbers keep their precision")

	// The same value hashes the same for the tenant, differently for another.
	other, err := NewRedactor([]config.RedactRule{{Path: "x", Action: "hash"}}, "salt-globex")
	require.NoError(t, err)
	require.NotEqual(t, r.Hash("ann@example.com"), other.Hash("ann@example.com"))

	// A log line: the message is a string value like any other.
	line, err := r.Apply([]byte(`{"level":"info","message":"password reset for ann@example.com","user":{"ssn":"123-45-6789"}}`))
	require.NoError(t, err)
	require.NotContains(t, string(line), "ann@example.com")
	require.NotContains(t, string(line), "123-45-6789")

	// Not JSON: left for the decoder to dead-letter with its reason.
	same, err := r.Apply([]byte("{broken"))
	require.NoError(t, err)
	require.Equal(t, "{broken", string(same))
	var nilR *Redactor
	same, err = nilR.Apply([]byte(`{"a":1}`))
	require.NoError(t, err)
	require.Equal(t, `{"a":1}`, string(same))
}
