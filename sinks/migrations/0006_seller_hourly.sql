-- Hourly rollup per seller, maintained by materialized views as rows arrive in `events` and
-- `response_times`. Because those rows are written exactly once, the rollup counts each event
-- once. SummingMergeTree adds rows up in the background, so always aggregate when reading (for
-- medians, percentiles and maxima query response_times itself):
--   SELECT hour, sum(messages_received), sum(response_seconds_sum) / sum(responses) AS mean_response_s
--   FROM seller_hourly WHERE tenant_id = 42 AND seller_id = 7 GROUP BY hour ORDER BY hour
CREATE TABLE IF NOT EXISTS {db}.seller_hourly
(
    tenant_id UInt64 COMMENT 'Company (tenant). Always filter on it',
    seller_id UInt64 COMMENT 'The seller (or call-center agent)',
    hour DateTime('UTC') COMMENT 'Start of the hour, in event time (UTC)',
    messages_received UInt64 COMMENT 'Customer messages (message.received) in conversations assigned to the seller',
    replies_sent UInt64 COMMENT 'Non-automated replies (message.sent) by the seller',
    automated_replies UInt64 COMMENT 'Automated replies (bots) in the seller conversations',
    conversations_assigned UInt64 COMMENT 'conversation.assigned events to the seller',
    leads_created UInt64 COMMENT 'lead.created events with the seller assigned',
    follow_ups_scheduled UInt64 COMMENT 'lead.follow_up_scheduled events for the seller',
    responses UInt64 COMMENT 'Answered waits (rows of response_times) ending in this hour',
    response_seconds_sum Float64 COMMENT 'Sum of their response_seconds: mean = sum(response_seconds_sum) / sum(responses)'
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, seller_id, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.seller_hourly_from_events TO {db}.seller_hourly AS
SELECT
    tenant_id,
    seller_id,
    toStartOfHour(occurred_at) AS hour,
    toUInt64(countIf(type = 'message.received')) AS messages_received,
    toUInt64(countIf(type = 'message.sent' AND visitParamExtractBool(payload, 'automated') = 0)) AS replies_sent,
    toUInt64(countIf(type = 'message.sent' AND visitParamExtractBool(payload, 'automated') = 1)) AS automated_replies,
    toUInt64(countIf(type = 'conversation.assigned')) AS conversations_assigned,
    toUInt64(countIf(type = 'lead.created')) AS leads_created,
    toUInt64(countIf(type = 'lead.follow_up_scheduled')) AS follow_ups_scheduled,
    toUInt64(0) AS responses,
    toFloat64(0) AS response_seconds_sum
FROM {db}.events
WHERE seller_id != 0
GROUP BY tenant_id, seller_id, hour;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.seller_hourly_from_response_times TO {db}.seller_hourly AS
SELECT
    tenant_id,
    seller_id,
    toStartOfHour(replied_at) AS hour,
    toUInt64(0) AS messages_received,
    toUInt64(0) AS replies_sent,
    toUInt64(0) AS automated_replies,
    toUInt64(0) AS conversations_assigned,
    toUInt64(0) AS leads_created,
    toUInt64(0) AS follow_ups_scheduled,
    toUInt64(count()) AS responses,
    sum(response_seconds) AS response_seconds_sum
FROM {db}.response_times
GROUP BY tenant_id, seller_id, hour;
