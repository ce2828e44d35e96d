-- Rows the retention engine moves between partitions (a policy change or a
-- legal hold rewrites their retention_days) are inserted with log_comment
-- 'tenantscope:retention-move'; the usage views skip them, as they are not
-- new usage.
-- Hourly usage per tenant, signal and service, filled by materialized views
-- as rows are inserted, so reports read rollups instead of raw rows.
-- count and bytes include redelivered duplicates until the raw tables
-- merge (rare: a collector crash between insert and ack); closing a period
-- recounts from the raw tables with FINAL, so closed reports are exact.
CREATE TABLE IF NOT EXISTS usage_hourly {{.OnCluster}} (
    tenant_id    LowCardinality(String),
    hour         DateTime('UTC'),
    signal       LowCardinality(String),
    service      LowCardinality(String),
    count        UInt64,
    bytes        UInt64,
    duration_ns  UInt64,
    errors       UInt64
) ENGINE = {{engine "SummingMergeTree" ""}}
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour, signal, service);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_events_mv {{.OnCluster}} TO usage_hourly AS
SELECT tenant_id, toStartOfHour(time) AS hour, 'events' AS signal, service, count() AS count,
       sum(length(payload) + length(actor) + length(entity) + length(action)) AS bytes, toUInt64(0) AS duration_ns, toUInt64(0) AS errors
FROM events WHERE getSetting('log_comment') != 'tenantscope:retention-move' GROUP BY tenant_id, hour, service;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_logs_mv {{.OnCluster}} TO usage_hourly AS
SELECT tenant_id, toStartOfHour(time) AS hour, 'logs' AS signal, service, count() AS count,
       sum(length(body) + length(toString(attributes))) AS bytes, toUInt64(0) AS duration_ns,
       countIf(severity_number >= 17) AS errors
FROM logs WHERE getSetting('log_comment') != 'tenantscope:retention-move' GROUP BY tenant_id, hour, service;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_spans_mv {{.OnCluster}} TO usage_hourly AS
SELECT tenant_id, toStartOfHour(start_time) AS hour, 'spans' AS signal, service, count() AS count,
       sum(length(name) + length(toString(attributes)) + length(status_message)) AS bytes, sumIf(duration_ns, kind = 'server') AS duration_ns,
       countIf(status_code = 'error') AS errors
FROM spans WHERE getSetting('log_comment') != 'tenantscope:retention-move' GROUP BY tenant_id, hour, service;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_audit_mv {{.OnCluster}} TO usage_hourly AS
SELECT tenant_id, toStartOfHour(time) AS hour, if(action LIKE 'export.%' OR action = 'audit.exported', 'exports', 'audit_records') AS signal,
       source_service AS service, count() AS count, sum(length(changes) + length(action) + length(actor_id) + length(target_id)) AS bytes,
       toUInt64(0) AS duration_ns, countIf(outcome != 'success') AS errors
FROM audit_records WHERE getSetting('log_comment') != 'tenantscope:retention-move' GROUP BY tenant_id, hour, signal, service;

-- API and UI requests per tenant and hour, counted by the HTTP server, are
-- inserted into usage_hourly too (signal api_requests or ui_requests,
-- service the route group).

-- The same per day, for monthly reports (24 times fewer rows to read):
-- filled from usage_hourly's inserts by a view.
CREATE TABLE IF NOT EXISTS usage_daily {{.OnCluster}} (
    tenant_id    LowCardinality(String),
    day          Date,
    signal       LowCardinality(String),
    service      LowCardinality(String),
    count        UInt64,
    bytes        UInt64,
    duration_ns  UInt64,
    errors       UInt64
) ENGINE = {{engine "SummingMergeTree" ""}}
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, signal, service);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_mv {{.OnCluster}} TO usage_daily AS
SELECT tenant_id, toDate(hour) AS day, signal, service, sum(count) AS count, sum(bytes) AS bytes,
       sum(duration_ns) AS duration_ns, sum(errors) AS errors
FROM usage_hourly GROUP BY tenant_id, day, signal, service;

