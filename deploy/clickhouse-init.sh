#!/bin/bash
# Runs once, when clickhouse-server initializes its data directory: the
# read-only user people and Grafana query with. The suite's own user
# (CLICKHOUSE_USER) is created by the image.
set -euo pipefail
: "${CLICKHOUSE_READER_PASSWORD:?set it in .env}"
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE USER IF NOT EXISTS reader IDENTIFIED WITH sha256_password BY '${CLICKHOUSE_READER_PASSWORD}' SETTINGS readonly = 1;
GRANT SELECT ON tenantscope_eu.* TO reader;
GRANT SELECT ON tenantscope_us.* TO reader;
SQL
