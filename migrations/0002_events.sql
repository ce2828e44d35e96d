-- Domain events captured from tenant.{tenant}.{service}.{action}.
-- ReplacingMergeTree on the full sort key (which ends with event_id) folds a
-- redelivered copy into the original; readers use FINAL or the views.
CREATE TABLE IF NOT EXISTS events {{.OnCluster}} (
    tenant_id       LowCardinality(String),
    service         LowCardinality(String),
    action          LowCardinality(String),
    time            DateTime64(3, 'UTC') {{codec "Delta, ZSTD(1)"}},
    event_id        UUID,
    actor           String {{codec "ZSTD(1)"}},
    entity          String {{codec "ZSTD(1)"}},
    schema_version  UInt16,
    payload         String {{codec "ZSTD(3)"}},
    correlation_id  String {{codec "ZSTD(1)"}},
    trace_id        String {{codec "ZSTD(1)"}},
    span_id         String {{codec "ZSTD(1)"}},
    retention_days  UInt16,
    received_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_correlation correlation_id TYPE bloom_filter(0.01) GRANULARITY 4
) ENGINE = {{engine "ReplacingMergeTree" "received_at"}}
PARTITION BY (retention_days, toDate(time))
ORDER BY (tenant_id, service, action, time, event_id)
{{ttl "time"}};
