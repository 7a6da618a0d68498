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
//!   checks. Not yet written or read by the runner.
//! - [`scoring`]: the hot-lead score as a pure function of plain inputs (UDF-ready).
//! - `runner` (cargo feature `runner`, on by default): the Kafka I/O around the engine — consume
//!   `events` in a consumer group, recover by deterministic replay, advance the watermark with
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

pub use config::{Config, ThresholdOverrides, Thresholds};
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
