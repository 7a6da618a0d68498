-- Conversions per seller in the hourly rollup.
--
-- A `lead.status_changed` event names the lead and its new status but not the seller, so a view
-- on `events` cannot say whose conversion it is. The processors know the lead's seller (its
-- `lead.created`, else its conversation's): the score they emit for each status change now
-- carries the status it set (`lead_scores.status_change`), and the view below counts each
-- status change to `converted` as one conversion of that row's seller, in the hour of the
-- change (`computed_at` is the status change's event time). Status changes are never retracted
-- and each lead_scores row is written once (by id), so a plain count is right; a change that
-- arrives before its lead's `lead.created` is scored, with the same id and time, when the
-- lead arrives (processors/src/engine/leads.rs, "Conversions"), so late events do not move it.
--
-- What counts: status changes to `converted`, so a lead converted, lost and converted again
-- counts twice; leads whose `lead.created` Vigía never saw are not counted (no seller is
-- known). For "is this lead converted now" use the latest status (analytics question 14).
--
-- Rows written before this migration have `status_change = ''`: the rollup counts conversions
-- from the upgrade on (question 14 of docs/analytics.md counts leads converted from `events`).
ALTER TABLE {db}.lead_scores ADD COLUMN IF NOT EXISTS status_change String DEFAULT '' COMMENT 'When this recomputation was caused by a lead.status_changed: the status it set (new, contacted, interested, negotiation, converted, lost); empty otherwise. A row with converted is a conversion by seller_id at computed_at';

ALTER TABLE {db}.seller_hourly ADD COLUMN IF NOT EXISTS conversions UInt64 COMMENT 'Status changes to converted, in this hour, of leads of the seller (a lead converted twice counts twice; leads whose lead.created was never seen are not counted)';

-- 18.16 ignores COMMENT in ADD COLUMN; COMMENT COLUMN sets it everywhere.
ALTER TABLE {db}.lead_scores COMMENT COLUMN status_change 'When this recomputation was caused by a lead.status_changed: the status it set (new, contacted, interested, negotiation, converted, lost); empty otherwise. A row with converted is a conversion by seller_id at computed_at';

ALTER TABLE {db}.seller_hourly COMMENT COLUMN conversions 'Status changes to converted, in this hour, of leads of the seller (a lead converted twice counts twice; leads whose lead.created was never seen are not counted)';

-- ClickHouse 18.16 requires a view that writes TO a table to give every column of it, so the
-- three views of 0008 are replaced by ones that also give `conversions` (0 for them). As in
-- 0008, each new view is created before the old one is dropped: run migrations with the sinks
-- stopped (`vigia serve` / `vigia sink` migrate before they consume), or a block inserted in
-- between is counted twice.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.seller_hourly_mv_events TO {db}.seller_hourly AS
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
    toInt64(0) AS unanswered,
    toUInt64(0) AS conversions
FROM {db}.events
WHERE seller_id != 0
GROUP BY tenant_id, seller_id, hour;

DROP TABLE IF EXISTS {db}.seller_hourly_from_event_rows;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.seller_hourly_mv_response_times TO {db}.seller_hourly AS
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
    toInt64(0) AS unanswered,
    toUInt64(0) AS conversions
FROM {db}.response_times
GROUP BY tenant_id, seller_id, hour;

DROP TABLE IF EXISTS {db}.seller_hourly_from_response_samples;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.seller_hourly_mv_notifications TO {db}.seller_hourly AS
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
    toInt64(countIf(withdraws IS NULL) - countIf(withdraws IS NOT NULL)) AS unanswered,
    toUInt64(0) AS conversions
FROM {db}.notifications
WHERE type = 'unanswered_conversation'
  AND (withdraws IS NULL OR visitParamExtractString(data, 'state') = 'corrected')
GROUP BY tenant_id, seller_id, hour;

DROP TABLE IF EXISTS {db}.seller_hourly_from_notifications;

-- Conversions, in the hour of the status change; seller_id 0: a lead without a seller.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.seller_hourly_mv_conversions TO {db}.seller_hourly AS
SELECT
    tenant_id,
    seller_id,
    toStartOfHour(computed_at) AS hour,
    toUInt64(0) AS messages_received,
    toUInt64(0) AS replies_sent,
    toUInt64(0) AS automated_replies,
    toUInt64(0) AS conversations_assigned,
    toUInt64(0) AS leads_created,
    toUInt64(0) AS follow_ups_scheduled,
    toInt64(0) AS responses,
    toFloat64(0) AS response_seconds_sum,
    quantilesExactWeightedState(0.5, 0.9)(toFloat64(0), toUInt64(0)) AS response_quantiles,
    toInt64(0) AS unanswered,
    toUInt64(count()) AS conversions
FROM {db}.lead_scores
WHERE status_change = 'converted'
GROUP BY tenant_id, seller_id, hour;
