//! Channels outside the browser over real loopback connections: an SMTP receiver
//! (`common/smtp.rs`, a real SMTP conversation with lettre) and an HTTP receiver (axum)
//! standing in for Slack and Teams, with the durable outbox in a temporary SQLite inbox. No
//! Kafka needed.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use chrono::Utc;
use common::smtp::{Mail, SmtpReceiver};
use common::TempDir;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vigia_gateway::channels::{ChannelsConfig, Dispatched, Dispatcher};
use vigia_gateway::{Inbox, Preferences, Viewer};
use vigia_schemas::{Audience, Notification, NotificationType, Role, TenantId};

// ---------------------------------------------------------------------------------------------
// HTTP receiver (Slack / Teams)

/// Every POST it got: path, JSON body, the status it answered.
#[derive(Default)]
struct HttpState {
    requests: Mutex<Vec<(String, Value, u16)>>,
    /// Per path: how many more requests to answer with a 5xx.
    failures_left: Mutex<HashMap<String, usize>>,
    /// Paths under `/flaky/` answer 503 while this is set.
    flaky_down: AtomicBool,
}

/// Paths: `/hang/…` never answers, `/down/…` always 500, `/flaky/…` 500 while
/// [`HttpReceiver::set_flaky_down`], a path given to [`HttpReceiver::fail_first`] fails that
/// many times; anything else answers 200 `ok`.
struct HttpReceiver {
    base: String,
    state: Arc<HttpState>,
}

