//! `vigia bench gateway-peers`: the gateway side by side with the servers a user would pick
//! instead, measured by one harness on the same machine with the same message.
//!
//! Like is compared with like: Vigía's Socket.IO endpoint with the Node.js `socket.io` 4 server
//! and `python-socketio`, Vigía's plain `/ws` with Centrifugo v6. Each target is a [`Peer`]: the
//! servers it starts, how its clients connect and subscribe, how a message is published to it
//! and how a client recognises a delivered notification in a frame. Everything else — opening
//! the clients, timing, counting missing and duplicated frames, memory and CPU — is shared.
//!
//! The clock starts where each server receives the message: the notification's `created_at` is
//! stamped just before it is produced to Kafka (Vigía) or just before the HTTP publish call
//! (the peers), and each frame's latency is its arrival at the client minus that stamp. The
//! message is the same notification JSON for all (Vigía adds its `sequence`, `read` and
//! `withdrawn` fields, and an unread count frame after each notification).
//!
//! Durability is configured alike: Vigía stores every notification in its inbox (replay with
//! `since`); Centrifugo keeps history with forced recovery on the benchmark's namespace;
//! socket.io has connection-state recovery on; python-socketio has no equivalent (its
//! server keeps nothing for a client that reconnects), so it runs without.
//!
//! The peers' programs are in `scripts/bench-peers/`; the peers themselves (npm packages, a
//! Python virtualenv, the `centrifugo` binary) are installed under `--peers-dir` by
//! `scripts/bench-gateway-peers.sh`, never committed.
//!
//! Per run and target: broadcast latency per frame and until the last client, single-user
//! latency, the server's resident-set growth per idle connection, the server's CPU seconds
//! (`/proc/<pid>/stat`) per 100,000 frames delivered, and — to explain the noise — the
//! harness's own CPU, the load average and, for Vigía, the Kafka hop alone (a consumer of the
//! harness reading the same topic with the gateway's fetch settings).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::Message as _;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;
use vigia_schemas::{Audience, Notification, Role};

use super::{
    cli_duration, free_port, notification, produce, raise_fd_limit, write_section, ChildProcess,
    SECRET, TENANT,
};
use crate::config::Config;
use crate::simulate::percentile;

/// The servers the benchmark can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Target {
    /// Vigía's gateway, plain `/ws`, one instance.
    VigiaWs,
    /// Vigía's gateway, plain `/ws`, two instances with the clients split between them.
    #[value(name = "vigia-ws-2")]
    VigiaWs2,
    /// Vigía's gateway, Socket.IO endpoint, one instance.
    VigiaSocketio,
    /// Centrifugo v6 (JSON protocol over WebSocket), fed through its HTTP publish API.
    Centrifugo,
    /// The Node.js `socket.io` 4 server with connection-state recovery.
    NodeSocketio,
    /// `python-socketio` on aiohttp (uvloop when installed).
    PythonSocketio,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::VigiaWs => "vigia-ws",
            Target::VigiaWs2 => "vigia-ws-2",
            Target::VigiaSocketio => "vigia-socketio",
            Target::Centrifugo => "centrifugo",
            Target::NodeSocketio => "node-socketio",
            Target::PythonSocketio => "python-socketio",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Target::VigiaWs => "Vigía `/ws`, 1 instance",
            Target::VigiaWs2 => "Vigía `/ws`, 2 instances (clients split, one PostgreSQL inbox)",
            Target::VigiaSocketio => "Vigía Socket.IO, 1 instance",
            Target::Centrifugo => "Centrifugo v6.9.1 (history + forced recovery)",
            Target::NodeSocketio => "Node.js socket.io 4.8 (connection-state recovery)",
            Target::PythonSocketio => "python-socketio 5.18 + aiohttp (no recovery: none exists)",
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            Target::VigiaWs | Target::VigiaWs2 => Protocol::VigiaWs,
            Target::VigiaSocketio | Target::NodeSocketio | Target::PythonSocketio => {
                Protocol::SocketIo
            }
            Target::Centrifugo => Protocol::Centrifugo,
        }
    }

    /// The Vigía target a peer is compared with (like with like).
    fn baseline(self) -> Target {
        match self.protocol() {
            Protocol::SocketIo => Target::VigiaSocketio,
            _ => Target::VigiaWs,
        }
    }

    fn is_vigia(self) -> bool {
        matches!(
            self,
            Target::VigiaWs | Target::VigiaWs2 | Target::VigiaSocketio
        )
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct PeersArgs {
    /// The servers to measure, in this order within each run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "vigia-ws,centrifugo,vigia-socketio,node-socketio,python-socketio,vigia-ws-2"
    )]
    pub targets: Vec<Target>,
    /// Runs over every target; the figures are their medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// WebSocket clients per server.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    #[arg(long, default_value_t = 20)]
    pub broadcasts: usize,
    #[arg(long, default_value = "1s")]
    pub broadcast_every: humantime::Duration,
    #[arg(long, default_value_t = 1_000)]
    pub singles: usize,
    #[arg(long, default_value = "5ms")]
    pub single_every: humantime::Duration,
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Where `scripts/bench-gateway-peers.sh` installed the peers (`node/node_modules`,
    /// `venv/`, `bin/centrifugo`).
    #[arg(
        long,
        env = "VIGIA_BENCH_PEERS_DIR",
        default_value = "~/.cache/vigia/peers"
    )]
    pub peers_dir: String,
    /// The peers' programs (`socketio-server.js`, `socketio_server.py`).
    #[arg(long, default_value = "scripts/bench-peers")]
    pub peer_programs: PathBuf,
    /// The results file; this benchmark replaces only its own section.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// A PostgreSQL server for the two-instance target's shared inbox (a database is created
    /// per run and dropped afterwards); the local one of `scripts/services.sh` by default.
    #[arg(
        long,
        env = "VIGIA_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5433/vigia"
    )]
    pub postgres_url: String,
}

