//! Harness for the end-to-end tests: runs the real `vigia` binary against the real local
//! services (Kafka API broker, ClickHouse) started by `scripts/services.sh`, each test in its own
//! namespace (topic prefix, ClickHouse database, data directory, HTTP port) so tests don't see
//! each other's records.
#![allow(dead_code)]

pub mod kafka_nodes;
pub mod outputs;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

pub const SECRET: &str = "e2e-test-secret";
/// Tenants 1 and 2 with their keys.
pub const API_KEYS: &str = "key-t1=1,key-t2=2";

pub fn kafka_brokers() -> String {
    std::env::var("VIGIA_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("VIGIA_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One isolated deployment: its own topics, ClickHouse database and inbox.
#[derive(Clone)]
pub struct Namespace {
    pub name: String,
    pub data_dir: PathBuf,
    pub extra_env: Vec<(String, String)>,
    _data_dir_cleanup: Arc<DataDirCleanup>,
}

/// Removes a namespace's data directory (processes' logs, inboxes, brokers' data) when the last
/// handle to the namespace goes, unless the test is failing: then it stays for the post-mortem
/// (failures print its path). Before, every run left its directories in the temp dir (~1.5 GB
/// after a few dozen CI runs).
struct DataDirCleanup(PathBuf);

impl Drop for DataDirCleanup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Namespace {
    pub fn new(test: &str) -> Namespace {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("e2e_{test}_{}", &id[..8]);
        let data_dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&data_dir).unwrap();
        Namespace {
            name,
            _data_dir_cleanup: Arc::new(DataDirCleanup(data_dir.clone())),
            data_dir,
            extra_env: vec![],
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.extra_env.push((k.into(), v.into()));
        self
    }

    pub fn database(&self) -> String {
        self.name.clone()
    }

    /// Starts `vigia <subcommand>` on a fresh port and waits until it is ready.
    pub fn spawn(&self, subcommand: &str) -> Vigia {
        let port = free_port();
        let log_path = self.data_dir.join(format!("{subcommand}-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigia"));
        cmd.arg(subcommand)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,rdkafka=warn")
            .env("VIGIA_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("VIGIA_KAFKA_BROKERS", kafka_brokers())
            .env("VIGIA_KAFKA_TOPIC_PREFIX", format!("{}.", self.name))
            .env("VIGIA_KAFKA_PARTITIONS", "2")
            .env("VIGIA_CLICKHOUSE_URL", clickhouse_url())
            .env("VIGIA_CLICKHOUSE_DATABASE", self.database())
            .env("VIGIA_DATA_DIR", &self.data_dir)
            .env("VIGIA_JWT_SECRET", SECRET)
            .env("VIGIA_API_KEYS", API_KEYS)
            // Checkpoints are on by default; every second here, so that the crash, scale and
            // order tests restore from them rather than replay (10 s would rarely be reached).
            .env("VIGIA_CHECKPOINT_INTERVAL", "1s")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("the vigia binary starts");
        let mut v = Vigia {
            child,
            port,
            log_path,
        };
        v.wait_ready(Duration::from_secs(60));
        v
    }
}

pub struct Vigia {
    pub child: Child,
    pub port: u16,
    pub log_path: PathBuf,
}

impl Vigia {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if http_get_status(&self.url("/health/readiness")).ok() == Some(200) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "vigia exited with {status} before it was ready; its log:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "vigia did not become ready in {within:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kill -9`: no chance to flush or commit.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        unsafe_sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
        false
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

impl Drop for Vigia {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The status of a plain HTTP/1.1 GET, without an async runtime (the harness's start-up runs
/// outside one).
pub fn http_get_status(url: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

pub fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn event(ty: &str, tenant: u64, at: chrono::DateTime<chrono::Utc>, fields: Value) -> Value {
    let mut e = json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": ty,
                       "tenant_id": tenant, "occurred_at": ts(at)});
    for (k, v) in fields.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

pub fn key_for(tenant: u64) -> &'static str {
    match tenant {
        1 => "key-t1",
        2 => "key-t2",
        _ => "no-such-key",
    }
}

/// POSTs a JSON body with the tenant's API key; returns (status, body as JSON or text).
pub async fn post_events(v: &Vigia, tenant: u64, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(v.url("/v1/events"))
        .header("X-API-Key", key_for(tenant))
        .json(body)
        .send()
        .await
        .expect("ingest answers");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub async fn post_ok(v: &Vigia, tenant: u64, body: &Value) {
    let (status, body) = post_events(v, tenant, body).await;
    assert_eq!(status, 202, "ingest refused: {body}");
}

pub fn token(user: u64, tenant: u64, role: vigia_schemas::Role) -> String {
    vigia_gateway::issue_token(SECRET, user, tenant, role, Duration::from_secs(3600))
}

/// A frame and when it arrived.
pub type Frame = (chrono::DateTime<chrono::Utc>, Value);

/// A WebSocket client of the gateway that records every frame with its arrival time.
pub struct WsClient {
    pub frames: std::sync::Arc<std::sync::Mutex<Vec<Frame>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WsClient {
    pub async fn connect(v: &Vigia, user: u64, tenant: u64, role: vigia_schemas::Role) -> Self {
        let url = format!(
            "ws://127.0.0.1:{}/ws?token={}",
            v.port,
            token(user, tenant, role)
        );
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("the gateway accepts the WebSocket");
        let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = frames.clone();
        let task = tokio::spawn(async move {
            let (mut write, mut read) = ws.split();
            while let Some(Ok(msg)) = read.next().await {
                if let Message::Text(t) = msg {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["type"] == "ping" {
                        let _ = write
                            .send(Message::Text(json!({"type": "pong"}).to_string().into()))
                            .await;
                    }
                    sink.lock().unwrap().push((chrono::Utc::now(), v));
                }
            }
        });
        let c = WsClient { frames, task };
        c.wait_for(Duration::from_secs(10), |f| {
            f["type"] == "connection_established"
        })
        .await
        .expect("connection_established frame");
        c
    }

    /// Notifications received so far (the Notification JSON of each `notification` frame).
    pub fn notifications(&self) -> Vec<(chrono::DateTime<chrono::Utc>, Value)> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f)| f["type"] == "notification")
            .map(|(t, f)| {
                let n = if f["notification"].is_object() {
                    f["notification"].clone()
                } else {
                    f["data"].clone()
                };
                (*t, n)
            })
            .collect()
    }

    pub async fn wait_for(
        &self,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<(chrono::DateTime<chrono::Utc>, Value)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = self
                .frames
                .lock()
                .unwrap()
                .iter()
                .find(|(_, f)| pred(f))
                .cloned()
            {
                return Some(found);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_notification(
        &self,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<(chrono::DateTime<chrono::Utc>, Value)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = self.notifications().into_iter().find(|(_, n)| pred(n)) {
                return Some(found);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs a query on ClickHouse over HTTP and returns the raw TSV answer.
pub async fn ch_query(sql: &str) -> String {
    let r = reqwest::Client::new()
        .post(clickhouse_url())
        .body(sql.to_string())
        .send()
        .await
        .expect("ClickHouse answers");
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "ClickHouse refused {sql}: {text}");
    text
}

pub async fn ch_count(db: &str, table: &str, filter: &str) -> u64 {
    let w = if filter.is_empty() {
        String::new()
    } else {
        format!(" WHERE {filter}")
    };
    ch_query(&format!("SELECT count() FROM {db}.{table}{w}"))
        .await
        .trim()
        .parse()
        .unwrap()
}

/// Polls until `f` returns the expected value, or times out with the last value seen.
pub async fn eventually<T, F, Fut>(within: Duration, expected: T, mut f: F) -> T
where
    T: PartialEq + Clone + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + within;
    loop {
        let got = f().await;
        if got == expected || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn drop_database(db: &str) {
    let _ = reqwest::Client::new()
        .post(clickhouse_url())
        .body(format!("DROP DATABASE IF EXISTS {db}"))
        .send()
        .await;
}
