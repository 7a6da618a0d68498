//! Prometheus metrics of the channels.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::ChannelKind;

/// What happened to one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Delivered.
    Sent,
    /// Failed; another attempt follows.
    Retry,
    /// Failed; no attempt follows (permanent error, or the last attempt).
    Failed,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Sent, Outcome::Retry, Outcome::Failed];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Retry => "retry",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    channel: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: &'static str,
}

#[derive(Clone)]
pub(crate) struct ChannelMetrics {
    attempts: Family<AttemptLabels, Counter>,
    queued: Family<ChannelLabel, Counter>,
    duplicates: Family<ChannelLabel, Counter>,
}

impl ChannelMetrics {
    /// `vigia_gateway_channel_attempts_total{channel, outcome}`,
    /// `vigia_gateway_channel_queued_total{channel}` and
    /// `vigia_gateway_channel_duplicates_total{channel}`.
    pub(crate) fn register(registry: &mut Registry) -> ChannelMetrics {
        let m = ChannelMetrics {
            attempts: Family::default(),
            queued: Family::default(),
            duplicates: Family::default(),
        };
        registry.register(
            "vigia_gateway_channel_attempts",
            "Delivery attempts outside the browser, by channel (email, slack, teams) and outcome: \
             sent, retry (failed, tried again later), failed (failed, given up)",
            m.attempts.clone(),
        );
        registry.register(
            "vigia_gateway_channel_queued",
            "Deliveries recorded in the channel outbox (one per notification, channel and \
             recipient)",
            m.queued.clone(),
        );
        registry.register(
            "vigia_gateway_channel_duplicates",
            "Deliveries of a notification seen again (already stored: not queued again)",
            m.duplicates.clone(),
        );
        // Every series exists from the start, so that rates and alerts work before the first
        // failure.
        for kind in ChannelKind::ALL {
            for outcome in Outcome::ALL {
                let _ = m.attempts.get_or_create(&labels(kind, outcome));
            }
            let label = ChannelLabel {
                channel: kind.as_str(),
            };
            let _ = m.queued.get_or_create(&label);
            let _ = m.duplicates.get_or_create(&label);
        }
        m
    }

    pub(crate) fn count(&self, kind: ChannelKind, outcome: Outcome) {
        self.attempts.get_or_create(&labels(kind, outcome)).inc();
    }

    pub(crate) fn queued(&self, kind: ChannelKind, n: u64) {
        self.queued
            .get_or_create(&ChannelLabel {
                channel: kind.as_str(),
            })
            .inc_by(n);
    }

    pub(crate) fn duplicate(&self, kind: ChannelKind) {
        self.duplicates
            .get_or_create(&ChannelLabel {
                channel: kind.as_str(),
            })
            .inc();
    }

    #[cfg(test)]
    pub(crate) fn get(&self, kind: ChannelKind, outcome: Outcome) -> u64 {
        self.attempts.get_or_create(&labels(kind, outcome)).get()
    }

    #[cfg(test)]
    pub(crate) fn duplicates(&self, kind: ChannelKind) -> u64 {
        self.duplicates
            .get_or_create(&ChannelLabel {
                channel: kind.as_str(),
            })
            .get()
    }
}

fn labels(kind: ChannelKind, outcome: Outcome) -> AttemptLabels {
    AttemptLabels {
        channel: kind.as_str(),
        outcome: outcome.as_str(),
    }
}
