package main

import (
	"os"
	"testing"
)

// asBinary, set in a child's environment, makes this test binary run as
// the tenantscope command (main's body), so that tests can start the
// suite's own processes ('serve') from what they test.
const asBinary = "TENANTSCOPE_TEST_AS_BINARY"

func TestMain(m *testing.M) {
	if os.Getenv(asBinary) == "1" {
		os.Exit(mainExit())
	}
	os.Exit(m.Run())
}
