//! The sink end to end: Kafka at `VIGIA_KAFKA_BROKERS` (default 127.0.0.1:9092) →
//! ClickHouse at `VIGIA_CLICKHOUSE_URL`, with unique topics and database per test.
//! Ignored by default; run with `cargo test -p vigia-sinks --test kafka -- --ignored`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use prometheus_client::registry::Registry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vigia_schemas::{Audience, Notification, NotificationType, Priority, Topics};
use vigia_sinks::{migrate, Config};

fn kafka_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers());
    c
}

async fn create_topics(topics: &Topics, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = kafka_config().create().expect("admin client");
    let new: Vec<NewTopic> = topics
        .all()
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results =
        tokio::time::timeout(Duration::from_secs(20), admin.create_topics(&new, &options))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no Kafka at {} (set VIGIA_KAFKA_BROKERS or start scripts/services.sh)",
                    brokers()
                )
            })
            .expect("topics are created");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
    // Wait until the metadata shows them, so the consumer's subscription finds them.
    let consumer: BaseConsumer = kafka_config().create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .unwrap();
        let known = topics.all().iter().all(|t| {
            md.topics()
                .iter()
                .any(|m| m.name() == *t && !m.partitions().is_empty())
        });
        if known {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "topics never appeared in metadata"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &str) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("cannot produce to {topic}: {e}"));
}