/// How clients speak to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Vigía's `/ws`: JSON frames `{"type": …}`.
    VigiaWs,
    /// Socket.IO v4 over the Engine.IO v4 WebSocket transport.
    SocketIo,
    /// Centrifugo's JSON protocol: newline-separated commands, replies and pushes.
    Centrifugo,
}

/// The broadcast channel/room of the peers; each client also has its own (`u<user>`).
const ALL: &str = "all";
const CENTRIFUGO_NAMESPACE: &str = "bench";

/// What one frame meant to a client.
#[derive(Debug, Default, PartialEq)]
struct Frame {
    /// Frames to send back (pongs, the Socket.IO namespace connect).
    replies: Vec<String>,
    /// Notifications delivered: (id, created_at).
    notifications: Vec<(Uuid, DateTime<Utc>)>,
    /// The client is connected and subscribed: notifications published from now on reach it.
    ready: bool,
}

impl Protocol {
    /// What a client sends right after the WebSocket opens.
    fn hello(self, user: u64) -> Vec<String> {
        match self {
            Protocol::VigiaWs | Protocol::SocketIo => vec![],
            // Connect, then both subscriptions, in one frame (Centrifugo handles them in order).
            Protocol::Centrifugo => vec![[
                json!({"id": 1, "connect": {"token": centrifugo_token(user), "name": "vigia-bench"}}),
                json!({"id": 2, "subscribe": {"channel": format!("{CENTRIFUGO_NAMESPACE}:{ALL}")}}),
                json!({"id": 3, "subscribe": {"channel": format!("{CENTRIFUGO_NAMESPACE}:u{user}")}}),
            ]
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")],
        }
    }

    fn parse(self, user: u64, token: &str, text: &str) -> Frame {
        let mut frame = Frame::default();
        match self {
            Protocol::VigiaWs => {
                let Ok(v) = serde_json::from_str::<Value>(text) else {
                    return frame;
                };
                match v["type"].as_str() {
                    Some("ping") => frame.replies.push(r#"{"type":"pong"}"#.into()),
                    Some("connection_established") => frame.ready = true,
                    Some("notification") => frame.notifications.extend(stamp(&v["notification"])),
                    _ => {}
                }
            }
            Protocol::SocketIo => {
                if text == "2" {
                    frame.replies.push("3".into());
                } else if text.starts_with('0') {
                    // Engine.IO open: connect to the namespace `/`. Vigía reads the JWT; the
                    // peers read the user id (they authenticate nobody in this benchmark).
                    let auth = json!({"token": token, "user": user});
                    frame.replies.push(format!("40{auth}"));
                } else if text.starts_with("40") {
                    frame.ready = true;
                } else if let Some(event) = text.strip_prefix("42") {
                    if let Ok(v) = serde_json::from_str::<Value>(event) {
                        if v[0] == "new_notification" {
                            frame.notifications.extend(stamp(&v[1]));
                        }
                    }
                }
            }
            Protocol::Centrifugo => {
                for line in text.lines() {
                    let Ok(v) = serde_json::from_str::<Value>(line) else {
                        continue;
                    };
                    if v.as_object().is_some_and(|o| o.is_empty()) {
                        // Server ping: answered with an empty command.
                        frame.replies.push("{}".into());
                    } else if v["id"] == 3 && v.get("subscribe").is_some() {
                        frame.ready = true;
                    } else if let Some(data) = v.pointer("/push/pub/data") {
                        frame.notifications.extend(stamp(data));
                    }
                }
            }
        }
        frame
    }
}

fn stamp(n: &Value) -> Option<(Uuid, DateTime<Utc>)> {
    let id = n["id"].as_str()?.parse().ok()?;
    let at = n["created_at"].as_str()?.parse().ok()?;
    Some((id, at))
}

const CENTRIFUGO_SECRET: &str = "vigia-bench-centrifugo-hmac-secret";

/// A Centrifugo connection JWT (HS256, `sub` = the user).
fn centrifugo_token(user: u64) -> String {
    let exp = Utc::now().timestamp() + 24 * 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user.to_string(), "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(CENTRIFUGO_SECRET.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// Who a notification is for.
#[derive(Debug, Clone, Copy)]
enum To {
    Everyone,
    User(u64),
}

/// A running target: its server processes, its clients' URLs and its publish call.
trait Peer {
    /// The WebSocket URL of client `user` (1-based).
    fn client_url(&self, user: u64) -> String;
    /// Publishes `n` (stamped just before this call) to its audience.
    async fn publish(&self, to: To, n: &Notification) -> Result<()>;
    /// The server's processes, for memory and CPU.
    fn pids(&self) -> Vec<u32>;
    /// Stops the servers and removes their files.
    fn stop(&mut self);
}

/// A peer's server process (node, python, centrifugo), killed when dropped.
struct Server {
    child: std::process::Child,
}

impl Server {
    fn start(mut cmd: std::process::Command, what: &str) -> Result<Server> {
        cmd.stdout(std::process::Stdio::null());
        let child = cmd.spawn().with_context(|| {
            format!("cannot start {what}: install the peers with scripts/bench-gateway-peers.sh")
        })?;
        Ok(Server { child })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `url` answers a GET with success, or the process exits, or 60 s.
async fn wait_http(url: &str, child: &mut std::process::Child, what: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited at start-up ({status}); see its log above");
        }
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{what} did not answer {url} within 60 s")
}

/// Vigía's gateway: `instances` `vigia gateway` children, each with its own consumer group and
/// SQLite inbox, fed by producing to the notifications topic.
struct Vigia {
    children: Vec<ChildProcess>,
    ports: Vec<u16>,
    data_dirs: Vec<PathBuf>,
    producer: FutureProducer,
    topic: String,
    protocol: Protocol,
}

impl Vigia {
    /// `instances` gateways: with `shared_inbox` (a PostgreSQL URL) a cluster sharing it, else
    /// each with a SQLite inbox of its own.
    async fn start(
        config: &Config,
        instances: usize,
        protocol: Protocol,
        shared_inbox: Option<&str>,
    ) -> Result<Vigia> {
        let run_id = Uuid::new_v4().simple().to_string();
        let prefix = format!("benchpeers{}.", &run_id[..12]);
        let mut kafka = config.kafka.clone();
        kafka.topic_prefix = prefix.clone();
        let topics = vigia_schemas::Topics::with_prefix(&prefix);
        let base = crate::kafka::base_client_config(&kafka, "vigia-bench");
        crate::kafka::ensure_topics(&base, &kafka, &topics).await?;
        let producer: FutureProducer = base
            .clone()
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .create()
            .context("cannot create the benchmark's Kafka producer")?;
        let mut vigia = Vigia {
            children: vec![],
            ports: vec![],
            data_dirs: vec![],
            producer,
            topic: topics.notifications.clone(),
            protocol,
        };
        for i in 0..instances {
            let data_dir = std::env::temp_dir().join(format!("vigia-bench-peers-{run_id}-{i}"));
            std::fs::create_dir_all(&data_dir)?;
            // Every instance reads every notification (the gateway derives a consumer group per
            // instance from the instance id).
            let config_file = data_dir.join("vigia.toml");
            std::fs::write(
                &config_file,
                format!("[gateway]\ngroup_id = \"{prefix}gateway\"\ninstance_id = \"gw-{i}\"\n"),
            )?;
            let database_url = match shared_inbox {
                Some(url) => url.to_string(),
                None => format!("sqlite://{}/gateway.db?mode=rwc", data_dir.display()),
            };
            let port = free_port()?;
            let child = ChildProcess::start(
                "gateway",
                &[
                    ("VIGIA_CONFIG", config_file.display().to_string()),
                    ("VIGIA_KAFKA_BROKERS", config.kafka.brokers.clone()),
                    ("VIGIA_KAFKA_TOPIC_PREFIX", prefix.clone()),
                    ("VIGIA_HTTP_ADDR", format!("127.0.0.1:{port}")),
                    ("VIGIA_DATA_DIR", data_dir.display().to_string()),
                    ("VIGIA_DATABASE_URL", database_url),
                    ("VIGIA_JWT_SECRET", SECRET.to_string()),
                ],
            )?;
            vigia.children.push(child);
            vigia.ports.push(port);
            vigia.data_dirs.push(data_dir);
        }
        for (child, port) in vigia.children.iter_mut().zip(&vigia.ports) {
            super::wait_ready(&format!("http://127.0.0.1:{port}"), child).await?;
        }
        Ok(vigia)
    }

    /// A consumer of the notifications topic with the gateway's fetch settings: the Kafka hop
    /// alone, to tell it apart from the gateway's own time.
    fn hop_consumer(&self, config: &Config) -> Result<StreamConsumer> {
        let consumer: StreamConsumer = crate::kafka::base_client_config(&config.kafka, "bench")
            .set("group.id", format!("bench-hop-{}", Uuid::new_v4().simple()))
            .set("fetch.wait.max.ms", "500")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .context("cannot create the Kafka-hop consumer")?;
        consumer.subscribe(&[&self.topic])?;
        Ok(consumer)
    }
}

impl Peer for Vigia {
    fn client_url(&self, user: u64) -> String {
        let port = self.ports[(user as usize) % self.ports.len()];
        let token = vigia_token(user);
        match self.protocol {
            Protocol::SocketIo => {
                format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket")
            }
            _ => format!("ws://127.0.0.1:{port}/ws?token={token}"),
        }
    }

    async fn publish(&self, to: To, n: &Notification) -> Result<()> {
        debug_assert!(matches!(
            (to, &n.audience),
            (To::Everyone, Audience::Role { .. }) | (To::User(_), Audience::User { .. })
        ));
        produce(&self.producer, &self.topic, n).await
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.child.id()).collect()
    }

    fn stop(&mut self) {
        for c in &mut self.children {
            c.stop();
        }
        for d in &self.data_dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn vigia_token(user: u64) -> String {
    vigia_gateway::issue_token(
        SECRET,
        user,
        TENANT,
        Role::Seller,
        Duration::from_secs(24 * 3600),
    )
}

/// A peer fed through an HTTP publish call.
struct HttpPeer {
    server: Server,
    port: u16,
    http: reqwest::Client,
    target: Target,
    _workdir: Option<TempDir>,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(rest),
        None => PathBuf::from(path),
    }
}

impl HttpPeer {
    async fn start(target: Target, args: &PeersArgs) -> Result<HttpPeer> {
        let peers = expand_home(&args.peers_dir);
        let port = free_port()?;
        let mut workdir = None;
        let (cmd, health) = match target {
            Target::NodeSocketio => {
                let mut cmd = std::process::Command::new("node");
                cmd.arg(args.peer_programs.join("socketio-server.js"))
                    .env("NODE_PATH", peers.join("node/node_modules"))
                    .env("PORT", port.to_string());
                (cmd, "/health")
            }
            Target::PythonSocketio => {
                let mut cmd = std::process::Command::new(peers.join("venv/bin/python"));
                cmd.arg(args.peer_programs.join("socketio_server.py"))
                    .env("PORT", port.to_string());
                (cmd, "/health")
            }
            Target::Centrifugo => {
                let dir = std::env::temp_dir().join(format!(
                    "vigia-bench-centrifugo-{}",
                    Uuid::new_v4().simple()
                ));
                std::fs::create_dir_all(&dir)?;
                let config_file = dir.join("config.json");
                std::fs::write(&config_file, centrifugo_config(port).to_string())?;
                let mut cmd = std::process::Command::new(peers.join("bin/centrifugo"));
                cmd.arg("--config").arg(&config_file).current_dir(&dir);
                workdir = Some(TempDir(dir));
                (cmd, "/health")
            }
            _ => unreachable!("Vigía is not an HTTP-fed peer"),
        };
        let mut server = Server::start(cmd, target.as_str())?;
        wait_http(
            &format!("http://127.0.0.1:{port}{health}"),
            &mut server.child,
            target.as_str(),
        )
        .await?;
        Ok(HttpPeer {
            server,
            port,
            http: reqwest::Client::new(),
            target,
            _workdir: workdir,
        })
    }
}

/// Centrifugo's configuration for the benchmark: JWT connections, history with forced recovery
/// on the benchmark's namespace (the durability Vigía's inbox gives), the HTTP API open on
/// loopback, quiet logs.
fn centrifugo_config(port: u16) -> Value {
    json!({
        "http_server": {"address": "127.0.0.1", "port": port},
        "log": {"level": "error"},
        "health": {"enabled": true},
        "client": {
            "token": {"hmac_secret_key": CENTRIFUGO_SECRET},
            "allowed_origins": ["*"],
        },
        "http_api": {"insecure": true},
        "channel": {
            "namespaces": [{
                "name": CENTRIFUGO_NAMESPACE,
                "allow_subscribe_for_client": true,
                "history_size": 100,
                "history_ttl": "300s",
                "force_recovery": true,
            }],
        },
    })
}

impl Peer for HttpPeer {
    fn client_url(&self, _user: u64) -> String {
        match self.target {
            Target::Centrifugo => {
                format!("ws://127.0.0.1:{}/connection/websocket", self.port)
            }
            _ => format!(
                "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket",
                self.port
            ),
        }
    }

    async fn publish(&self, to: To, n: &Notification) -> Result<()> {
        let room = match to {
            To::Everyone => ALL.to_string(),
            To::User(u) => format!("u{u}"),
        };
        let (url, body) = match self.target {
            Target::Centrifugo => (
                format!("http://127.0.0.1:{}/api/publish", self.port),
                json!({"channel": format!("{CENTRIFUGO_NAMESPACE}:{room}"), "data": n}),
            ),
            _ => (
                format!("http://127.0.0.1:{}/publish", self.port),
                json!({"room": room, "data": n}),
            ),
        };
        let r = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("publish to {}", self.target.as_str()))?;
        if !r.status().is_success() {
            bail!(
                "{} refused the publish: {} {}",
                self.target.as_str(),
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        if self.target == Target::Centrifugo {
            // The API answers 200 with an `error` object when it refuses.
            let v: Value = r.json().await.unwrap_or_default();
            if let Some(e) = v.get("error") {
                bail!("centrifugo refused the publish: {e}");
            }
        }
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        vec![self.server.child.id()]
    }

    fn stop(&mut self) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
    }
}

/// Resident set of `pids` together, KiB.
fn rss_kib(pids: &[u32]) -> Result<u64> {
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("cannot read /proc/{pid}/status (Linux only)"))?;
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .context("no VmRSS in /proc/<pid>/status")?;
    }
    Ok(total)
}

/// Linux reports CPU times in `/proc` in USER_HZ, 100 per second on every architecture.
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of `pid` (`self` for this process), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat (Linux only)"))?;
    parse_cpu_seconds(&stat).context("unexpected /proc/<pid>/stat format")
}

/// utime and stime are fields 14 and 15; the command name (field 2, in parentheses) may hold
/// spaces, so fields are counted after its closing parenthesis.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn cpu_of(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|p| cpu_seconds(&p.to_string())).sum()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One received notification frame: (client's user id, notification id, ms since created_at).
type Sample = (u64, Uuid, f64);

struct Clients {
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
    received: Arc<AtomicUsize>,
    ready: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    /// The first client that could not connect (after retries).
    failed: Arc<std::sync::Mutex<Option<String>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Clients {
    async fn connect(
        protocol: Protocol,
        urls: Vec<(u64, String)>,
        concurrency: usize,
    ) -> Result<Clients> {
        let received = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let failed: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let mut tasks = Vec::with_capacity(urls.len());
        for (user, url) in urls {
            let (received, ready, closed, stop) = (
                received.clone(),
                ready.clone(),
                closed.clone(),
                stop.clone(),
            );
            let (gate, failed) = (gate.clone(), failed.clone());
            let token = if protocol == Protocol::SocketIo {
                vigia_token(user)
            } else {
                String::new()
            };
            // Each client reads from the moment it is open: a Socket.IO client that waited for
            // the others before its namespace connect would count as unauthenticated meanwhile.
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await;
                let mut attempt = 0;
                let ws = loop {
                    match tokio_tungstenite::connect_async(url.as_str()).await {
                        Ok((ws, _)) => break ws,
                        Err(e) if attempt < 5 => {
                            attempt += 1;
                            tracing::debug!(user, error = %e, "connect failed; retrying");
                            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                        }
                        Err(e) => {
                            let mut failed = failed.lock().unwrap();
                            failed.get_or_insert_with(|| format!("client {user}: {e}"));
                            return Vec::new();
                        }
                    }
                };
                drop(permit);
                let (mut write, mut read) = ws.split();
                let mut seen = Vec::new();
                for hello in protocol.hello(user) {
                    if write.send(Message::Text(hello.into())).await.is_err() {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return seen;
                    }
                }
                loop {
                    let msg = tokio::select! {
                        _ = stop.cancelled() => break,
                        msg = read.next() => msg,
                    };
                    let text = match msg {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            closed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Some(Ok(_)) => continue,
                    };
                    let now = Utc::now();
                    let frame = protocol.parse(user, &token, &text);
                    if frame.ready {
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                    for (id, at) in frame.notifications {
                        let ms = (now - at).num_microseconds().unwrap_or(0) as f64 / 1e3;
                        seen.push((user, id, ms));
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    for reply in frame.replies {
                        if write.send(Message::Text(reply.into())).await.is_err() {
                            closed.fetch_add(1, Ordering::Relaxed);
                            return seen;
                        }
                    }
                }
                seen
            }));
        }
        Ok(Clients {
            tasks,
            received,
            ready,
            closed,
            failed,
            stop,
        })
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all
    }
}

/// The figures of one target in one run.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Figures {
    broadcast_p50: f64,
    broadcast_p99: f64,
    complete_p50: f64,
    complete_p99: f64,
    single_p50: f64,
    single_p99: f64,
    /// Resident-set growth per idle connection, bytes.
    bytes_per_connection: f64,
    /// Server CPU seconds per 100,000 frames delivered (publish phase).
    server_cpu_per_100k: f64,
    /// The harness's own CPU seconds per 100,000 frames (clients and publisher).
    harness_cpu_per_100k: f64,
    /// Vigía only: produce → a plain consumer's receipt, p50/p99 ms.
    kafka_hop_p50: Option<f64>,
    kafka_hop_p99: Option<f64>,
    frames: usize,
    missing: usize,
    duplicated: usize,
    misdelivered: usize,
    closed_early: usize,
    connect_seconds: f64,
    load_average: String,
}

