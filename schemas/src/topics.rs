use serde::{Deserialize, Serialize};

/// The Kafka topics between the stages. All share one prefix so that several deployments (or
/// tests) can share a broker without seeing each other's records.
///
/// | topic | key | value |
/// |---|---|---|
/// | `events` | [`crate::Event::partition_key`] | canonical event JSON |
/// | `notifications` | tenant id | [`crate::Notification`] JSON |
/// | `response_times` | tenant id | [`crate::ResponseTimeSample`] JSON |
/// | `lead_scores` | tenant id | [`crate::LeadScore`] JSON |
/// | `seller_metrics` | tenant id | [`crate::SellerMetrics`] JSON |
/// | `dead_letters` | origin key | [`crate::DeadLetter`] JSON |
/// | `checkpoints` | partition, slot, piece | the processors' engine state (compacted; see `vigia_processors::checkpoint`) |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    pub events: String,
    pub notifications: String,
    pub response_times: String,
    pub lead_scores: String,
    pub seller_metrics: String,
    pub dead_letters: String,
    /// The processors' state checkpoints: a compacted topic (`cleanup.policy=compact`).
    pub checkpoints: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        let t = |name: &str| format!("{prefix}{name}");
        Topics {
            events: t("events"),
            notifications: t("notifications"),
            response_times: t("response_times"),
            lead_scores: t("lead_scores"),
            seller_metrics: t("seller_metrics"),
            dead_letters: t("dead_letters"),
            checkpoints: t("checkpoints"),
        }
    }

    pub fn all(&self) -> [&str; 7] {
        [
            &self.events,
            &self.notifications,
            &self.response_times,
            &self.lead_scores,
            &self.seller_metrics,
            &self.dead_letters,
            &self.checkpoints,
        ]
    }
}

impl Default for Topics {
    fn default() -> Self {
        Topics::with_prefix("vigia.")
    }
}
