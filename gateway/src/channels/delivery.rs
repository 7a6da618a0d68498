//! One channel: its queue, the ids it recently took, and the task that delivers with retries.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vigia_schemas::Notification;

use super::config::RetryConfig;
use super::metrics::{ChannelMetrics, Outcome};
use super::ChannelKind;

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeliveryError {
    /// Trying again will not help (SMTP 5xx, HTTP 4xx other than 408/429, a message that cannot
    /// be built): given up at once.
    pub(crate) permanent: bool,
    /// The receiver asked to wait this long (HTTP `Retry-After`).
    pub(crate) retry_after: Option<Duration>,
    pub(crate) reason: String,
}

impl DeliveryError {
    pub(crate) fn transient(reason: impl Into<String>) -> Self {
        DeliveryError {
            permanent: false,
            retry_after: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError {
            permanent: true,
            retry_after: None,
            reason: reason.into(),
        }
    }
}

/// The I/O of a channel: one attempt to deliver one notification. SMTP and webhooks implement
/// it (`transport.rs`); tests put counting fakes behind it.
pub(crate) trait Deliver: Send + Sync + 'static {
    fn deliver<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// A bounded set of notification ids, forgetting the oldest first.
#[derive(Debug)]
pub(crate) struct Recent {
    capacity: usize,
    ids: HashSet<Uuid>,
    order: VecDeque<Uuid>,
}

impl Recent {
    pub(crate) fn new(capacity: usize) -> Recent {
        Recent {
            capacity: capacity.max(1),
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains(id)
    }

    /// Remembers `id`; false if it already was. Forgets the oldest beyond the capacity.
    pub(crate) fn insert(&mut self, id: Uuid) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }

    /// Forgets `id` (its delivery failed for good: a later dispatch may try again).
    pub(crate) fn remove(&mut self, id: &Uuid) {
        if self.ids.remove(id) {
            self.order.retain(|x| x != id);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// What [`Channel::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    Duplicate,
    /// Queue full, or the channel's task has stopped.
    Dropped,
}

/// The caller's side of one channel.
pub(crate) struct Channel {
    pub(crate) kind: ChannelKind,
    /// `tenant 42 slack_webhooks[0] (https://hooks.slack.com/…)`: for logs, never a secret.
    pub(crate) label: Arc<str>,
    tx: mpsc::Sender<Arc<Notification>>,
    /// Ids queued, being delivered or sent (shared with the task).
    recent: Arc<Mutex<Recent>>,
    metrics: ChannelMetrics,
}

impl Channel {
    /// Creates the channel and spawns its delivery task (needs a Tokio runtime).
    pub(crate) fn spawn(
        kind: ChannelKind,
        label: String,
        sender: Arc<dyn Deliver>,
        settings: Settings,
        metrics: ChannelMetrics,
        shutdown: CancellationToken,
    ) -> Channel {
        let (tx, rx) = mpsc::channel(settings.queue_size.max(1));
        let recent = Arc::new(Mutex::new(Recent::new(settings.dedupe_window)));
        let label: Arc<str> = label.into();
        let worker = Worker {
            kind,
            label: label.clone(),
            sender,
            retry: settings.retry,
            timeout: settings.timeout,
            recent: recent.clone(),
            metrics: metrics.clone(),
        };
        tokio::spawn(worker.run(rx, shutdown));
        Channel {
            kind,
            label,
            tx,
            recent,
            metrics,
        }
    }

    /// Queues `n` unless this channel already has it; never waits.
    pub(crate) fn offer(&self, n: &Arc<Notification>) -> Offer {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.contains(&n.id) {
            self.metrics.duplicate(self.kind);
            tracing::debug!(channel = %self.label, id = %n.id, "already sent or queued; not sent again");
            return Offer::Duplicate;
        }
        match self.tx.try_send(n.clone()) {
            Ok(()) => {
                recent.insert(n.id);
                Offer::Queued
            }
            Err(e) => {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => {
                        "queue full (the channel is slow or down)"
                    }
                    mpsc::error::TrySendError::Closed(_) => "channel stopped (shutting down)",
                };
                self.metrics.count(self.kind, Outcome::Dropped);
                tracing::warn!(channel = %self.label, id = %n.id, kind = n.kind.as_str(), "notification dropped: {why}");
                Offer::Dropped
            }
        }
    }
}

/// Per-channel settings, from [`super::ChannelsConfig`].
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) queue_size: usize,
    pub(crate) dedupe_window: usize,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryConfig,
}

/// How one notification ended on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Sent,
    Failed,
    ShutDown,
}

struct Worker {
    kind: ChannelKind,
    label: Arc<str>,
    sender: Arc<dyn Deliver>,
    retry: RetryConfig,
    timeout: Duration,
    recent: Arc<Mutex<Recent>>,
    metrics: ChannelMetrics,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Arc<Notification>>, shutdown: CancellationToken) {
        loop {
            let n = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                n = rx.recv() => match n {
                    Some(n) => n,
                    None => break,
                },
            };
            if self.deliver(&n, &shutdown).await == Ended::ShutDown {
                break;
            }
        }
        // Whatever is still queued is lost: queues live in memory only.
        rx.close();
        let mut lost = 0u64;
        while rx.try_recv().is_ok() {
            lost += 1;
            self.metrics.count(self.kind, Outcome::Dropped);
        }
        if lost > 0 {
            tracing::warn!(channel = %self.label, lost, "shutting down: queued notifications not sent");
        }
    }

    /// Attempts until sent, failed for good, out of attempts, or shut down.
    async fn deliver(&self, n: &Notification, shutdown: &CancellationToken) -> Ended {
        let max = self.retry.max_attempts.max(1);
        for attempt in 1..=max {
            let result = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ended::ShutDown,
                r = tokio::time::timeout(self.timeout, self.sender.deliver(n)) => r,
            };
            let err = match result {
                Ok(Ok(())) => {
                    self.metrics.count(self.kind, Outcome::Sent);
                    tracing::info!(channel = %self.label, id = %n.id, kind = n.kind.as_str(), attempt, "notification sent");
                    return Ended::Sent;
                }
                Ok(Err(e)) => e,
                Err(_) => DeliveryError::transient(format!("no answer within {:?}", self.timeout)),
            };
            if err.permanent || attempt == max {
                self.metrics.count(self.kind, Outcome::Failed);
                tracing::error!(
                    channel = %self.label, id = %n.id, kind = n.kind.as_str(), attempt,
                    permanent = err.permanent, "notification not sent, giving up: {}", err.reason
                );
                // A later dispatch of the same notification (e.g. after a restart of the
                // consumer) may try again.
                self.recent
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&n.id);
                return Ended::Failed;
            }
            self.metrics.count(self.kind, Outcome::Retry);
            let delay = backoff(&self.retry, attempt, err.retry_after);
            tracing::warn!(
                channel = %self.label, id = %n.id, attempt,
                retry_in = ?delay, "delivery failed, will retry: {}", err.reason
            );
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ended::ShutDown,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        unreachable!("the last attempt returns")
    }
}

/// The wait after failed attempt `attempt`: the backoff schedule, or the receiver's
/// `Retry-After` if longer, never more than `max_delay`.
pub(crate) fn backoff(
    retry: &RetryConfig,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let scheduled = retry.delay(attempt);
    retry_after
        .map_or(scheduled, |asked| asked.max(scheduled))
        .min(retry.max_delay)
}
