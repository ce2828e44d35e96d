-- Legal holds: a tenant, a data subject (matched by the configured
-- identifier fields) or a time range. Held rows carry retention_days 65535
-- (never expire); lifting a hold returns them to their policy.
CREATE TABLE IF NOT EXISTS legal_holds {{.OnCluster}} (
    id          String,
    tenant_id   LowCardinality(String),
    kind        LowCardinality(String),
    subject     String,
    from_time   Nullable(DateTime64(3, 'UTC')),
    to_time     Nullable(DateTime64(3, 'UTC')),
    reason      String,
    placed_by   String,
    placed_at   DateTime64(3, 'UTC'),
    lifted_by   String,
    lifted_at   Nullable(DateTime64(3, 'UTC')),
    version     UInt64
) ENGINE = {{engine "ReplacingMergeTree" "version"}}
ORDER BY (tenant_id, id);

-- Erasure requests (right to be forgotten) and their certificates. The
-- subject is kept only as a salted hash once the request is done.
CREATE TABLE IF NOT EXISTS erasure_requests {{.OnCluster}} (
    id            String,
    tenant_id     LowCardinality(String),
    subject_hash  String,
    subject       String,
    status        LowCardinality(String),
    detail        String,
    counts        String,
    certificate   String,
    requested_by  String,
    requested_at  DateTime64(3, 'UTC'),
    deadline      DateTime64(3, 'UTC'),
    completed_at  Nullable(DateTime64(3, 'UTC')),
    version       UInt64
) ENGINE = {{engine "ReplacingMergeTree" "version"}}
ORDER BY (tenant_id, id);

-- Purge runs: what each run removed, per tenant (the receipt is also in the
-- tenant's audit chain).
CREATE TABLE IF NOT EXISTS purge_runs {{.OnCluster}} (
    run_id      String,
    tenant_id   LowCardinality(String),
    started_at  DateTime64(3, 'UTC'),
    finished_at DateTime64(3, 'UTC'),
    trigger     LowCardinality(String),
    deleted     Map(LowCardinality(String), UInt64),
    moved       Map(LowCardinality(String), UInt64),
    receipt     String
) ENGINE = {{engine "MergeTree" ""}}
ORDER BY (tenant_id, started_at);
