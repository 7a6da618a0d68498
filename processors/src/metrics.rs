//! Prometheus metrics of the processors (prefix `vigia_processor_`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub kind: &'static str,
}

/// A [`vigia_schemas::DeadLetterReason`], by its `as_str()`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PartitionLabel {
    pub partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EntityLabel {
    pub entity: &'static str,
}

#[derive(Clone)]
pub(crate) struct Metrics {
    /// Records consumed, by outcome: applied, duplicate, too_late, over_limit, undecodable,
    /// clock_skew.
    pub records: Family<OutcomeLabel, Counter>,
    /// Records refused because they would add an entity beyond its tenant's limit, by entity.
    pub over_limit: Family<EntityLabel, Counter>,
    /// Records re-read on recovery whose outputs were already delivered (suppressed).
    pub replayed: Counter,
    /// Outputs acknowledged by Kafka, by kind: notification, response_time, lead_score,
    /// seller_metrics, dead_letter.
    pub outputs: Family<KindLabel, Counter>,
    /// Wall time at which a deadline notification was produced minus its deadline.
    pub deadline_lag: Histogram,
    /// The partition's watermark (unix seconds): clock watermark once live, newest event time
    /// minus the delay while replaying.
    pub watermark: Family<PartitionLabel, Gauge<f64, AtomicU64>>,
    /// Partitions owned and caught up (1) or replaying (0).
    pub live: Family<PartitionLabel, Gauge>,
    /// Offset commits that failed (retried by the next one).
    pub commit_failures: Counter,
    /// Dead letters produced, by reason (records and outputs that could not be used).
    pub dead_letters: Family<ReasonLabel, Counter>,
    /// Dead letters Kafka refused for good (skipped), by the reason of what they carried.
    pub dead_letters_lost: Family<ReasonLabel, Counter>,
    /// Partitions assigned that replay from their beginning, by
    /// [`crate::recovery::FullReplayReason::as_str`] (checkpoints on).
    pub full_replays: Family<ReasonLabel, Counter>,
    /// Partitions restored from a checkpoint.
    pub checkpoint_restores: Counter,
    /// Checkpoints written (every piece acknowledged).
    pub checkpoints_written: Counter,
    /// Checkpoints that could not be written (Kafka refused a piece; the next one is tried).
    pub checkpoint_write_failures: Counter,
    /// Size of each owned partition's last checkpoint, bytes (the serialized state).
    pub checkpoint_bytes: Family<PartitionLabel, Gauge>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            records: Family::default(),
            over_limit: Family::default(),
            replayed: Counter::default(),
            outputs: Family::default(),
            deadline_lag: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            watermark: Family::default(),
            live: Family::default(),
            commit_failures: Counter::default(),
            dead_letters: Family::default(),
            dead_letters_lost: Family::default(),
            full_replays: Family::default(),
            checkpoint_restores: Counter::default(),
            checkpoints_written: Counter::default(),
            checkpoint_write_failures: Counter::default(),
            checkpoint_bytes: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("vigia_processor");
        r.register(
            "records",
            "Event records consumed, by outcome (applied, duplicate, too_late, over_limit, \
             undecodable, clock_skew)",
            m.records.clone(),
        );
        r.register(
            "over_limit_records",
            "Event records refused (dead-lettered) because they would add an entity beyond its \
             tenant's limit (processors max_conversations, max_leads, max_sessions, max_sellers), \
             by entity",
            m.over_limit.clone(),
        );
        r.register(
            "replayed_records",
            "Records re-read on recovery whose outputs had already been delivered",
            m.replayed.clone(),
        );
        r.register(
            "outputs",
            "Outputs acknowledged by Kafka, by kind",
            m.outputs.clone(),
        );
        r.register(
            "deadline_lag_seconds",
            "Wall time when a deadline notification was produced minus the deadline",
            m.deadline_lag.clone(),
        );
        r.register(
            "watermark_seconds",
            "Watermark of each owned partition, unix seconds",
            m.watermark.clone(),
        );
        r.register(
            "partition_live",
            "1 when an owned partition has caught up, 0 while it replays",
            m.live.clone(),
        );
        r.register(
            "commit_failures",
            "Offset commits that failed",
            m.commit_failures.clone(),
        );
        r.register(
            "dead_letters",
            "Dead letters produced, by reason (empty_record, not_utf8, invalid_event, clock_skew, \
             too_late, output_too_large, output_refused)",
            m.dead_letters.clone(),
        );
        r.register(
            "dead_letters_lost",
            "Dead letters Kafka refused for good and that were skipped, by reason",
            m.dead_letters_lost.clone(),
        );
        r.register(
            "full_replays",
            "Partitions assigned that replay from their beginning instead of a checkpoint, by \
             reason (nothing_committed, no_checkpoint, unreadable, other_state_version, \
             other_config, after_committed, clock_not_delivered)",
            m.full_replays.clone(),
        );
        r.register(
            "checkpoint_restores",
            "Partitions restored from a checkpoint on assignment",
            m.checkpoint_restores.clone(),
        );
        r.register(
            "checkpoints_written",
            "Engine state checkpoints written (every piece acknowledged)",
            m.checkpoints_written.clone(),
        );
        r.register(
            "checkpoint_write_failures",
            "Engine state checkpoints Kafka did not take (the next one is tried)",
            m.checkpoint_write_failures.clone(),
        );
        r.register(
            "checkpoint_bytes",
            "Size of each owned partition's last checkpoint (serialized engine state), bytes",
            m.checkpoint_bytes.clone(),
        );
        m
    }

    pub fn record(&self, outcome: &'static str) {
        self.records.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn over_limit(&self, entity: crate::engine::EntityKind) {
        self.over_limit
            .get_or_create(&EntityLabel {
                entity: entity.as_str(),
            })
            .inc();
    }
}
