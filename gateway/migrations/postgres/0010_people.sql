-- The people the dashboard names, PostgreSQL dialect. Keep in step with
-- ../sqlite/0010_people.sql. One row per user of a tenant: what their latest `user.upserted`
-- said, by event time (ties: the larger event id), whatever order the events came in
-- (see gateway/src/people.rs). Tenants never share a row: the key starts with the tenant.
CREATE TABLE people (
    tenant_id   BIGINT      NOT NULL,
    user_id     BIGINT      NOT NULL,
    name        TEXT        NOT NULL,
    -- ceo | manager | seller | secretary | supervisor
    role        TEXT        NOT NULL,
    -- `occurred_at` and `event_id` of the `user.upserted` the row holds.
    upserted_at TIMESTAMPTZ NOT NULL,
    event_id    UUID        NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
