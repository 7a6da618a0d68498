-- Late corrections (contract §2.5, §3.9: events may arrive late; results must be right in event time).
--
-- When a late event changes a wait that already produced a response-time sample, the processors
-- send a *retraction*: a row with the same fields as the sample (same seller, same replied_at,
-- same response_seconds), its own id, `sign = -1` and `retracts` = the sample's id; then the
-- right sample, if any, as a new row. Rows are never updated or deleted, so the sink's
-- exactly-once writes (by id) stay simple and every version is kept for audit.
--
-- Why signs and not ReplacingMergeTree / CollapsingMergeTree: materialized views see each
-- inserted block once and cannot see a later replacement, so only an insert that *subtracts*
-- keeps a rollup right. With `sign`, sums are exact at once (sum(sign), sum(sign * x)), and the
-- quantile state below is exact too: `quantilesExactWeighted` keeps a weight per value and adds
-- weights when states merge; a retraction's weight is toUInt64(-1) = 2^64 - 1, i.e. -1 modulo
-- 2^64, so a retracted value's weight returns to 0 and no longer counts. This works the same on
-- 18.16 and on current releases (checked by tests/analytics.rs on both), with plain MergeTree
-- and SummingMergeTree engines that both versions have.
--
-- For analysts: read response times from the view `response_times_current` (the samples that
-- stand), or weight by `sign` in `response_times`; read the rollup with sum() and
-- quantilesExactWeightedMerge(0.5, 0.9)(response_quantiles).
--
-- `ADD COLUMN IF NOT EXISTS` is not understood by 18.16: `vigia migrate` runs such a statement
-- without `IF NOT EXISTS` after checking system.columns, so this file stays idempotent.
ALTER TABLE {db}.response_times ADD COLUMN IF NOT EXISTS sign Int8 DEFAULT 1 COMMENT '1 for a sample; -1 for a retraction (a late event showed the sample with id = retracts no longer holds)';

ALTER TABLE {db}.response_times ADD COLUMN IF NOT EXISTS retracts UUID DEFAULT toUUID('00000000-0000-0000-0000-000000000000') COMMENT 'For a retraction (sign = -1): the id of the sample it takes back; the nil UUID otherwise';

CREATE VIEW IF NOT EXISTS {db}.response_times_current AS
SELECT *
FROM {db}.response_times
WHERE sign = 1
  AND id NOT IN (SELECT retracts FROM {db}.response_times WHERE sign = -1);

-- The rollup's response figures now follow corrections: a retraction subtracts.
ALTER TABLE {db}.seller_hourly MODIFY COLUMN responses Int64 COMMENT 'Answered waits (samples of response_times) ending in this hour, net of retractions';

ALTER TABLE {db}.seller_hourly ADD COLUMN IF NOT EXISTS response_quantiles AggregateFunction(quantilesExactWeighted(0.5, 0.9), Float64, UInt64) COMMENT 'Response-time distribution of the hour, net of retractions: quantilesExactWeightedMerge(0.5, 0.9)(response_quantiles) gives [p50, p90] in seconds over any set of rows (hours, sellers)';

ALTER TABLE {db}.seller_hourly ADD COLUMN IF NOT EXISTS unanswered Int64 COMMENT 'Unanswered-conversation alerts whose deadline falls in this hour, net of corrected ones (seller_id 0: conversations without a seller)';

-- 18.16 ignores COMMENT in ADD COLUMN / MODIFY COLUMN; COMMENT COLUMN sets it everywhere.
ALTER TABLE {db}.response_times COMMENT COLUMN sign '1 for a sample; -1 for a retraction (a late event showed the sample with id = retracts no longer holds)';

ALTER TABLE {db}.response_times COMMENT COLUMN retracts 'For a retraction (sign = -1): the id of the sample it takes back; the nil UUID otherwise';

ALTER TABLE {db}.seller_hourly COMMENT COLUMN responses 'Answered waits (samples of response_times) ending in this hour, net of retractions';

ALTER TABLE {db}.seller_hourly COMMENT COLUMN response_quantiles 'Response-time distribution of the hour, net of retractions: quantilesExactWeightedMerge(0.5, 0.9)(response_quantiles) gives [p50, p90] in seconds over any set of rows (hours, sellers)';

ALTER TABLE {db}.seller_hourly COMMENT COLUMN unanswered 'Unanswered-conversation alerts whose deadline falls in this hour, net of corrected ones (seller_id 0: conversations without a seller)';

-- The materialized views are replaced, because ClickHouse 18.16 requires a view that writes
-- to a table to give every column of it: the new ones give the new columns too (an empty
-- distribution is a single value 0 of weight 0, which no quantile ever returns while a
-- sample of positive weight is in the state). Each new view is created before the old one is
-- dropped: run migrations with the sinks stopped, or a block inserted in between is counted
-- twice.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.seller_hourly_from_event_rows TO {db}.seller_hourly AS
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
    toInt64(0) AS responses,
    toFloat64(0) AS response_seconds_sum,
    quantilesExactWeightedState(0.5, 0.9)(toFloat64(0), toUInt64(0)) AS response_quantiles,
    toInt64(0) AS unanswered
FROM {db}.events
WHERE seller_id != 0
GROUP BY tenant_id, seller_id, hour;

DROP TABLE IF EXISTS {db}.seller_hourly_from_events;

-- Samples add, retractions subtract (sign), in the hour of the reply.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.seller_hourly_from_response_samples TO {db}.seller_hourly AS
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
    toInt64(sum(sign)) AS responses,
    sum(sign * response_seconds) AS response_seconds_sum,
    quantilesExactWeightedState(0.5, 0.9)(response_seconds, toUInt64(sign)) AS response_quantiles,
    toInt64(0) AS unanswered
FROM {db}.response_times
GROUP BY tenant_id, seller_id, hour;

DROP TABLE IF EXISTS {db}.seller_hourly_from_response_times;

-- An alert counts +1 in the hour of its deadline (its created_at); a withdrawal with state
-- `corrected` (the alert was wrong) counts -1 in the same hour (it is dated like the alert).
-- Withdrawals because the customer was answered or the conversation closed do not uncount:
-- the customer did wait past the deadline.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.seller_hourly_from_notifications TO {db}.seller_hourly AS
SELECT
    tenant_id,
    visitParamExtractUInt(data, 'seller_id') AS seller_id,
    toStartOfHour(created_at) AS hour,
    toUInt64(0) AS messages_received,
    toUInt64(0) AS replies_sent,
    toUInt64(0) AS automated_replies,
    toUInt64(0) AS conversations_assigned,
    toUInt64(0) AS leads_created,
    toUInt64(0) AS follow_ups_scheduled,
    toInt64(0) AS responses,
    toFloat64(0) AS response_seconds_sum,
    quantilesExactWeightedState(0.5, 0.9)(toFloat64(0), toUInt64(0)) AS response_quantiles,
    toInt64(countIf(withdraws IS NULL) - countIf(withdraws IS NOT NULL)) AS unanswered
FROM {db}.notifications
WHERE type = 'unanswered_conversation'
  AND (withdraws IS NULL OR visitParamExtractString(data, 'state') = 'corrected')
GROUP BY tenant_id, seller_id, hour;
