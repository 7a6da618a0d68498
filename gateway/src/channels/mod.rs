//! Channels outside the browser: selected notifications (by default `performance_alert` and
//! `daily_report`) also go out by **e-mail** (SMTP) and to **Slack** and **Microsoft Teams**
//! incoming webhooks, per tenant, as configured under `[gateway.channels]` ([`ChannelsConfig`]).
//!
//! ```toml
//! [gateway.channels]
//! timeout = "15s"           # per attempt
//! retry = { max_attempts = 8, initial_delay = "2s", max_delay = "5m" }
//!
//! [gateway.channels.tenants.42]
//! types = ["performance_alert", "daily_report"]   # the default
//! slack_webhooks = ["https://hooks.slack.com/services/T000/B000/XXXX"]
//! teams_webhooks = ["https://prod-00.westeurope.logic.azure.com/workflows/…"]
//!
//! [gateway.channels.tenants.42.email]
//! host = "smtp.example.com"
//! tls = "starttls"          # none | opportunistic | starttls (default) | implicit
//! port = 587                # default from tls: 25 / 587 / 465
//! username = "alertas@example.com"
//! password = "…"
//! from = "Vigía <alertas@example.com>"
//! to = ["Gerencia <gerencia@example.com>"]          # optional: fixed recipients
//!
//! # The address book: user id (the `sub` of their tokens) → address and role.
//! [gateway.channels.tenants.42.email.users]
//! 1001 = { address = "Ana Pérez <ceo@example.com>", role = "ceo" }
//! 1002 = { address = "gerente@example.com", role = "manager" }
//! 1010 = { address = "ventas1@example.com", role = "seller" }
//! ```
//!
//! **Who gets what.** A notification goes out only if its tenant is configured and its type is
//! one of the tenant's `types`; withdrawals never go out. Then:
//! - each Slack / Teams webhook gets it (they are channel-wide, not per user);
//! - each fixed address of `to` gets it by e-mail (a shared mailbox, an archive), whatever
//!   anybody's preferences;
//! - each user of the address book gets it by e-mail if the notification is addressed to them
//!   by the same rule as the inbox ([`crate::can_see`]: their user id, their role, and CEOs and
//!   managers see everything of their tenant) **and** their stored preferences ask for it
//!   ([`crate::preferences::email_at`]: `email: true`, the type enabled, the priority at least
//!   their minimum). Without stored preferences a user has their role's defaults, where
//!   e-mail is off. **Quiet hours and days off defer** the e-mail to the first instant outside
//!   them in the user's time zone (a daily report at 08:00 reaches a CEO quiet until 09:00 at
//!   09:00); the decision is taken when the notification is stored, with the preferences of
//!   that moment. An address listed twice (in `to` and for a user, or for two users) gets one
//!   e-mail.
//!
//! **The durable outbox.** When the gateway stores a new notification in the inbox it records,
//! in the same database transaction, one row per delivery — (notification id, channel,
//! recipient), unique — in `channel_outbox` (see `inbox/outbox.rs`). A notification is thus
//! never stored without its deliveries, and one the consumer reads again (after a restart or
//! a rebalance) is already stored and queues nothing again. One worker per channel (a tenant's
//! e-mail, or one webhook URL) takes its due rows oldest first, attempts each, and marks it
//! `sent`, or schedules the next attempt, or marks it `failed`; when the gateway starts, the
//! workers resume every pending row, with its attempts so far and its next attempt time. So a
//! restart neither drops nor repeats a delivery, with one exception: if the gateway dies
//! between the receiver's OK and the row being marked sent, the delivery is attempted again
//! after the restart and the receiver sees it twice — receivers that care dedupe on the id
//! the message carries. Sent rows are kept as the record of what went out for `keep_sent`
//! (default 7 days), then deleted; failed ones are kept.
//!
//! **Several instances** on one PostgreSQL inbox each run every worker; a worker leases the row
//! it attempts (`lease`, default 60 s, longer than `timeout`; see `inbox/outbox.rs`), so each
//! delivery is attempted by one instance at a time, and a delivery held by an instance that died
//! is taken over by another once its lease is over.
//!
//! - **Retries**: an attempt that fails with a transient error (connection refused or reset,
//!   time-out, SMTP 4xx, HTTP 408/425/429/5xx) is retried with exponential backoff
//!   ([`RetryConfig`]; an HTTP `Retry-After` in seconds is honoured up to `max_delay`); a
//!   permanent error (SMTP 5xx, any other HTTP 4xx) is not retried. Each attempt is bounded by
//!   `timeout`. A row in backoff does not hold up the channel's other rows. Failed rows stay
//!   failed (an operator can set them back to `pending`).
//! - **Isolation**: storing a notification never waits for a channel; a slow, failing or hung
//!   channel delays neither the inbox nor another channel (each has its own worker).
//! - **Ids for the receivers**: the e-mail's `Message-ID` is `<{id}.vigia@{domain of from}>`
//!   and it carries `X-Vigia-Notification-Id` (and `-Type`, and `Auto-Submitted:
//!   auto-generated`); webhook payloads carry a top-level `vigia_notification_id`, and the id is
//!   shown in the message's footer. Slack and Teams themselves do not dedupe.
//! - **Texts**: the notification's own title and message (Spanish by default, produced by the
//!   processors), with a Spanish footer; `data` is rendered generically as key/value lines
//!   (plain text and an HTML table in the e-mail, a section in Slack, lines in Teams). Text from
//!   CRM data is shown as written: HTML-escaped in the e-mail; in Slack only in `plain_text`
//!   objects (and the top-level `text` with `"mrkdwn": false` and `&`, `<`, `>` escaped); in
//!   Teams only in `TextRun`s, which are not Markdown. So a seller named
//!   `[Reautentique](https://evil.example)` or `<!channel>` is neither a link nor a mention.
//! - **Metrics**: `vigia_gateway_channel_attempts_total{channel="email|slack|teams",
//!   outcome="sent|retry|failed"}`, `vigia_gateway_channel_queued_total{channel}` and
//!   `vigia_gateway_channel_duplicates_total{channel}`.
//! - **Secrets**: the SMTP password and the webhook URLs (which are credentials) are never shown
//!   by `Debug` or the logs (URLs appear as `https://host/…`) nor stored: a webhook's outbox
//!   rows name it by an id derived from its URL. Rows of a webhook (or a tenant's e-mail) no
//!   longer configured stay pending, with a warning at start, and resume if it comes back.
//!
//! What it does not (honestly): exactly-once at the receiver (above); re-checking preferences
//! when a deferred e-mail's time comes; ordering between channels, delivery receipts,
//! connection pooling (one SMTP connection per e-mail: alerts are rare), English texts.

