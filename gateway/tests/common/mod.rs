//! Helpers shared by the integration tests: a gateway on 127.0.0.1:0 over a temporary SQLite
//! inbox, WebSocket clients, notifications.
#![allow(dead_code)]

pub mod eio;
pub mod smtp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vigia_gateway::{issue_token, Config, Gateway, Role};
use vigia_schemas::{Audience, Notification, NotificationType, TenantId, UserId};

pub const SECRET: &str = "integration-test-secret";
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("vigia-gateway-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}/gateway.db?mode=rwc", self.0.display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct TestGateway {
    pub gateway: Gateway,
    pub addr: SocketAddr,
    pub registry: Registry,
    pub shutdown: CancellationToken,
    pub dir: TempDir,
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestGateway {
        let dir = TempDir::new();
        let mut cfg = Config {
            jwt_secret: SECRET.into(),
            database_url: dir.sqlite_url(),
            ..Config::default()
        };
        tweak(&mut cfg);
        let mut registry = Registry::default();
        let shutdown = CancellationToken::new();
        let gateway = Gateway::start_without_consumer(cfg, &mut registry, shutdown.clone())
            .await
            .expect("gateway starts on a temporary SQLite inbox");
        let addr = serve(&gateway, shutdown.clone()).await;
        TestGateway {
            gateway,
            addr,
            registry,
            shutdown,
            dir,
        }
    }

    pub fn token(&self, tenant_id: TenantId, user_id: UserId, role: Role) -> String {
        issue_token(SECRET, user_id, tenant_id, role, Duration::from_secs(3600))
    }

    pub async fn connect(&self, tenant_id: TenantId, user_id: UserId, role: Role) -> Ws {
        self.connect_query(&format!("token={}", self.token(tenant_id, user_id, role)))
            .await
    }

    /// Connects and consumes `connection_established` and the first `unread_count`; returns
    /// that count.
    pub async fn connect_ready(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
        role: Role,
    ) -> (Ws, u64) {
        let mut ws = self.connect(tenant_id, user_id, role).await;
        let count = expect_handshake(&mut ws, tenant_id, user_id).await;
        (ws, count)
    }

    pub async fn connect_query(&self, query: &str) -> Ws {
        let url = format!("ws://{}/ws?{query}", self.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        ws
    }

    /// The sum of every series of `name` (all label values).
    pub fn metric(&self, name: &str) -> f64 {
        self.metric_where(name, "")
    }

    /// The sum of the series of `name` whose labels contain `labels` (e.g.
    /// `transport="ws"`); 0 if the metric exists but has no such series yet.
    pub fn metric_where(&self, name: &str, labels: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            text.lines().any(|l| l == format!("# TYPE {family} counter")
                || l.starts_with(&format!("# TYPE {name} "))),
            "metric {name} not found in:\n{text}"
        );
        text.lines()
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, series_labels) = match series.split_once('{') {
                    Some((m, l)) => (m, l),
                    None => (series, ""),
                };
                (metric == name && series_labels.contains(labels))
                    .then(|| value.parse::<f64>().unwrap())
            })
            .sum()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves the gateway's router on 127.0.0.1:0 until `shutdown`.
pub async fn serve(gateway: &Gateway, shutdown: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = gateway.router();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .unwrap();
    });
    addr
}

pub fn notification(tenant_id: TenantId, audience: Audience) -> Notification {
    Notification {
        id: Uuid::new_v4(),
        tenant_id,
        kind: NotificationType::UnansweredConversation,
        priority: NotificationType::UnansweredConversation.default_priority(),
        audience,
        title: "Conversación sin responder".into(),
        message: "Un cliente espera respuesta".into(),
        data: json!({"conversation_id": "c-1"}),
        actions: vec![],
        created_at: chrono::Utc::now(),
        withdraws: None,
    }
}

pub fn to_user(tenant_id: TenantId, user_id: UserId) -> Notification {
    notification(tenant_id, Audience::User { user_id })
}

pub fn to_role(tenant_id: TenantId, role: Role) -> Notification {
    notification(tenant_id, Audience::Role { role })
}

/// The next text frame as JSON, skipping `ping`; `None` if nothing comes within `wait`.
pub async fn next_json(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match message.expect("websocket read") {
            Message::Text(text) => {
                let v: Value = serde_json::from_str(&text).expect("server frames are JSON");
                if v["type"] != "ping" {
                    return Some(v);
                }
            }
            Message::Close(frame) => panic!("unexpected close: {frame:?}"),
            _ => {}
        }
    }
}

