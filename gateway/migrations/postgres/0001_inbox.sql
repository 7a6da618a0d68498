-- The gateway's inbox, PostgreSQL dialect. Keep in step with ../sqlite/0001_inbox.sql.

-- Every notification the gateway has received, once (the id is the deterministic id from its
-- cause, so a redelivered record is recognised and ignored).
CREATE TABLE notifications (
    id               UUID        PRIMARY KEY,
    -- Arrival order: what clients resume from (`/ws?since=`) and the REST page key.
    seq              BIGINT      GENERATED ALWAYS AS IDENTITY UNIQUE,
    tenant_id        BIGINT      NOT NULL,
    -- Exactly one of the two audience columns is set.
    audience_user_id BIGINT,
    audience_role    TEXT,
    type             TEXT        NOT NULL,
    priority         TEXT        NOT NULL,
    -- Set on a withdrawal: the id of the notification it withdraws.
    withdraws        UUID,
    -- Set when a withdrawal resolved this notification (for its whole audience).
    withdrawn_at     TIMESTAMPTZ,
    -- The whole notification (SPEC §4).
    payload          JSONB       NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    stored_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX notifications_by_tenant ON notifications (tenant_id, seq);
CREATE INDEX notifications_by_user ON notifications (tenant_id, audience_user_id, seq);
CREATE INDEX notifications_by_role ON notifications (tenant_id, audience_role, seq);
CREATE INDEX notifications_by_withdraws ON notifications (tenant_id, withdraws);

-- Per-user watermarks: everything up to read_through_seq is read ("read all"), everything up to
-- cleared_through_seq is hidden ("clear"); read_through_seq >= cleared_through_seq.
CREATE TABLE inbox_users (
    tenant_id           BIGINT NOT NULL,
    user_id             BIGINT NOT NULL,
    read_through_seq    BIGINT NOT NULL DEFAULT 0,
    cleared_through_seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_id)
);

-- Notifications read one by one above the user's read_through_seq.
CREATE TABLE notification_reads (
    tenant_id        BIGINT      NOT NULL,
    user_id          BIGINT      NOT NULL,
    notification_seq BIGINT      NOT NULL REFERENCES notifications (seq),
    read_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, user_id, notification_seq)
);
