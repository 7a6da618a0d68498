-- The Arroyo pipeline's outputs (pipeline.sql) into ClickHouse, read from Kafka by ClickHouse's
-- Kafka engine: for the compose file's ClickHouse (25.8, `JSONExtract*` needs a current one, not
-- 18.16). Apply once, after `vigia migrate` created the database:
--
--   docker compose -f docker/compose.yaml exec -T clickhouse \
--     clickhouse-client --user vigia --password "$CLICKHOUSE_PASSWORD" --multiquery < docker/arroyo/clickhouse.sql
--
-- Not part of `vigia migrate`: only deployments that run the Arroyo pipeline need it.

-- Hot-lead scores: Debezium JSON ({"before", "after", "op"}). Each change of a lead's row
-- replaces the previous one (ReplacingMergeTree on the evaluation time: read with FINAL).
-- Deletes (`op = 'd'`: a row Arroyo forgot after `updating_ttl`) are ignored: the last score stays.
CREATE TABLE IF NOT EXISTS vigia.arroyo_lead_scores_queue (raw String)
ENGINE = Kafka
SETTINGS kafka_broker_list = 'kafka:9092',
         kafka_topic_list = 'vigia.arroyo_lead_scores',
         kafka_group_name = 'vigia.clickhouse.arroyo_lead_scores',
         kafka_format = 'JSONAsString';

CREATE TABLE IF NOT EXISTS vigia.arroyo_lead_scores (
    tenant_id UInt64,
    conversation_id String,
    lead_id String,
    source String,
    location String,
    customer_messages UInt32,
    intent_mask Int64,
    evaluated_at DateTime64(3, 'UTC'),
    score Float64
) ENGINE = ReplacingMergeTree(evaluated_at)
ORDER BY (tenant_id, conversation_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS vigia.arroyo_lead_scores_mv TO vigia.arroyo_lead_scores AS
SELECT
    JSONExtractUInt(raw, 'after', 'tenant_id') AS tenant_id,
    JSONExtractString(raw, 'after', 'conversation_id') AS conversation_id,
    JSONExtractString(raw, 'after', 'lead_id') AS lead_id,
    JSONExtractString(raw, 'after', 'source') AS source,
    JSONExtractString(raw, 'after', 'location') AS location,
    JSONExtractUInt(raw, 'after', 'customer_messages') AS customer_messages,
    JSONExtractInt(raw, 'after', 'intent_mask') AS intent_mask,
    fromUnixTimestamp64Milli(JSONExtractInt(raw, 'after', 'evaluated_at_ms'), 'UTC') AS evaluated_at,
    JSONExtractFloat(raw, 'after', 'score') AS score
FROM vigia.arroyo_lead_scores_queue
WHERE JSONExtractString(raw, 'op') IN ('c', 'u', 'r');

-- Response times per seller and hour: plain JSON, one record per closed window.
CREATE TABLE IF NOT EXISTS vigia.arroyo_response_times_queue (
    hour_start_ms Int64,
    tenant_id UInt64,
    seller_id Nullable(UInt64),
    waits UInt64,
    mean_seconds Float64,
    p50_seconds Float64,
    max_seconds Float64
) ENGINE = Kafka
SETTINGS kafka_broker_list = 'kafka:9092',
         kafka_topic_list = 'vigia.arroyo_response_times',
         kafka_group_name = 'vigia.clickhouse.arroyo_response_times',
         kafka_format = 'JSONEachRow';

CREATE TABLE IF NOT EXISTS vigia.arroyo_response_times (
    hour DateTime('UTC'),
    tenant_id UInt64,
    seller_id UInt64,
    waits UInt64,
    mean_seconds Float64,
    p50_seconds Float64,
    max_seconds Float64
) ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, hour, seller_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS vigia.arroyo_response_times_mv TO vigia.arroyo_response_times AS
SELECT
    toDateTime(intDiv(hour_start_ms, 1000), 'UTC') AS hour,
    tenant_id,
    ifNull(seller_id, 0) AS seller_id,
    waits,
    mean_seconds,
    p50_seconds,
    max_seconds
FROM vigia.arroyo_response_times_queue;
