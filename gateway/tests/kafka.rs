//! The Kafka path: records of the notifications topic reach WebSocket clients through the
//! gateway's consumer; garbage is skipped; a restarted gateway resumes from committed offsets.
//!
//! Needs a broker: `VIGIA_TEST_KAFKA_BROKERS` (default 127.0.0.1:9092, the local Apache Kafka). Run with
//! `cargo test -p vigia-gateway --test kafka -- --ignored`.

mod common;

use std::time::Duration;

use common::*;
use prometheus_client::registry::Registry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vigia_gateway::{Config, Gateway, Role};
use vigia_schemas::Topics;

fn brokers() -> String {
    std::env::var("VIGIA_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn kafka_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers());
    config
}

async fn produce(producer: &FutureProducer, topic: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key("1").payload(payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("cannot produce to {topic} at {}: {e}", brokers()));
}

/// Fresh topics read by the gateway: notifications and seller metrics.
async fn create_topics() -> Topics {
    let topics = Topics::with_prefix(&format!("gwtest-{}.", Uuid::new_v4().simple()));
    let admin: AdminClient<DefaultClientContext> = kafka_config().create().unwrap();
    let new = [
        NewTopic::new(&topics.notifications, 1, TopicReplication::Fixed(1)),
        NewTopic::new(&topics.seller_metrics, 1, TopicReplication::Fixed(1)),
    ];
    let created = admin
        .create_topics(
            &new,
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot create a topic at {}: {e}", brokers()));
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    topics
}

struct Running {
    gateway: Gateway,
    registry: Registry,
    shutdown: CancellationToken,
    addr: std::net::SocketAddr,
}

impl Running {
    async fn start(cfg: Config, topics: &Topics) -> Running {
        let mut registry = Registry::default();
        let shutdown = CancellationToken::new();
        let gateway = Gateway::start(
            cfg,
            &kafka_config(),
            topics,
            &mut registry,
            shutdown.clone(),
        )
        .await
        .expect("gateway starts");
        let addr = serve(&gateway, shutdown.clone()).await;
        Running {
            gateway,
            registry,
            shutdown,
            addr,
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .find_map(|line| {
                let (metric, value) = line.rsplit_once(' ')?;
                (metric == name).then(|| value.parse().unwrap())
            })
            .unwrap_or(0.0)
    }

    async fn wait_for(&self, name: &str, value: f64) {
        for _ in 0..300 {
            if self.metric(name) >= value {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name} never reached {value} (is {})", self.metric(name));
    }

    async fn connect(&self, query: &str) -> Ws {
        let url = format!("ws://{}/ws?{query}", self.addr);
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }
}

#[tokio::test]
#[ignore = "needs a Kafka broker at VIGIA_TEST_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn notifications_flow_from_kafka_to_websockets_and_offsets_are_committed() {
    let topics = create_topics().await;
    let producer: FutureProducer = kafka_config().create().unwrap();

    let first = to_user(1, 10);
    let second = to_user(1, 10);
    produce(
        &producer,
        &topics.notifications,
        &serde_json::to_vec(&first).unwrap(),
    )
    .await;
    produce(&producer, &topics.notifications, b"not a notification").await;
    produce(
        &producer,
        &topics.notifications,
        &serde_json::to_vec(&second).unwrap(),
    )
    .await;
    produce(
        &producer,
        &topics.notifications,
        &serde_json::to_vec(&first).unwrap(),
    )
    .await;
    produce(
        &producer,
        &topics.notifications,
        &serde_json::to_vec(&to_user(1, 11)).unwrap(),
    )
    .await;

    let dir = TempDir::new();
    let cfg = Config {
        jwt_secret: SECRET.into(),
        database_url: dir.sqlite_url(),
        group_id: format!("gwtest-{}", Uuid::new_v4().simple()),
        ..Config::default()
    };
    let token = vigia_gateway::issue_token(SECRET, 10, 1, Role::Seller, Duration::from_secs(600));

    let gw = Running::start(cfg.clone(), &topics).await;
    assert!(gw.gateway.ready().await);
    gw.wait_for("vigia_gateway_notifications_stored_total", 3.0)
        .await;
    gw.wait_for("vigia_gateway_notifications_duplicate_total", 1.0)
        .await;
    assert_eq!(
        gw.metric("vigia_gateway_notifications_undecodable_total"),
        1.0
    );
    let mut ws = gw.connect(&format!("token={token}&since=0")).await;
    assert_eq!(expect_handshake(&mut ws, 1, 10).await, 2);
    let replayed = notifications_within(&mut ws, Duration::from_millis(500)).await;
    assert_eq!(ids(&replayed), vec![first.id, second.id]);

    // Live: produced while connected.
    let live = to_user(1, 10);
    produce(
        &producer,
        &topics.notifications,
        &serde_json::to_vec(&live).unwrap(),
    )
    .await;
    let live_frames = notifications_within(&mut ws, Duration::from_secs(3)).await;
    assert_eq!(ids(&live_frames), vec![live.id]);
    let last_seen = live_frames[0]["sequence"].as_i64().unwrap();
    drop(ws);
    gw.shutdown.cancel();
    // Let the consumer commit and leave the group.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A restart resumes after what was committed: nothing old is read again.
    let after_restart = to_user(1, 10);
    produce(
        &producer,
        &topics.notifications,
        &serde_json::to_vec(&after_restart).unwrap(),
    )
    .await;
    let gw = Running::start(cfg, &topics).await;
    // Resuming after the last sequence seen: whether it was consumed before or after this
    // connection, the new notification arrives once.
    let mut ws = gw
        .connect(&format!("token={token}&since={last_seen}"))
        .await;
    expect_handshake(&mut ws, 1, 10).await;
    gw.wait_for("vigia_gateway_notifications_stored_total", 1.0)
        .await;
    assert_eq!(
        ids(&notifications_within(&mut ws, Duration::from_secs(2)).await),
        vec![after_restart.id]
    );
    assert_eq!(gw.metric("vigia_gateway_notifications_stored_total"), 1.0);
    assert_eq!(
        gw.metric("vigia_gateway_notifications_duplicate_total"),
        0.0
    );
    assert_eq!(
        gw.metric("vigia_gateway_notifications_undecodable_total"),
        0.0
    );
    gw.shutdown.cancel();
}

/// The metrics board is filled from the `seller_metrics` topic, rebuilt from it after a restart
/// (it is memory only), and a record that is not a snapshot is skipped.
#[tokio::test]
#[ignore = "needs a Kafka broker at VIGIA_TEST_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn the_metrics_board_is_read_from_kafka_and_rebuilt_after_a_restart() {
    let topics = create_topics().await;
    let producer: FutureProducer = kafka_config().create().unwrap();
    for (seller, minute, score) in [(10, 1, 4.0), (11, 1, 6.0), (10, 2, 9.0)] {
        let s = seller_metrics(1, seller, minute, score);
        produce(
            &producer,
            &topics.seller_metrics,
            &serde_json::to_vec(&s).unwrap(),
        )
        .await;
    }
    produce(
        &producer,
        &topics.seller_metrics,
        b"{\"not\": \"a snapshot\"}",
    )
    .await;
    let dir = TempDir::new();
    let cfg = Config {
        jwt_secret: SECRET.into(),
        database_url: dir.sqlite_url(),
        group_id: format!("gwtest-{}", Uuid::new_v4().simple()),
        ..Config::default()
    };
    let ceo = vigia_gateway::issue_token(SECRET, 1, 1, Role::Ceo, Duration::from_secs(600));
    for run in 0..2 {
        let gw = Running::start(cfg.clone(), &topics).await;
        let url = format!("http://{}/v1/metrics/sellers", gw.addr);
        let mut body = serde_json::Value::Null;
        for _ in 0..100 {
            body = reqwest::Client::new()
                .get(&url)
                .bearer_auth(&ceo)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["sellers"].as_array().is_some_and(|s| s.len() == 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let order: Vec<(u64, f64)> = body["sellers"]
            .as_array()
            .unwrap_or_else(|| panic!("run {run}: {body}"))
            .iter()
            .map(|r| {
                (
                    r["seller_id"].as_u64().unwrap(),
                    r["productivity_score"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            order,
            vec![(10, 9.0), (11, 6.0)],
            "run {run}: the newest snapshot of each seller"
        );
        gw.wait_for("vigia_gateway_notifications_undecodable_total", 1.0)
            .await;
        gw.shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A backlog on the notifications topic is stored in batches (one inbox transaction per batch of
/// records already fetched): every notification once, in topic order, withdrawals applied; a
/// notification the inbox cannot hold (tenant id out of its range) makes its batch fall back to
/// one by one and is skipped alone; garbage in between is counted and skipped.
#[tokio::test]
#[ignore = "needs a Kafka broker at VIGIA_TEST_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn a_backlog_is_stored_in_batches_once_and_in_order_and_a_bad_notification_is_skipped_alone()
{
    let topics = create_topics().await;
    let producer: FutureProducer = kafka_config().set("linger.ms", "20").create().unwrap();
    let total = 3000;
    let mut expected = Vec::new();
    let mut targets = std::collections::HashSet::new();
    let mut sends = Vec::new();
    for i in 0..total {
        let payload = if i == 1500 {
            let mut bad = to_user(1, 10);
            bad.tenant_id = u64::MAX;
            serde_json::to_vec(&bad).unwrap()
        } else if i == 700 {
            b"not a notification".to_vec()
        } else if i % 10 == 9 {
            // A withdrawal of the notification just before.
            let mut w = to_user(1, 10);
            w.withdraws = Some(*expected.last().unwrap());
            targets.insert(*expected.last().unwrap());
            expected.push(w.id);
            serde_json::to_vec(&w).unwrap()
        } else {
            let n = to_user(1, 10);
            expected.push(n.id);
            serde_json::to_vec(&n).unwrap()
        };
        let producer = producer.clone();
        let topic = topics.notifications.clone();
        sends.push(tokio::spawn(async move {
            producer
                .send(
                    FutureRecord::to(&topic).key("1").payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
        }));
        // Records must keep their order on the partition: wait for each batch of sends.
        if sends.len() == 100 {
            for s in sends.drain(..) {
                s.await.unwrap().unwrap();
            }
        }
    }
    for s in sends {
        s.await.unwrap().unwrap();
    }
    // A duplicate of the first, after everything.
    let mut first = to_user(1, 10);
    first.id = expected[0];
    produce(
        &producer,
        &topics.notifications,
        &serde_json::to_vec(&first).unwrap(),
    )
    .await;

    let dir = TempDir::new();
    let cfg = Config {
        jwt_secret: SECRET.into(),
        database_url: dir.sqlite_url(),
        group_id: format!("gwtest-{}", Uuid::new_v4().simple()),
        ..Config::default()
    };
    let gw = Running::start(cfg, &topics).await;
    gw.wait_for(
        "vigia_gateway_notifications_stored_total",
        expected.len() as f64,
    )
    .await;
    gw.wait_for("vigia_gateway_notifications_duplicate_total", 1.0)
        .await;
    // The garbage record and the notification out of range.
    assert_eq!(
        gw.metric("vigia_gateway_notifications_undecodable_total"),
        2.0
    );
    assert_eq!(
        gw.metric("vigia_gateway_notifications_stored_total"),
        expected.len() as f64
    );
    let inbox = gw.gateway.inbox();
    let viewer = vigia_gateway::Viewer {
        tenant_id: 1,
        user_id: 10,
        role: Role::Seller,
    };
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page = inbox.since(&viewer, after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.sequence;
        stored.extend(page.iter().map(|s| (s.notification.id, s.withdrawn)));
    }
    assert_eq!(
        stored.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        expected,
        "every notification once, in topic order"
    );
    // Exactly the notifications a withdrawal named are withdrawn.
    for (id, withdrawn) in &stored {
        assert_eq!(*withdrawn, targets.contains(id), "{id}");
    }
    gw.shutdown.cancel();
}
