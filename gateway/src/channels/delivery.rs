//! One channel's worker: it takes the channel's due deliveries from the outbox, one at a time,
//! attempts each with a time limit, and records the outcome (sent, retry later, failed).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use vigia_schemas::{Notification, TenantId};

use super::config::RetryConfig;
use super::metrics::{ChannelMetrics, Outcome};
use super::ChannelKind;
use crate::inbox::{DueDelivery, Inbox, InboxError};

/// Longest a worker sleeps without looking at the outbox (a safety net: new deliveries wake it;
/// those stored by another instance are found this way).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Waits after a database error, doubling up to `MAX_DB_BACKOFF`.
const DB_BACKOFF: Duration = Duration::from_millis(200);
const MAX_DB_BACKOFF: Duration = Duration::from_secs(5);
/// How long after shutdown a worker still tries to record a delivery it has just made.
const SENT_GRACE: Duration = Duration::from_secs(5);

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

/// The I/O of a channel: one attempt to deliver one notification to one recipient (an e-mail
/// address; webhooks have one recipient, themselves, and ignore it). SMTP and webhooks
/// implement it (`transport.rs`); tests put counting fakes behind it.
pub(crate) trait Deliver: Send + Sync + 'static {
    fn deliver<'a>(
        &'a self,
        n: &'a Notification,
        recipient: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// Attempts and backoff, from [`super::ChannelsConfig`].
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryConfig,
    /// How long a delivery being attempted is held (see `inbox/outbox.rs`).
    pub(crate) lease: Duration,
    /// This dispatcher's name on the leases it holds: unique per running dispatcher.
    pub(crate) owner: Arc<str>,
}

/// The deliveries one worker takes: its tenant's, of its channel, to its recipient (a webhook)
/// or to any (the tenant's e-mail).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Selection {
    pub(crate) tenant: TenantId,
    pub(crate) kind: ChannelKind,
    pub(crate) recipient: Option<String>,
}

pub(crate) struct Worker {
    pub(crate) selection: Selection,
    /// `tenant 42 slack_webhooks[0] (https://hooks.slack.com/…)`: for logs, never a secret.
    pub(crate) label: Arc<str>,
    pub(crate) sender: Arc<dyn Deliver>,
    pub(crate) settings: Settings,
    pub(crate) inbox: Inbox,
    pub(crate) metrics: ChannelMetrics,
    /// Notified when a delivery of this selection is recorded.
    pub(crate) wake: Arc<Notify>,
}

