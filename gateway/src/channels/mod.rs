//! Channels outside the browser: selected notifications (by default `performance_alert` and
//! `daily_report`) also go out by **e-mail** (SMTP) and to **Slack** and **Microsoft Teams**
//! incoming webhooks, per tenant, as configured under `[gateway.channels]` ([`ChannelsConfig`]).
//!
//! ```toml
//! [gateway.channels]
//! queue_size = 256          # per channel
//! dedupe_window = 10000     # ids remembered per channel
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
//! to = ["ceo@example.com", "Gerencia <gerencia@example.com>"]
//! ```
//!
//! What it does:
//! - **A channel** is the e-mail of a tenant (one message to all of `to`) or one webhook URL.
//!   Each has its own bounded queue and its own delivery task, so a slow, failing or hung
//!   channel never delays another one.
//! - [`Dispatcher::dispatch`] only looks the tenant up, and for each of its channels checks the
//!   id and tries to queue: it never waits and never does I/O, so the Kafka consumer can call it
//!   for every notification. A full queue drops the notification for that channel (counted as
//!   `dropped`, logged with the reason).
//! - **Retries**: an attempt that fails with a transient error (connection refused or reset,
//!   time-out, SMTP 4xx, HTTP 408/425/429/5xx) is retried with exponential backoff
//!   ([`RetryConfig`]; an HTTP `Retry-After` in seconds is honoured up to `max_delay`); a
//!   permanent error (SMTP 5xx, any other HTTP 4xx) is not retried. Each attempt is bounded by
//!   `timeout`.
//! - **Duplicates**: each channel remembers the ids of the last `dedupe_window` notifications it
//!   queued or sent, and ignores the same id dispatched again (the consumer sees a record again
//!   after a rebalance or restart). An id whose delivery failed for good is forgotten, so a
//!   later dispatch tries again.
//! - **Ids for the receivers**: the e-mail's `Message-ID` is `<{id}.vigia@{domain of from}>`
//!   and it carries `X-Vigia-Notification-Id` (and `-Type`, and `Auto-Submitted:
//!   auto-generated`); webhook payloads carry a top-level `vigia_notification_id`, and the id is
//!   shown in the message's footer.
//! - **Texts**: the notification's own title and message (Spanish by default, produced by the
//!   processors), with a Spanish footer; `data` is rendered generically as key/value lines
//!   (plain text and an HTML table in the e-mail, a section in Slack, a FactSet in Teams).
//! - **Metrics**: `vigia_gateway_channel_attempts_total{channel="email|slack|teams",
//!   outcome="sent|retry|failed|dropped"}` and `vigia_gateway_channel_duplicates_total{channel}`.
//! - **Secrets**: the SMTP password and the webhook URLs (which are credentials) are never shown
//!   by `Debug` or the logs (URLs appear as `https://host/…`).
//!
//! What it does not (honestly):
//! - **Exactly once across restarts.** The queues and the remembered ids live in memory: a
//!   notification queued but not yet sent when the process stops is lost for that channel
//!   (counted as `dropped`), and one sent just before a restart may be sent again if the
//!   consumer replays it. Receivers that care can dedupe on the id (mail systems on
//!   `Message-ID`, webhook consumers on `vigia_notification_id`); Slack and Teams themselves do
//!   not, so a replay after a restart can show a message twice there. The inbox remains the
//!   record of what was notified.
//! - Per-user choices: recipients are per tenant, not taken from the users' `email` preference,
//!   and quiet hours do not apply. Withdrawals (`withdraws: Some(_)`) are not sent.
//! - Ordering between channels, delivery receipts, connection pooling (one SMTP connection per
//!   e-mail: alerts are rare), English texts.

mod config;
mod delivery;
mod metrics;
pub mod render;
mod transport;

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use vigia_schemas::{Notification, NotificationType, TenantId};

pub use config::{ChannelsConfig, EmailChannel, RetryConfig, Secret, SmtpTls, TenantChannels};

use delivery::{Channel, Deliver, Offer, Settings};
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

    /// The `channel` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Slack => "slack",
            ChannelKind::Teams => "teams",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelsError {
    /// Every problem found, each starting with its path (`gateway.channels.tenants.42.…`).
    #[error("invalid channels configuration: {0}")]
    Config(String),
    #[error("cannot build the HTTP client of the webhooks: {0}")]
    Http(String),
}

/// What [`Dispatcher::dispatch`] did with one notification, counted in channels.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dispatched {
    /// Queued for delivery.
    pub queued: usize,
    /// The channel already had this notification id: not queued again.
    pub duplicates: usize,
    /// Not queued: the channel's queue was full (or it has stopped).
    pub dropped: usize,
}

