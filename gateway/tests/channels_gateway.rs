//! The gateway sends what it newly stores to the tenant's channels: a performance alert reaches
//! the tenant's Slack webhook once, even when the notifications topic delivers it again; other
//! types and other tenants' notifications do not go out. (The channels themselves — e-mail,
//! Teams, retries, slow receivers — are tested in `channels.rs`.)

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use common::*;
use serde_json::Value;
use vigia_schemas::NotificationType;

async fn slack_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    async fn hook(State(got): State<Arc<Mutex<Vec<Value>>>>, Json(v): Json<Value>) -> &'static str {
        got.lock().unwrap().push(v);
        "ok"
    }
    let app = axum::Router::new()
        .route("/slack", axum::routing::post(hook))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slack", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
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
