-- The people the dashboard names, SQLite dialect. Keep in step with
-- ../postgres/0010_people.sql. One row per user of a tenant: what their latest `user.upserted`
-- said, by event time (ties: the larger event id), whatever order the events came in
-- (see gateway/src/people.rs). Tenants never share a row: the key starts with the tenant.
CREATE TABLE people (
    tenant_id   INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    -- ceo | manager | seller | secretary | supervisor
    role        TEXT    NOT NULL,
    -- `occurred_at` (RFC 3339, UTC, microseconds: text order is time order) and `event_id`
    -- (lowercase hyphenated) of the `user.upserted` the row holds.
    upserted_at TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
