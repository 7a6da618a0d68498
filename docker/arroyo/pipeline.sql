-- Vigía on Arroyo: hot-lead scores and per-seller response times, in Arroyo SQL, from Vigía's
-- `events` topic, with Vigía's UDFs (udfs/arroyo/*.rs: register them first, see README.md here).
--
-- Not run against a live Arroyo where it was written (no Docker engine there): the UDFs are
-- tested (tests/arroyo_udfs.rs calls the built libraries as Arroyo's host does), this SQL is not.
--
-- Topic names assume the default prefix `vigia.` (VIGIA_KAFKA_TOPIC_PREFIX). The output topics
-- must exist before the pipeline starts (the compose file's Kafka does not auto-create topics):
--   vigia.arroyo_lead_scores, vigia.arroyo_response_times.

-- What rows may be forgotten in the non-windowed (updating) query below: a conversation quiet
-- for longer than this starts again from zero. Arroyo's default is one day.
SET updating_ttl = '7 days';

-- The events topic (contract §2): one flat JSON object per event, as ingest writes it (ids are
-- strings). Only the fields the queries use, every one nullable, as each event type has only
-- some of them. Event time is `occurred_at`, the watermark trails it by 5 minutes, so windows
-- take events up to 5 minutes late and drop what comes after their window closed (the
-- processors apply events up to an hour late, `allowed_lateness`).
CREATE TABLE events (
    event_id TEXT,
    type TEXT,
    tenant_id BIGINT,
    occurred_at TIMESTAMP NOT NULL,
    conversation_id TEXT,
    seller_id BIGINT,
    "text" TEXT,
    automated BOOLEAN,
    lead_id TEXT,
    source TEXT,
    location TEXT,
    WATERMARK FOR occurred_at AS occurred_at - INTERVAL '5 minutes'
) WITH (
    connector = 'kafka',
    bootstrap_servers = 'kafka:9092',
    topic = 'vigia.events',
    type = 'source',
    format = 'json',
    'source.offset' = 'earliest'
);

-- ---------------------------------------------------------------------------------------------
-- Hot-lead score, per lead, kept up to date (an updating query: Debezium JSON, one record per
-- change of a lead's row, keyed by tenant and conversation).
--
-- The inputs are the processors' (processors/src/engine/leads.rs): the lead's source and
-- location from `lead.created`, its conversation's customer messages (counted once per
-- event_id), the time of the last one, and the buying signals of all of them (the OR of
-- `intent_mask`), the high-value areas of the tenant. Where it differs from the processors:
--   * the score is evaluated at the newest event of the lead's row (its `lead.created` or a
--     customer message), where the processors evaluate at each event's own time and emit one
--     score per event: the same numbers when events arrive in order, not for a message that
--     arrives after a newer one,
--   * `lead.status_changed` does not rescore (it names no conversation): the score itself does
--     not depend on the status, only the notification does,
--   * one lead per conversation (the greatest lead_id if a conversation has several), leads
--     without a conversation are not scored,
--   * no hot-lead notification (threshold with hysteresis, status, the seller's recent replies)
--     and no late-event handling beyond what the aggregate sees.
-- High-value areas are the processors' `high_value_locations`, per tenant, written here again:
-- keep them in step with the processors' configuration (an area's name cannot contain a comma).
CREATE TABLE arroyo_lead_scores WITH (
    connector = 'kafka',
    bootstrap_servers = 'kafka:9092',
    topic = 'vigia.arroyo_lead_scores',
    type = 'sink',
    format = 'debezium_json'
);

INSERT INTO arroyo_lead_scores
SELECT
    tenant_id,
    lead_id,
    conversation_id,
    source,
    location,
    customer_messages,
    intent_mask,
    -- Timestamps as milliseconds since 1970 (CAST gives nanoseconds): easy for any consumer.
    CAST(evaluated_at AS BIGINT) / 1000000 AS evaluated_at_ms,
    hot_lead_score(
        source,
        customer_messages,
        -- Whole seconds, truncated towards zero, as the processors count them.
        (CAST(evaluated_at AS BIGINT) - CAST(last_customer_message_at AS BIGINT)) / 1000000000,
        intent_mask,
        location,
        CASE tenant_id
            WHEN 1 THEN 'Bogotá,Medellín'
            ELSE ''
        END
    ) AS score
FROM (
    SELECT
        tenant_id,
        conversation_id,
        MAX(CASE WHEN type = 'lead.created' THEN lead_id END) AS lead_id,
        MAX(CASE WHEN type = 'lead.created' THEN source END) AS source,
        MAX(CASE WHEN type = 'lead.created' THEN location END) AS location,
        COUNT(DISTINCT CASE WHEN type = 'message.received' THEN event_id END) AS customer_messages,
        MAX(CASE WHEN type = 'message.received' THEN occurred_at END) AS last_customer_message_at,
        COALESCE(BIT_OR(CASE WHEN type = 'message.received' THEN intent_mask("text") END), 0)
            AS intent_mask,
        MAX(occurred_at) AS evaluated_at
    FROM events
    WHERE type IN ('lead.created', 'message.received') AND conversation_id IS NOT NULL
    GROUP BY tenant_id, conversation_id
)
WHERE lead_id IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- Response times per seller and hour (a windowed query: plain JSON, one record per tenant,
-- seller and hour, when the hour's window closes at the watermark).
--
-- An approximation of the processors' rule (processors/src/engine/conversations.rs), which
-- measures every wait — each customer message that finds the conversation answered starts one,
-- ended by the first non-automated reply or a close, across hours — and reports count, mean,
-- p50, p90 and max over 1 h, today and 7 d. Here each conversation contributes at most one wait
-- per hour: from its first customer message in the hour to the first non-automated reply in the
-- same hour, when that reply comes at or after the message. Later waits of the hour, waits that
-- cross the hour, and closes are not counted. The replier is the greatest seller_id among the
-- hour's repliers (one seller per conversation in practice). MIN and MAX ignore duplicated
-- events by themselves, and COUNT(*) of waits counts conversations.
CREATE VIEW first_waits AS
SELECT
    window,
    tenant_id,
    seller_id,
    (CAST(first_reply_at AS BIGINT) - CAST(first_customer_message_at AS BIGINT)) / 1000000000.0
        AS response_seconds
FROM (
    SELECT
        TUMBLE(INTERVAL '1 hour') AS window,
        tenant_id,
        conversation_id,
        MIN(CASE WHEN type = 'message.received' THEN occurred_at END) AS first_customer_message_at,
        MIN(CASE WHEN type = 'message.sent' AND NOT COALESCE(automated, FALSE) THEN occurred_at END)
            AS first_reply_at,
        MAX(CASE WHEN type = 'message.sent' AND NOT COALESCE(automated, FALSE) THEN seller_id END)
            AS seller_id
    FROM events
    WHERE type IN ('message.received', 'message.sent') AND conversation_id IS NOT NULL
    GROUP BY window, tenant_id, conversation_id
)
WHERE first_reply_at >= first_customer_message_at;

CREATE TABLE arroyo_response_times WITH (
    connector = 'kafka',
    bootstrap_servers = 'kafka:9092',
    topic = 'vigia.arroyo_response_times',
    type = 'sink',
    format = 'json'
);

INSERT INTO arroyo_response_times
SELECT
    CAST(window.start AS BIGINT) / 1000000 AS hour_start_ms,
    tenant_id,
    seller_id,
    COUNT(*) AS waits,
    AVG(response_seconds) AS mean_seconds,
    MEDIAN(response_seconds) AS p50_seconds,
    MAX(response_seconds) AS max_seconds
FROM first_waits
GROUP BY window, tenant_id, seller_id;