impl Worker {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let sel = &self.selection;
        let mut db_backoff = DB_BACKOFF;
        while !shutdown.is_cancelled() {
            let due = self
                .inbox
                .outbox_claim_due(
                    sel.tenant,
                    sel.kind.as_str(),
                    sel.recipient.as_deref(),
                    Utc::now(),
                    &self.settings.owner,
                    self.settings.lease,
                )
                .await;
            let wait = match due {
                Ok(Some(delivery)) => {
                    db_backoff = DB_BACKOFF;
                    if !self.attempt(delivery, &shutdown).await {
                        break;
                    }
                    continue;
                }
                Ok(None) => match self.until_next().await {
                    Ok(wait) => {
                        db_backoff = DB_BACKOFF;
                        wait
                    }
                    Err(e) => self.db_trouble(&e, &mut db_backoff),
                },
                Err(e) => self.db_trouble(&e, &mut db_backoff),
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::debug!(channel = %self.label, "channel worker stopped");
    }

    fn db_trouble(&self, e: &InboxError, backoff: &mut Duration) -> Duration {
        tracing::warn!(channel = %self.label, error = %e, retry_in = ?backoff, "cannot read the channel outbox; will retry");
        let wait = *backoff;
        *backoff = (*backoff * 2).min(MAX_DB_BACKOFF);
        wait
    }

    /// How long until the next pending delivery is due (at most [`IDLE_POLL`]).
    async fn until_next(&self) -> Result<Duration, InboxError> {
        let sel = &self.selection;
        let next = self
            .inbox
            .outbox_next_time(sel.tenant, sel.kind.as_str(), sel.recipient.as_deref())
            .await?;
        Ok(match next {
            None => IDLE_POLL,
            Some(at) => (at - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                // Millisecond rounding: never spin just before the due time.
                .saturating_add(Duration::from_millis(1))
                .min(IDLE_POLL),
        })
    }

    /// One attempt of `d` and its outcome recorded. False if shutdown interrupted it (the
    /// delivery stays pending, to be attempted after the restart).
    async fn attempt(&self, d: DueDelivery, shutdown: &CancellationToken) -> bool {
        let kind = self.selection.kind;
        let id = d.id;
        let attempt = d.attempts.saturating_add(1);
        let n = match &d.notification {
            Ok(n) => n,
            Err(why) => {
                let reason = why.to_string();
                tracing::error!(channel = %self.label, delivery = id, "{reason}");
                return self.give_up(shutdown, id, attempt, reason).await;
            }
        };
        let result = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                // Interrupted: left for the next start (or another instance) at once, not
                // after the lease. Best effort: the lease ends anyway.
                let _ = self.inbox.outbox_release(id, &self.settings.owner).await;
                return false;
            }
            r = tokio::time::timeout(self.settings.timeout, self.sender.deliver(n, &d.recipient)) => r,
        };
        let err = match result {
            Ok(Ok(())) => {
                tracing::info!(channel = %self.label, id = %n.id, kind = n.kind.as_str(), attempt, "notification sent");
                // Recorded even if shutdown is requested meanwhile (a restart must not send it
                // again), unless the database stays unreachable for a while after it.
                let grace = CancellationToken::new();
                let guard = tokio::spawn({
                    let (grace, shutdown) = (grace.clone(), shutdown.clone());
                    async move {
                        shutdown.cancelled().await;
                        tokio::time::sleep(SENT_GRACE).await;
                        grace.cancel();
                    }
                });
                let owner = self.settings.owner.clone();
                let recorded = self
                    .record(&grace, |inbox| {
                        let owner = owner.clone();
                        async move { inbox.outbox_mark_sent(id, &owner, attempt).await }
                    })
                    .await;
                guard.abort();
                // Counted once recorded (the metrics never run ahead of the outbox).
                self.metrics.count(kind, Outcome::Sent);
                if !recorded {
                    tracing::error!(channel = %self.label, id = %n.id, "sent, but the outbox could not record it: it will be sent again after the restart");
                }
                return recorded && !shutdown.is_cancelled();
            }
            Ok(Err(e)) => e,
            Err(_) => {
                DeliveryError::transient(format!("no answer within {:?}", self.settings.timeout))
            }
        };
        let max = self.settings.retry.max_attempts.max(1);
        if err.permanent || attempt >= max {
            tracing::error!(
                channel = %self.label, id = %n.id, kind = n.kind.as_str(), attempt,
                permanent = err.permanent, "notification not sent, giving up: {}", err.reason
            );
            return self
                .give_up(shutdown, id, attempt, err.reason.clone())
                .await;
        }
        let delay = backoff(&self.settings.retry, attempt, err.retry_after);
        tracing::warn!(
            channel = %self.label, id = %n.id, attempt,
            retry_in = ?delay, "delivery failed, will retry: {}", err.reason
        );
        let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        let reason = err.reason;
        let recorded = self
            .record(shutdown, |inbox| {
                let (reason, owner) = (reason.clone(), self.settings.owner.clone());
                async move {
                    inbox
                        .outbox_mark_retry(id, &owner, attempt, next, &reason)
                        .await
                }
            })
            .await;
        self.metrics.count(kind, Outcome::Retry);
        recorded
    }

    /// Marks delivery `id` failed for good after `attempt` attempts, and counts it.
    async fn give_up(
        &self,
        shutdown: &CancellationToken,
        id: i64,
        attempt: u32,
        reason: String,
    ) -> bool {
        let recorded = self
            .record(shutdown, |inbox| {
                let (reason, owner) = (reason.clone(), self.settings.owner.clone());
                async move { inbox.outbox_mark_failed(id, &owner, attempt, &reason).await }
            })
            .await;
        self.metrics.count(self.selection.kind, Outcome::Failed);
        recorded
    }

    /// Runs `write` until the database takes it; false if `shutdown` came first. An outcome
    /// refused because the lease was lost (this attempt outlived it: the database was
    /// unreachable for that long) is logged: another instance owns the delivery now.
    async fn record<F, Fut>(&self, shutdown: &CancellationToken, write: F) -> bool
    where
        F: Fn(Inbox) -> Fut,
        Fut: std::future::Future<Output = Result<bool, InboxError>>,
    {
        let mut backoff = DB_BACKOFF;
        loop {
            match write(self.inbox.clone()).await {
                Ok(true) => return true,
                Ok(false) => {
                    tracing::warn!(channel = %self.label, "the delivery's lease ran out before its outcome was recorded; another instance may attempt it again");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(channel = %self.label, error = %e, retry_in = ?backoff, "cannot record a delivery's outcome; will retry");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_DB_BACKOFF);
                }
            }
        }
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
