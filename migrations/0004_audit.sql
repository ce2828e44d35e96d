-- The per-tenant audit chain: seq and hash are assigned by the tenant's one
-- ordered writer (auditlog). Audit records are never merged away: the sort
-- key is (tenant_id, seq), so a replayed record with the same seq replaces
-- its identical copy.
CREATE TABLE IF NOT EXISTS audit_records {{.OnCluster}} (
    tenant_id        LowCardinality(String),
    seq              UInt64,
    record_id        UUID,
    time             DateTime64(3, 'UTC'),
    actor_type       LowCardinality(String),
    actor_id         String,
    actor_name       String,
    actor_ip         String,
    user_agent       String {{codec "ZSTD(1)"}},
    action           LowCardinality(String),
    target_type      LowCardinality(String),
    target_id        String,
    target_name      String,
    outcome          LowCardinality(String),
    reason           String,
    source_service   LowCardinality(String),
    correlation_id   String,
    changes          String {{codec "ZSTD(3)"}},
    metadata         Map(LowCardinality(String), String),
    schema_version   UInt16,
    prev_hash        String,
    hash             String,
    retention_days   UInt16,
    INDEX idx_actor actor_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_target target_id TYPE bloom_filter(0.01) GRANULARITY 4
) ENGINE = {{engine "ReplacingMergeTree" ""}}
PARTITION BY (retention_days, toYYYYMM(time))
ORDER BY (tenant_id, seq);