-- Server spans per tenant, service and minute for SLAs and burn rates: good
-- and valid requests and a latency histogram (quantiles are exact enough
-- from t-digest states).
CREATE TABLE IF NOT EXISTS sla_minutely {{.OnCluster}} (
    tenant_id    LowCardinality(String),
    service      LowCardinality(String),
    minute       DateTime('UTC'),
    valid        SimpleAggregateFunction(sum, UInt64),
    bad          SimpleAggregateFunction(sum, UInt64),
    latency      AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64)
) ENGINE = {{engine "AggregatingMergeTree" ""}}
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, service, minute)
TTL minute + toIntervalDay(400);

CREATE MATERIALIZED VIEW IF NOT EXISTS sla_spans_mv {{.OnCluster}} TO sla_minutely AS
SELECT tenant_id, service, toStartOfMinute(start_time) AS minute, toUInt64(count()) AS valid,
       toUInt64(countIf(status_code = 'error' OR toUInt16OrZero(attributes['http.status_code']) >= 500
                         OR toUInt16OrZero(attributes['http.response.status_code']) >= 500)) AS bad,
       quantilesTDigestState(0.5, 0.95, 0.99)(duration_ns) AS latency
FROM spans WHERE kind = 'server' AND getSetting('log_comment') != 'tenantscope:retention-move' GROUP BY tenant_id, service, minute;

-- User-defined meters (config metering.meters): one materialized view per
-- meter (created at start by the metering package) writes here.
CREATE TABLE IF NOT EXISTS meter_hourly {{.OnCluster}} (
    tenant_id   LowCardinality(String),
    meter       LowCardinality(String),
    hour        DateTime('UTC'),
    group_key   String,
    count       SimpleAggregateFunction(sum, UInt64),
    sum         SimpleAggregateFunction(sum, Float64),
    max         SimpleAggregateFunction(max, Float64),
    uniq        AggregateFunction(uniq, String),
    latest      AggregateFunction(argMax, Float64, DateTime64(3, 'UTC'))
) ENGINE = {{engine "AggregatingMergeTree" ""}}
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, meter, hour, group_key);

CREATE TABLE IF NOT EXISTS meter_daily {{.OnCluster}} (
    tenant_id   LowCardinality(String),
    meter       LowCardinality(String),
    day         Date,
    group_key   String,
    count       SimpleAggregateFunction(sum, UInt64),
    sum         SimpleAggregateFunction(sum, Float64),
    max         SimpleAggregateFunction(max, Float64),
    uniq        AggregateFunction(uniq, String),
    latest      AggregateFunction(argMax, Float64, DateTime64(3, 'UTC'))
) ENGINE = {{engine "AggregatingMergeTree" ""}}
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, meter, day, group_key);

CREATE MATERIALIZED VIEW IF NOT EXISTS meter_daily_mv {{.OnCluster}} TO meter_daily AS
SELECT tenant_id, meter, toDate(hour) AS day, group_key, sum(count) AS count, sum(sum) AS sum, max(max) AS max,
       uniqMergeState(uniq) AS uniq, argMaxMergeState(latest) AS latest
FROM meter_hourly GROUP BY tenant_id, meter, day, group_key;

-- Rate card versions as loaded (the YAML text and its hash).
CREATE TABLE IF NOT EXISTS rate_cards {{.OnCluster}} (
    version         String,
    effective_from  Date,
    effective_to    Nullable(Date),
    currency        LowCardinality(String),
    source          String,
    sha256          String,
    loaded_at       DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = {{engine "ReplacingMergeTree" "loaded_at"}}
ORDER BY (version);

-- Closed periods: a snapshot of every tenant's line items; never changed.
CREATE TABLE IF NOT EXISTS cost_snapshots {{.OnCluster}} (
    period        String,
    tenant_id     LowCardinality(String),
    line_items    String,
    total         Decimal(18, 4),
    currency      LowCardinality(String),
    rate_card     String,
    closed_at     DateTime64(3, 'UTC'),
    closed_by     String
) ENGINE = {{engine "ReplacingMergeTree" ""}}
ORDER BY (period, tenant_id);

-- Explicit corrections of a period, each audited.
CREATE TABLE IF NOT EXISTS cost_adjustments {{.OnCluster}} (
    id            String,
    period        String,
    tenant_id     LowCardinality(String),
    amount        Decimal(18, 4),
    reason        String,
    created_at    DateTime64(3, 'UTC'),
    created_by    String
) ENGINE = {{engine "ReplacingMergeTree" ""}}
ORDER BY (period, tenant_id, id);
