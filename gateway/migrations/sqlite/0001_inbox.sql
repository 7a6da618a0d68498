-- The gateway's inbox, SQLite dialect. Keep in step with ../postgres/0001_inbox.sql.

-- Every notification the gateway has received, once (the id is the deterministic id from its
-- cause, so a redelivered record is recognised and ignored).
CREATE TABLE notifications (
    -- Arrival order: what clients resume from (`/ws?since=`) and the REST page key.
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    tenant_id        INTEGER NOT NULL,
    -- Exactly one of the two audience columns is set.
    audience_user_id INTEGER,
    audience_role    TEXT,
    type             TEXT    NOT NULL,
    priority         TEXT    NOT NULL,
    -- Set on a withdrawal: the id of the notification it withdraws.
    withdraws        TEXT,
    -- Set when a withdrawal resolved this notification (for its whole audience).
    withdrawn_at     TEXT,
    -- The whole notification as JSON (SPEC §4).
    payload          TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    stored_at        TEXT    NOT NULL
);
CREATE INDEX notifications_by_tenant ON notifications (tenant_id, seq);
CREATE INDEX notifications_by_user ON notifications (tenant_id, audience_user_id, seq);
CREATE INDEX notifications_by_role ON notifications (tenant_id, audience_role, seq);
CREATE INDEX notifications_by_withdraws ON notifications (tenant_id, withdraws);

-- Per-user watermarks: everything up to read_through_seq is read ("read all"), everything up to
-- cleared_through_seq is hidden ("clear"); read_through_seq >= cleared_through_seq.
CREATE TABLE inbox_users (
    tenant_id           INTEGER NOT NULL,
    user_id             INTEGER NOT NULL,
    read_through_seq    INTEGER NOT NULL DEFAULT 0,
    cleared_through_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_id)
);

-- Notifications read one by one above the user's read_through_seq.
CREATE TABLE notification_reads (
    tenant_id        INTEGER NOT NULL,
    user_id          INTEGER NOT NULL,
    notification_seq INTEGER NOT NULL REFERENCES notifications (seq),
    read_at          TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, user_id, notification_seq)
);
