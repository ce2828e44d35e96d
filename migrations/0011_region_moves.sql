-- Region moves: a tenant's data copied to another region, verified by
-- counts and hashes, deleted at the source, with a signed transfer record.
-- Written only in the platform store (the first region); the newest row of
-- a tenant says where it lives, overriding the configured region.
CREATE TABLE IF NOT EXISTS region_moves {{.OnCluster}} (
    id           String,
    tenant_id    LowCardinality(String),
    from_region  LowCardinality(String),
    to_region    LowCardinality(String),
    state        LowCardinality(String),
    detail       String,
    reason       String,
    tables       String,
    transfer     String,
    requested_by String,
    started_at   DateTime64(3, 'UTC'),
    finished_at  Nullable(DateTime64(3, 'UTC')),
    version      UInt64
) ENGINE = {{engine "ReplacingMergeTree" "version"}}
ORDER BY (tenant_id, id);
