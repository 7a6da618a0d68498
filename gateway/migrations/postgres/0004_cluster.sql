-- Several gateway instances on one inbox, PostgreSQL dialect. Keep in step with
-- ../sqlite/0004_cluster.sql.

-- Where the notifications topic has been stored up to, per partition: advanced (never back) in
-- the transaction that stores the records before it, by whichever instance stores them. Every
-- instance, whatever its id, starts reading there (see gateway/src/consumer.rs).
CREATE TABLE inbox_offsets (
    topic           TEXT    NOT NULL,
    kafka_partition INTEGER NOT NULL,
    -- The offset of the next record to read.
    next_offset     BIGINT  NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);

-- Outbox rows are leased to one instance while it attempts them (gateway/src/inbox/outbox.rs).
ALTER TABLE channel_outbox ADD COLUMN lease_owner TEXT;
-- Unix milliseconds: past this, another instance may take the row (its holder died).
ALTER TABLE channel_outbox ADD COLUMN lease_until_ms BIGINT;
-- Unix milliseconds: when a `sent` row went out; sent rows are deleted some time after.
ALTER TABLE channel_outbox ADD COLUMN sent_at_ms BIGINT;
UPDATE channel_outbox SET sent_at_ms = (EXTRACT(EPOCH FROM updated_at) * 1000)::BIGINT
    WHERE state = 'sent';
CREATE INDEX channel_outbox_sent ON channel_outbox (sent_at_ms) WHERE state = 'sent';
