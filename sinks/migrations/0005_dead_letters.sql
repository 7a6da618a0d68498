-- Records a stage could not process (the dead_letters topic), kept with their origin so that
-- nothing is silently lost: look here when a count does not add up.
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    id UUID COMMENT 'Deterministic id derived from (stage, origin_topic, origin_partition, origin_offset)',
    tenant_id UInt64 COMMENT 'Tenant of the refused record when it could be read from it, else 0',
    stage String COMMENT 'Stage that refused the record: ingest, processors, sink',
    origin_topic String COMMENT 'Topic of the refused record',
    origin_partition Int32 COMMENT 'Partition of the refused record',
    origin_offset Int64 COMMENT 'Offset of the refused record',
    error String COMMENT 'Why it was refused',
    payload String COMMENT 'The refused record as text (lossy if it was not UTF-8)',
    failed_at DateTime('UTC') COMMENT 'When the refused record entered Kafka (its own record timestamp), UTC; the same on every retry',
    kafka_partition Int32 COMMENT 'Lineage: Kafka partition of the dead_letters topic',
    kafka_offset Int64 COMMENT 'Lineage: Kafka offset in the dead_letters topic',
    inserted_at DateTime('UTC') DEFAULT now() COMMENT 'When the sink wrote the row (wall clock, UTC)'
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(failed_at)
ORDER BY (tenant_id, failed_at, id);
