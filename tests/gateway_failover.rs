//! Failover of the gateway: three `vigia gateway` processes on one PostgreSQL inbox (a database
//! of this test's own on the server of `VIGIA_TEST_POSTGRES_URL`; skipped with a message when it
//! is unset), clients of several users and two tenants spread over them, half on `/ws` and half
//! on Socket.IO (over its WebSocket transport), a burst of notifications produced to Kafka, and
//! one instance killed with `kill -9` in the middle of it. Its clients reconnect to another
//! instance with the last sequence they saw (`?since=` on `/ws`, `subscribe_notifications
//! {since}` on Socket.IO). Every client must end with every notification meant for it (the
//! audience rules of `vigia_gateway::can_see`) exactly once, and nobody else's.
//!
//! Needs Kafka (VIGIA_KAFKA_BROKERS) and PostgreSQL.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vigia_gateway::{can_see, Viewer};
use vigia_schemas::{Audience, Notification, NotificationType, Priority, Role};

const INSTANCES: usize = 3;
const BURST: usize = 300;
/// The instance killed, after this many notifications of the burst.
const VICTIM: usize = 2;
const KILL_AFTER: usize = 100;
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Ws,
    SocketIo,
}

/// What a client received: (sequence, notification id), in arrival order, and how many times
/// it connected.
#[derive(Default)]
struct Received {
    notifications: Vec<(i64, Uuid)>,
    connections: usize,
}

struct Client {
    viewer: Viewer,
    transport: Transport,
    first_instance: usize,
    received: Arc<Mutex<Received>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_mid_burst_costs_no_client_a_notification_nor_a_duplicate() {
    let Ok(admin_url) = std::env::var("VIGIA_TEST_POSTGRES_URL") else {
        println!("skipped: set VIGIA_TEST_POSTGRES_URL=postgres://user:pass@host:port/db to run");
        return;
    };
    let started = Instant::now();
    let database = TestDatabase::create(&admin_url).await;
    let ns = Namespace::new("failover").env("VIGIA_DATABASE_URL", &database.url);
    let mut gateways: Vec<Vigia> = Vec::new();
    for i in 0..INSTANCES {
        let ns = ns
            .clone()
            .env("VIGIA_GATEWAY_INSTANCE_ID", &format!("gw-{i}"));
        gateways.push(
            tokio::task::spawn_blocking(move || ns.spawn("gateway"))
                .await
                .unwrap(),
        );
    }
    let ports: Vec<u16> = gateways.iter().map(|g| g.port).collect();

    // Tenant 1: CEO, manager, three sellers; tenant 2: a CEO with the same user id as tenant
    // 1's, a seller with the same id as one of tenant 1's, another seller.
    let people = [
        (1, 1, Role::Ceo),
        (1, 2, Role::Manager),
        (1, 11, Role::Seller),
        (1, 12, Role::Seller),
        (1, 13, Role::Seller),
        (2, 1, Role::Ceo),
        (2, 11, Role::Seller),
        (2, 21, Role::Seller),
    ];
    let stop = CancellationToken::new();
    let mut clients = Vec::new();
    for (k, &(tenant_id, user_id, role)) in people.iter().enumerate() {
        // Two clients per person, on different instances and transports.
        for copy in 0..2 {
            let client = Client {
                viewer: Viewer {
                    tenant_id,
                    user_id,
                    role,
                },
                transport: if (k + copy) % 2 == 0 {
                    Transport::Ws
                } else {
                    Transport::SocketIo
                },
                first_instance: (k + copy) % INSTANCES,
                received: Arc::default(),
            };
            tokio::spawn(run_client(
                ports.clone(),
                client.first_instance,
                client.viewer,
                client.transport,
                client.received.clone(),
                stop.clone(),
            ));
            clients.push(client);
        }
    }
    let all_connected = wait_until(Duration::from_secs(20), || {
        clients
            .iter()
            .all(|c| c.received.lock().unwrap().connections == 1)
    })
    .await;
    assert!(all_connected, "every client connects");
    // Socket.IO clients subscribe right after connecting; give that a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    let topic = vigia_schemas::Topics::with_prefix(&format!("{}.", ns.name)).notifications;
    let mut produced = Vec::with_capacity(BURST);
    for i in 0..BURST {
        let n = notification(i);
        let payload = serde_json::to_vec(&n).unwrap();
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&n.tenant_id.to_string())
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("cannot produce to {topic}: {e}"));
        produced.push(n);
        if i + 1 == KILL_AFTER {
            gateways[VICTIM].kill9();
        }
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let expected: Vec<Vec<Uuid>> = clients
        .iter()
        .map(|c| {
            produced
                .iter()
                .filter(|n| can_see(&c.viewer, n.tenant_id, &n.audience))
                .map(|n| n.id)
                .collect()
        })
        .collect();
    let complete = wait_until(Duration::from_secs(30), || {
        clients.iter().zip(&expected).all(|(c, want)| {
            let got = c.received.lock().unwrap();
            want.iter()
                .all(|id| got.notifications.iter().any(|(_, g)| g == id))
        })
    })
    .await;
    // Whatever would still arrive twice or wrongly arrives within this.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();

