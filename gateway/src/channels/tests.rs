//! The pure parts and the dispatcher's behaviour, with counting fakes instead of I/O, over a
//! real (temporary SQLite) inbox and outbox.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::json;
use uuid::Uuid;
use vigia_schemas::Audience;

use super::delivery::{backoff, DeliveryError};
use super::metrics::Outcome;
use super::*;
use crate::preferences::Preferences;

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
to = ["Gerencia <gerencia@example.com>"]

[gateway.channels.tenants.42.email.users]
1001 = { address = "Ana <ceo@example.com>", role = "ceo" }
1010 = { address = "ventas@example.com", role = "seller" }

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
    assert_eq!(email.users[&1001].address, "Ana <ceo@example.com>");
    assert_eq!(email.users[&1001].role(), Some(Role::Ceo));
    assert_eq!(email.users[&1010].role(), Some(Role::Seller));
    assert_eq!(cfg.tenants[&7].types, [NotificationType::HotLead]);
    // JSON (numeric keys) works too; `to` may be left out when there is an address book.
    let from_json: ChannelsConfig = serde_json::from_value(json!({
        "tenants": {"5": {"slack_webhooks": ["https://hooks.slack.com/x"],
                          "email": {"host": "h", "from": "a@b.c",
                                    "users": {"9": {"address": "x@b.c", "role": "manager"}}}}}
    }))
    .unwrap();
    from_json.validate().unwrap();
    assert!(from_json.tenants[&5].email.as_ref().unwrap().to.is_empty());
    assert_eq!(
        from_json.tenants[&5].email.as_ref().unwrap().users[&9].role(),
        Some(Role::Manager)
    );
    // Typos are refused rather than silently sending nothing.
    let typo = toml::from_str::<ChannelsConfig>("[tenants.1]\nslack_webhook = [\"https://a\"]");
    assert!(typo.unwrap_err().to_string().contains("slack_webhook"));
    let bad_key = toml::from_str::<ChannelsConfig>("[tenants.acme]\nslack_webhooks = []");
    assert!(bad_key.unwrap_err().to_string().contains("not a number"));
    let bad_user = toml::from_str::<ChannelsConfig>(
        "[tenants.1.email]\nhost = \"h\"\nfrom = \"a@b.c\"\n[tenants.1.email.users]\nana = { address = \"a@b.c\", role = \"ceo\" }",
    );
    let err = bad_user.unwrap_err().to_string();
    assert!(err.contains("user id \"ana\" is not a number"), "{err}");
    let extra = toml::from_str::<ChannelsConfig>(
        "[tenants.1.email]\nhost = \"h\"\nfrom = \"a@b.c\"\nusers = { 1 = { address = \"a@b.c\", role = \"ceo\", phone = \"1\" } }",
    );
    assert!(extra.unwrap_err().to_string().contains("phone"));
    // Options that existed when queues were in memory are refused by name.
    let old = toml::from_str::<ChannelsConfig>("queue_size = 256");
    assert!(old.unwrap_err().to_string().contains("queue_size"));
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
        t.teams_webhooks.push(t.teams_webhooks[0].clone());
        let email = t.email.as_mut().unwrap();
        email.to.push("not an address".into());
        email.tls = SmtpTls::None;
        email.users.insert(
            1002,
            EmailUser {
                address: "nobody".into(),
                role: "boss".into(),
            },
        );
    }
    cfg.tenants.insert(
        9,
        TenantChannels {
            types: vec![],
            ..TenantChannels::default()
        },
    );
    cfg.retry.max_attempts = 0;
    cfg.timeout = Duration::ZERO;
    let err = cfg.validate().unwrap_err().to_string();
    for expected in [
        "gateway.channels.tenants.42.slack_webhooks[0]: not a URL",
        "gateway.channels.tenants.42.teams_webhooks[1]: must be https",
        "gateway.channels.tenants.42.teams_webhooks[2]: is the same URL as teams_webhooks[0]",
        "gateway.channels.tenants.42.email.to[1]: not an e-mail address",
        "gateway.channels.tenants.42.email.users.1002.address: not an e-mail address",
        "gateway.channels.tenants.42.email.users.1002.role: \"boss\" is not a role: ceo, manager",
        "gateway.channels.tenants.42.email.tls: is \"none\" but credentials are set",
        "gateway.channels.tenants.9.types: is empty",
        "gateway.channels.tenants.9: has no email, slack_webhooks or teams_webhooks",
        "gateway.channels.retry.max_attempts: must be at least 1",
        "gateway.channels.timeout: must be positive",
    ] {
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    assert!(!err.contains("hunter2"));
    // Missing half of the credentials; no recipient at all.
    let mut cfg = example();
    let email = cfg.tenants.get_mut(&42).unwrap().email.as_mut().unwrap();
    email.password = None;
    email.to.clear();
    email.users.clear();
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.contains("tenants.42.email.password: is missing"),
        "{err}"
    );
    assert!(
        err.contains("tenants.42.email: has no recipient: list fixed addresses in `to`"),
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
fn webhook_recipients_are_stable_and_do_not_show_the_url() {
    let url = "https://hooks.slack.com/services/T000/B000/SECRETTOKEN";
    assert_eq!(
        webhook_recipient(url),
        webhook_recipient(&format!(" {url}"))
    );
    assert_ne!(
        webhook_recipient(url),
        webhook_recipient("https://hooks.slack.com/other")
    );
    assert!(!webhook_recipient(url).contains("SECRET"));
}

// ---------------------------------------------------------------------------------------------
// The dispatcher over a temporary inbox

/// A temporary SQLite inbox, removed when dropped.
struct TempInbox {
    dir: std::path::PathBuf,
    inbox: Inbox,
}

impl TempInbox {
    async fn new() -> TempInbox {
        let dir = std::env::temp_dir().join(format!("vigia-channels-unit-{}", Uuid::new_v4()));
        let inbox = Inbox::connect(&format!("sqlite://{}/gw.db?mode=rwc", dir.display()))
            .await
            .unwrap();
        TempInbox { dir, inbox }
    }

    async fn states(&self, tenant: TenantId) -> Vec<(String, String, u32)> {
        self.inbox
            .outbox(tenant)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.channel, r.state, r.attempts))
            .collect()
    }
}