async fn hook(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let path = uri.path().to_string();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if path.starts_with("/hang/") {
        state.requests.lock().unwrap().push((path, json, 0));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return (StatusCode::OK, "ok");
    }
    let status = if path.starts_with("/down/")
        || (path.starts_with("/flaky/") && state.flaky_down.load(Ordering::SeqCst))
    {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        let mut left = state.failures_left.lock().unwrap();
        match left.get_mut(&path) {
            Some(n) if *n > 0 => {
                *n -= 1;
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::OK,
        }
    };
    state
        .requests
        .lock()
        .unwrap()
        .push((path, json, status.as_u16()));
    let body = if status == StatusCode::OK {
        "ok"
    } else {
        "rollup_error"
    };
    (status, body)
}

impl HttpReceiver {
    async fn start() -> HttpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HttpState::default());
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(hook))
            .with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        HttpReceiver {
            base: format!("http://{addr}"),
            state,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn fail_first(&self, path: &str, times: usize) {
        self.state
            .failures_left
            .lock()
            .unwrap()
            .insert(path.to_string(), times);
    }

    fn set_flaky_down(&self, down: bool) {
        self.state.flaky_down.store(down, Ordering::SeqCst);
    }

    /// Payloads answered with 200 on `path`.
    fn delivered(&self, path: &str) -> Vec<Value> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, status)| p == path && *status == 200)
            .map(|(_, json, _)| json.clone())
            .collect()
    }

    /// Requests received on `path`, whatever the answer.
    fn hits(&self, path: &str) -> usize {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .count()
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn notification(tenant: TenantId, kind: NotificationType) -> Notification {
    let (title, message, data) = match kind {
        NotificationType::DailyReport => (
            "Informe diario del 30/04: 12 conversaciones".to_string(),
            "Ayer el equipo atendió 12 conversaciones; respuesta media 3 min.".to_string(),
            json!({
                "day": "2024-04-30",
                "team": {"conversations": 12, "engagement_rate": 0.8333, "response": {"mean_seconds": 180.0}},
                "top_performers": [{"name": "Ana Núñez", "productivity_score": 91.5}],
            }),
        ),
        _ => (
            "Ana Núñez: tiempo de respuesta alto".to_string(),
            "El tiempo medio de respuesta de Ana hoy es 12 min (umbral: 5 min). ¿Revisamos?"
                .to_string(),
            json!({"seller_name": "Ana Núñez", "condition": "slow_response", "value": 723.4, "threshold": 300}),
        ),
    };
    Notification {
        id: Uuid::new_v4(),
        tenant_id: tenant,
        kind,
        priority: kind.default_priority(),
        audience: Audience::Role { role: Role::Ceo },
        title,
        message,
        data,
        actions: vec![],
        created_at: Utc::now(),
        withdraws: None,
    }
}

fn config(toml_text: &str) -> ChannelsConfig {
    toml::from_str(toml_text).expect("channels config")
}

/// A dispatcher on `inbox` with its own registry and shutdown token.
async fn dispatcher(
    cfg: ChannelsConfig,
    inbox: &Inbox,
) -> (Dispatcher, Registry, CancellationToken) {
    let mut registry = Registry::default();
    let shutdown = CancellationToken::new();
    let d = Dispatcher::start(cfg, inbox.clone(), &mut registry, shutdown.clone())
        .await
        .expect("dispatcher starts");
    (d, registry, shutdown)
}

async fn inbox(dir: &TempDir) -> Inbox {
    Inbox::connect(&dir.sqlite_url()).await.unwrap()
}

async fn store(d: &Dispatcher, n: &Notification) -> Dispatched {
    d.store(n).await.expect("stored").dispatched
}

fn queued(n: usize) -> Dispatched {
    Dispatched {
        queued: n,
        ..Dispatched::default()
    }
}

async fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `vigia_gateway_channel_attempts_total{channel, outcome}` from the registry's text format.
fn attempts(registry: &Registry, channel: &str, outcome: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let series = format!(
        "vigia_gateway_channel_attempts_total{{channel=\"{channel}\",outcome=\"{outcome}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn ids(payloads: &[Value]) -> Vec<String> {
    payloads
        .iter()
        .map(|p| p["vigia_notification_id"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn email_slack_and_teams_receive_the_notification() {
    let smtp = SmtpReceiver::start(0).await;
    let http = HttpReceiver::start().await;
    let cfg = config(&format!(
        r#"
        [tenants.42]
        slack_webhooks = ["{slack}"]
        teams_webhooks = ["{teams}"]
        [tenants.42.email]
        host = "127.0.0.1"
        port = {port}
        tls = "none"
        from = "Vigía <alertas@example.com>"
        to = ["ceo@example.com", "Gerencia <gerencia@example.com>"]
        "#,
        slack = http.url("/slack/42"),
        teams = http.url("/teams/42"),
        port = smtp.addr.port(),
    ));
    let dir = TempDir::new();
    let inbox = inbox(&dir).await;
    let (dispatcher, registry, shutdown) = dispatcher(cfg, &inbox).await;

    let alert = notification(42, NotificationType::PerformanceAlert);
    let report = notification(42, NotificationType::DailyReport);
    // Slack, Teams, and one e-mail per address.
    assert_eq!(store(&dispatcher, &alert).await, queued(4));
    assert_eq!(store(&dispatcher, &report).await, queued(4));
    eventually(
        "four e-mails and four webhooks",
        Duration::from_secs(10),
        || {
            smtp.mails().len() == 4
                && http.delivered("/slack/42").len() == 2
                && http.delivered("/teams/42").len() == 2
        },
    )
    .await;

    // E-mail: envelope (one recipient each), headers, both parts.
    let mails = smtp.mails();
    let alert_mails: Vec<&Mail> = mails
        .iter()
        .filter(|m| m.notification_id() == alert.id.to_string())
        .collect();
    let mut rcpts: Vec<Vec<String>> = alert_mails.iter().map(|m| m.rcpt.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, [["ceo@example.com"], ["gerencia@example.com"]]);
    let mail = alert_mails[0];
    assert_eq!(mail.from, "alertas@example.com");
    let parsed = mail.parsed();
    assert_eq!(parsed.subject(), Some(alert.title.as_str()));
    assert_eq!(
        parsed.message_id(),
        Some(format!("{}.vigia@example.com", alert.id).as_str())
    );
    let text = parsed.body_text(0).unwrap();
    assert!(text.contains(&alert.message), "{text}");
    assert!(text.contains(&alert.id.to_string()), "{text}");
    assert!(text.contains("seller_name: Ana Núñez"), "{text}");
    let html = parsed.body_html(0).unwrap();
    assert!(
        html.contains(&alert.id.to_string()) && html.contains("<table"),
        "{html}"
    );
    assert_eq!(
        parsed.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    let report_mail = mails
        .iter()
        .find(|m| m.notification_id() == report.id.to_string())
        .expect("the report's e-mail");
    let text = report_mail.parsed().body_text(0).unwrap().into_owned();
    assert!(text.contains("team.conversations: 12"), "{text}");
    assert!(text.contains("team.engagement_rate: 0.83"), "{text}");
    assert!(text.contains("top_performers.1.name: Ana Núñez"), "{text}");

    // Slack: text + blocks + id.
    let slack = http.delivered("/slack/42");
    let slack_alert = slack
        .iter()
        .find(|p| p["vigia_notification_id"] == json!(alert.id))
        .unwrap();
    assert!(slack_alert["text"].as_str().unwrap().contains(&alert.title));
    let blocks = slack_alert["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], alert.title.as_str());
    assert_eq!(blocks[1]["text"]["type"], "plain_text");
    assert_eq!(blocks.last().unwrap()["type"], "context");

    // Teams: a message with one Adaptive Card + id.
    let teams = http.delivered("/teams/42");
    let teams_report = teams
        .iter()
        .find(|p| p["vigia_notification_id"] == json!(report.id))
        .unwrap();
    assert_eq!(teams_report["type"], "message");
    let attachment = &teams_report["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["body"][0]["inlines"][0]["text"], report.title.as_str());
    assert_eq!(
        card["body"][1]["inlines"][0]["text"],
        report.message.as_str()
    );
    assert!(card["body"].as_array().unwrap().iter().any(|b| b["inlines"]
        == json!([
            {"type": "TextRun", "text": "team.conversations: ", "weight": "Bolder"},
            {"type": "TextRun", "text": "12"}
        ])));

    // A receiver may have the message a moment before its sender records it.
    for (channel, sent) in [("email", 4), ("slack", 2), ("teams", 2)] {
        eventually(
            &format!("{channel} counted as sent"),
            Duration::from_secs(5),
            || attempts(&registry, channel, "sent") == sent,
        )
        .await;
        assert_eq!(attempts(&registry, channel, "retry"), 0, "{channel}");
    }
    let rows = inbox.outbox(42).await.unwrap();
    assert_eq!(rows.len(), 8, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.state == "sent" && r.attempts == 1),
        "{rows:?}"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn receivers_that_fail_then_recover_get_each_notification_exactly_once() {
    let smtp = SmtpReceiver::start(2).await;
    let http = HttpReceiver::start().await;
    http.fail_first("/slack/1", 2);
    http.fail_first("/teams/1", 3);
    let cfg = config(&format!(
        r#"
        retry = {{ max_attempts = 6, initial_delay = "20ms", max_delay = "100ms" }}
        [tenants.1]
        slack_webhooks = ["{slack}"]
        teams_webhooks = ["{teams}"]
        [tenants.1.email]
        host = "localhost"
        port = {port}
        tls = "none"
        from = "alertas@example.com"
        to = ["ceo@example.com"]
        "#,
        slack = http.url("/slack/1"),
        teams = http.url("/teams/1"),
        port = smtp.addr.port(),
    ));
    let dir = TempDir::new();
    let inbox = inbox(&dir).await;
    let (dispatcher, registry, shutdown) = dispatcher(cfg, &inbox).await;

    let first = notification(1, NotificationType::PerformanceAlert);
    let second = notification(1, NotificationType::DailyReport);
    assert_eq!(store(&dispatcher, &first).await, queued(3));
    // Seen again while still being retried (a replay of the Kafka record): not queued again.
    assert_eq!(store(&dispatcher, &first).await.duplicates, 3);
    assert_eq!(store(&dispatcher, &second).await, queued(3));
    eventually("both delivered everywhere", Duration::from_secs(10), || {
        smtp.mails().len() == 2
            && http.delivered("/slack/1").len() == 2
            && http.delivered("/teams/1").len() == 2
    })
    .await;
    // Seen again after it was sent: still not sent again.
    assert_eq!(store(&dispatcher, &first).await.duplicates, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut expected = [first.id.to_string(), second.id.to_string()];
    expected.sort();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let mail_ids: Vec<String> = smtp.mails().iter().map(Mail::notification_id).collect();
    assert_eq!(sorted(mail_ids), expected);
    assert_eq!(sorted(ids(&http.delivered("/slack/1"))), expected);
    assert_eq!(sorted(ids(&http.delivered("/teams/1"))), expected);
    assert_eq!(smtp.refused.load(Ordering::SeqCst), 2);
    assert_eq!(http.hits("/slack/1"), 4);
    assert_eq!(http.hits("/teams/1"), 5);
    assert_eq!(attempts(&registry, "email", "retry"), 2);
    assert_eq!(attempts(&registry, "slack", "retry"), 2);
    assert_eq!(attempts(&registry, "teams", "retry"), 3);
    for channel in ["email", "slack", "teams"] {
        assert_eq!(attempts(&registry, channel, "sent"), 2, "{channel}");
        assert_eq!(attempts(&registry, channel, "failed"), 0, "{channel}");
    }
    shutdown.cancel();
}

/// The durable outbox across a restart: a delivery whose receiver is failing when the gateway
/// stops is resumed by the next gateway on the same database and delivered exactly once when
/// the receiver recovers; what was sent before the restart is not sent again.
#[tokio::test]
async fn a_restart_resumes_what_was_pending_and_resends_nothing_already_sent() {
    let smtp = SmtpReceiver::start(0).await;
    let http = HttpReceiver::start().await;
    http.set_flaky_down(true);
    let cfg = config(&format!(
        r#"
        retry = {{ max_attempts = 1000, initial_delay = "20ms", max_delay = "50ms" }}
        [tenants.3]
        slack_webhooks = ["{flaky}"]
        teams_webhooks = ["{ok}"]
        [tenants.3.email]
        host = "127.0.0.1"
        port = {port}
        tls = "none"
        from = "alertas@example.com"
        to = ["ceo@example.com"]
        "#,
        flaky = http.url("/flaky/3"),
        ok = http.url("/teams/3"),
        port = smtp.addr.port(),
    ));
    let dir = TempDir::new();
    let alert = notification(3, NotificationType::PerformanceAlert);
    {
        let inbox = inbox(&dir).await;
        let (dispatcher, _registry, shutdown) = dispatcher(cfg.clone(), &inbox).await;
        assert_eq!(store(&dispatcher, &alert).await, queued(3));
        eventually(
            "e-mail and Teams sent, Slack failing",
            Duration::from_secs(10),
            || {
                smtp.mails().len() == 1
                    && http.delivered("/teams/3").len() == 1
                    && http.hits("/flaky/3") >= 3
            },
        )
        .await;
        // The gateway stops (its database handle and workers go with it).
        shutdown.cancel();
        dispatcher.stopped().await;
    }
    let hits_before = http.hits("/flaky/3");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        http.hits("/flaky/3"),
        hits_before,
        "nothing runs after the stop"
    );
    assert!(http.delivered("/flaky/3").is_empty());

    // The receiver recovers; a new gateway starts on the same database.
    http.set_flaky_down(false);
    let inbox = inbox(&dir).await;
    let pending: Vec<_> = inbox
        .outbox(3)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.state == "pending")
        .collect();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].channel, "slack");
    // Every failed attempt is recorded, but the one interrupted by the stop (if any).
    let recorded = pending[0].attempts as usize;
    assert!(
        recorded == hits_before || recorded + 1 == hits_before,
        "{recorded} attempts recorded, {hits_before} received"
    );
    let (dispatcher, registry, shutdown) = dispatcher(cfg, &inbox).await;
    eventually("the pending Slack message", Duration::from_secs(10), || {
        http.delivered("/flaky/3").len() == 1
    })
    .await;
    // The Kafka consumer replays the record after the restart: already stored, nothing queued.
    let replay = dispatcher.store(&alert).await.unwrap();
    assert!(replay.inserted.is_none());
    assert_eq!(replay.dispatched.duplicates, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids(&http.delivered("/flaky/3")), [alert.id.to_string()]);
    assert_eq!(
        http.hits("/flaky/3"),
        hits_before + 1,
        "exactly one more attempt"
    );
    assert_eq!(
        http.hits("/teams/3"),
        1,
        "sent before the restart: not again"
    );
    assert_eq!(smtp.mails().len(), 1, "sent before the restart: not again");
    assert_eq!(attempts(&registry, "slack", "sent"), 1);
    assert_eq!(attempts(&registry, "teams", "sent"), 0);
    assert_eq!(attempts(&registry, "email", "sent"), 0);
    let rows = inbox.outbox(3).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:?}");
    let slack_row = rows.iter().find(|r| r.channel == "slack").unwrap();
    assert_eq!(slack_row.attempts as usize, recorded + 1);
    shutdown.cancel();
}

#[tokio::test]
async fn e_mail_goes_to_the_users_whose_preferences_ask_for_it() {
    let smtp = SmtpReceiver::start(0).await;
    let cfg = config(&format!(
        r#"
        [tenants.5.email]
        host = "127.0.0.1"
        port = {port}
        tls = "none"
        from = "alertas@example.com"
        [tenants.5.email.users]
        1001 = {{ address = "Ceo <ceo@example.com>", role = "ceo" }}
        1002 = {{ address = "gerente@example.com", role = "manager" }}
        1010 = {{ address = "ana@example.com", role = "seller" }}
        "#,
        port = smtp.addr.port(),
    ));
    let dir = TempDir::new();
    let inbox = inbox(&dir).await;
    let (dispatcher, _registry, shutdown) = dispatcher(cfg, &inbox).await;
    let set = |user, role, update: Value| {
        let inbox = inbox.clone();
        async move {
            let v = Viewer {
                tenant_id: 5,
                user_id: user,
                role,
            };
            let prefs = Preferences::for_role(role).updated(&update).unwrap();
            inbox.set_preferences(&v, &prefs).await.unwrap();
        }
    };
    // Nobody asked for e-mail yet: nothing is queued.
    let first = notification(5, NotificationType::PerformanceAlert);
    assert_eq!(store(&dispatcher, &first).await, Dispatched::default());
    // The CEO and the seller turn e-mail on; the manager leaves it off.
    set(1001, Role::Ceo, json!({"email": true})).await;
    set(1010, Role::Seller, json!({"email": true})).await;
    let alert = notification(5, NotificationType::PerformanceAlert);
    let report = notification(5, NotificationType::DailyReport);
    assert_eq!(store(&dispatcher, &alert).await, queued(1), "the CEO's");
    assert_eq!(store(&dispatcher, &report).await, queued(1), "the CEO's");
    eventually("two e-mails", Duration::from_secs(10), || {
        smtp.mails().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2);
    assert!(
        mails.iter().all(|m| m.rcpt == ["ceo@example.com"]),
        "{mails:?}"
    );
    let mut got: Vec<String> = mails.iter().map(Mail::notification_id).collect();
    got.sort();
    let mut want = vec![alert.id.to_string(), report.id.to_string()];
    want.sort();
    assert_eq!(got, want);
    let rows = inbox.outbox(5).await.unwrap();
    assert!(rows.iter().all(|r| r.user_id == Some(1001)), "{rows:?}");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_broken_channel_delays_neither_storing_nor_the_others() {
    let smtp = SmtpReceiver::start(0).await;
    let http = HttpReceiver::start().await;
    let cfg = config(&format!(
        r#"
        timeout = "1s"
        retry = {{ max_attempts = 2, initial_delay = "50ms", max_delay = "50ms" }}
        [tenants.7]
        slack_webhooks = ["{hang}"]
        teams_webhooks = ["{down}"]
        [tenants.7.email]
        host = "127.0.0.1"
        port = {port}
        tls = "none"
        from = "alertas@example.com"
        to = ["ceo@example.com"]
        "#,
        hang = http.url("/hang/7"),
        down = http.url("/down/7"),
        port = smtp.addr.port(),
    ));
    let dir = TempDir::new();
    let inbox = inbox(&dir).await;
    let (dispatcher, registry, shutdown) = dispatcher(cfg, &inbox).await;

    let alert = notification(7, NotificationType::PerformanceAlert);
    assert_eq!(store(&dispatcher, &alert).await, queued(3));
    eventually("slack request hanging", Duration::from_secs(5), || {
        http.hits("/hang/7") == 1
    })
    .await;

    // The e-mail arrives while the Slack request still hangs (its attempt times out after 1 s).
    eventually("the e-mail", Duration::from_millis(900), || {
        smtp.mails().len() == 1
    })
    .await;
    assert_eq!(attempts(&registry, "slack", "retry"), 0);
    eventually("the e-mail counted", Duration::from_secs(5), || {
        attempts(&registry, "email", "sent") == 1
    })
    .await;

    // While Slack hangs, storing is never slowed down by it and e-mail keeps up with everything.
    let mut slowest = Duration::ZERO;
    let more: Vec<Notification> = (0..8)
        .map(|_| notification(7, NotificationType::DailyReport))
        .collect();
    for n in &more {
        let started = Instant::now();
        assert_eq!(store(&dispatcher, n).await, queued(3));
        slowest = slowest.max(started.elapsed());
        eventually("the e-mail", Duration::from_secs(5), || {
            smtp.mails()
                .iter()
                .any(|m| m.notification_id() == n.id.to_string())
        })
        .await;
    }
    assert!(
        slowest < Duration::from_millis(500),
        "storing took {slowest:?}"
    );
    assert_eq!(smtp.mails().len(), 9);

    // The broken channels retry and give up, each at its own pace: Teams (refusing at once)
    // gives every notification up after its attempts; Slack times out on each attempt, taking
    // its deliveries in turn (one in backoff does not hold up the others), and has dropped
    // nothing: they wait in the outbox.
    eventually("failures counted", Duration::from_secs(10), || {
        attempts(&registry, "slack", "retry") >= 1 && attempts(&registry, "teams", "failed") == 9
    })
    .await;
    assert!(attempts(&registry, "teams", "retry") >= 9);
    assert_eq!(attempts(&registry, "email", "failed"), 0);
    let rows = inbox.outbox(7).await.unwrap();
    let slack: Vec<_> = rows.iter().filter(|r| r.channel == "slack").collect();
    assert_eq!(slack.len(), 9);
    assert!(slack.iter().all(|r| r.state != "sent"), "{slack:?}");
    assert!(slack.iter().any(|r| r.state == "pending"), "{slack:?}");
    assert!(rows
        .iter()
        .filter(|r| r.channel == "teams")
        .all(|r| r.state == "failed" && r.attempts == 2));
    shutdown.cancel();
}

#[tokio::test]
async fn only_configured_types_go_out_and_only_to_the_own_tenant() {
    let smtp = SmtpReceiver::start(0).await;
    let http = HttpReceiver::start().await;
    let cfg = config(&format!(
        r#"
        [tenants.1]
        types = ["daily_report"]
        slack_webhooks = ["{slack1}"]
        [tenants.2]
        slack_webhooks = ["{slack2}"]
        [tenants.2.email]
        host = "127.0.0.1"
        port = {port}
        tls = "none"
        from = "alertas@dos.example"
        to = ["ceo@dos.example"]
        "#,
        slack1 = http.url("/slack/1"),
        slack2 = http.url("/slack/2"),
        port = smtp.addr.port(),
    ));
    let dir = TempDir::new();
    let inbox = inbox(&dir).await;
    let (dispatcher, registry, shutdown) = dispatcher(cfg, &inbox).await;

    let not_for_1 = [
        notification(1, NotificationType::PerformanceAlert),
        notification(1, NotificationType::HotLead),
    ];
    let for_1 = notification(1, NotificationType::DailyReport);
    let for_2 = notification(2, NotificationType::PerformanceAlert);
    let not_for_2 = notification(2, NotificationType::UnansweredConversation);
    let unknown_tenant = notification(3, NotificationType::DailyReport);
    for n in &not_for_1 {
        assert_eq!(store(&dispatcher, n).await.queued, 0);
    }
    assert_eq!(store(&dispatcher, &not_for_2).await.queued, 0);
    assert_eq!(store(&dispatcher, &unknown_tenant).await.queued, 0);
    assert_eq!(store(&dispatcher, &for_1).await.queued, 1);
    assert_eq!(store(&dispatcher, &for_2).await.queued, 2);
    eventually("deliveries", Duration::from_secs(10), || {
        http.delivered("/slack/1").len() == 1
            && http.delivered("/slack/2").len() == 1
            && smtp.mails().len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ids(&http.delivered("/slack/1")), [for_1.id.to_string()]);
    assert_eq!(ids(&http.delivered("/slack/2")), [for_2.id.to_string()]);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].notification_id(), for_2.id.to_string());
    assert_eq!(mails[0].rcpt, ["ceo@dos.example"]);
    eventually("counted", Duration::from_secs(5), || {
        attempts(&registry, "slack", "sent") == 2
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn a_refused_e_mail_is_not_retried() {
    // A receiver that refuses the recipient for good (550) gets one attempt only.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let conversations = Arc::new(AtomicUsize::new(0));
    let counter = conversations.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read);
                write.write_all(b"220 localhost ESMTP\r\n").await.ok();
                let mut line = String::new();
                while lines.read_line(&mut line).await.unwrap_or(0) > 0 {
                    let reply: &[u8] = match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                        Some("EHLO") => b"250 localhost\r\n",
                        Some("RCPT") => b"550 5.1.1 no such user\r\n",
                        Some("QUIT") => b"221 bye\r\n",
                        _ => b"250 OK\r\n",
                    };
                    write.write_all(reply).await.ok();
                    line.clear();
                }
            });
        }
    });
    let cfg = config(&format!(
        r#"
        retry = {{ max_attempts = 5, initial_delay = "10ms", max_delay = "10ms" }}
        [tenants.5.email]
        host = "127.0.0.1"
        port = {port}
        tls = "none"
        from = "alertas@example.com"
        to = ["nadie@example.com"]
        "#
    ));
    let dir = TempDir::new();
    let inbox = inbox(&dir).await;
    let (dispatcher, registry, shutdown) = dispatcher(cfg, &inbox).await;
    store(
        &dispatcher,
        &notification(5, NotificationType::PerformanceAlert),
    )
    .await;
    eventually("the failure", Duration::from_secs(10), || {
        attempts(&registry, "email", "failed") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(conversations.load(Ordering::SeqCst), 1);
    assert_eq!(attempts(&registry, "email", "retry"), 0);
    let rows = inbox.outbox(5).await.unwrap();
    assert_eq!(rows[0].state, "failed");
    assert!(
        rows[0].last_error.as_deref().unwrap_or("").contains("550"),
        "{rows:?}"
    );
    shutdown.cancel();
}