    let mut problems = Vec::new();
    let mut reconnected = 0;
    for (c, want) in clients.iter().zip(&expected) {
        let got = c.received.lock().unwrap();
        if got.connections > 1 {
            reconnected += 1;
        }
        let mut counts: HashMap<Uuid, usize> = HashMap::new();
        for (_, id) in &got.notifications {
            *counts.entry(*id).or_default() += 1;
        }
        let missing_ids: Vec<usize> = want
            .iter()
            .filter(|id| !counts.contains_key(id))
            .filter_map(|id| produced.iter().position(|n| n.id == *id))
            .collect();
        let missing = missing_ids.len();
        let twice = counts.values().filter(|&&n| n > 1).count();
        let foreign = counts.keys().filter(|id| !want.contains(id)).count();
        if missing + twice + foreign > 0 {
            problems.push(format!(
                "{:?} {:?} (first on instance {}, {} connection(s)): {} expected, {} received, \
                 {missing} missing (burst numbers {missing_ids:?}), {twice} twice, {foreign} not \
                 meant for it; sequences in arrival order: {:?}",
                c.viewer,
                c.transport,
                c.first_instance,
                got.connections,
                want.len(),
                got.notifications.len(),
                got.notifications
                    .iter()
                    .map(|(s, _)| *s)
                    .collect::<Vec<_>>()
            ));
        }
    }
    let logs: String = gateways
        .iter()
        .enumerate()
        .map(|(i, g)| format!("--- gw-{i}\n{}", tail(&g.log(), 40)))
        .collect();
    assert!(
        complete && problems.is_empty(),
        "complete: {complete}\n{}\n{logs}",
        problems.join("\n")
    );
    let on_victim = clients
        .iter()
        .filter(|c| c.first_instance == VICTIM)
        .count();
    assert_eq!(
        reconnected, on_victim,
        "exactly the victim's clients reconnected"
    );
    assert!(on_victim > 0);
    println!(
        "{} clients, {BURST} notifications, {on_victim} clients failed over; {:?} in all",
        clients.len(),
        started.elapsed()
    );
    drop(gateways);
    database.drop_database().await;
}

/// Notification `i` of the burst: to one seller, to the sellers, to the managers, or to the
/// CEOs, of tenant 1 or 2.
fn notification(i: usize) -> Notification {
    let tenant_id = 1 + (i % 2) as u64;
    let sellers: &[u64] = if tenant_id == 1 {
        &[11, 12, 13]
    } else {
        &[11, 21]
    };
    let audience = match i % 5 {
        0 | 1 => Audience::User {
            user_id: sellers[(i / 5) % sellers.len()],
        },
        2 => Audience::Role { role: Role::Seller },
        3 => Audience::Role {
            role: Role::Manager,
        },
        _ => Audience::Role { role: Role::Ceo },
    };
    Notification {
        id: Uuid::new_v4(),
        tenant_id,
        kind: NotificationType::HotLead,
        priority: Priority::Urgent,
        audience,
        title: format!("Lead caliente {i}"),
        message: "Un cliente está listo para comprar".into(),
        data: json!({ "i": i }),
        actions: vec![],
        created_at: chrono::Utc::now(),
        withdraws: None,
    }
}

async fn wait_until(within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n") + "\n"
}