struct Route {
    types: Vec<NotificationType>,
    channels: Vec<Channel>,
}

/// Sends selected notifications to the channels of their tenant, in the background. Cheap to
/// clone. Its delivery tasks stop when the `shutdown` token given to [`Dispatcher::start`] is
/// cancelled.
#[derive(Clone)]
pub struct Dispatcher {
    routes: Arc<HashMap<TenantId, Route>>,
    #[cfg_attr(not(test), allow(dead_code))]
    metrics: ChannelMetrics,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut tenants: Vec<_> = self.routes.keys().collect();
        tenants.sort();
        f.debug_struct("Dispatcher")
            .field("tenants", &tenants)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Validates `cfg`, registers the metrics in `registry` and spawns one delivery task per
    /// channel. Must be called within a Tokio runtime. With no tenant configured it sends
    /// nothing (and [`Dispatcher::is_enabled`] is false).
    pub fn start(
        cfg: ChannelsConfig,
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
        Self::start_with(cfg, registry, shutdown, |spec| {
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
    }

    /// [`Dispatcher::start`] with the I/O of each channel given by `make` (tests).
    fn start_with(
        cfg: ChannelsConfig,
        registry: &mut Registry,
        shutdown: CancellationToken,
        mut make: impl FnMut(&Spec<'_>) -> Result<Arc<dyn Deliver>, ChannelsError>,
    ) -> Result<Dispatcher, ChannelsError> {
        cfg.validate()?;
        let metrics = ChannelMetrics::register(registry);
        let settings = Settings {
            queue_size: cfg.queue_size,
            dedupe_window: cfg.dedupe_window,
            timeout: cfg.timeout,
            retry: cfg.retry.clone(),
        };
        let mut routes = HashMap::new();
        for (&tenant, t) in &cfg.tenants {
            let mut specs = Vec::new();
            if let Some(email) = &t.email {
                specs.push(Spec {
                    tenant,
                    kind: ChannelKind::Email,
                    path: format!("gateway.channels.tenants.{tenant}.email"),
                    label: format!(
                        "tenant {tenant} email ({}:{}, {} recipient(s))",
                        email.host,
                        email.port(),
                        email.to.len()
                    ),
                    email: Some(email),
                    url: None,
                });
            }
            for (kind, field, urls) in [
                (ChannelKind::Slack, "slack_webhooks", &t.slack_webhooks),
                (ChannelKind::Teams, "teams_webhooks", &t.teams_webhooks),
            ] {
                for (i, url) in urls.iter().enumerate() {
                    specs.push(Spec {
                        tenant,
                        kind,
                        path: format!("gateway.channels.tenants.{tenant}.{field}[{i}]"),
                        label: format!(
                            "tenant {tenant} {field}[{i}] ({})",
                            config::redact_url(url)
                        ),
                        email: None,
                        url: Some(url),
                    });
                }
            }
            // Build every sender before spawning anything: an error leaves no task behind.
            let senders = specs
                .iter()
                .map(|spec| make(spec).map(|s| (spec, s)))
                .collect::<Result<Vec<_>, _>>()?;
            let channels = senders
                .into_iter()
                .map(|(spec, sender)| {
                    tracing::info!(channel = %spec.label, "notification channel ready");
                    Channel::spawn(
                        spec.kind,
                        spec.label.clone(),
                        sender,
                        settings.clone(),
                        metrics.clone(),
                        shutdown.clone(),
                    )
                })
                .collect();
            routes.insert(
                tenant,
                Route {
                    types: t.types.clone(),
                    channels,
                },
            );
        }
        Ok(Dispatcher {
            routes: Arc::new(routes),
            metrics,
        })
    }

    /// Whether any tenant has a channel.
    pub fn is_enabled(&self) -> bool {
        !self.routes.is_empty()
    }

    /// Queues `n` on every channel of its tenant, if its type is one the tenant sends out.
    /// Never waits and does no I/O; the result is informative only (everything is also counted
    /// in the metrics). Withdrawals are not sent.
    pub fn dispatch(&self, n: &Notification) -> Dispatched {
        let mut done = Dispatched::default();
        let Some(route) = self.routes.get(&n.tenant_id) else {
            return done;
        };
        if n.withdraws.is_some() || !route.types.contains(&n.kind) {
            return done;
        }
        let shared = Arc::new(n.clone());
        for channel in &route.channels {
            match channel.offer(&shared) {
                Offer::Queued => done.queued += 1,
                Offer::Duplicate => done.duplicates += 1,
                Offer::Dropped => done.dropped += 1,
            }
        }
        done
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
    email: Option<&'a EmailChannel>,
    url: Option<&'a str>,
}

#[cfg(test)]
mod tests;
