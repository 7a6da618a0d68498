-- One gateway instance on its inbox, SQLite dialect. Keep in step with ../postgres/0004_cluster.sql
-- (SQLite serves a single instance: a second one is refused, see gateway/src/lib.rs).

-- Where the notifications topic has been stored up to, per partition: advanced (never back) in
-- the transaction that stores the records before it (see gateway/src/consumer.rs).
CREATE TABLE inbox_offsets (
    topic           TEXT    NOT NULL,
    kafka_partition INTEGER NOT NULL,
    -- The offset of the next record to read.
    next_offset     INTEGER NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);

-- Outbox rows are leased while attempted (gateway/src/inbox/outbox.rs).
ALTER TABLE channel_outbox ADD COLUMN lease_owner TEXT;
-- Unix milliseconds: past this, the row may be taken again (its holder died).
ALTER TABLE channel_outbox ADD COLUMN lease_until_ms INTEGER;
-- Unix milliseconds: when a `sent` row went out; sent rows are deleted some time after.
ALTER TABLE channel_outbox ADD COLUMN sent_at_ms INTEGER;
UPDATE channel_outbox SET sent_at_ms = CAST((julianday(updated_at) - 2440587.5) * 86400000 AS INTEGER)
    WHERE state = 'sent';
CREATE INDEX channel_outbox_sent ON channel_outbox (sent_at_ms) WHERE state = 'sent';