/// Keeps a client connected: to `ports[first]`, and after a disconnection to the next instance
/// that accepts it, resuming after the highest sequence received so far.
async fn run_client(
    ports: Vec<u16>,
    first: usize,
    viewer: Viewer,
    transport: Transport,
    received: Arc<Mutex<Received>>,
    stop: CancellationToken,
) {
    let token = token(viewer.user_id, viewer.tenant_id, viewer.role);
    let mut instance = first;
    let mut connected_before = false;
    while !stop.is_cancelled() {
        let since = connected_before.then(|| {
            received
                .lock()
                .unwrap()
                .notifications
                .iter()
                .map(|(s, _)| *s)
                .max()
                .unwrap_or(0)
        });
        let port = ports[instance];
        let session = match transport {
            Transport::Ws => ws_session(port, &token, since, &received, &stop).await,
            Transport::SocketIo => sio_session(port, &token, since, &received, &stop).await,
        };
        if session.is_ok() {
            connected_before = true;
        }
        if stop.is_cancelled() {
            return;
        }
        // Gone (or refused): the next instance, after a second (socket.io-client's default
        // reconnection delay), while the burst goes on: what is stored meanwhile comes back only
        // through `since`.
        instance = (instance + 1) % ports.len();
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// One `/ws` connection until it ends. `Err` if it could not connect.
async fn ws_session(
    port: u16,
    token: &str,
    since: Option<i64>,
    received: &Mutex<Received>,
    stop: &CancellationToken,
) -> Result<(), ()> {
    let mut url = format!("ws://127.0.0.1:{port}/ws?token={token}");
    if let Some(since) = since {
        url.push_str(&format!("&since={since}"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(drop)?;
    received.lock().unwrap().connections += 1;
    let (mut write, mut read) = ws.split();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = read.next() => m,
        };
        let Some(Ok(Message::Text(text))) = message else {
            match message {
                Some(Ok(_)) => continue,
                _ => return Ok(()),
            }
        };
        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
        match frame["type"].as_str() {
            Some("notification") => note(received, &frame, &frame["notification"]),
            Some("ping") => {
                let pong = json!({"type": "pong"}).to_string();
                let _ = write.send(Message::Text(pong.into())).await;
            }
            _ => {}
        }
    }
}

/// One Socket.IO connection (Engine.IO v4 over WebSocket) until it ends. `Err` if it could not
/// connect.
async fn sio_session(
    port: u16,
    token: &str,
    since: Option<i64>,
    received: &Mutex<Received>,
    stop: &CancellationToken,
) -> Result<(), ()> {
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(drop)?;
    let (mut write, mut read) = ws.split();
    let mut counted = false;
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = read.next() => m,
        };
        let Some(Ok(Message::Text(text))) = message else {
            match message {
                Some(Ok(_)) => continue,
                _ if counted => return Ok(()),
                _ => return Err(()),
            }
        };
        let text = text.as_str();
        if text.starts_with('0') {
            // Engine.IO open: connect to the namespace with the token.
            let connect = format!("40{}", json!({ "token": token }));
            write
                .send(Message::Text(connect.into()))
                .await
                .map_err(drop)?;
        } else if text == "2" {
            let _ = write.send(Message::Text("3".into())).await;
        } else if let Some(event) = text.strip_prefix("42") {
            let event: Value = serde_json::from_str(event).unwrap();
            if event[0] == "new_notification" {
                note(received, &event[1], &event[1]);
            } else if event[0] == "notification_connected" {
                // The server's session is set up (live notifications flow from here): now ask
                // for what was missed.
                received.lock().unwrap().connections += 1;
                counted = true;
                let subscribe = match since {
                    Some(since) => json!(["subscribe_notifications", { "since": since }]),
                    None => json!(["subscribe_notifications"]),
                };
                let _ = write
                    .send(Message::Text(format!("42{subscribe}").into()))
                    .await;
            }
        } else if text.starts_with("44") {
            panic!("Socket.IO connection refused: {text}");
        }
    }
}

/// Records a notification frame: its `sequence` from `frame`, its id from `notification`.
fn note(received: &Mutex<Received>, frame: &Value, notification: &Value) {
    let sequence = frame["sequence"].as_i64().expect("a sequence");
    let id = notification["id"].as_str().unwrap().parse().unwrap();
    received.lock().unwrap().notifications.push((sequence, id));
}

/// A PostgreSQL database of this test's own.
struct TestDatabase {
    url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    async fn create(admin_url: &str) -> TestDatabase {
        use sqlx::{Connection, Executor};
        let name = format!("vigia_failover_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("VIGIA_TEST_POSTGRES_URL answers");
        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name}"
        ))))
        .await
        .expect("the test may create a database");
        conn.close().await.ok();
        let base = admin_url.split('?').next().unwrap();
        TestDatabase {
            url: format!("{}/{name}", &base[..base.rfind('/').unwrap()]),
            admin_url: admin_url.to_string(),
            name,
        }
    }

    async fn drop_database(self) {
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
