-- Hot-lead scores (contract §3.3): one row each time an event changed a lead's score, with the score's
-- components (score = sum of the components, capped at 1).
CREATE TABLE IF NOT EXISTS {db}.lead_scores
(
    id UUID COMMENT 'Deterministic id (derived from the lead and the event that caused the recomputation)',
    tenant_id UInt64 COMMENT 'Company (tenant). Always filter on it',
    lead_id String COMMENT 'The lead',
    seller_id UInt64 COMMENT 'Seller of the lead, 0 if none is assigned',
    score Float64 COMMENT 'Hot-lead score in [0, 1]',
    source_score Float64 COMMENT 'Component: lead source (META_ADS .30, REFERRAL .25, WEBSITE .20)',
    engagement_score Float64 COMMENT 'Component: engagement (more than 5 messages)',
    recency_score Float64 COMMENT 'Component: a customer message in the last hour',
    intent_score Float64 COMMENT 'Component: buying-intent keywords in the customer messages',
    location_score Float64 COMMENT 'Component: the lead is in a high-value area of the tenant',
    cause_event_id UUID COMMENT 'event_id of the event that caused this recomputation (see events)',
    computed_at DateTime('UTC') COMMENT 'Event time of the cause (UTC)',
    computed_at_ms UInt64 COMMENT 'computed_at in milliseconds since 1970-01-01 UTC',
    kafka_partition Int32 COMMENT 'Lineage: Kafka partition of the lead_scores topic',
    kafka_offset Int64 COMMENT 'Lineage: Kafka offset',
    inserted_at DateTime('UTC') DEFAULT now() COMMENT 'When the sink wrote the row (wall clock, UTC)'
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(computed_at)
ORDER BY (tenant_id, computed_at, id);
