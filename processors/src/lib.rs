//! The stream processors (contract §3): CRM events in, in event time, derived facts and
//! notifications out.
//!
//! What it does:
//! - [`engine`]: the rules as pure logic — [`PartitionEngine`] turns one Kafka partition's events
//!   and watermark advances into [`Output`]s (response-time samples, unanswered-conversation
//!   notifications and their withdrawals, hot-lead scores and notifications, follow-up reminders,
//!   call-center session timeouts, seller metrics snapshots and rank, performance alerts, the
//!   daily report). No I/O and no wall clock, so every rule is unit-tested with made-up times.
//!   Late events within the allowed lateness correct what was sent: response-time samples are
//!   retracted and replaced, wrong unanswered alerts withdrawn as `corrected`
//!   ([`engine::conversations`]); net of that, results do not depend on arrival order. What
//!   follows arrival order by design: seller snapshots (a late event shows in the next one) and
//!   the hot-lead hysteresis (the score's path through the events as they arrive).
//!   State is bounded per tenant ([`engine::retention`]): conversations, leads, sessions and
//!   sellers are forgotten once they can no longer matter, and an event that would add one
//!   beyond the tenant's limit is refused ([`Output::OverLimit`], dead-lettered).
//! - [`recovery`]: the recovery decision as pure logic — on a partition's assignment, which
//!   engine to run (held, from a checkpoint, or fresh), where to start consuming, when replay ends
//!   and outputs are produced again; the runner carries it out with Kafka calls.
//! - [`checkpoint`]: a checkpoint's bytes as Kafka records — split into pieces under the record
//!   limit, each with a header (partition, offset, state version, clock), and joined back with
//!   checks; the two slots per partition, and when the next checkpoint is due. The runner writes
//!   them to the compacted `checkpoints` topic and restores from them on assignment.
//! - [`scoring`]: the hot-lead score as a pure function of plain inputs (UDF-ready).
//! - `runner` (cargo feature `runner`, on by default): the Kafka I/O around the engine — consume
//!   `events` in a consumer group, recover from a checkpoint and deterministic replay, advance the watermark with
//!   the wall clock once caught up so deadlines fire on an idle stream, produce outputs to
//!   `notifications` / `response_times` / `lead_scores`, dead-letter what cannot be applied,
//!   commit what Kafka acknowledged.
//! - [`texts`]: notification texts (Spanish by default, English per tenant).
//!
//! Without the `runner` feature (`default-features = false`) the crate is the engine, its
//! configuration and the scoring alone, with neither Kafka nor tokio: the Arroyo UDFs (`udfs/`)
//! build on that.
//!
//! What it does not: create topics (the binary does), serve HTTP, or write to ClickHouse (the
//! sinks do).
//!
//! # Kafka transactions: measured, not adopted
//!
//! Apache Kafka offers exactly-once v2: outputs and input offsets committed in one transaction,
//! consumers reading `read_committed`. The processors do not use it; they keep the design of
//! deterministic outputs, idempotent consumers and a write-ahead of the clock (the runner's
//! module doc, "Why no Kafka transactions are needed"), which gives the same results after any
//! crash. Measured on this machine's Apache Kafka 4.4 (`vigia bench transactions`, BENCHMARKS.md,
//! 2026-12-03), the hop that would become transactional — processor outputs → gateway — at
//! 1,000 records/s:
//!
//! | | hop p50 | hop p99 | throughput |
//! |---|---|---|---|
//! | today (idempotent producer) | 4.9 ms | 15.3 ms | 1.00 |
//! | transactions, commit every 100 ms, `read_committed` | 193 ms | 309 ms | 0.51 |
//! | transactions, commit every 1 s, `read_committed` | 600 ms | 1,094 ms | 0.75 |
//!
//! A record becomes visible downstream only once its transaction commits: half a commit interval
//! on average plus the commit itself (~100 ms p50 here, during which the producer sends nothing).
//! Every deadline → notification frame and every end-to-end figure would grow by that much:
//! +188 ms p50 / +294 ms p99 at the shortest interval that still leaves throughput at half,
//! against a deadline-latency target of 100 ms. What transactions would buy is the absence of
//! duplicate *deliveries* after a crash — outputs produced but not yet committed are re-sent
//! with the same ids — and those the ClickHouse sink and the gateway's inbox already drop by id.
//!
//! Recovery, each way: with transactions, a crashed instance's open transaction holds every
//! `read_committed` consumer of its output partitions at the last stable offset until it is
//! aborted — when the partition's new owner fences it (the same `transactional.id`) or after
//! `transaction.timeout.ms` (60 s by default) — so notifications stop for everyone on those
//! partitions meanwhile; the engine state must be rebuilt either way (replay, or a checkpoint).
//! Without them nothing waits: the new owner replays and re-sends, and readers drop the repeats.
//! The state checkpoints of bounded recovery fit this design without transactions: a checkpoint
//! records the input offset and watermarks it corresponds to, outputs after it are re-derived
//! identically, so checkpoint and offsets need not be written atomically (keep two checkpoints
//! per partition and load the latest at or before the committed offset).

pub mod checkpoint;
pub mod config;
pub mod engine;
#[cfg(feature = "runner")]
mod metrics;
pub mod recovery;
#[cfg(feature = "runner")]
pub mod runner;
pub mod scoring;
pub mod texts;

pub use config::{Config, Rules, ThresholdOverrides, Thresholds};
pub use engine::{
    EngineStats, EntityCounts, EntityKind, Output, OverLimit, PartitionEngine, TooLate,
};
#[cfg(feature = "runner")]
pub use runner::{run, Processors};

/// Why the processors cannot start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("invalid processors configuration: {0}")]
    Config(String),
    #[cfg(feature = "runner")]
    #[error("Kafka: {context}: {source}; check that the broker is reachable (VIGIA_KAFKA_BROKERS) and the topics exist")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error(
        "could not deliver an output to Kafka topic {topic}: {reason}; restart the processors — \
         they resume from the last committed offset and re-send the same outputs (same ids)"
    )]
    Delivery { topic: String, reason: String },
}