/// The next frame, which must be of type `kind`.
pub async fn expect_frame(ws: &mut Ws, kind: &str) -> Value {
    let v = next_json(ws, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no {kind} frame within 5s"));
    assert_eq!(v["type"], kind, "expected a {kind} frame, got {v}");
    v
}

pub async fn expect_handshake(ws: &mut Ws, tenant_id: TenantId, user_id: UserId) -> u64 {
    let hello = expect_frame(ws, "connection_established").await;
    assert_eq!(hello["tenant_id"], tenant_id);
    assert_eq!(hello["user_id"], user_id);
    expect_frame(ws, "unread_count").await["count"]
        .as_u64()
        .unwrap()
}

/// Notification frames received within `wait` of the last frame, ignoring `unread_count`.
pub async fn notifications_within(ws: &mut Ws, wait: Duration) -> Vec<Value> {
    let mut out = vec![];
    while let Some(v) = next_json(ws, wait).await {
        match v["type"].as_str() {
            Some("notification") => out.push(v),
            Some("unread_count") => {}
            _ => panic!("unexpected frame {v}"),
        }
    }
    out
}

/// The ids of notification frames.
pub fn ids(frames: &[Value]) -> Vec<Uuid> {
    frames
        .iter()
        .map(|f| f["notification"]["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Everything the server sends until it has been quiet for `quiet`: the notification frames,
/// and the last `unread_count` (which may run ahead of the notification frames still queued, so
/// only the last one is meaningful).
pub async fn settle(ws: &mut Ws, quiet: Duration) -> (Vec<Value>, Option<u64>) {
    let mut notifications = vec![];
    let mut count = None;
    while let Some(v) = next_json(ws, quiet).await {
        match v["type"].as_str() {
            Some("notification") => notifications.push(v),
            Some("unread_count") => count = v["count"].as_u64(),
            _ => panic!("unexpected frame {v}"),
        }
    }
    (notifications, count)
}

pub async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Reads until the server closes; returns the close code and reason.
pub async fn expect_close(ws: &mut Ws, wait: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("server closes in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) => return (u16::from(CloseCode::Status), String::new()),
            Some(Ok(_)) => {}
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    }
}

/// A seller-metrics snapshot of `seller` at 09:`minute` on 2026-03-02, with `score`.
pub fn seller_metrics(
    tenant_id: TenantId,
    seller_id: UserId,
    minute: u32,
    score: f64,
) -> vigia_schemas::SellerMetrics {
    use chrono::TimeZone;
    let stats = |count: u32, mean: f64| vigia_schemas::ResponseTimeStats {
        count,
        mean_seconds: Some(mean),
        p50_seconds: Some(mean),
        p90_seconds: Some(mean * 2.0),
        max_seconds: Some(mean * 3.0),
    };
    vigia_schemas::SellerMetrics {
        id: Uuid::new_v4(),
        tenant_id,
        seller_id,
        snapshot_at: chrono::Utc
            .with_ymd_and_hms(2026, 3, 2, 9, minute, 0)
            .unwrap(),
        time_zone: "UTC".into(),
        day: chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
        conversations_total: 5,
        conversations_active: 3,
        conversations_today: 4,
        conversations_unanswered: 1,
        response_1h: stats(1, 30.0),
        response_today: stats(3, 60.0),
        response_7d: stats(9, 90.0),
        total_chat_seconds: 100.0,
        waits_received: 3,
        waits_answered: 3,
        engagement_rate: Some(1.0),
        leads_generated: 2,
        leads_converted: 1,
        conversion_rate: Some(0.5),
        leads_generated_today: 2,
        leads_converted_today: 1,
        hot_leads: 1,
        team: None,
        messages_last_hour: 12,
        activity_level: vigia_schemas::ActivityLevel::Medium,
        productivity_score: score,
        rank: 1,
        sellers_ranked: 1,
    }
}

/// A PostgreSQL database of a test's own, on the server of `VIGIA_TEST_POSTGRES_URL`; `None`
/// (with a message) when that is unset. Drop it with [`PgTestDatabase::drop_database`].
pub struct PgTestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgTestDatabase {
    pub async fn create() -> Option<PgTestDatabase> {
        use sqlx::{Connection, Executor};
        let Ok(admin_url) = std::env::var("VIGIA_TEST_POSTGRES_URL") else {
            println!(
                "skipped: set VIGIA_TEST_POSTGRES_URL=postgres://user:pass@host:port/db to run"
            );
            return None;
        };
        let name = format!("vigia_test_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("VIGIA_TEST_POSTGRES_URL answers");
        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name}"
        ))))
        .await
        .expect("the test may create a database");
        conn.close().await.ok();
        let base = admin_url.split('?').next().unwrap();
        let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
        Some(PgTestDatabase {
            url,
            admin_url,
            name,
        })
    }

    pub async fn drop_database(self) {
        use sqlx::{Connection, Executor};
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = conn
                .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))))
                .await;
        }
    }
}
