//! Prometheus metrics of the channels.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::ChannelKind;

/// What happened to one attempt (or, for `Dropped`, one notification that was never tried).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Delivered.
    Sent,
    /// Failed; another attempt follows.
    Retry,
    /// Failed; no attempt follows (permanent error, or the last attempt).
    Failed,
    /// Never attempted: the channel's queue was full, or the gateway was shutting down.
    Dropped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Retry => "retry",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
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
    duplicates: Family<ChannelLabel, Counter>,
}

impl ChannelMetrics {
    /// `vigia_gateway_channel_attempts_total{channel, outcome}` and
    /// `vigia_gateway_channel_duplicates_total{channel}`.
    pub(crate) fn register(registry: &mut Registry) -> ChannelMetrics {
        let m = ChannelMetrics {
            attempts: Family::default(),
            duplicates: Family::default(),
        };
        registry.register(
            "vigia_gateway_channel_attempts",
            "Deliveries outside the browser, by channel (email, slack, teams) and outcome: sent, \
             retry (failed, tried again), failed (failed, given up), dropped (never tried: queue \
             full or shutting down)",
            m.attempts.clone(),
        );
        registry.register(
            "vigia_gateway_channel_duplicates",
            "Notifications dispatched again to a channel that already had them (not sent again)",
            m.duplicates.clone(),
        );
        // Every series exists from the start, so that rates and alerts work before the first
        // failure.
        for kind in ChannelKind::ALL {
            for outcome in [
                Outcome::Sent,
                Outcome::Retry,
                Outcome::Failed,
                Outcome::Dropped,
            ] {
                let _ = m.attempts.get_or_create(&labels(kind, outcome));
            }
            let _ = m.duplicates.get_or_create(&ChannelLabel {
                channel: kind.as_str(),
            });
        }
        m
    }

    pub(crate) fn count(&self, kind: ChannelKind, outcome: Outcome) {
        self.attempts.get_or_create(&labels(kind, outcome)).inc();
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
