-- Tenants and their retention policies (the retention engine owns the policies).
CREATE TABLE IF NOT EXISTS tenants {{.OnCluster}} (
    tenant_id   LowCardinality(String),
    name        String,
    region      LowCardinality(String),
    updated_at  DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = {{engine "ReplacingMergeTree" "updated_at"}}
ORDER BY tenant_id;

CREATE TABLE IF NOT EXISTS retention_policies {{.OnCluster}} (
    tenant_id   LowCardinality(String),
    signal      LowCardinality(String),
    days        UInt16,
    version     UInt32,
    updated_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    updated_by  String
) ENGINE = {{engine "ReplacingMergeTree" "version"}}
ORDER BY (tenant_id, signal);
