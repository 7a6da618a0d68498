//! Channels outside the browser over real loopback connections: an SMTP receiver written here
//! (a real SMTP conversation with lettre) and an HTTP receiver (axum) standing in for Slack and
//! Teams. No Kafka needed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use chrono::Utc;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vigia_gateway::channels::{ChannelsConfig, Dispatcher};
use vigia_schemas::{Audience, Notification, NotificationType, Role, TenantId};

// ---------------------------------------------------------------------------------------------
// SMTP receiver

/// One message as the SMTP receiver got it.
#[derive(Clone, Debug)]
struct Mail {
    from: String,
    rcpt: Vec<String>,
    data: Vec<u8>,
}

impl Mail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.data)
            .expect("a MIME message")
    }

    fn notification_id(&self) -> String {
        self.parsed()
            .header_raw("X-Vigia-Notification-Id")
            .expect("X-Vigia-Notification-Id")
            .trim()
            .to_string()
    }
}

/// A minimal SMTP server on 127.0.0.1: 220, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
/// The first `fail_data` messages are refused after their data with `451` (try again later).
struct SmtpReceiver {
    addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
    fail_data: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl SmtpReceiver {
    async fn start(fail_data: usize) -> SmtpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = SmtpReceiver {
            addr: listener.local_addr().unwrap(),
            mails: Default::default(),
            fail_data: Arc::new(AtomicUsize::new(fail_data)),
            refused: Default::default(),
        };
        let (mails, fail, refused) = (
            receiver.mails.clone(),
            receiver.fail_data.clone(),
            receiver.refused.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (mails, fail, refused) = (mails.clone(), fail.clone(), refused.clone());
                tokio::spawn(async move {
                    let _ = smtp_session(stream, mails, fail, refused).await;
                });
            }
        });
        receiver
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

fn address(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].to_string()
}

async fn smtp_session(
    stream: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
    fail: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"220 localhost ESMTP vigia-test\r\n")
        .await?;
    let (mut from, mut rcpt) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-localhost\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" => b"250 localhost\r\n",
            "MAIL" => {
                from = address(&command);
                rcpt.clear();
                b"250 2.1.0 OK\r\n"
            }
            "RCPT" => {
                rcpt.push(address(&command));
                b"250 2.1.5 OK\r\n"
            }
            "DATA" => {
                write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = Vec::new();
                loop {
                    let mut l = String::new();
                    if lines.read_line(&mut l).await? == 0 {
                        return Ok(());
                    }
                    if l == ".\r\n" {
                        break;
                    }
                    // Dot-stuffing.
                    let l = l.strip_prefix('.').unwrap_or(&l);
                    data.extend_from_slice(l.as_bytes());
                }
                let failing = fail
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    refused.fetch_add(1, Ordering::SeqCst);
                    b"451 4.3.0 temporary failure, try again later\r\n"
                } else {
                    mails.lock().unwrap().push(Mail {
                        from: from.clone(),
                        rcpt: rcpt.clone(),
                        data,
                    });
                    b"250 2.0.0 queued\r\n"
                }
            }
            "RSET" => {
                rcpt.clear();
                b"250 2.0.0 OK\r\n"
            }
            "NOOP" => b"250 2.0.0 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.2 command not recognized\r\n",
        };
        write.write_all(reply).await?;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP receiver (Slack / Teams)

/// Every POST it got: path, JSON body, the status it answered.
#[derive(Default)]
struct HttpState {
    requests: Mutex<Vec<(String, Value, u16)>>,
    /// Per path: how many more requests to answer with a 5xx.
    failures_left: Mutex<HashMap<String, usize>>,
}