mod config;
mod delivery;
mod metrics;
pub mod render;
mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigia_schemas::{Notification, NotificationType, Role, TenantId, UserId};

pub use config::{
    ChannelsConfig, EmailChannel, EmailUser, RetryConfig, Secret, SmtpTls, TenantChannels,
};

use crate::audience::{can_see, Viewer};
use crate::inbox::{Inbox, InboxError, Inserted, KafkaPosition, OutboxEntry};
use delivery::{Deliver, Selection, Settings, Worker};
use metrics::ChannelMetrics;

/// The kinds of channel outside the browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    Email,
    Slack,
    Teams,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 3] = [ChannelKind::Email, ChannelKind::Slack, ChannelKind::Teams];

    /// The `channel` label of the metrics and the outbox.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Slack => "slack",
            ChannelKind::Teams => "teams",
        }
    }

    fn parse(s: &str) -> Option<ChannelKind> {
        ChannelKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelsError {
    /// Every problem found, each starting with its path (`gateway.channels.tenants.42.…`).
    #[error("invalid channels configuration: {0}")]
    Config(String),
    #[error("cannot build the HTTP client of the webhooks: {0}")]
    Http(String),
    #[error(transparent)]
    Inbox(#[from] InboxError),
}

/// The outbox recipient of a webhook: an id derived from its URL (the URL itself is a
/// credential and is not stored).
pub fn webhook_recipient(url: &str) -> String {
    vigia_schemas::derive_id("channel_webhook", &[url.trim()]).to_string()
}

/// What [`Dispatcher::store`] recorded for one notification, counted in deliveries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dispatched {
    /// Recorded in the outbox, due now.
    pub queued: usize,
    /// Recorded, but deferred by the recipient's quiet hours or day off.
    pub deferred: usize,
    /// The notification was already stored: its deliveries were not recorded again.
    pub duplicates: usize,
}

/// The outcome of [`Dispatcher::store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// As [`Inbox::insert`]: `None` if the notification was already stored.
    pub inserted: Option<Inserted>,
    pub dispatched: Dispatched,
    /// The inbox's newest sequence when this was committed (see [`crate::Inbox::store`]).
    pub through: i64,
}

