//! The ClickHouse sink (contract §6): Kafka topics → ClickHouse tables, each record exactly once,
//! and the versioned migrations that create those tables.
//!
//! What it does:
//! - [`migrate`]: creates the database and applies `sinks/migrations/NNNN_name.sql` in order,
//!   recording each in `schema_migrations` (see [`MIGRATIONS`]). Tables: `events`,
//!   `response_times`, `notifications`, `lead_scores`, `seller_metrics`, `dead_letters`, and the
//!   hourly rollup `seller_hourly` fed by materialized views. `sinks/migrations/README.md` documents them with
//!   example queries for analysts.
//! - [`Sink`] / [`run`]: consumes the `events`, `notifications`, `response_times`, `lead_scores`,
//!   `seller_metrics` and `dead_letters` topics in the consumer group [`Config::group_id`],
//!   batches rows per table (up to [`Config::batch_size`] rows or [`Config::flush_interval`]),
//!   writes each table's batch with one INSERT (RowBinary), then commits the batch's offsets. Undecodable records go to the
//!   dead-letter topic (stage `sink`; bounded, see [`vigia_schemas::record`]) and are committed
//!   past: one bad record never stalls a partition. A dead letter Kafka refuses for good (only a
//!   broker configured below its bounded size) is counted (`vigia_sink_dead_letters_lost_total`)
//!   and skipped; other Kafka errors are retried, never committed past.
//! - [`ready`], [`server_version`]: probes.
//!
//! What it does not: compute anything (the processors do), create Kafka topics (the root binary
//! does), or need a ClickHouse newer than 18.16 (no TTL, DateTime64, LowCardinality, async
//! inserts or insert deduplication tokens are used; the same DDL runs on current releases).
//!
//! # Exactly-once rows
//!
//! Kafka delivers at least once (a crash between an INSERT and the offset commit re-delivers the
//! batch), and producers upstream may write the same record twice. ClickHouse 18.16 has no
//! transactions and no insert deduplication for plain MergeTree, so the sink makes writes
//! idempotent itself:
//!
//! 1. Every row has a deterministic id: `event_id` for events, the processors' derived `id` for
//!    outputs, an id derived from the origin for dead letters. Every copy of a record has the
//!    same id, tenant and event time. Ids are unique *within a tenant* only: `event_id` is the
//!    tenant's CRM's, and another tenant may send the same one — which must not hide it. So a
//!    row's identity is (tenant, id).
//! 2. Before an INSERT, [`Writer::write`] drops in-batch duplicates and asks ClickHouse which of
//!    the batch's (tenant, id) pairs it already has — reading only the batch's tenants and
//!    event-time range, which the tables are sorted by — and inserts only the others, in a
//!    single INSERT.
//! 3. Offsets are committed only after every table of the batch is written. A crash before the
//!    commit re-reads the batch; its rows are found and skipped. An INSERT that failed
//!    half-way (one part written, another not) is completed the same way by the retry.
//! 4. Check-then-insert is race-free because one row's copies are only ever written by one
//!    writer at a time: records are keyed by tenant, so all copies of a row are in one
//!    partition, and one partition is consumed by one member of the group. The sink keeps that
//!    true across rebalances: when partitions are revoked it drops everything uncommitted
//!    (the next owner re-reads it from the committed offsets) and never writes it. A write
//!    retried after a timeout cannot race its own earlier attempt either: all INSERTs of a
//!    writer into a table share a `query_id`, and the retry first waits until no query with that
//!    id runs in `system.processes`.
//!
//! Residual risks, documented rather than hidden: a member cut off from Kafka but not from
//! ClickHouse for longer than the group's session timeout, while holding a batch, may write it
//! concurrently with the partition's new owner; materialized views (`seller_hourly`) run inside
//! the INSERT, so an INSERT that fails after writing the base table but not the view leaves the
//! rollup short of those rows (the retry finds them stored).
//!
//! # Backpressure
//!
//! A write that fails is retried with exponential backoff (100 ms to 5 s), never skipped. When a
//! flush cannot complete within 10 s the sink pauses its partitions and goes back to polling
//! Kafka (so the group does not evict it), retrying the same rows until ClickHouse takes them,
//! then resumes.
//! Nothing is committed meanwhile. On shutdown it writes and commits what is batched, giving up
//! after 10 s (those records are then simply read again at the next start).

mod config;
mod error;
mod migrate;
mod rows;
mod runner;
mod writer;

pub use config::Config;
pub use error::SinkError;
pub use migrate::{
    migrate, migrate_until, ready, server_version, split_statements, AppliedMigration, Migration,
    MIGRATIONS,
};
pub use rows::{
    DeadLetterRow, EventRow, KafkaOrigin, LeadScoreRow, NotificationRow, ResponseTimeRow,
    SellerMetricsRow, SinkRow,
};
pub use runner::{run, Sink};
pub use writer::{WriteOutcome, Writer};
