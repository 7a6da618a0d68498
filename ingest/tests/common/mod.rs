//! Helpers shared by the ingest integration tests: building an `Ingest`, driving its router
//! in-process, and reading a topic back.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use prometheus_client::registry::Registry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;
use vigia_ingest::{Config, Ingest};
use vigia_schemas::Topics;

pub const KEY: &str = "key-of-42";
pub const TENANT: u64 = 42;

pub fn brokers() -> String {
    std::env::var("VIGIA_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

pub fn kafka_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

pub fn config() -> Config {
    Config {
        api_keys: HashMap::from([(KEY.to_string(), TENANT), ("key-of-43".to_string(), 43)]),
        produce_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

pub fn ingest(config: Config, brokers: &str, topics: &Topics) -> (Ingest, Registry) {
    let mut registry = Registry::default();
    let ingest =
        Ingest::new(config, &kafka_config(brokers), topics, &mut registry).expect("ingest builds");
    (ingest, registry)
}

pub fn unique_topics() -> Topics {
    Topics::with_prefix(&format!("test-{}.", Uuid::new_v4()))
}

/// Creates `topic` with one partition, failing the test with a clear message if Kafka is absent.
pub async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> =
        kafka_config(brokers).create().expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = tokio::time::timeout(
        Duration::from_secs(20),
        admin.create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &options,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("no Kafka at {brokers} (set VIGIA_KAFKA_BROKERS or start scripts/services.sh)")
    })
    .unwrap_or_else(|e| panic!("cannot create topic {topic} on {brokers}: {e}"));
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

pub fn event(n: u32, tenant: u64, kind: &str) -> Value {
    let mut e = json!({
        "event_id": Uuid::new_v4(),
        "type": kind,
        "tenant_id": tenant,
        "occurred_at": "2026-02-27T15:00:00Z",
    });
    let extra = match kind {
        "message.received" => json!({"conversation_id": format!("c{n}"), "channel": "whatsapp",
                                     "text": "hola"}),
        "message.sent" => json!({"conversation_id": format!("c{n}"), "seller_id": 7}),
        "lead.created" => json!({"lead_id": n, "source": "META_ADS", "estimated_value": 12.5}),
        _ => json!({"conversation_id": format!("c{n}")}),
    };
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

pub struct Reply {
    pub status: StatusCode,
    pub retry_after: Option<String>,
    pub json: Value,
}

pub async fn post(
    ingest: &Ingest,
    key: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Reply {
    let mut request = Request::post("/v1/events");
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    if let Some(ct) = content_type {
        request = request.header("Content-Type", ct);
    }
    let response = ingest
        .router()
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {bytes:?}"));
    Reply {
        status,
        retry_after,
        json,
    }
}

pub async fn post_json(ingest: &Ingest, body: &Value) -> Reply {
    post(
        ingest,
        Some(KEY),
        Some("application/json"),
        body.to_string(),
    )
    .await
}

/// One record read back from Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: String,
    pub value: String,
    pub headers: HashMap<String, String>,
}

/// The records of partition 0 of `topic`, from the beginning: waits until `expected` arrived
/// (panicking after 20s), then keeps listening for [`QUIET`] to catch any extra one.
///
/// It does not stop at the high watermark: listening on for [`QUIET`] is what catches a record
/// written twice.
pub fn read_records(brokers: &str, topic: &str, expected: usize) -> Vec<Record> {
    let consumer: BaseConsumer = kafka_config(brokers)
        .set("group.id", format!("test-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    loop {
        if records.len() >= expected {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET {
                return records;
            }
        } else if started.elapsed() > Duration::from_secs(20) {
            panic!(
                "read only {} of the {expected} expected records of {topic} within 20s: {records:#?}",
                records.len()
            );
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("consume");
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        let value = h.value.unwrap_or_default().to_vec();
                        (h.key.to_string(), String::from_utf8(value).unwrap())
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(Record {
            key: String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap(),
            value: String::from_utf8(message.payload().unwrap_or_default().to_vec()).unwrap(),
            headers,
        });
    }
}

/// How long [`read_records`] listens for unexpected extra records.
pub const QUIET: Duration = Duration::from_secs(2);
