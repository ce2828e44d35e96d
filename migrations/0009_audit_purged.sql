-- Audit records removed by a purge run keep their place in the chain: their
-- sequence number and chain hash stay here, so the Merkle checkpoints and
-- inclusion proofs of the records that remain still verify, and the chain
-- verifies from its new start.
CREATE TABLE IF NOT EXISTS audit_purged {{.OnCluster}} (
    tenant_id   LowCardinality(String),
    seq         UInt64,
    hash        String,
    purged_at   DateTime64(3, 'UTC'),
    run_id      String
) ENGINE = {{engine "ReplacingMergeTree" ""}}
ORDER BY (tenant_id, seq);
