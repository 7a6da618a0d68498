-- Raw CRM events (contract §2): one row per distinct event_id, as ingest accepted them.
-- Written by the sink from the `events` topic. A duplicate delivery never adds a row.
-- Always filter on tenant_id, and on occurred_at where you can: the table is sorted by
-- (tenant_id, occurred_at) and partitioned by month of occurred_at.
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id UUID COMMENT 'Idempotency key sent by the CRM: exactly one row per event_id',
    tenant_id UInt64 COMMENT 'Company (tenant) the event belongs to. Always filter on it',
    type String COMMENT 'Event type: message.received, message.sent, conversation.assigned, conversation.closed, lead.created, lead.status_changed, lead.follow_up_scheduled, user.upserted, session.started, session.heartbeat, session.ended',
    occurred_at DateTime('UTC') COMMENT 'Event time: when it happened in the CRM (UTC, whole seconds)',
    occurred_at_ms UInt64 COMMENT 'Event time in milliseconds since 1970-01-01 UTC, for sub-second ordering',
    conversation_id String COMMENT 'Conversation the event concerns (message.*, conversation.*, lead.created), empty if none',
    lead_id String COMMENT 'Lead the event concerns (lead.*), empty if none',
    seller_id UInt64 COMMENT 'Seller the event concerns (the assigned or replying seller, or the call-center agent of session.*), 0 if none',
    payload String COMMENT 'The whole event as canonical JSON: read other fields with visitParamExtractString(payload, ''text'') etc.',
    kafka_partition Int32 COMMENT 'Lineage: Kafka partition of the events topic the row came from',
    kafka_offset Int64 COMMENT 'Lineage: Kafka offset the row came from',
    inserted_at DateTime('UTC') DEFAULT now() COMMENT 'When the sink wrote the row (wall clock, UTC), not event time'
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, occurred_at, event_id);
