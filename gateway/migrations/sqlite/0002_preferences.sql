-- Per-user notification preferences, SQLite dialect. Keep in step with
-- ../postgres/0002_preferences.sql. A user without a row gets their role's defaults.
CREATE TABLE user_preferences (
    tenant_id   INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    -- The whole effective preferences as JSON (see gateway/src/preferences.rs).
    preferences TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
