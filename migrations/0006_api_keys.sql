-- API keys created by tenant admins through the UI or the API (keys in the
-- configuration are not here). Each key lives in its tenant's region. Only
-- the SHA-256 of a key is stored: the key itself is shown once. A key's row
-- is replaced (higher version) when it is revoked and when its last-used
-- time is written, so reads use FINAL.
CREATE TABLE IF NOT EXISTS api_keys {{.OnCluster}} (
    key_id        String,
    tenant_id     LowCardinality(String),
    name          String,
    role          LowCardinality(String),
    key_hash      String,
    created_at    DateTime64(3, 'UTC'),
    created_by    String,
    revoked_at    Nullable(DateTime64(3, 'UTC')),
    revoked_by    String,
    version       UInt64
) ENGINE = {{engine "ReplacingMergeTree" "version"}}
ORDER BY (tenant_id, key_id);

CREATE TABLE IF NOT EXISTS api_key_uses {{.OnCluster}} (
    tenant_id     LowCardinality(String),
    key_id        String,
    used_at       DateTime64(3, 'UTC')
) ENGINE = {{engine "ReplacingMergeTree" "used_at"}}
ORDER BY (tenant_id, key_id);
