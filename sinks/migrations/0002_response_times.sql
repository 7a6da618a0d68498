-- Response times (contract §3.2): one row per customer wait that a seller answered, i.e. the time from
-- the customer message that started the wait to the seller's first non-automated reply.
-- Computed by the processors (ResponseTimeSample) and written by the sink exactly once per id.
CREATE TABLE IF NOT EXISTS {db}.response_times
(
    id UUID COMMENT 'Deterministic id of the sample (derived from the customer message that started the wait)',
    tenant_id UInt64 COMMENT 'Company (tenant). Always filter on it',
    conversation_id String COMMENT 'Conversation in which the customer waited',
    seller_id UInt64 COMMENT 'Seller whose reply ended the wait',
    customer_event_id UUID COMMENT 'event_id of the customer message that started the wait (see events)',
    reply_event_id UUID COMMENT 'event_id of the reply that ended it (see events)',
    waiting_since DateTime('UTC') COMMENT 'Event time of the customer message that started the wait (UTC)',
    replied_at DateTime('UTC') COMMENT 'Event time of the reply (UTC): the event time of this row',
    replied_at_ms UInt64 COMMENT 'replied_at in milliseconds since 1970-01-01 UTC',
    response_seconds Float64 COMMENT 'How long the customer waited, in seconds (millisecond precision)',
    kafka_partition Int32 COMMENT 'Lineage: Kafka partition of the response_times topic',
    kafka_offset Int64 COMMENT 'Lineage: Kafka offset',
    inserted_at DateTime('UTC') DEFAULT now() COMMENT 'When the sink wrote the row (wall clock, UTC)'
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(replied_at)
ORDER BY (tenant_id, replied_at, id);