/// Runs the sink until `done` holds (checked every 200 ms, up to 30 s), then cancels it and
/// returns whether `done` held.
async fn run_sink_until<F, Fut>(cfg: &Config, topics: &Topics, done: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let shutdown = CancellationToken::new();
    let task = {
        let (cfg, topics, shutdown) = (cfg.clone(), topics.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut registry = Registry::default();
            vigia_sinks::run(cfg, &kafka_config(), &topics, &mut registry, shutdown).await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ok = false;
    while Instant::now() < deadline {
        if done().await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the sink stops within 20 s of cancellation")
        .unwrap()
        .expect("the sink stops cleanly");
    ok
}

fn event_json(n: u128, tenant: u64) -> String {
    json!({
        "event_id": Uuid::from_u128(n),
        "type": "message.received",
        "tenant_id": tenant,
        "occurred_at": (at("2026-02-27T15:00:00Z") + chrono::Duration::seconds(n as i64))
            .to_rfc3339(),
        "conversation_id": format!("c{n}"),
        "channel": "whatsapp",
        "seller_id": 7,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS and ClickHouse at VIGIA_CLICKHOUSE_URL"]
async fn records_reach_clickhouse_once_across_duplicates_restarts_and_replays() {
    logs();
    let topics = Topics::with_prefix(&format!("sinktest-{}.", Uuid::new_v4().simple()));
    create_topics(&topics, 2).await;
    let db = TestDb::new();
    let cfg = Config {
        group_id: format!("sinktest-{}", Uuid::new_v4().simple()),
        flush_interval: Duration::from_millis(200),
        batch_size: 25,
        ..db.cfg.clone()
    };
    migrate(&cfg).await.expect("ClickHouse is up and migrates");

    let producer: FutureProducer = kafka_config().create().unwrap();
    // 60 events of 3 tenants; two of them sent twice, as a retrying CRM or ingest would.
    for n in 0..60u128 {
        let tenant = (n % 3) as u64 + 1;
        produce(
            &producer,
            &topics.events,
            &tenant.to_string(),
            &event_json(n, tenant),
        )
        .await;
    }
    produce(&producer, &topics.events, "1", &event_json(0, 1)).await;
    produce(&producer, &topics.events, "2", &event_json(31, 2)).await;
    // A record the sink cannot read: dead-lettered, then stored from the dead-letter topic.
    produce(&producer, &topics.events, "3", "{\"not\": \"an event\"}").await;
    let n = Notification {
        id: Uuid::from_u128(1000),
        tenant_id: 1,
        kind: NotificationType::HotLead,
        priority: Priority::Urgent,
        audience: Audience::User { user_id: 7 },
        title: "Lead caliente".into(),
        message: "m".into(),
        data: json!({}),
        actions: vec![],
        created_at: at("2026-02-27T15:05:00Z"),
        withdraws: None,
    };
    let n_json = serde_json::to_string(&n).unwrap();
    produce(&producer, &topics.notifications, "1", &n_json).await;
    produce(&producer, &topics.notifications, "1", &n_json).await;

    let db = &db;
    let expected = move || async move {
        db.count("events").await == 60
            && db.count("notifications").await == 1
            && db.count("dead_letters").await == 1
    };
    assert!(
        run_sink_until(&cfg, &topics, expected).await,
        "after the first run: events {}, notifications {}, dead_letters {}",
        db.count("events").await,
        db.count("notifications").await,
        db.count("dead_letters").await
    );
    assert_eq!(db.count_and_unique("events", "event_id").await, (60, 60));
    let letter = db
        .tsv(&format!(
            "SELECT stage, origin_topic, tenant_id FROM {}.dead_letters",
            db.name()
        ))
        .await;
    // The payload names no tenant: the record's key (every topic is keyed by tenant) does.
    assert_eq!(letter, format!("sink\t{}\t3", topics.events));

    // Restart with the same group: offsets were committed, nothing is written again; new
    // records (one new, one old) are.
    produce(&producer, &topics.events, "2", &event_json(60, 2)).await;
    produce(&producer, &topics.events, "1", &event_json(3, 1)).await;
    assert!(
        run_sink_until(&cfg, &topics, move || async move {
            db.count("events").await == 61
        })
        .await
    );

    // Replay everything from the beginning (a new group: as if no offset had ever been
    // committed, i.e. a crash right after every INSERT): not a single new row.
    let replay = Config {
        group_id: format!("{}-replay", cfg.group_id),
        ..cfg.clone()
    };
    let group = replay.group_id.clone();
    let events_topic = topics.events.clone();
    let consumed_everything = move || {
        let (group, events_topic) = (group.clone(), events_topic.clone());
        async move {
            // The replay is done when its committed offsets reach the end of the events topic;
            // meanwhile the counts must never move.
            assert_eq!(db.count("events").await, 61);
            assert_eq!(db.count("notifications").await, 1);
            committed_to_end(&group, &events_topic)
        }
    };
    assert!(run_sink_until(&replay, &topics, consumed_everything).await);
    assert_eq!(db.count_and_unique("events", "event_id").await, (61, 61));
    assert_eq!(db.count_and_unique("notifications", "id").await, (1, 1));
    assert_eq!(db.count_and_unique("dead_letters", "id").await, (1, 1));
    // Topics are left in place for a look after a failure (each test has its own prefix);
    // the local broker's data lives under .data/ of the clone.
}

/// Whether `group` has committed, on every partition of `topic` that holds records, the
/// partition's end offset.
fn committed_to_end(group: &str, topic: &str) -> bool {
    let consumer: BaseConsumer = kafka_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition(topic, p.id());
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(5)) else {
        return false;
    };
    committed.elements().iter().all(|e| {
        let (low, high) = consumer
            .fetch_watermarks(topic, e.partition(), Duration::from_secs(5))
            .unwrap();
        low == high || matches!(e.offset(), rdkafka::Offset::Offset(o) if o >= high)
    })
}

/// A TCP proxy to ClickHouse that can be switched off (connections are then closed at once),
/// standing in for a ClickHouse outage without touching the real server.
struct Switch {
    url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Switch {
    async fn start(target: &str) -> Switch {
        use std::sync::atomic::{AtomicBool, Ordering};
        let target = target
            .strip_prefix("http://")
            .unwrap_or(target)
            .trim_end_matches('/')
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = std::sync::Arc::new(AtomicBool::new(false));
        let flag = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Switch { url, up }
    }

    fn set(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
    }
}

fn metric(registry: &Registry, name: &str) -> Option<f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS and ClickHouse at VIGIA_CLICKHOUSE_URL"]
async fn a_clickhouse_outage_pauses_consumption_and_loses_nothing() {
    logs();
    let topics = Topics::with_prefix(&format!("sinktest-{}.", Uuid::new_v4().simple()));
    create_topics(&topics, 1).await;
    let db = TestDb::new();
    migrate(&db.cfg)
        .await
        .expect("ClickHouse is up and migrates");
    let switch = Switch::start(&db.cfg.url).await;
    let cfg = Config {
        url: switch.url.clone(),
        group_id: format!("sinktest-{}", Uuid::new_v4().simple()),
        flush_interval: Duration::from_millis(200),
        ..db.cfg.clone()
    };

    let producer: FutureProducer = kafka_config().create().unwrap();
    for n in 0..40u128 {
        produce(&producer, &topics.events, "5", &event_json(n, 5)).await;
    }

    let shutdown = CancellationToken::new();
    let registry = std::sync::Arc::new(std::sync::Mutex::new(Registry::default()));
    let sink = {
        let mut r = registry.lock().unwrap();
        vigia_sinks::Sink::new(cfg, &kafka_config(), &topics, &mut r).unwrap()
    };
    let task = tokio::spawn(sink.run(shutdown.clone()));

    // ClickHouse "down" for 14 s: longer than one flush's retry budget, so the sink pauses.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(db.count("events").await, 0);
    {
        let reg = registry.lock().unwrap();
        assert_eq!(metric(&reg, "vigia_sink_backpressure"), Some(1.0));
        assert!(metric(&reg, "vigia_sink_write_errors_total{table=\"events\"}").unwrap() >= 2.0);
    }
    // Records produced during the outage are kept too.
    for n in 40..50u128 {
        produce(&producer, &topics.events, "5", &event_json(n, 5)).await;
    }

    switch.set(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.count("events").await < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(db.count_and_unique("events", "event_id").await, (50, 50));
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&registry.lock().unwrap(), "vigia_sink_backpressure") != Some(0.0) {
        assert!(Instant::now() < deadline, "consumption never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    // Topics are left in place for a look after a failure (each test has its own prefix);
    // the local broker's data lives under .data/ of the clone.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS and ClickHouse at VIGIA_CLICKHOUSE_URL"]
async fn members_joining_and_leaving_the_group_write_each_row_once() {
    logs();
    let topics = Topics::with_prefix(&format!("sinktest-{}.", Uuid::new_v4().simple()));
    create_topics(&topics, 4).await;
    let db = TestDb::new();
    migrate(&db.cfg)
        .await
        .expect("ClickHouse is up and migrates");
    let cfg = Config {
        group_id: format!("sinktest-{}", Uuid::new_v4().simple()),
        flush_interval: Duration::from_millis(300),
        ..db.cfg.clone()
    };
    let start = |cfg: Config, topics: Topics| {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let mut registry = Registry::default();
            vigia_sinks::run(cfg, &kafka_config(), &topics, &mut registry, stop).await
        });
        (shutdown, task)
    };

    // 600 events of 30 tenants, produced over ~8 s while members come and go; every 10th twice.
    let producing = {
        let events = topics.events.clone();
        tokio::spawn(async move {
            let producer: FutureProducer = kafka_config().create().unwrap();
            for n in 0..600u128 {
                let tenant = (n % 30) as u64 + 1;
                let json = event_json(n, tenant);
                produce(&producer, &events, &tenant.to_string(), &json).await;
                if n % 10 == 0 {
                    produce(&producer, &events, &tenant.to_string(), &json).await;
                }
                if n % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        })
    };
    let (stop_a, a) = start(cfg.clone(), topics.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // B joins; A notices the rebalance at its next heartbeat (3 s) and hands partitions over.
    let (stop_b, b) = start(cfg.clone(), topics.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_a.cancel();
    a.await.unwrap().unwrap();
    producing.await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while db.count("events").await < 600 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_b.cancel();
    b.await.unwrap().unwrap();
    assert_eq!(db.count_and_unique("events", "event_id").await, (600, 600));
    // Topics are left in place for a look after a failure (each test has its own prefix);
    // the local broker's data lives under .data/ of the clone.
}
