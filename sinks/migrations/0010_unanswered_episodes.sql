-- Unanswered episodes: one row per customer wait that went past the unanswered deadline, with how
-- it ended, so analysts need not pair alerts with their withdrawals themselves.
--
-- In `notifications`, an episode is an `unanswered_conversation` alert (its `created_at` is the
-- deadline) plus, when the wait ended later, a withdrawal naming it (`withdraws` = the alert's
-- id; `data.state` = `resolved` when a seller answered, `closed` when the conversation was
-- closed; `data.resolved_at` = when). A withdrawal with state `corrected` means a late event
-- showed the alert was wrong (contract §3.9, 0008_corrections.sql): such an alert is not an episode.
-- A view, not a table: it is always in step with `notifications`, late corrections included,
-- and needs nothing that 18.16 lacks. Filter on `tenant_id` and `deadline` when querying it.
CREATE VIEW IF NOT EXISTS {db}.unanswered_episodes AS
SELECT
    tenant_id,
    alert_id,
    conversation_id,
    seller_id,
    channel,
    waiting_since,
    deadline,
    if(ended = 0, 'open', end_state) AS state,
    resolved_at,
    if(ended = 0, toInt64(0), toInt64(resolved_at) - toInt64(deadline)) AS seconds_past_deadline
FROM
(
    SELECT
        tenant_id,
        id AS alert_id,
        visitParamExtractString(data, 'conversation_id') AS conversation_id,
        visitParamExtractUInt(data, 'seller_id') AS seller_id,
        visitParamExtractString(data, 'channel') AS channel,
        parseDateTimeBestEffort(visitParamExtractString(data, 'waiting_since'), 'UTC') AS waiting_since,
        created_at AS deadline
    FROM {db}.notifications
    WHERE type = 'unanswered_conversation' AND withdraws IS NULL
) AS a
ANY LEFT JOIN
(
    SELECT
        tenant_id,
        assumeNotNull(withdraws) AS alert_id,
        max(visitParamExtractString(data, 'state') = 'corrected') AS corrected,
        toUInt8(countIf(visitParamExtractString(data, 'state') != 'corrected') > 0) AS ended,
        anyIf(visitParamExtractString(data, 'state'), visitParamExtractString(data, 'state') != 'corrected') AS end_state,
        anyIf(parseDateTimeBestEffort(visitParamExtractString(data, 'resolved_at'), 'UTC'), visitParamExtractString(data, 'state') != 'corrected') AS resolved_at
    FROM {db}.notifications
    WHERE type = 'unanswered_conversation' AND withdraws IS NOT NULL
    GROUP BY tenant_id, alert_id
) AS w USING (tenant_id, alert_id)
WHERE corrected = 0;