/// Tallies the samples of one run: latencies, missing/duplicated/misdelivered frames.
fn tally(
    connections: usize,
    samples: &[Sample],
    broadcasts: &[Uuid],
    singles: &HashMap<Uuid, u64>,
) -> Figures {
    let broadcast_set: HashSet<Uuid> = broadcasts.iter().copied().collect();
    let (mut broadcast_ms, mut single_ms) = (Vec::new(), Vec::new());
    let mut complete_ms: HashMap<Uuid, f64> = HashMap::new();
    let mut seen = HashSet::new();
    let (mut duplicated, mut misdelivered) = (0, 0);
    for &(user, id, ms) in samples {
        if !seen.insert((user, id)) {
            duplicated += 1;
            continue;
        }
        if broadcast_set.contains(&id) {
            broadcast_ms.push(ms);
            let c = complete_ms.entry(id).or_insert(0.0);
            *c = c.max(ms);
        } else if let Some(&target) = singles.get(&id) {
            if target == user {
                single_ms.push(ms);
            } else {
                misdelivered += 1;
            }
        }
    }
    let expected = connections * broadcasts.len() + singles.len();
    let frames = broadcast_ms.len() + single_ms.len();
    let mut complete: Vec<f64> = complete_ms.into_values().collect();
    Figures {
        broadcast_p50: percentile(&mut broadcast_ms, 0.5),
        broadcast_p99: percentile(&mut broadcast_ms, 0.99),
        complete_p50: percentile(&mut complete, 0.5),
        complete_p99: percentile(&mut complete, 0.99),
        single_p50: percentile(&mut single_ms, 0.5),
        single_p99: percentile(&mut single_ms, 0.99),
        frames,
        missing: expected.saturating_sub(frames),
        duplicated,
        misdelivered,
        ..Figures::default()
    }
}

