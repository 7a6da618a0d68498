//! The pure parts and the dispatcher's behaviour, with counting fakes instead of I/O.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::json;
use uuid::Uuid;

use super::delivery::{backoff, DeliveryError, Recent};
use super::metrics::Outcome;
use super::*;

fn notification(tenant: TenantId, kind: NotificationType, id: u128) -> Notification {
    Notification {
        id: Uuid::from_u128(id),
        tenant_id: tenant,
        kind,
        ..render::tests::alert()
    }
}

const EXAMPLE: &str = r#"
[gateway.channels]
queue_size = 16
timeout = "5s"
retry = { max_attempts = 3, initial_delay = "1s", max_delay = "10s" }

[gateway.channels.tenants.42]
slack_webhooks = ["https://hooks.slack.com/services/T000/B000/SECRETTOKEN"]
teams_webhooks = ["https://example.webhook.office.com/webhookb2/SECRETTOO"]

[gateway.channels.tenants.42.email]
host = "smtp.example.com"
username = "alertas@example.com"
password = "hunter2"
from = "Vigía <alertas@example.com>"
to = ["ceo@example.com", "Gerencia <gerencia@example.com>"]

[gateway.channels.tenants.7]
types = ["hot_lead"]
slack_webhooks = ["http://127.0.0.1:9000/hook"]
"#;

fn example() -> ChannelsConfig {
    #[derive(serde::Deserialize)]
    struct Root {
        gateway: Gateway,
    }
    #[derive(serde::Deserialize)]
    struct Gateway {
        channels: ChannelsConfig,
    }
    toml::from_str::<Root>(EXAMPLE).unwrap().gateway.channels
}

#[test]
fn toml_example_parses_with_defaults() {
    let cfg = example();
    cfg.validate().unwrap();
    assert_eq!(cfg.queue_size, 16);
    assert_eq!(cfg.dedupe_window, 10_000);
    assert_eq!(cfg.timeout, Duration::from_secs(5));
    assert_eq!(cfg.retry.max_attempts, 3);
    let t42 = &cfg.tenants[&42];
    assert_eq!(
        t42.types,
        [
            NotificationType::PerformanceAlert,
            NotificationType::DailyReport
        ]
    );
    let email = t42.email.as_ref().unwrap();
    assert_eq!(email.tls, SmtpTls::Starttls);
    assert_eq!(email.port(), 587);
    assert_eq!(email.password.as_ref().unwrap().expose(), "hunter2");
    assert_eq!(cfg.tenants[&7].types, [NotificationType::HotLead]);
    // JSON (numeric keys) works too.
    let from_json: ChannelsConfig = serde_json::from_value(json!({
        "tenants": {"5": {"slack_webhooks": ["https://hooks.slack.com/x"]}}
    }))
    .unwrap();
    assert!(from_json.tenants.contains_key(&5));
    // Typos are refused rather than silently sending nothing.
    let typo = toml::from_str::<ChannelsConfig>("[tenants.1]\nslack_webhook = [\"https://a\"]");
    assert!(typo.unwrap_err().to_string().contains("slack_webhook"));
    let bad_key = toml::from_str::<ChannelsConfig>("[tenants.acme]\nslack_webhooks = []");
    assert!(bad_key.unwrap_err().to_string().contains("not a number"));
}

