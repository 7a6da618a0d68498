//! The gateway sends what it newly stores to the tenant's channels: a performance alert reaches
//! the tenant's Slack webhook once, even when the notifications topic delivers it again; other
//! types and other tenants' notifications do not go out; e-mail reaches the users whose
//! preferences (saved through the REST API) ask for it; and a delivery pending when the gateway
//! stops is made by the next gateway on the same database, once. (The channels themselves —
//! e-mail, Teams, retries, slow receivers — are tested in `channels.rs`.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use common::smtp::SmtpReceiver;
use common::*;
use serde_json::{json, Value};
use vigia_gateway::Role;
use vigia_schemas::NotificationType;

async fn slack_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let (url, got, _down) = flaky_slack_receiver().await;
    (url, got)
}

/// A Slack stand-in that answers 503 while its switch is on; returns what it accepted.
async fn flaky_slack_receiver() -> (String, Arc<Mutex<Vec<Value>>>, Arc<AtomicBool>) {
    type St = (Arc<Mutex<Vec<Value>>>, Arc<AtomicBool>);
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let down = Arc::new(AtomicBool::new(false));
    async fn hook(
        State((got, down)): State<St>,
        Json(v): Json<Value>,
    ) -> (StatusCode, &'static str) {
        if down.load(Ordering::SeqCst) {
            return (StatusCode::SERVICE_UNAVAILABLE, "down");
        }
        got.lock().unwrap().push(v);
        (StatusCode::OK, "ok")
    }
    let app = axum::Router::new()
        .route("/slack", axum::routing::post(hook))
        .with_state((got.clone(), down.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slack", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got, down)
}

fn performance_alert(tenant: u64) -> vigia_schemas::Notification {
    let mut alert = notification(tenant, vigia_schemas::Audience::Role { role: Role::Ceo });
    alert.kind = NotificationType::PerformanceAlert;
    alert.priority = NotificationType::PerformanceAlert.default_priority();
    alert.title = "Alerta de rendimiento: respuestas lentas".into();
    alert
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn stored_alerts_go_to_the_tenants_channels_once() {
    let (url, got) = slack_receiver().await;
    let channels: vigia_gateway::channels::ChannelsConfig =
        toml::from_str(&format!("[tenants.1]\nslack_webhooks = [\"{url}\"]\n")).unwrap();
    let gw = TestGateway::start_with(move |cfg| cfg.channels = channels).await;

    let mut alert = notification(
        1,
        vigia_schemas::Audience::Role {
            role: vigia_gateway::Role::Ceo,
        },
    );
    alert.kind = NotificationType::PerformanceAlert;
    alert.title = "Alerta de rendimiento: respuestas lentas".into();
    assert!(gw.gateway.deliver(alert.clone()).await.unwrap());
    // Delivered again by Kafka (a replay): already stored, not sent again.
    assert!(!gw.gateway.deliver(alert.clone()).await.unwrap());
    // Not a configured type; another tenant's.
    gw.gateway.deliver(to_user(1, 10)).await.unwrap();
    let mut other = alert.clone();
    other.id = uuid::Uuid::new_v4();
    other.tenant_id = 2;
    gw.gateway.deliver(other).await.unwrap();

    for _ in 0..100 {
        if !got.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["vigia_notification_id"], alert.id.to_string());
    assert!(
        got[0]["text"]
            .as_str()
            .unwrap()
            .contains("respuestas lentas"),
        "{}",
        got[0]
    );
}

#[tokio::test]
async fn e_mail_follows_the_preferences_users_save_through_the_api() {
    let smtp = SmtpReceiver::start(0).await;
    let channels: vigia_gateway::channels::ChannelsConfig = toml::from_str(&format!(
        r#"
        [tenants.1.email]
        host = "127.0.0.1"
        port = {port}
        tls = "none"
        from = "alertas@example.com"
        [tenants.1.email.users]
        1001 = {{ address = "ceo@example.com", role = "ceo" }}
        1002 = {{ address = "gerente@example.com", role = "manager" }}
        "#,
        port = smtp.addr.port()
    ))
    .unwrap();
    let gw = TestGateway::start_with(move |cfg| cfg.channels = channels).await;
    let put = |user: u64, role: Role, body: Value| {
        let token = gw.token(1, user, role);
        let url = gw.url("/v1/preferences");
        async move {
            let r = reqwest::Client::new()
                .put(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), reqwest::StatusCode::OK);
        }
    };
    // E-mail is off by default: nobody gets the first alert.
    gw.gateway.deliver(performance_alert(1)).await.unwrap();
    // The CEO turns it on; the manager turns it on but only from high priority.
    put(1001, Role::Ceo, json!({"email": true})).await;
    put(
        1002,
        Role::Manager,
        json!({"email": true, "min_priority": "high"}),
    )
    .await;
    let alert = performance_alert(1);
    gw.gateway.deliver(alert.clone()).await.unwrap();
    eventually("the CEO's e-mail", || smtp.mails().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].rcpt, ["ceo@example.com"]);
    assert_eq!(mails[0].notification_id(), alert.id.to_string());
    // The inbox holds both alerts for everybody all the same.
    let rows = gw.gateway.inbox().outbox(1).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].user_id, Some(1001));
}

#[tokio::test]
async fn a_delivery_pending_at_a_restart_is_made_once_by_the_next_gateway() {
    let (url, got, down) = flaky_slack_receiver().await;
    down.store(true, Ordering::SeqCst);
    let channels: vigia_gateway::channels::ChannelsConfig = toml::from_str(&format!(
        "retry = {{ max_attempts = 1000, initial_delay = \"20ms\", max_delay = \"50ms\" }}\n\
         [tenants.1]\nslack_webhooks = [\"{url}\"]\n"
    ))
    .unwrap();
    let db = TempDir::new();
    let database_url = db.sqlite_url();
    let alert = performance_alert(1);
    let sent_before = performance_alert(1);
    {
        let (channels, database_url) = (channels.clone(), database_url.clone());
        let gw = TestGateway::start_with(move |cfg| {
            cfg.channels = channels;
            cfg.database_url = database_url;
        })
        .await;
        // One delivered while the receiver is up, one pending while it is down.
        down.store(false, Ordering::SeqCst);
        gw.gateway.deliver(sent_before.clone()).await.unwrap();
        eventually("the first alert", || got.lock().unwrap().len() == 1).await;
        down.store(true, Ordering::SeqCst);
        gw.gateway.deliver(alert.clone()).await.unwrap();
        let mut retried = false;
        for _ in 0..200 {
            let rows = gw.gateway.inbox().outbox(1).await.unwrap();
            retried = rows
                .iter()
                .any(|r| r.notification_id == alert.id && r.attempts >= 2 && r.state == "pending");
            if retried {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(retried, "failed attempts recorded");
        gw.shutdown.cancel();
        gw.gateway.stopped().await;
    }
    down.store(false, Ordering::SeqCst);
    let gw = TestGateway::start_with(move |cfg| {
        cfg.channels = channels;
        cfg.database_url = database_url;
    })
    .await;
    eventually("the pending alert", || got.lock().unwrap().len() == 2).await;
    // The notifications topic is re-read after the restart: both are already stored.
    assert!(!gw.gateway.deliver(sent_before.clone()).await.unwrap());
    assert!(!gw.gateway.deliver(alert.clone()).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<Value> = got
        .lock()
        .unwrap()
        .iter()
        .map(|p| p["vigia_notification_id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            json!(sent_before.id.to_string()),
            json!(alert.id.to_string())
        ],
        "each once"
    );
}
