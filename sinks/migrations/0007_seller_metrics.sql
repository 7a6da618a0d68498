-- Seller metrics snapshots (contract §3.6): the processors emit one for each seller whose metrics
-- changed, at the minute boundaries of the tenant's event time. Rows are facts, never updated:
-- the current metrics of a seller are those of its latest snapshot, e.g.
--   SELECT seller_id, argMax(productivity_score, snapshot_at_ms) AS score,
--          argMax(rank, snapshot_at_ms) AS rank
--   FROM seller_metrics WHERE tenant_id = 42 GROUP BY seller_id ORDER BY rank
-- Response-time statistics of an empty window are NULL (count = 0).
CREATE TABLE IF NOT EXISTS {db}.seller_metrics
(
    id UUID COMMENT 'Deterministic id (derived from tenant, seller and snapshot_at)',
    tenant_id UInt64 COMMENT 'Company (tenant). Always filter on it',
    seller_id UInt64 COMMENT 'The seller',
    snapshot_at DateTime('UTC') COMMENT 'Event time the metrics were evaluated at (a minute boundary, UTC)',
    snapshot_at_ms UInt64 COMMENT 'snapshot_at in milliseconds since 1970-01-01 UTC',
    time_zone String COMMENT 'The tenant time zone (IANA) that defines today',
    day Date COMMENT 'Local date of snapshot_at in time_zone: the today of the *_today columns',
    conversations_total UInt32 COMMENT 'Conversations of the seller (assigned, else last replier) known to the processors',
    conversations_active UInt32 COMMENT 'Of those, not closed since their last message',
    conversations_today UInt32 COMMENT 'Of those, with a message today',
    conversations_unanswered UInt32 COMMENT 'Of those, whose customer waits past the unanswered deadline (live gauge)',
    response_1h_count UInt32 COMMENT 'Replies (answered waits) in the last hour, (snapshot_at - 1 h, snapshot_at]',
    response_1h_mean Nullable(Float64) COMMENT 'Mean response time over the last hour, seconds',
    response_1h_p50 Nullable(Float64) COMMENT 'Median (nearest rank) response time over the last hour, seconds',
    response_1h_p90 Nullable(Float64) COMMENT '90th percentile (nearest rank) over the last hour, seconds',
    response_1h_max Nullable(Float64) COMMENT 'Longest response time over the last hour, seconds',
    response_today_count UInt32 COMMENT 'Replies today (local day in time_zone)',
    response_today_mean Nullable(Float64) COMMENT 'Mean response time today, seconds',
    response_today_p50 Nullable(Float64) COMMENT 'Median (nearest rank) response time today, seconds',
    response_today_p90 Nullable(Float64) COMMENT '90th percentile (nearest rank) today, seconds',
    response_today_max Nullable(Float64) COMMENT 'Longest response time today, seconds',
    response_7d_count UInt32 COMMENT 'Replies in the last 7 days',
    response_7d_mean Nullable(Float64) COMMENT 'Mean response time over 7 days, seconds',
    response_7d_p50 Nullable(Float64) COMMENT 'Median (nearest rank) response time over 7 days, seconds',
    response_7d_p90 Nullable(Float64) COMMENT '90th percentile (nearest rank) over 7 days, seconds',
    response_7d_max Nullable(Float64) COMMENT 'Longest response time over 7 days, seconds',
    total_chat_seconds Float64 COMMENT 'Sum over the seller conversations of last message - first message, seconds',
    waits_received UInt32 COMMENT 'Customer waits of the last 7 days that ended (reply or close) or are overdue',
    waits_answered UInt32 COMMENT 'Of those, ended by a seller reply',
    engagement_rate Nullable(Float64) COMMENT 'waits_answered / waits_received; NULL without waits',
    leads_generated UInt32 COMMENT 'Leads of the seller known to the processors',
    leads_converted UInt32 COMMENT 'Of those, with status converted',
    conversion_rate Nullable(Float64) COMMENT 'leads_converted / leads_generated; NULL without leads',
    messages_last_hour UInt32 COMMENT 'Customer messages in the seller conversations plus the seller own messages, last hour',
    activity_level String COMMENT 'low (< 10 messages in the last hour), medium (10-29) or high (30 or more)',
    productivity_score Float64 COMMENT 'Productivity score 0-10 (formula: processors engine::sellers documentation)',
    rank UInt32 COMMENT 'Rank by productivity_score within the tenant, 1 = best; ties by seller id',
    sellers_ranked UInt32 COMMENT 'Number of sellers ranked in the tenant at snapshot_at',
    kafka_partition Int32 COMMENT 'Lineage: Kafka partition of the seller_metrics topic',
    kafka_offset Int64 COMMENT 'Lineage: Kafka offset',
    inserted_at DateTime('UTC') DEFAULT now() COMMENT 'When the sink wrote the row (wall clock, UTC)'
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(snapshot_at)
ORDER BY (tenant_id, snapshot_at, seller_id, id);