#[test]
fn debug_hides_password_and_webhook_secrets() {
    let shown = format!("{:?}", example());
    for secret in ["hunter2", "SECRETTOKEN", "SECRETTOO", "9000/hook"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("https://hooks.slack.com/…"), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn validation_names_each_bad_field() {
    let mut cfg = example();
    {
        let t = cfg.tenants.get_mut(&42).unwrap();
        t.slack_webhooks[0] = "hooks.slack.com/services/x".into();
        t.teams_webhooks
            .push("http://teams.example.com/hook".into());
        let email = t.email.as_mut().unwrap();
        email.to.push("not an address".into());
        email.tls = SmtpTls::None;
    }
    cfg.tenants.insert(
        9,
        TenantChannels {
            types: vec![],
            ..TenantChannels::default()
        },
    );
    cfg.retry.max_attempts = 0;
    cfg.queue_size = 0;
    let err = cfg.validate().unwrap_err().to_string();
    for expected in [
        "gateway.channels.tenants.42.slack_webhooks[0]: not a URL",
        "gateway.channels.tenants.42.teams_webhooks[1]: must be https",
        "gateway.channels.tenants.42.email.to[2]: not an e-mail address",
        "gateway.channels.tenants.42.email.tls: is \"none\" but credentials are set",
        "gateway.channels.tenants.9.types: is empty",
        "gateway.channels.tenants.9: has no email, slack_webhooks or teams_webhooks",
        "gateway.channels.retry.max_attempts: must be at least 1",
        "gateway.channels.queue_size: must be at least 1",
    ] {
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    assert!(!err.contains("hunter2"));
    // Missing half of the credentials; an empty recipient list.
    let mut cfg = example();
    let email = cfg.tenants.get_mut(&42).unwrap().email.as_mut().unwrap();
    email.password = None;
    email.to.clear();
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.contains("tenants.42.email.password: is missing"),
        "{err}"
    );
    assert!(
        err.contains("tenants.42.email.to: has no recipient"),
        "{err}"
    );
    // Plain SMTP with credentials is fine to a relay on this host.
    let mut cfg = example();
    let email = cfg.tenants.get_mut(&42).unwrap().email.as_mut().unwrap();
    email.tls = SmtpTls::None;
    email.host = "127.0.0.1".into();
    cfg.validate().unwrap();
    assert!(ChannelsConfig::default().validate().is_ok());
}

#[test]
fn backoff_doubles_up_to_the_cap_and_honours_retry_after() {
    let retry = RetryConfig {
        max_attempts: 10,
        initial_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(60),
    };
    let schedule: Vec<u64> = (1..=7).map(|a| retry.delay(a).as_secs()).collect();
    assert_eq!(schedule, [2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(retry.delay(1000), Duration::from_secs(60));
    let s = Duration::from_secs;
    assert_eq!(backoff(&retry, 1, Some(s(30))), s(30));
    assert_eq!(backoff(&retry, 5, Some(s(1))), s(32));
    assert_eq!(backoff(&retry, 1, Some(s(3600))), s(60));
    let defaults = RetryConfig::default();
    let total: Duration = (1..defaults.max_attempts).map(|a| defaults.delay(a)).sum();
    assert!(total > s(120) && total < s(600), "{total:?}");
}

#[test]
fn recent_ids_are_bounded_and_forget_the_oldest() {
    let mut recent = Recent::new(3);
    let id = |n| Uuid::from_u128(n);
    assert!(recent.insert(id(1)));
    assert!(!recent.insert(id(1)));
    recent.insert(id(2));
    recent.insert(id(3));
    recent.insert(id(4));
    assert_eq!(recent.len(), 3);
    assert!(!recent.contains(&id(1)));
    assert!(recent.contains(&id(4)));
    recent.remove(&id(3));
    assert!(!recent.contains(&id(3)));
    recent.insert(id(5));
    recent.insert(id(6));
    assert!(recent.contains(&id(4)) && recent.contains(&id(5)) && recent.contains(&id(6)));
    assert_eq!(recent.len(), 3);
}

/// A channel's I/O that counts calls and answers from a script (then succeeds), or hangs.
#[derive(Default)]
struct Fake {
    calls: AtomicUsize,
    script: Mutex<VecDeque<Result<(), DeliveryError>>>,
    sent: Mutex<Vec<Uuid>>,
    hang: bool,
}

impl Fake {
    fn failing(times: usize, err: DeliveryError) -> Arc<Fake> {
        Arc::new(Fake {
            script: Mutex::new((0..times).map(|_| Err(err.clone())).collect()),
            ..Fake::default()
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn sent(&self) -> Vec<Uuid> {
        self.sent.lock().unwrap().clone()
    }
}

impl Deliver for Fake {
    fn deliver<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang {
                futures::future::pending::<()>().await;
            }
            let next = self.script.lock().unwrap().pop_front();
            let result = next.unwrap_or(Ok(()));
            if result.is_ok() {
                self.sent.lock().unwrap().push(n.id);
            }
            result
        })
    }
}

fn fast_config(tenants: &[(TenantId, TenantChannels)]) -> ChannelsConfig {
    ChannelsConfig {
        tenants: tenants.iter().cloned().collect(),
        queue_size: 4,
        dedupe_window: 100,
        timeout: Duration::from_millis(200),
        retry: RetryConfig {
            max_attempts: 4,
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
    }
}

fn slack_and_teams() -> TenantChannels {
    TenantChannels {
        slack_webhooks: vec!["https://hooks.slack.com/a".into()],
        teams_webhooks: vec!["https://teams.example.com/b".into()],
        ..TenantChannels::default()
    }
}

/// Starts a dispatcher whose channels use `fakes[(tenant, kind)]`.
fn start(
    cfg: ChannelsConfig,
    fakes: &HashMap<(TenantId, ChannelKind), Arc<Fake>>,
) -> (Dispatcher, CancellationToken) {
    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    let d = Dispatcher::start_with(cfg, &mut registry, shutdown.clone(), |spec| {
        Ok(fakes[&(spec.tenant, spec.kind)].clone() as Arc<dyn Deliver>)
    })
    .unwrap();
    (d, shutdown)
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn transient_failures_are_retried_and_sent_once() {
    let slack = Fake::failing(2, DeliveryError::transient("HTTP 500"));
    let teams = Arc::new(Fake::default());
    let fakes = HashMap::from([
        ((42, ChannelKind::Slack), slack.clone()),
        ((42, ChannelKind::Teams), teams.clone()),
    ]);
    let (d, shutdown) = start(fast_config(&[(42, slack_and_teams())]), &fakes);
    let n = notification(42, NotificationType::PerformanceAlert, 1);
    assert_eq!(
        d.dispatch(&n),
        Dispatched {
            queued: 2,
            ..Dispatched::default()
        }
    );
    eventually("slack delivery", || slack.sent().len() == 1).await;
    eventually("teams delivery", || teams.sent().len() == 1).await;
    assert_eq!(slack.calls(), 3);
    assert_eq!(teams.calls(), 1);
    // Dispatched again (the consumer replays it): not sent again.
    assert_eq!(d.dispatch(&n).duplicates, 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!((slack.calls(), teams.calls()), (3, 1));
    let m = &d.metrics;
    assert_eq!(m.get(ChannelKind::Slack, Outcome::Retry), 2);
    assert_eq!(m.get(ChannelKind::Slack, Outcome::Sent), 1);
    assert_eq!(m.get(ChannelKind::Teams, Outcome::Sent), 1);
    assert_eq!(m.duplicates(ChannelKind::Slack), 1);
    shutdown.cancel();
}

#[tokio::test]
async fn permanent_failures_are_not_retried_and_a_later_dispatch_tries_again() {
    let slack = Fake::failing(1, DeliveryError::permanent("HTTP 404: no_service"));
    let teams = Fake::failing(10, DeliveryError::transient("HTTP 503"));
    let fakes = HashMap::from([
        ((42, ChannelKind::Slack), slack.clone()),
        ((42, ChannelKind::Teams), teams.clone()),
    ]);
    let (d, shutdown) = start(fast_config(&[(42, slack_and_teams())]), &fakes);
    let n = notification(42, NotificationType::DailyReport, 2);
    d.dispatch(&n);
    eventually("both given up", || {
        d.metrics.get(ChannelKind::Slack, Outcome::Failed) == 1
            && d.metrics.get(ChannelKind::Teams, Outcome::Failed) == 1
    })
    .await;
    assert_eq!(slack.calls(), 1, "a permanent error is not retried");
    assert_eq!(teams.calls(), 4, "max_attempts attempts");
    assert_eq!(d.metrics.get(ChannelKind::Teams, Outcome::Retry), 3);
    // Given up: forgotten, so the same notification dispatched later is tried again.
    assert_eq!(d.dispatch(&n).queued, 2);
    eventually("slack retried later", || slack.sent() == [n.id]).await;
    shutdown.cancel();
}

#[tokio::test]
async fn a_hung_channel_delays_neither_the_caller_nor_other_channels() {
    let slack = Arc::new(Fake {
        hang: true,
        ..Fake::default()
    });
    let teams = Arc::new(Fake::default());
    let fakes = HashMap::from([
        ((42, ChannelKind::Slack), slack.clone()),
        ((42, ChannelKind::Teams), teams.clone()),
    ]);
    let (d, shutdown) = start(fast_config(&[(42, slack_and_teams())]), &fakes);
    let mut in_dispatch = Duration::ZERO;
    let mut dropped = 0;
    for i in 0..10u128 {
        let started = Instant::now();
        dropped += d
            .dispatch(&notification(
                42,
                NotificationType::PerformanceAlert,
                100 + i,
            ))
            .dropped;
        in_dispatch = in_dispatch.max(started.elapsed());
        // Teams keeps up with every notification while Slack hangs.
        eventually("teams delivery", || teams.sent().len() == i as usize + 1).await;
    }
    assert!(in_dispatch < Duration::from_millis(5), "{in_dispatch:?}");
    // Slack: one attempt in flight, 4 queued (queue_size), the other 5 dropped.
    assert_eq!(slack.calls(), 1);
    assert_eq!(dropped, 5);
    assert_eq!(d.metrics.get(ChannelKind::Slack, Outcome::Dropped), 5);
    assert_eq!(d.metrics.get(ChannelKind::Teams, Outcome::Dropped), 0);
    // The hung attempts time out and are retried.
    eventually("slack time-outs counted", || {
        d.metrics.get(ChannelKind::Slack, Outcome::Retry) >= 1
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn only_configured_types_and_the_own_tenant_are_sent() {
    let t1 = Arc::new(Fake::default());
    let t2 = Arc::new(Fake::default());
    let only_slack = |types: Vec<NotificationType>| TenantChannels {
        types,
        slack_webhooks: vec!["https://hooks.slack.com/x".into()],
        ..TenantChannels::default()
    };
    let fakes = HashMap::from([
        ((1, ChannelKind::Slack), t1.clone()),
        ((2, ChannelKind::Slack), t2.clone()),
    ]);
    let cfg = fast_config(&[
        (1, only_slack(vec![NotificationType::DailyReport])),
        (2, only_slack(vec![NotificationType::HotLead])),
    ]);
    let (d, shutdown) = start(cfg, &fakes);
    assert!(d.is_enabled());
    let none = Dispatched::default();
    assert_eq!(
        d.dispatch(&notification(1, NotificationType::PerformanceAlert, 1)),
        none
    );
    assert_eq!(
        d.dispatch(&notification(1, NotificationType::HotLead, 2)),
        none
    );
    assert_eq!(
        d.dispatch(&notification(3, NotificationType::DailyReport, 3)),
        none
    );
    let withdrawal = Notification {
        withdraws: Some(Uuid::from_u128(9)),
        ..notification(1, NotificationType::DailyReport, 4)
    };
    assert_eq!(d.dispatch(&withdrawal), none);
    assert_eq!(
        d.dispatch(&notification(1, NotificationType::DailyReport, 5))
            .queued,
        1
    );
    assert_eq!(
        d.dispatch(&notification(2, NotificationType::HotLead, 6))
            .queued,
        1
    );
    eventually("both sent", || t1.sent().len() == 1 && t2.sent().len() == 1).await;
    assert_eq!(t1.sent(), [Uuid::from_u128(5)]);
    assert_eq!(t2.sent(), [Uuid::from_u128(6)]);
    shutdown.cancel();
}

#[tokio::test]
async fn shutdown_stops_the_channels_and_later_dispatches_are_dropped() {
    let slack = Arc::new(Fake {
        hang: true,
        ..Fake::default()
    });
    let teams = Arc::new(Fake::default());
    let fakes = HashMap::from([
        ((42, ChannelKind::Slack), slack.clone()),
        ((42, ChannelKind::Teams), teams.clone()),
    ]);
    let (d, shutdown) = start(fast_config(&[(42, slack_and_teams())]), &fakes);
    d.dispatch(&notification(42, NotificationType::DailyReport, 1));
    d.dispatch(&notification(42, NotificationType::DailyReport, 2));
    eventually("slack busy", || slack.calls() == 1).await;
    shutdown.cancel();
    // The queued one is counted as dropped; afterwards nothing is queued.
    eventually("queued counted as dropped", || {
        d.metrics.get(ChannelKind::Slack, Outcome::Dropped) == 1
    })
    .await;
    let mut next = 3;
    eventually("channels closed", || {
        next += 1;
        d.dispatch(&notification(42, NotificationType::DailyReport, next))
            .dropped
            == 2
    })
    .await;
}

#[tokio::test]
async fn no_tenant_means_nothing_to_do() {
    let (d, _shutdown) = start(ChannelsConfig::default(), &HashMap::new());
    assert!(!d.is_enabled());
    assert_eq!(
        d.dispatch(&notification(42, NotificationType::DailyReport, 1)),
        Dispatched::default()
    );
}

#[tokio::test]
async fn start_builds_smtp_and_https_senders_without_connecting() {
    // STARTTLS parameters (rustls, system roots) and the HTTPS client are built at start;
    // nothing connects until something is dispatched.
    let mut registry = Registry::default();
    let shutdown = CancellationToken::new();
    let d = Dispatcher::start(example(), &mut registry, shutdown.clone()).unwrap();
    assert!(d.is_enabled());
    assert_eq!(format!("{d:?}"), "Dispatcher { tenants: [7, 42], .. }");
    for tls in [SmtpTls::Opportunistic, SmtpTls::Implicit, SmtpTls::None] {
        let mut cfg = example();
        let email = cfg.tenants.get_mut(&42).unwrap().email.as_mut().unwrap();
        email.tls = tls;
        email.host = "localhost".into();
        Dispatcher::start(cfg, &mut Registry::default(), shutdown.clone()).unwrap();
    }
    shutdown.cancel();
}

#[tokio::test]
async fn start_refuses_an_invalid_config() {
    let mut registry = Registry::default();
    let cfg = ChannelsConfig {
        queue_size: 0,
        ..ChannelsConfig::default()
    };
    let err = Dispatcher::start(cfg, &mut registry, CancellationToken::new()).unwrap_err();
    assert!(matches!(err, ChannelsError::Config(m) if m.contains("queue_size")));
}