/// One address-book entry, ready for the audience rule.
struct BookEntry {
    user: UserId,
    role: Role,
    address: String,
}

struct Route {
    types: Vec<NotificationType>,
    /// The fixed addresses and the address book, if the tenant has e-mail.
    email: Option<(Vec<String>, Vec<BookEntry>)>,
    /// (kind, outbox recipient) of each webhook.
    webhooks: Vec<(ChannelKind, String)>,
}

struct Inner {
    inbox: Inbox,
    routes: HashMap<TenantId, Route>,
    /// Each worker's wake-up, by what it takes.
    wakes: HashMap<Selection, Arc<Notify>>,
    metrics: ChannelMetrics,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Deletes the `sent` outbox rows older than `keep_sent`, at start and then every `keep_sent / 4`
/// (between a second and an hour). Every instance does: deleting is idempotent.
async fn clean_sent(inbox: Inbox, keep_sent: std::time::Duration, shutdown: CancellationToken) {
    let every = (keep_sent / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
    );
    let keep = chrono::Duration::from_std(keep_sent).unwrap_or(chrono::Duration::MAX);
    loop {
        let cutoff = Utc::now()
            .checked_sub_signed(keep)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        match inbox.outbox_delete_sent_before(cutoff).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(
                deleted,
                "deleted sent deliveries older than channels.keep_sent"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot delete old sent deliveries; will retry"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Stores notifications with their deliveries outside the browser, and sends those from the
/// outbox in the background. Cheap to clone. Its workers stop when the `shutdown` token given
/// to [`Dispatcher::start`] is cancelled ([`Dispatcher::stopped`] waits for them).
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut tenants: Vec<_> = self.inner.routes.keys().collect();
        tenants.sort();
        f.debug_struct("Dispatcher")
            .field("tenants", &tenants)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Validates `cfg`, registers the metrics in `registry` and spawns one worker per channel,
    /// which at once resume the channel's pending deliveries in `inbox`. Must be called within
    /// a Tokio runtime. With no tenant configured it records and sends nothing (and
    /// [`Dispatcher::is_enabled`] is false), but still stores notifications.
    pub async fn start(
        cfg: ChannelsConfig,
        inbox: Inbox,
        registry: &mut Registry,
        shutdown: CancellationToken,
    ) -> Result<Dispatcher, ChannelsError> {
        cfg.validate()?;
        let has_webhooks = cfg
            .tenants
            .values()
            .any(|t| !t.slack_webhooks.is_empty() || !t.teams_webhooks.is_empty());
        let client = if has_webhooks {
            Some(transport::http_client(cfg.timeout)?)
        } else {
            None
        };
        let timeout = cfg.timeout;
        Self::start_with(cfg, inbox, registry, shutdown, |spec| {
            Ok(match spec.kind {
                ChannelKind::Email => {
                    let email = spec.email.expect("an email spec has its settings");
                    Arc::new(transport::SmtpSender::new(spec.tenant, email, timeout)?)
                }
                kind => {
                    let url = reqwest::Url::parse(spec.url.expect("a webhook spec has its URL"))
                        .map_err(|e| ChannelsError::Config(format!("{}: {e}", spec.path)))?;
                    let client = client.clone().expect("built when there are webhooks");
                    Arc::new(transport::WebhookSender::new(kind, client, url))
                }
            })
        })
        .await
    }

    /// [`Dispatcher::start`] with the I/O of each channel given by `make` (tests).
    async fn start_with(
        cfg: ChannelsConfig,
        inbox: Inbox,
        registry: &mut Registry,
        shutdown: CancellationToken,
        mut make: impl FnMut(&Spec<'_>) -> Result<Arc<dyn Deliver>, ChannelsError>,
    ) -> Result<Dispatcher, ChannelsError> {
        cfg.validate()?;
        let metrics = ChannelMetrics::register(registry);
        let settings = Settings {
            timeout: cfg.timeout,
            retry: cfg.retry.clone(),
            lease: cfg.lease,
            owner: uuid::Uuid::new_v4().simple().to_string().into(),
        };
        let mut routes = HashMap::new();
        let mut specs = Vec::new();
        for (&tenant, t) in &cfg.tenants {
            let mut route = Route {
                types: t.types.clone(),
                email: None,
                webhooks: Vec::new(),
            };
            if let Some(email) = &t.email {
                let book = email
                    .users
                    .iter()
                    .filter_map(|(&user, entry)| {
                        Some(BookEntry {
                            user,
                            role: entry.role()?,
                            address: entry.address.trim().to_string(),
                        })
                    })
                    .collect();
                let to = email.to.iter().map(|a| a.trim().to_string()).collect();
                route.email = Some((to, book));
                specs.push(Spec {
                    tenant,
                    kind: ChannelKind::Email,
                    path: format!("gateway.channels.tenants.{tenant}.email"),
                    label: format!(
                        "tenant {tenant} email ({}:{}, {} fixed recipient(s), {} user(s))",
                        email.host,
                        email.port(),
                        email.to.len(),
                        email.users.len()
                    ),
                    recipient: None,
                    email: Some(email),
                    url: None,
                });
            }
            for (kind, field, urls) in [
                (ChannelKind::Slack, "slack_webhooks", &t.slack_webhooks),
                (ChannelKind::Teams, "teams_webhooks", &t.teams_webhooks),
            ] {
                for (i, url) in urls.iter().enumerate() {
                    let recipient = webhook_recipient(url);
                    route.webhooks.push((kind, recipient.clone()));
                    specs.push(Spec {
                        tenant,
                        kind,
                        path: format!("gateway.channels.tenants.{tenant}.{field}[{i}]"),
                        label: format!(
                            "tenant {tenant} {field}[{i}] ({})",
                            config::redact_url(url)
                        ),
                        recipient: Some(recipient),
                        email: None,
                        url: Some(url),
                    });
                }
            }
            routes.insert(tenant, route);
        }
        // Build every sender before spawning anything: an error leaves no task behind.
        let senders = specs
            .iter()
            .map(|spec| make(spec).map(|s| (spec, s)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut wakes = HashMap::new();
        let mut workers = Vec::new();
        for (spec, sender) in senders {
            let selection = Selection {
                tenant: spec.tenant,
                kind: spec.kind,
                recipient: spec.recipient.clone(),
            };
            let wake = Arc::new(Notify::new());
            wakes.insert(selection.clone(), wake.clone());
            tracing::info!(channel = %spec.label, "notification channel ready");
            workers.push(Worker {
                selection,
                label: spec.label.clone().into(),
                sender,
                settings: settings.clone(),
                inbox: inbox.clone(),
                metrics: metrics.clone(),
                wake,
            });
        }
        let inner = Inner {
            inbox,
            routes,
            wakes,
            metrics,
            tasks: Mutex::new(Vec::new()),
        };
        inner.warn_about_unconfigured_pending().await;
        let cleaner = tokio::spawn(clean_sent(
            inner.inbox.clone(),
            cfg.keep_sent,
            shutdown.clone(),
        ));
        let tasks = workers
            .into_iter()
            .map(|w| tokio::spawn(w.run(shutdown.clone())))
            .chain([cleaner])
            .collect();
        *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(Dispatcher {
            inner: Arc::new(inner),
        })
    }

    /// Whether any tenant has a channel.
    pub fn is_enabled(&self) -> bool {
        !self.inner.routes.is_empty()
    }

    /// Stores `n` in the inbox if it is new and, in the same transaction, its deliveries
    /// outside the browser ([`Dispatcher::plan`]); wakes the channels that have new work.
    /// Never waits for a channel.
    pub async fn store(&self, n: &Notification) -> Result<Stored, InboxError> {
        let now = Utc::now();
        let planned = self.plan(n, now).await?;
        let entries: Vec<OutboxEntry> = planned.iter().map(|(_, e)| e.clone()).collect();
        let mut stored = self.inner.inbox.store(&[(n, &entries)], &[]).await?;
        let inserted = stored.inserted.pop().flatten();
        Ok(self.stored(n, &planned, inserted, now, stored.through))
    }

    /// [`Dispatcher::store`] of each of `batch`, in one inbox transaction (all or none), which
    /// also advances the stored Kafka positions to `offsets`.
    pub async fn store_many(
        &self,
        batch: &[Notification],
        offsets: &[KafkaPosition],
    ) -> Result<Vec<Stored>, InboxError> {
        let now = Utc::now();
        let mut plans = Vec::with_capacity(batch.len());
        for n in batch {
            let planned = self.plan(n, now).await?;
            let entries: Vec<OutboxEntry> = planned.iter().map(|(_, e)| e.clone()).collect();
            plans.push((planned, entries));
        }
        let items: Vec<(&Notification, &[OutboxEntry])> = batch
            .iter()
            .zip(&plans)
            .map(|(n, (_, entries))| (n, entries.as_slice()))
            .collect();
        let stored = self.inner.inbox.store(&items, offsets).await?;
        let through = stored.through;
        Ok(batch
            .iter()
            .zip(plans)
            .zip(stored.inserted)
            .map(|((n, (planned, _)), inserted)| self.stored(n, &planned, inserted, now, through))
            .collect())
    }

    /// Counts what was stored and wakes the channels that have new work.
    fn stored(
        &self,
        n: &Notification,
        planned: &[(ChannelKind, OutboxEntry)],
        inserted: Option<Inserted>,
        now: DateTime<Utc>,
        through: i64,
    ) -> Stored {
        let mut dispatched = Dispatched::default();
        match inserted {
            None => {
                for (kind, _) in planned {
                    self.inner.metrics.duplicate(*kind);
                }
                dispatched.duplicates = planned.len();
            }
            Some(i) if i.deliveries > 0 => {
                for (kind, entry) in planned {
                    self.inner.metrics.queued(*kind, 1);
                    if entry.not_before > now {
                        dispatched.deferred += 1;
                    } else {
                        dispatched.queued += 1;
                    }
                    let selection = Selection {
                        tenant: n.tenant_id,
                        kind: *kind,
                        recipient: (*kind != ChannelKind::Email).then(|| entry.recipient.clone()),
                    };
                    if let Some(wake) = self.inner.wakes.get(&selection) {
                        wake.notify_one();
                    }
                }
            }
            Some(_) => {}
        }
        Stored {
            inserted,
            dispatched,
            through,
        }
    }

    /// Where `n` goes outside the browser, decided at `now` (module docs): one entry per
    /// (channel, recipient), each with the time it may be sent. Reads the preferences of the
    /// address-book users who may see `n`; does no other I/O.
    pub(crate) async fn plan(
        &self,
        n: &Notification,
        now: DateTime<Utc>,
    ) -> Result<Vec<(ChannelKind, OutboxEntry)>, InboxError> {
        let Some(route) = self.inner.routes.get(&n.tenant_id) else {
            return Ok(vec![]);
        };
        if n.withdraws.is_some() || !route.types.contains(&n.kind) {
            return Ok(vec![]);
        }
        let entry = |kind: ChannelKind, recipient: &str, user_id, not_before| OutboxEntry {
            channel: kind.as_str(),
            recipient: recipient.to_string(),
            user_id,
            not_before,
        };
        let mut out: Vec<(ChannelKind, OutboxEntry)> = route
            .webhooks
            .iter()
            .map(|(kind, recipient)| (*kind, entry(*kind, recipient, None, now)))
            .collect();
        if let Some((fixed, book)) = &route.email {
            let email = ChannelKind::Email;
            let mut emails: Vec<OutboxEntry> =
                fixed.iter().map(|to| entry(email, to, None, now)).collect();
            for e in book {
                let viewer = Viewer {
                    tenant_id: n.tenant_id,
                    user_id: e.user,
                    role: e.role,
                };
                if !can_see(&viewer, n.tenant_id, &n.audience) {
                    continue;
                }
                let prefs = self.inner.inbox.preferences(&viewer).await?;
                if let Some(at) = crate::preferences::email_at(&prefs, n, now) {
                    emails.push(entry(email, &e.address, Some(e.user), at));
                }
            }
            // One e-mail per address (`Ana <ana@x>` and `ANA@x` are one): the earliest wins (a
            // fixed recipient is never deferred).
            emails.sort_by_cached_key(|e| (address_key(&e.recipient), e.not_before));
            emails.dedup_by(|later, first| {
                address_key(&later.recipient) == address_key(&first.recipient)
            });
            out.extend(emails.into_iter().map(|e| (email, e)));
        }
        Ok(out)
    }

    /// Waits until every worker has stopped (after the shutdown token was cancelled).
    pub async fn stopped(&self) {
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// The address of a mailbox (`Ana <Ana@Example.com>` → `ana@example.com`), to compare.
fn address_key(mailbox: &str) -> String {
    mailbox
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.to_string())
        .unwrap_or_else(|_| mailbox.trim().to_string())
        .to_lowercase()
}

impl Inner {
    /// Logs the pending deliveries that no worker takes (their channel is no longer
    /// configured): they stay in the outbox and resume if it comes back.
    async fn warn_about_unconfigured_pending(&self) {
        let pending = match self.inbox.outbox_pending().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the channel outbox at start");
                return;
            }
        };
        for (tenant, channel, recipient, count) in pending {
            let taken = ChannelKind::parse(&channel).is_some_and(|kind| {
                let recipient = (kind != ChannelKind::Email).then_some(recipient.clone());
                self.wakes.contains_key(&Selection {
                    tenant,
                    kind,
                    recipient,
                })
            });
            if !taken {
                tracing::warn!(
                    tenant_id = tenant,
                    channel,
                    count,
                    "deliveries pending in the channel outbox for a channel no longer configured; \
                     they stay there and are sent if it is configured again"
                );
            }
        }
    }
}

/// What a channel's I/O is built from.
struct Spec<'a> {
    tenant: TenantId,
    kind: ChannelKind,
    /// Config path, for errors.
    path: String,
    /// For logs; no secret.
    label: String,
    /// The outbox recipient a webhook's worker takes (`None`: any, the e-mail's worker).
    recipient: Option<String>,
    email: Option<&'a EmailChannel>,
    url: Option<&'a str>,
}

#[cfg(test)]
mod tests;
