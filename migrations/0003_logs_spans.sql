-- Structured logs (zerolog JSON, OTLP log records) and spans (OTLP).
CREATE TABLE IF NOT EXISTS logs {{.OnCluster}} (
    tenant_id        LowCardinality(String),
    service          LowCardinality(String),
    time             DateTime64(9, 'UTC') {{codec "Delta, ZSTD(1)"}},
    log_id           UUID,
    severity_text    LowCardinality(String),
    severity_number  UInt8,
    body             String {{codec "ZSTD(3)"}},
    attributes       Map(LowCardinality(String), String) {{codec "ZSTD(1)"}},
    resource         Map(LowCardinality(String), String) {{codec "ZSTD(1)"}},
    trace_id         String {{codec "ZSTD(1)"}},
    span_id          String {{codec "ZSTD(1)"}},
    correlation_id   String {{codec "ZSTD(1)"}},
    retention_days   UInt16,
    received_at      DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_body body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 4
) ENGINE = {{engine "ReplacingMergeTree" "received_at"}}
PARTITION BY (retention_days, toDate(time))
ORDER BY (tenant_id, service, time, log_id)
{{ttl "time"}};

CREATE TABLE IF NOT EXISTS spans {{.OnCluster}} (
    tenant_id        LowCardinality(String),
    service          LowCardinality(String),
    name             LowCardinality(String),
    start_time       DateTime64(9, 'UTC') {{codec "Delta, ZSTD(1)"}},
    trace_id         String {{codec "ZSTD(1)"}},
    span_id          String {{codec "ZSTD(1)"}},
    parent_span_id   String {{codec "ZSTD(1)"}},
    kind             LowCardinality(String),
    duration_ns      UInt64 {{codec "T64, ZSTD(1)"}},
    status_code      LowCardinality(String),
    status_message   String {{codec "ZSTD(1)"}},
    attributes       Map(LowCardinality(String), String) {{codec "ZSTD(1)"}},
    resource         Map(LowCardinality(String), String) {{codec "ZSTD(1)"}},
    events           Array(Tuple(time DateTime64(9, 'UTC'), name String, attributes Map(LowCardinality(String), String))) {{codec "ZSTD(1)"}},
    correlation_id   String {{codec "ZSTD(1)"}},
    retention_days   UInt16,
    received_at      DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 4
) ENGINE = {{engine "ReplacingMergeTree" "received_at"}}
PARTITION BY (retention_days, toDate(start_time))
ORDER BY (tenant_id, service, name, start_time, span_id)
{{ttl "start_time"}};