pub async fn run(config: Config, args: PeersArgs) -> Result<()> {
    if args.connections == 0 || args.runs == 0 || args.targets.is_empty() {
        bail!("--connections, --runs and --targets must not be zero or empty");
    }
    raise_fd_limit(args.connections)?;
    let mut results: Vec<(usize, Target, Figures)> = Vec::new();
    for run in 1..=args.runs {
        for &target in &args.targets {
            eprintln!(
                "=== run {run}/{}: {} ({} connections; load average {})",
                args.runs,
                target.as_str(),
                args.connections,
                load_average()
            );
            let figures = match target {
                Target::VigiaWs => measure_vigia(&config, &args, 1, Protocol::VigiaWs).await,
                Target::VigiaWs2 => {
                    measure_vigia_cluster(&config, &args, 2, Protocol::VigiaWs).await
                }
                Target::VigiaSocketio => measure_vigia(&config, &args, 1, Protocol::SocketIo).await,
                _ => match HttpPeer::start(target, &args).await {
                    Ok(mut peer) => {
                        let f = measure(&mut peer, target.protocol(), &args, None).await;
                        peer.stop();
                        f
                    }
                    Err(e) => Err(e),
                },
            };
            match figures {
                Ok(f) => {
                    eprintln!("{}: {}", target.as_str(), serde_json::to_string(&f)?);
                    results.push((run, target, f));
                }
                Err(e) => eprintln!("{} failed in run {run}: {e:#}", target.as_str()),
            }
            // Let sockets close and the machine settle before the next server.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    let json = json!(results
        .iter()
        .map(|(run, t, f)| json!({"run": run, "target": t.as_str(), "figures": f}))
        .collect::<Vec<_>>());
    println!("{}", serde_json::to_string_pretty(&json)?);
    let markdown = markdown(&args, &results);
    write_section(&args.out, "gateway-peers", &markdown)?;
    eprintln!("wrote the gateway-peers section of {}", args.out.display());
    let broken: Vec<String> = results
        .iter()
        .filter(|(_, _, f)| f.missing + f.duplicated + f.misdelivered > 0)
        .map(|(run, t, f)| {
            format!(
                "{} run {run}: {} missing, {} duplicated, {} misdelivered",
                t.as_str(),
                f.missing,
                f.duplicated,
                f.misdelivered
            )
        })
        .collect();
    let failed: Vec<&str> = args
        .targets
        .iter()
        .filter(|t| results.iter().filter(|(_, r, _)| r == *t).count() < args.runs)
        .map(|t| t.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("targets that failed at least one run: {failed:?}");
    }
    if results
        .iter()
        .any(|(_, t, f)| t.is_vigia() && f.missing + f.duplicated + f.misdelivered > 0)
    {
        bail!("Vigía lost, duplicated or misdelivered frames: {broken:?}");
    }
    Ok(())
}

async fn measure_vigia(
    config: &Config,
    args: &PeersArgs,
    instances: usize,
    protocol: Protocol,
) -> Result<Figures> {
    measure_vigia_on(config, args, instances, protocol, None).await
}

/// `instances` gateways sharing one PostgreSQL inbox (a database of this run's own), as a
/// cluster is deployed.
async fn measure_vigia_cluster(
    config: &Config,
    args: &PeersArgs,
    instances: usize,
    protocol: Protocol,
) -> Result<Figures> {
    use sqlx::{Connection, Executor};
    let name = format!("vigia_bench_peers_{}", Uuid::new_v4().simple());
    let admin = || async {
        sqlx::PgConnection::connect(&args.postgres_url)
            .await
            .with_context(|| {
                format!(
                    "cannot reach PostgreSQL at {} (--postgres-url; `bash scripts/services.sh up` \
                     starts the local one)",
                    args.postgres_url
                )
            })
    };
    admin()
        .await?
        .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name}"
        ))))
        .await
        .context("cannot create the benchmark's inbox database")?;
    let base = args.postgres_url.split('?').next().unwrap_or_default();
    let url = format!("{}/{name}", &base[..base.rfind('/').unwrap_or(base.len())]);
    let result = measure_vigia_on(config, args, instances, protocol, Some(&url)).await;
    if let Ok(mut conn) = admin().await {
        let _ = conn
            .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            ))))
            .await;
    }
    result
}

