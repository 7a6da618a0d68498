-- Notifications (contract §4.1) as the processors emitted them, one row per notification id.
-- An update that withdraws an earlier notification (e.g. the conversation was answered) is its own
-- row, whose `withdraws` names the notification it withdraws.
CREATE TABLE IF NOT EXISTS {db}.notifications
(
    id UUID COMMENT 'Deterministic id of the notification (derived from its cause)',
    tenant_id UInt64 COMMENT 'Company (tenant). Always filter on it',
    type String COMMENT 'unanswered_conversation, hot_lead, follow_up_reminder, performance_alert, session_timeout or daily_report',
    priority String COMMENT 'low, medium, high or urgent',
    audience_user_id UInt64 COMMENT 'The one user it is for; 0 when it is for a role (see audience_role)',
    audience_role String COMMENT 'The role it is for (ceo, manager, seller, secretary, supervisor); empty when it is for one user',
    title String COMMENT 'Title as shown to the user',
    message String COMMENT 'Text as shown to the user',
    data String COMMENT 'Structured details as JSON (conversation_id, lead_id, seller_id, score...)',
    actions String COMMENT 'Suggested actions as a JSON array of {label, action, params}',
    created_at DateTime('UTC') COMMENT 'Event time of the cause (for a deadline: the deadline itself), UTC',
    created_at_ms UInt64 COMMENT 'created_at in milliseconds since 1970-01-01 UTC',
    withdraws Nullable(UUID) COMMENT 'For a withdrawal: the id of the notification it withdraws. NULL otherwise',
    kafka_partition Int32 COMMENT 'Lineage: Kafka partition of the notifications topic',
    kafka_offset Int64 COMMENT 'Lineage: Kafka offset',
    inserted_at DateTime('UTC') DEFAULT now() COMMENT 'When the sink wrote the row (wall clock, UTC)'
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(created_at)
ORDER BY (tenant_id, created_at, id);
