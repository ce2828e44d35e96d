-- Signed checkpoints of each tenant's audit chain: an RFC 6962 Merkle root
-- over the chain hashes of records 1..size, as a signed note (ed25519).
CREATE TABLE IF NOT EXISTS audit_checkpoints {{.OnCluster}} (
    tenant_id   LowCardinality(String),
    size        UInt64,
    root_hash   String,
    note        String,
    created_at  DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = {{engine "ReplacingMergeTree" ""}}
ORDER BY (tenant_id, size);