async fn measure_vigia_on(
    config: &Config,
    args: &PeersArgs,
    instances: usize,
    protocol: Protocol,
    shared_inbox: Option<&str>,
) -> Result<Figures> {
    let mut vigia = Vigia::start(config, instances, protocol, shared_inbox).await?;
    let hop = vigia.hop_consumer(config)?;
    let result = measure(&mut vigia, protocol, args, Some(hop)).await;
    vigia.stop();
    result
}

/// Reads the notifications topic until cancelled: (id, ms since created_at) per record.
async fn read_hop(consumer: StreamConsumer, stop: tokio_util::sync::CancellationToken) -> Vec<f64> {
    let mut ms = Vec::new();
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            m = consumer.recv() => m,
        };
        let Ok(msg) = msg else { continue };
        let now = Utc::now();
        let Some(at) = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<Value>(p).ok())
            .and_then(|v| stamp(&v))
            .map(|(_, at)| at)
        else {
            continue;
        };
        ms.push((now - at).num_microseconds().unwrap_or(0) as f64 / 1e3);
    }
    ms
}

async fn measure<P: Peer>(
    peer: &mut P,
    protocol: Protocol,
    args: &PeersArgs,
    hop: Option<StreamConsumer>,
) -> Result<Figures> {
    let pids = peer.pids();
    // Let the server settle (Vigía: its consumer joins its group) before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_kib(&pids)?;
    let hop_stop = tokio_util::sync::CancellationToken::new();
    let hop_task = hop.map(|c| tokio::spawn(read_hop(c, hop_stop.clone())));

    let started = Instant::now();
    let urls = (1..=args.connections as u64)
        .map(|u| (u, peer.client_url(u)))
        .collect();
    let clients = Clients::connect(protocol, urls, args.connect_concurrency).await?;
    // python-socketio accepted 5,783 of 10,000 in 60 s on a machine at load 20: give slow
    // acceptors time, and say so if they still do not make it.
    let deadline = Instant::now() + Duration::from_secs(180);
    while clients.ready.load(Ordering::Relaxed) < args.connections {
        let failed = clients.failed.lock().unwrap().clone();
        if let Some(e) = failed {
            clients.finish().await;
            bail!("a client could not connect: {e}");
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {} clients were subscribed after 180 s",
                clients.ready.load(Ordering::Relaxed),
                args.connections
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = rss_kib(&pids)?;

    let (cpu_server_0, cpu_self_0) = (cpu_of(&pids)?, cpu_seconds("self")?);
    let mut broadcast_ids = Vec::new();
    for _ in 0..args.broadcasts {
        let n = notification(Audience::Role { role: Role::Seller });
        broadcast_ids.push(n.id);
        peer.publish(To::Everyone, &n).await?;
        tokio::time::sleep(*args.broadcast_every).await;
    }
    let mut single_ids: HashMap<Uuid, u64> = HashMap::new();
    let mut rng_state = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..args.singles {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let user = 1 + rng_state % args.connections as u64;
        let n = notification(Audience::User { user_id: user });
        single_ids.insert(n.id, user);
        peer.publish(To::User(user), &n).await?;
        tokio::time::sleep(*args.single_every).await;
    }
    // Every expected frame, or 10 s without a new one.
    let expected = args.connections * args.broadcasts + args.singles;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (clients.received.load(Ordering::Relaxed), Instant::now());
    while last.0 < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = clients.received.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let (cpu_server, cpu_self) = (
        cpu_of(&pids)? - cpu_server_0,
        cpu_seconds("self")? - cpu_self_0,
    );
    let load = load_average();
    let closed_early = clients.closed.load(Ordering::Relaxed);
    let samples = clients.finish().await;
    hop_stop.cancel();
    let mut hop_ms = match hop_task {
        Some(t) => Some(t.await.unwrap_or_default()),
        None => None,
    };

    let mut f = tally(args.connections, &samples, &broadcast_ids, &single_ids);
    let per_100k = |cpu: f64| cpu * 100_000.0 / f.frames.max(1) as f64;
    f.server_cpu_per_100k = per_100k(cpu_server);
    f.harness_cpu_per_100k = per_100k(cpu_self);
    f.bytes_per_connection =
        rss_connected.saturating_sub(rss_before) as f64 * 1024.0 / args.connections as f64;
    f.closed_early = closed_early;
    f.connect_seconds = connect_seconds;
    f.load_average = load;
    if let Some(ms) = hop_ms.as_mut() {
        f.kafka_hop_p50 = Some(percentile(ms, 0.5));
        f.kafka_hop_p99 = Some(percentile(ms, 0.99));
    }
    Ok(f)
}

/// The median of `xs` (the mean of the middle two for an even count) with its min and max.
fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    (median, xs[0], xs[n - 1])
}

/// A column of the table: its header and its figure (lower is better in every column).
type Column = (&'static str, fn(&Figures) -> f64);

const COLUMNS: [Column; 8] = [
    ("broadcast p50 ms", |f| f.broadcast_p50),
    ("broadcast p99 ms", |f| f.broadcast_p99),
    ("last client p50 ms", |f| f.complete_p50),
    ("last client p99 ms", |f| f.complete_p99),
    ("single-user p50 ms", |f| f.single_p50),
    ("single-user p99 ms", |f| f.single_p99),
    ("bytes per idle connection", |f| f.bytes_per_connection),
    ("server CPU s per 100k frames", |f| f.server_cpu_per_100k),
];

fn median_of(results: &[(usize, Target, Figures)], t: Target, col: fn(&Figures) -> f64) -> f64 {
    spread(
        results
            .iter()
            .filter(|(_, r, _)| *r == t)
            .map(|(_, _, f)| col(f))
            .collect(),
    )
    .0
}

fn fmt(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn markdown(args: &PeersArgs, results: &[(usize, Target, Figures)]) -> String {
    let targets: Vec<Target> = args
        .targets
        .iter()
        .copied()
        .filter(|t| results.iter().any(|(_, r, _)| r == t))
        .collect();
    let header = COLUMNS
        .iter()
        .map(|(h, _)| *h)
        .collect::<Vec<_>>()
        .join(" | ");
    let rule = "|---".repeat(COLUMNS.len() + 2) + "|";
    // Medians with min–max.
    let mut medians = format!("| server | runs | {header} |\n{rule}\n");
    for &t in &targets {
        let n = results.iter().filter(|(_, r, _)| *r == t).count();
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|(_, col)| {
                let (m, lo, hi) = spread(
                    results
                        .iter()
                        .filter(|(_, r, _)| *r == t)
                        .map(|(_, _, f)| col(f))
                        .collect(),
                );
                if n > 1 {
                    format!("{} ({}–{})", fmt(m), fmt(lo), fmt(hi))
                } else {
                    fmt(m)
                }
            })
            .collect();
        medians += &format!("| {} | {n} | {} |\n", t.label(), cells.join(" | "));
    }
    // Ratios: peer ÷ its like-for-like Vigía target (> 1: Vigía is ahead).
    let mut ratios = format!(
        "| peer ÷ Vigía | {header} |\n{}\n",
        "|---".repeat(COLUMNS.len() + 1) + "|"
    );
    for &t in targets
        .iter()
        .filter(|t| !t.is_vigia() || **t == Target::VigiaWs2)
    {
        let base = t.baseline();
        if !targets.contains(&base) {
            continue;
        }
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|(_, col)| {
                let r = median_of(results, t, *col) / median_of(results, base, *col);
                if !r.is_finite() {
                    "–".into()
                } else if r < 0.01 {
                    // Single-user latencies can differ a thousandfold: keep two digits.
                    format!("{r:.4}")
                } else {
                    format!("{r:.2}")
                }
            })
            .collect();
        ratios += &format!(
            "| {} ÷ {} | {} |\n",
            t.as_str(),
            base.as_str(),
            cells.join(" | ")
        );
    }
    // Noise: what else moved with the latency.
    let mut noise = String::from(
        "| run | server | load average (1/5/15 min) | broadcast p50 / p99 ms | harness CPU s per 100k frames | server CPU s per 100k frames | Kafka hop p50 / p99 ms | missing / duplicated / closed early |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (run, t, f) in results {
        noise += &format!(
            "| {run} | {} | {} | {} / {} | {} | {} | {} | {} / {} / {} |\n",
            t.as_str(),
            f.load_average,
            fmt(f.broadcast_p50),
            fmt(f.broadcast_p99),
            fmt(f.harness_cpu_per_100k),
            fmt(f.server_cpu_per_100k),
            match (f.kafka_hop_p50, f.kafka_hop_p99) {
                (Some(a), Some(b)) => format!("{} / {}", fmt(a), fmt(b)),
                _ => "–".into(),
            },
            f.missing,
            f.duplicated,
            f.closed_early,
        );
    }
    let targets_arg = args
        .targets
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let command = format!(
        "bash scripts/bench-gateway-peers.sh --targets {targets_arg} --runs {} --connections {} \
         --broadcasts {} --broadcast-every {} --singles {} --single-every {}",
        args.runs,
        args.connections,
        args.broadcasts,
        cli_duration(*args.broadcast_every),
        args.singles,
        cli_duration(*args.single_every),
    );
    format!(
        "## Gateway beside its peers\n\n\
         Reproduce: `{command}` (installs the peers under `~/.cache/vigia/peers`, raises the \
         open-files limit, builds the release binary; Vigía's targets need the local Apache Kafka).\n\n\
         Measured {date} on this machine ({cores} cores), every server and the one harness \
         (`vigia bench gateway-peers`) on the same cores, the servers one after the other within \
         each run, {runs} run(s); figures are medians with min–max in brackets. {conns} WebSocket \
         clients per server, each subscribed to a broadcast room/channel and to its own; \
         {nb} broadcasts {every} apart, then {ns} single-user notifications {single_every} apart, \
         the same notification JSON (~{size} bytes) for every server. Latency = frame at the \
         client − the notification's `created_at`, stamped just before it was produced to Kafka \
         (Vigía: so the Kafka hop and the inbox write are included) or just before the HTTP \
         publish call (peers). Memory = the server's resident-set growth from before the first \
         connection to all clients subscribed, per connection. CPU = the server's user + system \
         time (`/proc/<pid>/stat`) over the publish phase, per 100,000 frames delivered.\n\n\
         Durability: Vigía stores every notification in its SQLite inbox (replay with `since`); \
         Centrifugo keeps a history of 100 per channel for 300 s with forced recovery; socket.io \
         has connection-state recovery (2 min); python-socketio has no recovery of missed \
         messages at all, so it runs without. Vigía checks a JWT on every connection, as does \
         Centrifugo; the socket.io peers take the user id from the handshake unchecked. Vigía \
         also sends an unread-count frame after each notification (not counted as a frame).\n\n\
         {medians}\n\
         Ratios of medians, peer ÷ the Vigía endpoint it is compared with (`/ws` for Centrifugo \
         and the two-instance gateway, Socket.IO for the socket.io servers): **above 1, Vigía is \
         ahead** (every column is lower-is-better).\n\n\
         {ratios}\n\
         Every run, with what moved with it (load average at the end of the publish phase; the \
         harness's own CPU — its {conns} clients parse every frame on the same 2 cores; the \
         Kafka hop = produce → a plain consumer of the same topic with the gateway's fetch \
         settings, Vigía only):\n\n\
         {noise}",
        date = Utc::now().format("%Y-%m-%d %H:%M UTC"),
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
        runs = args.runs,
        conns = args.connections,
        nb = args.broadcasts,
        every = cli_duration(*args.broadcast_every),
        ns = args.singles,
        single_every = cli_duration(*args.single_every),
        size = serde_json::to_vec(&notification(Audience::Role { role: Role::Seller }))
            .map_or(0, |v| v.len()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: &str =
        r#"{"id":"67e55044-10b1-426f-9247-bb680e5fe0c8","created_at":"2026-12-03T06:00:00Z"}"#;

    fn id() -> Uuid {
        "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap()
    }

    #[test]
    fn vigia_ws_frames_are_recognised() {
        let p = Protocol::VigiaWs;
        assert!(
            p.parse(1, "", r#"{"type":"connection_established","user_id":1}"#)
                .ready
        );
        assert_eq!(
            p.parse(1, "", r#"{"type":"ping"}"#).replies,
            vec![r#"{"type":"pong"}"#]
        );
        let f = p.parse(
            1,
            "",
            &format!(r#"{{"type":"notification","sequence":3,"notification":{N}}}"#),
        );
        assert_eq!(f.notifications.len(), 1);
        assert_eq!(f.notifications[0].0, id());
        // An unread count is not a notification.
        assert_eq!(
            p.parse(1, "", r#"{"type":"unread_count","count":3}"#),
            Frame::default()
        );
    }

    #[test]
    fn socketio_packets_are_recognised_with_and_without_a_recovery_offset() {
        let p = Protocol::SocketIo;
        let open = p.parse(7, "tok", r#"0{"sid":"x","pingInterval":25000}"#);
        assert_eq!(open.replies, vec![r#"40{"token":"tok","user":7}"#]);
        assert!(!open.ready);
        assert!(p.parse(7, "tok", r#"40{"sid":"y","pid":"z"}"#).ready);
        assert_eq!(p.parse(7, "tok", "2").replies, vec!["3"]);
        let plain = p.parse(7, "tok", &format!(r#"42["new_notification",{N}]"#));
        let offset = p.parse(7, "tok", &format!(r#"42["new_notification",{N},"MTcz-0"]"#));
        assert_eq!(plain.notifications, offset.notifications);
        assert_eq!(plain.notifications.len(), 1);
        let other = p.parse(7, "tok", &format!(r#"42["notification_count_update",{N}]"#));
        assert!(other.notifications.is_empty());
    }

    #[test]
    fn centrifugo_batched_replies_pushes_and_pings_are_recognised() {
        let p = Protocol::Centrifugo;
        let hello = p.hello(5);
        assert_eq!(hello.len(), 1);
        let cmds: Vec<Value> = hello[0]
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(cmds[2]["subscribe"]["channel"], "bench:u5");
        assert!(
            cmds[0]["connect"]["token"]
                .as_str()
                .unwrap()
                .split('.')
                .count()
                == 3
        );
        let batch = format!(
            "{}\n{}\n{}",
            r#"{"id":1,"connect":{"client":"c"}}"#,
            r#"{"id":2,"subscribe":{"recoverable":true}}"#,
            r#"{"id":3,"subscribe":{"recoverable":true}}"#
        );
        assert!(p.parse(5, "", &batch).ready);
        assert!(!p.parse(5, "", r#"{"id":2,"subscribe":{}}"#).ready);
        assert_eq!(p.parse(5, "", "{}").replies, vec!["{}"]);
        let push =
            format!(r#"{{"push":{{"channel":"bench:all","pub":{{"data":{N},"offset":4}}}}}}"#);
        let two = p.parse(5, "", &format!("{push}\n{push}"));
        assert_eq!(two.notifications.len(), 2);
    }

    #[test]
    fn cpu_seconds_are_read_past_a_command_name_with_spaces() {
        let stat = "1234 (tokio rt (w)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage"), None);
        assert!(cpu_seconds("self").unwrap() >= 0.0);
    }

    #[test]
    fn a_run_counts_missing_duplicated_and_misdelivered_frames() {
        let (b, s) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let singles = HashMap::from([(s, 2)]);
        let samples = vec![(1, b, 10.0), (1, b, 11.0), (1, s, 5.0), (3, b, 30.0)];
        let f = tally(3, &samples, &[b], &singles);
        assert_eq!((f.duplicated, f.misdelivered, f.missing), (1, 1, 2));
        assert_eq!(f.complete_p50, 30.0);
        assert_eq!(f.frames, 2);
    }

    #[test]
    fn ratios_compare_each_peer_with_its_like_for_like_vigia_endpoint() {
        let f = |p99: f64, bytes: f64| Figures {
            broadcast_p99: p99,
            bytes_per_connection: bytes,
            ..Figures::default()
        };
        let results = vec![
            (1, Target::VigiaWs, f(50.0, 10_000.0)),
            (2, Target::VigiaWs, f(70.0, 10_000.0)),
            (1, Target::Centrifugo, f(120.0, 5_000.0)),
            (1, Target::VigiaSocketio, f(100.0, 12_000.0)),
            (1, Target::NodeSocketio, f(400.0, 24_000.0)),
        ];
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: PeersArgs,
        }
        let args = Cli::parse_from([
            "x",
            "--targets",
            "vigia-ws,centrifugo,vigia-socketio,node-socketio",
            "--runs",
            "2",
        ])
        .args;
        let text = markdown(&args, &results);
        // Centrifugo ÷ /ws: broadcast p99 120 / median(50, 70) = 2.00; memory 0.50.
        assert!(text.contains("| centrifugo ÷ vigia-ws | – |"), "{text}");
        assert!(text.contains("| 2.00 |"), "{text}");
        assert!(text.contains("| 0.50 |"), "{text}");
        assert!(
            text.contains("| node-socketio ÷ vigia-socketio |"),
            "{text}"
        );
        assert!(text.contains("| 4.00 |"), "{text}");
        assert!(text.contains("60.0 (50.0–70.0)"), "{text}");
        assert!(text.contains("bench-gateway-peers.sh --targets vigia-ws,centrifugo"));
    }
}
