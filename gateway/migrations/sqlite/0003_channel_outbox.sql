-- The durable channel outbox, SQLite dialect. Keep in step with ../postgres/0003_channel_outbox.sql.
-- One row per delivery of a notification outside the browser: (notification, channel, recipient),
-- written in the transaction that stores the notification, so that a notification is never
-- stored without its deliveries nor queued twice (see gateway/src/channels/mod.rs).
CREATE TABLE channel_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id TEXT    NOT NULL REFERENCES notifications (id),
    tenant_id       INTEGER NOT NULL,
    -- email | slack | teams
    channel         TEXT    NOT NULL,
    -- email: the address; a webhook: an id derived from its URL (the URL is a credential).
    recipient       TEXT    NOT NULL,
    -- The user whose preferences asked for it; NULL for fixed addresses and webhooks.
    user_id         INTEGER,
    -- pending | sent | failed
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Unix milliseconds: no attempt before (backoff, or an e-mail deferred by quiet hours).
    not_before_ms   INTEGER NOT NULL,
    last_error      TEXT,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    UNIQUE (notification_id, channel, recipient)
);
CREATE INDEX channel_outbox_pending ON channel_outbox (tenant_id, channel, not_before_ms)
    WHERE state = 'pending';

-- The board reloads the recent unanswered-conversation notifications at start.
CREATE INDEX notifications_by_type_created ON notifications (type, created_at);