/// Paths: `/hang/…` never answers, `/down/…` always 500, a path given to
/// [`HttpReceiver::fail_first`] fails that many times; anything else answers 200 `ok`.
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
    let status = if path.starts_with("/down/") {
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
    let mut registry = Registry::default();
    let shutdown = CancellationToken::new();
    let dispatcher = Dispatcher::start(cfg, &mut registry, shutdown.clone()).unwrap();

    let alert = notification(42, NotificationType::PerformanceAlert);
    let report = notification(42, NotificationType::DailyReport);
    assert_eq!(dispatcher.dispatch(&alert).queued, 3);
    assert_eq!(dispatcher.dispatch(&report).queued, 3);
    eventually(
        "two e-mails and four webhooks",
        Duration::from_secs(10),
        || {
            smtp.mails().len() == 2
                && http.delivered("/slack/42").len() == 2
                && http.delivered("/teams/42").len() == 2
        },
    )
    .await;

    // E-mail: envelope, headers, both parts.
    let mails = smtp.mails();
    let mail = mails
        .iter()
        .find(|m| m.notification_id() == alert.id.to_string())
        .expect("the alert's e-mail");
    assert_eq!(mail.from, "alertas@example.com");
    assert_eq!(mail.rcpt, ["ceo@example.com", "gerencia@example.com"]);
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
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
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
    assert_eq!(card["body"][0]["text"], report.title.as_str());
    assert_eq!(card["body"][1]["text"], report.message.as_str());
    assert!(card["body"][2]["facts"]
        .as_array()
        .unwrap()
        .contains(&json!({"title": "team.conversations", "value": "12"})));

    // A receiver may have the message a moment before its sender counts it.
    for channel in ["email", "slack", "teams"] {
        eventually(
            &format!("{channel} counted as sent twice"),
            Duration::from_secs(5),
            || attempts(&registry, channel, "sent") == 2,
        )
        .await;
        assert_eq!(attempts(&registry, channel, "retry"), 0, "{channel}");
    }
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
    let mut registry = Registry::default();
    let shutdown = CancellationToken::new();
    let dispatcher = Dispatcher::start(cfg, &mut registry, shutdown.clone()).unwrap();

    let first = notification(1, NotificationType::PerformanceAlert);
    let second = notification(1, NotificationType::DailyReport);
    assert_eq!(dispatcher.dispatch(&first).queued, 3);
    // Seen again while still being retried (a replay of the Kafka record): not queued again.
    assert_eq!(dispatcher.dispatch(&first).duplicates, 3);
    assert_eq!(dispatcher.dispatch(&second).queued, 3);
    eventually("both delivered everywhere", Duration::from_secs(10), || {
        smtp.mails().len() == 2
            && http.delivered("/slack/1").len() == 2
            && http.delivered("/teams/1").len() == 2
    })
    .await;
    // Seen again after it was sent: still not sent again.
    assert_eq!(dispatcher.dispatch(&first).duplicates, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let expected = [first.id.to_string(), second.id.to_string()];
    let mail_ids: Vec<String> = smtp.mails().iter().map(Mail::notification_id).collect();
    assert_eq!(mail_ids, expected);
    assert_eq!(ids(&http.delivered("/slack/1")), expected);
    assert_eq!(ids(&http.delivered("/teams/1")), expected);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_broken_channel_delays_neither_the_caller_nor_the_others() {
    let smtp = SmtpReceiver::start(0).await;
    let http = HttpReceiver::start().await;
    let cfg = config(&format!(
        r#"
        timeout = "1s"
        queue_size = 4
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
    let mut registry = Registry::default();
    let shutdown = CancellationToken::new();
    let dispatcher = Dispatcher::start(cfg, &mut registry, shutdown.clone()).unwrap();

    let alert = notification(7, NotificationType::PerformanceAlert);
    let started = Instant::now();
    assert_eq!(dispatcher.dispatch(&alert).queued, 3);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(10), "dispatch took {took:?}");
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
    assert_eq!(attempts(&registry, "email", "sent"), 1);

    // While Slack hangs, the caller is never slowed down; once Slack's queue is full, its
    // notifications are dropped (counted), the others still get everything.
    let mut slowest = Duration::ZERO;
    let mut dropped = 0;
    let more: Vec<Notification> = (0..8)
        .map(|_| notification(7, NotificationType::DailyReport))
        .collect();
    for n in &more {
        let started = Instant::now();
        dropped += dispatcher.dispatch(n).dropped;
        slowest = slowest.max(started.elapsed());
        eventually("the e-mail", Duration::from_secs(5), || {
            smtp.mails()
                .iter()
                .any(|m| m.notification_id() == n.id.to_string())
        })
        .await;
    }
    assert!(
        slowest < Duration::from_millis(10),
        "dispatch took {slowest:?}"
    );
    assert!(
        dropped >= 4,
        "slack: at most 4 queued, 1 in flight; dropped {dropped}"
    );
    assert_eq!(smtp.mails().len(), 9);

    // Both broken channels end up counted as failed.
    eventually("failures counted", Duration::from_secs(10), || {
        attempts(&registry, "slack", "failed") >= 1 && attempts(&registry, "teams", "failed") >= 1
    })
    .await;
    assert!(attempts(&registry, "slack", "retry") >= 1);
    assert!(attempts(&registry, "slack", "dropped") >= 4);
    assert!(attempts(&registry, "teams", "retry") >= 1);
    assert_eq!(attempts(&registry, "email", "failed"), 0);
    assert_eq!(attempts(&registry, "email", "dropped"), 0);
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
    let mut registry = Registry::default();
    let shutdown = CancellationToken::new();
    let dispatcher = Dispatcher::start(cfg, &mut registry, shutdown.clone()).unwrap();

    let not_for_1 = [
        notification(1, NotificationType::PerformanceAlert),
        notification(1, NotificationType::HotLead),
    ];
    let for_1 = notification(1, NotificationType::DailyReport);
    let for_2 = notification(2, NotificationType::PerformanceAlert);
    let not_for_2 = notification(2, NotificationType::UnansweredConversation);
    let unknown_tenant = notification(3, NotificationType::DailyReport);
    for n in &not_for_1 {
        assert_eq!(dispatcher.dispatch(n).queued, 0);
    }
    assert_eq!(dispatcher.dispatch(&not_for_2).queued, 0);
    assert_eq!(dispatcher.dispatch(&unknown_tenant).queued, 0);
    assert_eq!(dispatcher.dispatch(&for_1).queued, 1);
    assert_eq!(dispatcher.dispatch(&for_2).queued, 2);
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
    assert_eq!(attempts(&registry, "slack", "sent"), 2);
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
    let mut registry = Registry::default();
    let shutdown = CancellationToken::new();
    let dispatcher = Dispatcher::start(cfg, &mut registry, shutdown.clone()).unwrap();
    dispatcher.dispatch(&notification(5, NotificationType::PerformanceAlert));
    eventually("the failure", Duration::from_secs(10), || {
        attempts(&registry, "email", "failed") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(conversations.load(Ordering::SeqCst), 1);
    assert_eq!(attempts(&registry, "email", "retry"), 0);
    shutdown.cancel();
}