impl Drop for TempInbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A channel's I/O that counts calls and answers from a script (then succeeds), or hangs.
#[derive(Default)]
struct Fake {
    calls: AtomicUsize,
    script: std::sync::Mutex<VecDeque<Result<(), DeliveryError>>>,
    sent: std::sync::Mutex<Vec<(Uuid, String)>>,
    hang: bool,
}

impl Fake {
    fn failing(times: usize, err: DeliveryError) -> Arc<Fake> {
        Arc::new(Fake {
            script: std::sync::Mutex::new((0..times).map(|_| Err(err.clone())).collect()),
            ..Fake::default()
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn sent(&self) -> Vec<Uuid> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }
    fn sent_to(&self) -> Vec<(Uuid, String)> {
        self.sent.lock().unwrap().clone()
    }
}

impl Deliver for Fake {
    fn deliver<'a>(
        &'a self,
        n: &'a Notification,
        recipient: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang {
                futures::future::pending::<()>().await;
            }
            let next = self.script.lock().unwrap().pop_front();
            let result = next.unwrap_or(Ok(()));
            if result.is_ok() {
                self.sent
                    .lock()
                    .unwrap()
                    .push((n.id, recipient.to_string()));
            }
            result
        })
    }
}

fn fast_config(tenants: &[(TenantId, TenantChannels)]) -> ChannelsConfig {
    ChannelsConfig {
        tenants: tenants.iter().cloned().collect(),
        timeout: Duration::from_millis(200),
        retry: RetryConfig {
            max_attempts: 4,
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        lease: Duration::from_secs(1),
        keep_sent: Duration::from_secs(7 * 24 * 3600),
    }
}

fn slack_and_teams() -> TenantChannels {
    TenantChannels {
        slack_webhooks: vec!["https://hooks.slack.com/a".into()],
        teams_webhooks: vec!["https://teams.example.com/b".into()],
        ..TenantChannels::default()
    }
}

/// Starts a dispatcher on `inbox` whose channels use `fakes[(tenant, kind)]`.
async fn start(
    cfg: ChannelsConfig,
    inbox: &Inbox,
    fakes: &HashMap<(TenantId, ChannelKind), Arc<Fake>>,
) -> (Dispatcher, CancellationToken) {
    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    let d = Dispatcher::start_with(
        cfg,
        inbox.clone(),
        &mut registry,
        shutdown.clone(),
        |spec| Ok(fakes[&(spec.tenant, spec.kind)].clone() as Arc<dyn Deliver>),
    )
    .await
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

fn queued(n: usize) -> Dispatched {
    Dispatched {
        queued: n,
        ..Dispatched::default()
    }
}

#[tokio::test]
async fn transient_failures_are_retried_and_sent_once() {
    let db = TempInbox::new().await;
    let slack = Fake::failing(2, DeliveryError::transient("HTTP 500"));
    let teams = Arc::new(Fake::default());
    let fakes = HashMap::from([
        ((42, ChannelKind::Slack), slack.clone()),
        ((42, ChannelKind::Teams), teams.clone()),
    ]);
    let (d, shutdown) = start(fast_config(&[(42, slack_and_teams())]), &db.inbox, &fakes).await;
    let n = notification(42, NotificationType::PerformanceAlert, 1);
    let stored = d.store(&n).await.unwrap();
    assert!(stored.inserted.is_some());
    assert_eq!(stored.dispatched, queued(2));
    eventually("slack delivery", || slack.sent().len() == 1).await;
    eventually("teams delivery", || teams.sent().len() == 1).await;
    assert_eq!(slack.calls(), 3);
    assert_eq!(teams.calls(), 1);
    // Seen again (the consumer replays it): already stored, nothing queued, nothing resent.
    let again = d.store(&n).await.unwrap();
    assert!(again.inserted.is_none());
    assert_eq!(again.dispatched.duplicates, 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!((slack.calls(), teams.calls()), (3, 1));
    let m = &d.inner.metrics;
    assert_eq!(m.get(ChannelKind::Slack, Outcome::Retry), 2);
    assert_eq!(m.get(ChannelKind::Slack, Outcome::Sent), 1);
    assert_eq!(m.get(ChannelKind::Teams, Outcome::Sent), 1);
    assert_eq!(m.duplicates(ChannelKind::Slack), 1);
    eventually_states(&db, 42, |s| {
        s == [
            ("slack".into(), "sent".into(), 3),
            ("teams".into(), "sent".into(), 1),
        ]
    })
    .await;
    shutdown.cancel();
}

async fn eventually_states(
    db: &TempInbox,
    tenant: TenantId,
    want: impl Fn(&[(String, String, u32)]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let states = db.states(tenant).await;
        if want(&states) {
            return;
        }
        assert!(Instant::now() < deadline, "outbox states: {states:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn permanent_failures_are_not_retried_and_stay_failed() {
    let db = TempInbox::new().await;
    let slack = Fake::failing(1, DeliveryError::permanent("HTTP 404: no_service"));
    let teams = Fake::failing(10, DeliveryError::transient("HTTP 503"));
    let fakes = HashMap::from([
        ((42, ChannelKind::Slack), slack.clone()),
        ((42, ChannelKind::Teams), teams.clone()),
    ]);
    let (d, shutdown) = start(fast_config(&[(42, slack_and_teams())]), &db.inbox, &fakes).await;
    let n = notification(42, NotificationType::DailyReport, 2);
    d.store(&n).await.unwrap();
    let m = d.inner.metrics.clone();
    eventually("both given up", || {
        m.get(ChannelKind::Slack, Outcome::Failed) == 1
            && m.get(ChannelKind::Teams, Outcome::Failed) == 1
    })
    .await;
    assert_eq!(slack.calls(), 1, "a permanent error is not retried");
    assert_eq!(teams.calls(), 4, "max_attempts attempts");
    assert_eq!(m.get(ChannelKind::Teams, Outcome::Retry), 3);
    eventually_states(&db, 42, |s| {
        s == [
            ("slack".into(), "failed".into(), 1),
            ("teams".into(), "failed".into(), 4),
        ]
    })
    .await;
    let rows = db.inbox.outbox(42).await.unwrap();
    assert_eq!(rows[0].last_error.as_deref(), Some("HTTP 404: no_service"));
    // A replay does not queue it again (the outbox is the record; an operator may retry).
    assert_eq!(d.store(&n).await.unwrap().dispatched.duplicates, 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!((slack.calls(), teams.calls()), (1, 4));
    shutdown.cancel();
}

#[tokio::test]
async fn a_hung_channel_delays_neither_storing_nor_other_channels_and_loses_nothing() {
    let db = TempInbox::new().await;
    let slack = Arc::new(Fake {
        hang: true,
        ..Fake::default()
    });
    let teams = Arc::new(Fake::default());
    let fakes = HashMap::from([
        ((42, ChannelKind::Slack), slack.clone()),
        ((42, ChannelKind::Teams), teams.clone()),
    ]);
    let mut cfg = fast_config(&[(42, slack_and_teams())]);
    cfg.timeout = Duration::from_secs(30);
    cfg.lease = Duration::from_secs(31);
    let (d, shutdown) = start(cfg, &db.inbox, &fakes).await;
    for i in 0..10u128 {
        let stored = d
            .store(&notification(
                42,
                NotificationType::PerformanceAlert,
                100 + i,
            ))
            .await
            .unwrap();
        assert_eq!(stored.dispatched, queued(2));
        // Teams keeps up with every notification while Slack hangs.
        eventually("teams delivery", || teams.sent().len() == i as usize + 1).await;
    }
    assert_eq!(slack.calls(), 1, "one attempt in flight, the rest wait");
    let rows = db.inbox.outbox(42).await.unwrap();
    let pending = rows
        .iter()
        .filter(|r| r.channel == "slack" && r.state == "pending")
        .count();
    assert_eq!(
        pending, 10,
        "nothing dropped: all of Slack's wait in the outbox"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn only_configured_types_and_the_own_tenant_are_queued() {
    let db = TempInbox::new().await;
    let t1 = Arc::new(Fake::default());
    let t2 = Arc::new(Fake::default());
    let only_slack = |types: Vec<NotificationType>, url: &str| TenantChannels {
        types,
        slack_webhooks: vec![url.into()],
        ..TenantChannels::default()
    };
    let fakes = HashMap::from([
        ((1, ChannelKind::Slack), t1.clone()),
        ((2, ChannelKind::Slack), t2.clone()),
    ]);
    let cfg = fast_config(&[
        (
            1,
            only_slack(vec![NotificationType::DailyReport], "https://h.example/1"),
        ),
        (
            2,
            only_slack(vec![NotificationType::HotLead], "https://h.example/2"),
        ),
    ]);
    let (d, shutdown) = start(cfg, &db.inbox, &fakes).await;
    assert!(d.is_enabled());
    let none = Dispatched::default();
    for n in [
        notification(1, NotificationType::PerformanceAlert, 1),
        notification(1, NotificationType::HotLead, 2),
        notification(3, NotificationType::DailyReport, 3),
        Notification {
            withdraws: Some(Uuid::from_u128(9)),
            ..notification(1, NotificationType::DailyReport, 4)
        },
    ] {
        let stored = d.store(&n).await.unwrap();
        assert!(
            stored.inserted.is_some(),
            "stored in the inbox all the same"
        );
        assert_eq!(stored.dispatched, none, "{:?}", n.kind);
    }
    let five = notification(1, NotificationType::DailyReport, 5);
    let six = notification(2, NotificationType::HotLead, 6);
    assert_eq!(d.store(&five).await.unwrap().dispatched, queued(1));
    assert_eq!(d.store(&six).await.unwrap().dispatched, queued(1));
    eventually("both sent", || t1.sent().len() == 1 && t2.sent().len() == 1).await;
    assert_eq!(t1.sent(), [Uuid::from_u128(5)]);
    assert_eq!(t2.sent(), [Uuid::from_u128(6)]);
    assert_eq!(db.inbox.outbox(3).await.unwrap(), vec![]);
    shutdown.cancel();
}

#[tokio::test]
async fn no_tenant_means_nothing_to_send_but_notifications_are_stored() {
    let db = TempInbox::new().await;
    let (d, _shutdown) = start(ChannelsConfig::default(), &db.inbox, &HashMap::new()).await;
    assert!(!d.is_enabled());
    let stored = d
        .store(&notification(42, NotificationType::DailyReport, 1))
        .await
        .unwrap();
    assert!(stored.inserted.is_some());
    assert_eq!(stored.dispatched, Dispatched::default());
}

#[tokio::test]
async fn a_restart_resumes_pending_deliveries_and_does_not_resend_sent_ones() {
    let db = TempInbox::new().await;
    // Before the restart: Slack fails every attempt, Teams works.
    let slack = Fake::failing(1000, DeliveryError::transient("HTTP 503"));
    let teams = Arc::new(Fake::default());
    let fakes = HashMap::from([
        ((42, ChannelKind::Slack), slack.clone()),
        ((42, ChannelKind::Teams), teams.clone()),
    ]);
    let mut cfg = fast_config(&[(42, slack_and_teams())]);
    cfg.retry.max_attempts = 1000;
    let (d, shutdown) = start(cfg.clone(), &db.inbox, &fakes).await;
    let n = notification(42, NotificationType::PerformanceAlert, 7);
    d.store(&n).await.unwrap();
    eventually("teams sent, slack tried", || {
        teams.sent().len() == 1 && slack.calls() >= 2
    })
    .await;
    shutdown.cancel();
    d.stopped().await;
    let tried = slack.calls();
    assert!(slack.sent().is_empty());

    // After it (same database, new dispatcher): Slack recovers.
    let slack2 = Arc::new(Fake::default());
    let teams2 = Arc::new(Fake::default());
    let fakes = HashMap::from([
        ((42, ChannelKind::Slack), slack2.clone()),
        ((42, ChannelKind::Teams), teams2.clone()),
    ]);
    let (d2, shutdown2) = start(cfg, &db.inbox, &fakes).await;
    eventually("slack resumed", || slack2.sent() == [n.id]).await;
    // The consumer replays the record: nothing again.
    assert!(d2.store(&n).await.unwrap().inserted.is_none());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(slack2.calls(), 1, "delivered exactly once");
    assert_eq!(teams2.calls(), 0, "sent before the restart: not again");
    assert_eq!(slack.calls(), tried, "the old dispatcher stopped");
    eventually_states(&db, 42, |s| {
        s.iter().all(|(_, state, _)| state == "sent") && s[0].2 == tried as u32 + 1
    })
    .await;
    shutdown2.cancel();
    d2.stopped().await;
}

#[tokio::test]
async fn a_deferred_delivery_waits_for_its_time() {
    let db = TempInbox::new().await;
    let slack = Arc::new(Fake::default());
    let fakes = HashMap::from([((42, ChannelKind::Slack), slack.clone())]);
    let url = "https://hooks.slack.com/a";
    let cfg = fast_config(&[(
        42,
        TenantChannels {
            slack_webhooks: vec![url.into()],
            ..TenantChannels::default()
        },
    )]);
    let (d, shutdown) = start(cfg, &db.inbox, &fakes).await;
    let n = notification(42, NotificationType::PerformanceAlert, 8);
    let at = Utc::now() + chrono::Duration::milliseconds(400);
    let entry = crate::inbox::OutboxEntry {
        channel: "slack",
        recipient: webhook_recipient(url),
        user_id: None,
        not_before: at,
    };
    db.inbox.insert_with_deliveries(&n, &[entry]).await.unwrap();
    // Whoever records a delivery wakes the worker; here nobody did: it still finds it on time.
    d.inner.wakes.values().for_each(|w| w.notify_one());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(slack.sent().is_empty(), "not before its time");
    eventually("sent at its time", || slack.sent() == [n.id]).await;
    assert!(Utc::now() >= at);
    shutdown.cancel();
}

// ---------------------------------------------------------------------------------------------
// E-mail recipients from the address book and the users' preferences

fn book_config() -> ChannelsConfig {
    let mut cfg = fast_config(&[]);
    let t: TenantChannels = toml::from_str(
        r#"
        types = ["performance_alert", "daily_report", "hot_lead"]
        [email]
        host = "127.0.0.1"
        tls = "none"
        from = "alertas@example.com"
        to = ["archivo@example.com"]
        [email.users]
        1001 = { address = "ceo@example.com", role = "ceo" }
        1002 = { address = "gerente@example.com", role = "manager" }
        1003 = { address = "otro-gerente@example.com", role = "manager" }
        1010 = { address = "ana@example.com", role = "seller" }
        1011 = { address = "beto@example.com", role = "seller" }
        1020 = { address = "Archivo <ARCHIVO@example.com>", role = "secretary" }
        "#,
    )
    .unwrap();
    cfg.tenants.insert(42, t);
    cfg
}

async fn set_prefs(inbox: &Inbox, user: UserId, role: Role, update: serde_json::Value) {
    let viewer = Viewer {
        tenant_id: 42,
        user_id: user,
        role,
    };
    let prefs = Preferences::for_role(role).updated(&update).unwrap();
    inbox.set_preferences(&viewer, &prefs).await.unwrap();
}

fn recipients(planned: &[(ChannelKind, OutboxEntry)]) -> Vec<(String, Option<UserId>)> {
    planned
        .iter()
        .map(|(kind, e)| {
            assert_eq!(*kind, ChannelKind::Email);
            (e.recipient.clone(), e.user_id)
        })
        .collect()
}

#[tokio::test]
async fn e_mail_goes_to_the_audience_whose_preferences_ask_for_it() {
    let db = TempInbox::new().await;
    let email = Arc::new(Fake::default());
    let fakes = HashMap::from([((42, ChannelKind::Email), email.clone())]);
    let (d, shutdown) = start(book_config(), &db.inbox, &fakes).await;
    // The CEO and one manager want e-mail; the other manager never saved preferences (e-mail
    // off by default); both sellers want e-mail for hot leads.
    set_prefs(&db.inbox, 1001, Role::Ceo, json!({"email": true})).await;
    set_prefs(&db.inbox, 1002, Role::Manager, json!({"email": true})).await;
    for seller in [1010, 1011] {
        set_prefs(&db.inbox, seller, Role::Seller, json!({"email": true})).await;
    }
    let now = chrono::Utc::now();

    // A performance alert to the CEO role: the CEO and the manager who asked; not the
    // sellers; the fixed address always.
    let alert = notification(42, NotificationType::PerformanceAlert, 1);
    assert_eq!(alert.audience, Audience::Role { role: Role::Ceo });
    assert_eq!(
        recipients(&d.plan(&alert, now).await.unwrap()),
        [
            ("archivo@example.com".to_string(), None),
            ("ceo@example.com".to_string(), Some(1001)),
            ("gerente@example.com".to_string(), Some(1002)),
        ]
    );
    // A hot lead to seller 1010: that seller, and the CEO and manager (they see everything of
    // the tenant and their defaults enable every type); not the other seller.
    let hot = Notification {
        audience: Audience::User { user_id: 1010 },
        priority: vigia_schemas::Priority::Urgent,
        ..notification(42, NotificationType::HotLead, 2)
    };
    assert_eq!(
        recipients(&d.plan(&hot, now).await.unwrap()),
        [
            ("ana@example.com".to_string(), Some(1010)),
            ("archivo@example.com".to_string(), None),
            ("ceo@example.com".to_string(), Some(1001)),
            ("gerente@example.com".to_string(), Some(1002)),
        ]
    );
    // The CEO turns performance alerts off, the manager raises the minimum priority.
    set_prefs(
        &db.inbox,
        1001,
        Role::Ceo,
        json!({"email": true, "enabled_types": ["daily_report"]}),
    )
    .await;
    set_prefs(
        &db.inbox,
        1002,
        Role::Manager,
        json!({"email": true, "min_priority": "high"}),
    )
    .await;
    assert_eq!(
        recipients(&d.plan(&alert, now).await.unwrap()),
        [("archivo@example.com".to_string(), None)]
    );
    // Types the tenant does not send out: nobody, whatever the preferences.
    let unanswered = notification(42, NotificationType::UnansweredConversation, 3);
    assert!(d.plan(&unanswered, now).await.unwrap().is_empty());

    // Storing queues one e-mail per address; the worker sends one message to each.
    let report = notification(42, NotificationType::DailyReport, 4);
    assert_eq!(d.store(&report).await.unwrap().dispatched, queued(2));
    eventually("two e-mails", || email.sent_to().len() == 2).await;
    let mut to: Vec<String> = email.sent_to().into_iter().map(|(_, r)| r).collect();
    to.sort();
    assert_eq!(to, ["archivo@example.com", "ceo@example.com"]);
    let rows = db.inbox.outbox(42).await.unwrap();
    let ceo_row = rows
        .iter()
        .find(|r| r.recipient == "ceo@example.com")
        .unwrap();
    assert_eq!(ceo_row.user_id, Some(1001));
    shutdown.cancel();
}

#[tokio::test]
async fn quiet_hours_defer_a_users_e_mail_but_not_the_fixed_addresses() {
    let db = TempInbox::new().await;
    let email = Arc::new(Fake::default());
    let fakes = HashMap::from([((42, ChannelKind::Email), email.clone())]);
    let (d, shutdown) = start(book_config(), &db.inbox, &fakes).await;
    let now = chrono::Utc::now();
    // Quiet from one hour ago to one hour from now, in UTC.
    let hhmm = |t: DateTime<Utc>| t.format("%H:%M").to_string();
    let (start_q, end_q) = (
        now - chrono::Duration::hours(1),
        now + chrono::Duration::hours(1),
    );
    set_prefs(
        &db.inbox,
        1001,
        Role::Ceo,
        json!({"email": true, "quiet_hours": {"start": hhmm(start_q), "end": hhmm(end_q)}}),
    )
    .await;
    // The secretary's address is the fixed one: one e-mail, not deferred.
    set_prefs(
        &db.inbox,
        1020,
        Role::Secretary,
        json!({"email": true,
        "enabled_types": ["daily_report"], "min_priority": "low",
        "quiet_hours": {"start": hhmm(start_q), "end": hhmm(end_q)}}),
    )
    .await;
    let report = Notification {
        audience: Audience::Role {
            role: Role::Secretary,
        },
        ..notification(42, NotificationType::DailyReport, 5)
    };
    let planned = d.plan(&report, now).await.unwrap();
    let ceo = planned
        .iter()
        .find(|(_, e)| e.recipient == "ceo@example.com")
        .unwrap();
    let expected_end = end_q
        .with_timezone(&Utc)
        .date_naive()
        .and_hms_opt(
            chrono::Timelike::hour(&end_q),
            chrono::Timelike::minute(&end_q),
            0,
        )
        .unwrap()
        .and_utc();
    assert_eq!(
        ceo.1.not_before, expected_end,
        "at the end of the quiet hours"
    );
    let archive: Vec<_> = planned
        .iter()
        .filter(|(_, e)| e.recipient == "archivo@example.com")
        .collect();
    assert_eq!(archive.len(), 1, "one e-mail per address");
    assert_eq!(
        archive[0].1.not_before, now,
        "the fixed address is not deferred"
    );
    let stored = d.store(&report).await.unwrap();
    assert_eq!(
        stored.dispatched,
        Dispatched {
            queued: 1,
            deferred: 1,
            duplicates: 0
        }
    );
    eventually("the fixed address's e-mail", || email.sent_to().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        email.sent_to(),
        [(report.id, "archivo@example.com".to_string())]
    );
    let rows = db.inbox.outbox(42).await.unwrap();
    let deferred = rows
        .iter()
        .find(|r| r.recipient == "ceo@example.com")
        .unwrap();
    assert_eq!(deferred.state, "pending");
    shutdown.cancel();
}

#[tokio::test]
async fn start_builds_smtp_and_https_senders_without_connecting() {
    // STARTTLS parameters (rustls, system roots) and the HTTPS client are built at start;
    // nothing connects until something is due.
    let db = TempInbox::new().await;
    let mut registry = Registry::default();
    let shutdown = CancellationToken::new();
    let d = Dispatcher::start(example(), db.inbox.clone(), &mut registry, shutdown.clone())
        .await
        .unwrap();
    assert!(d.is_enabled());
    assert_eq!(format!("{d:?}"), "Dispatcher { tenants: [7, 42], .. }");
    for tls in [SmtpTls::Opportunistic, SmtpTls::Implicit, SmtpTls::None] {
        let mut cfg = example();
        let email = cfg.tenants.get_mut(&42).unwrap().email.as_mut().unwrap();
        email.tls = tls;
        email.host = "localhost".into();
        Dispatcher::start(
            cfg,
            db.inbox.clone(),
            &mut Registry::default(),
            shutdown.clone(),
        )
        .await
        .unwrap();
    }
    shutdown.cancel();
}

#[tokio::test]
async fn start_refuses_an_invalid_config() {
    let db = TempInbox::new().await;
    let mut registry = Registry::default();
    let cfg = ChannelsConfig {
        timeout: Duration::ZERO,
        ..ChannelsConfig::default()
    };
    let err = Dispatcher::start(
        cfg,
        db.inbox.clone(),
        &mut registry,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ChannelsError::Config(m) if m.contains("timeout")));
}

/// A Slack-only tenant with a random id (the PostgreSQL database is shared between runs).
fn fresh_slack_tenant() -> (TenantId, ChannelsConfig) {
    let tenant = 1_000_000 + (Uuid::new_v4().as_u128() % 1_000_000_000) as TenantId;
    let channels = TenantChannels {
        types: vec![NotificationType::PerformanceAlert],
        slack_webhooks: vec!["https://hooks.slack.com/cluster".into()],
        ..TenantChannels::default()
    };
    (tenant, fast_config(&[(tenant, channels)]))
}

#[tokio::test]
async fn two_instances_on_one_postgres_outbox_send_each_delivery_once() {
    let Ok(url) = std::env::var("VIGIA_TEST_POSTGRES_URL") else {
        println!("skipped: set VIGIA_TEST_POSTGRES_URL=postgres://user:pass@host:port/db to run");
        return;
    };
    let (tenant, cfg) = fresh_slack_tenant();
    let (inbox_a, inbox_b) = (
        Inbox::connect(&url).await.unwrap(),
        Inbox::connect(&url).await.unwrap(),
    );
    let (slack_a, slack_b) = (Arc::new(Fake::default()), Arc::new(Fake::default()));
    let fakes_a = HashMap::from([((tenant, ChannelKind::Slack), slack_a.clone())]);
    let fakes_b = HashMap::from([((tenant, ChannelKind::Slack), slack_b.clone())]);
    let (a, stop_a) = start(cfg.clone(), &inbox_a, &fakes_a).await;
    let (b, stop_b) = start(cfg, &inbox_b, &fakes_b).await;
    let notifications: Vec<Notification> = (0..40)
        .map(|i| notification(tenant, NotificationType::PerformanceAlert, i + 1))
        .map(|n| Notification {
            id: Uuid::new_v4(),
            ..n
        })
        .collect();
    // Both instances store every notification (as they would read it from Kafka); whoever
    // is first queues its delivery, and both workers wake up.
    for n in &notifications {
        a.store(n).await.unwrap();
        b.store(n).await.unwrap();
    }
    let sent = || slack_a.sent().len() + slack_b.sent().len();
    eventually("every delivery sent", || sent() >= notifications.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut all: Vec<Uuid> = slack_a.sent().into_iter().chain(slack_b.sent()).collect();
    all.sort();
    let mut expected: Vec<Uuid> = notifications.iter().map(|n| n.id).collect();
    expected.sort();
    assert_eq!(all, expected, "each once, by one instance or the other");
    assert_eq!(slack_a.calls() + slack_b.calls(), notifications.len());
    let rows = inbox_a.outbox(tenant).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:?}");
    stop_a.cancel();
    stop_b.cancel();
    a.stopped().await;
    b.stopped().await;
}

/// An instance dies (its tasks vanish, as with `kill -9`) while attempting a delivery: another
/// instance sends it once the lease is over, not before.
async fn a_delivery_held_by_a_dead_instance_is_taken_over_after_its_lease(url: &str) {
    let (tenant, mut cfg) = fresh_slack_tenant();
    cfg.timeout = Duration::from_millis(500);
    cfg.lease = Duration::from_secs(1);
    let inbox = Inbox::connect(url).await.unwrap();
    let hung = Arc::new(Fake {
        hang: true,
        ..Fake::default()
    });
    let (dying, _stop_dying) = start(
        cfg.clone(),
        &inbox,
        &HashMap::from([((tenant, ChannelKind::Slack), hung.clone())]),
    )
    .await;
    let n = notification(tenant, NotificationType::PerformanceAlert, 1);
    let n = Notification {
        id: Uuid::new_v4(),
        ..n
    };
    dying.store(&n).await.unwrap();
    eventually("the first instance attempts it", || hung.calls() == 1).await;
    let died_at = Instant::now();
    for task in dying.inner.tasks.lock().unwrap().iter() {
        task.abort();
    }
    let survivor_slack = Arc::new(Fake::default());
    let (survivor, stop) = start(
        cfg,
        &inbox,
        &HashMap::from([((tenant, ChannelKind::Slack), survivor_slack.clone())]),
    )
    .await;
    eventually("taken over", || survivor_slack.sent() == [n.id]).await;
    assert!(
        died_at.elapsed() >= Duration::from_millis(700),
        "not before the lease ends ({:?})",
        died_at.elapsed()
    );
    assert_eq!(survivor_slack.calls(), 1);
    stop.cancel();
    survivor.stopped().await;
}

#[tokio::test]
async fn a_delivery_held_by_a_dead_instance_is_taken_over_on_sqlite() {
    let db = TempInbox::new().await;
    let url = format!("sqlite://{}/gw.db?mode=rwc", db.dir.display());
    a_delivery_held_by_a_dead_instance_is_taken_over_after_its_lease(&url).await;
}

#[tokio::test]
async fn a_delivery_held_by_a_dead_instance_is_taken_over_on_postgres() {
    let Ok(url) = std::env::var("VIGIA_TEST_POSTGRES_URL") else {
        println!("skipped: set VIGIA_TEST_POSTGRES_URL=postgres://user:pass@host:port/db to run");
        return;
    };
    a_delivery_held_by_a_dead_instance_is_taken_over_after_its_lease(&url).await;
}

#[tokio::test]
async fn sent_deliveries_are_deleted_after_keep_sent() {
    let db = TempInbox::new().await;
    let (tenant, mut cfg) = fresh_slack_tenant();
    cfg.keep_sent = Duration::from_secs(1);
    let slack = Arc::new(Fake::default());
    let (d, stop) = start(
        cfg,
        &db.inbox,
        &HashMap::from([((tenant, ChannelKind::Slack), slack.clone())]),
    )
    .await;
    let n = notification(tenant, NotificationType::PerformanceAlert, 3);
    d.store(&n).await.unwrap();
    eventually("sent", || slack.sent().len() == 1).await;
    assert_eq!(db.states(tenant).await.len(), 1, "kept for a while");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !db.states(tenant).await.is_empty() {
        assert!(Instant::now() < deadline, "the sent row is never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    d.stopped().await;
}

#[test]
fn a_lease_not_longer_than_an_attempt_and_no_retention_are_refused() {
    let cfg = ChannelsConfig {
        lease: Duration::from_secs(15),
        keep_sent: Duration::ZERO,
        ..ChannelsConfig::default()
    };
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.contains("gateway.channels.lease (VIGIA_CHANNELS_LEASE)"),
        "{err}"
    );
    assert!(
        err.contains("gateway.channels.keep_sent (VIGIA_CHANNELS_KEEP_SENT)"),
        "{err}"
    );
    ChannelsConfig::default().validate().unwrap();
}
