-- Per-user notification preferences, PostgreSQL dialect. Keep in step with
-- ../sqlite/0002_preferences.sql. A user without a row gets their role's defaults.
CREATE TABLE user_preferences (
    tenant_id   BIGINT      NOT NULL,
    user_id     BIGINT      NOT NULL,
    -- The whole effective preferences (see gateway/src/preferences.rs).
    preferences JSONB       NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
