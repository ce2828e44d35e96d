-- Crypto-shredding keys. A tenant key (per version) is wrapped by the
-- key-encryption key; a data subject's key is wrapped by its tenant's key.
-- Destroying a subject's key (wrapped = '', destroyed_at set) makes every
-- copy of its encrypted fields unreadable. Rotating the tenant key rewraps
-- the subject keys; no data is rewritten.
CREATE TABLE IF NOT EXISTS tenant_keys {{.OnCluster}} (
    tenant_id   LowCardinality(String),
    version     UInt32,
    wrapped     String,
    created_at  DateTime64(3, 'UTC')
) ENGINE = {{engine "ReplacingMergeTree" ""}}
ORDER BY (tenant_id, version);

CREATE TABLE IF NOT EXISTS subject_keys {{.OnCluster}} (
    tenant_id     LowCardinality(String),
    key_id        String,
    subject_hash  String,
    wrapped       String,
    tek_version   UInt32,
    created_at    DateTime64(3, 'UTC'),
    destroyed_at  Nullable(DateTime64(3, 'UTC')),
    destroyed_by  String,
    version       UInt64
) ENGINE = {{engine "ReplacingMergeTree" "version"}}
ORDER BY (tenant_id, key_id);
