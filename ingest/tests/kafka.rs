//! Ingest against a real Kafka at `VIGIA_KAFKA_BROKERS` (default 127.0.0.1:9092).
//! Ignored by default; run with `cargo test -p vigia-ingest --test kafka -- --ignored`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use vigia_ingest::Config;
use vigia_schemas::Event;

#[tokio::test]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn accepted_events_are_in_the_topic_when_202_is_answered() {
    let brokers = brokers();
    let topics = unique_topics();
    create_topic(&brokers, &topics.events).await;
    let (ingest, _registry) = ingest(config(), &brokers, &topics);
    assert!(
        ingest.ready().await,
        "events topic exists, so ingest is ready"
    );

    // A JSON array, then NDJSON (CRLF, a blank line, and a duplicate event_id).
    let array = vec![
        event(1, TENANT, "message.received"),
        event(2, TENANT, "message.sent"),
        event(3, TENANT, "lead.created"),
    ];
    let reply = post_json(&ingest, &Value::Array(array.clone())).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
    assert_eq!(reply.json, json!({"accepted": 3}));

    let ndjson_events = [
        event(4, TENANT, "conversation.closed"),
        event(5, TENANT, "message.received"),
    ];
    let ndjson = format!(
        "{}\r\n\r\n{}\r\n{}\n",
        ndjson_events[0], ndjson_events[1], ndjson_events[0]
    );
    let reply = post(&ingest, Some(KEY), Some("application/x-ndjson"), ndjson).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
    assert_eq!(
        reply.json,
        json!({"accepted": 2}),
        "the duplicate counts once"
    );

    // A 202 means every event is already acknowledged: dropping the producer now, which purges
    // whatever it has not delivered yet, must lose nothing. (That no 202 is given without
    // acknowledgements is shown by tests/http.rs, against an unreachable broker.)
    drop(ingest);
    let expected: Vec<Event> = array
        .iter()
        .chain(ndjson_events.iter())
        .map(|v| Event::from_value(v.clone()).unwrap())
        .collect();
    let records = read_records(&brokers, &topics.events, expected.len());
    assert_eq!(records.len(), expected.len(), "{records:#?}");
    for (record, event) in records.iter().zip(&expected) {
        assert_eq!(record.value, event.to_json());
        assert_eq!(record.key, event.partition_key());
        assert_eq!(
            record.headers,
            HashMap::from([
                ("event_type".to_string(), event.kind().as_str().to_string()),
                ("tenant_id".to_string(), TENANT.to_string()),
            ])
        );
    }
}

#[tokio::test]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn refused_requests_write_nothing() {
    let brokers = brokers();
    let topics = unique_topics();
    create_topic(&brokers, &topics.events).await;
    let (ingest, _registry) = ingest(
        Config {
            max_body_bytes: 4096,
            max_events_per_request: 5,
            ..config()
        },
        &brokers,
        &topics,
    );
    let good = || event(1, TENANT, "message.received");

    let mut invalid = good();
    invalid["channel"] = json!("pigeon");
    let mut future = good();
    future["occurred_at"] = json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
    let big: Vec<Value> = (0..5)
        .map(|_| {
            let mut e = good();
            e["text"] = json!("x".repeat(1000));
            e
        })
        .collect();
    let many: Vec<Value> = (0..6).map(|_| good()).collect();

    let cases: Vec<(u16, Option<&str>, &str, String)> = vec![
        (401, None, "application/json", good().to_string()),
        (401, Some("wrong"), "application/json", good().to_string()),
        (
            400,
            Some(KEY),
            "application/json",
            json!([good(), invalid]).to_string(),
        ),
        (
            400,
            Some(KEY),
            "application/json",
            json!([good(), future]).to_string(),
        ),
        (
            403,
            Some("key-of-43"),
            "application/json",
            json!([good()]).to_string(),
        ),
        (
            403,
            Some(KEY),
            "application/json",
            json!([good(), event(2, 43, "message.sent")]).to_string(),
        ),
        (
            413,
            Some(KEY),
            "application/json",
            Value::Array(big).to_string(),
        ),
        (
            413,
            Some(KEY),
            "application/json",
            Value::Array(many).to_string(),
        ),
        (415, Some(KEY), "text/plain", good().to_string()),
    ];
    for (status, key, content_type, body) in cases {
        let reply = post(&ingest, key, Some(content_type), body).await;
        assert_eq!(reply.status.as_u16(), status, "{}", reply.json);
    }
    assert_eq!(
        read_records(&brokers, &topics.events, 0),
        vec![],
        "refused requests wrote nothing"
    );

    // The topic works: the next valid request is the only thing in it.
    let ok = good();
    let reply = post_json(&ingest, &ok).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
    let records = read_records(&brokers, &topics.events, 1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, Event::from_value(ok).unwrap().to_json());
}

#[tokio::test]
#[ignore = "needs Kafka at VIGIA_KAFKA_BROKERS (default 127.0.0.1:9092)"]
async fn a_missing_topic_is_not_ready_and_fails_with_503() {
    let brokers = brokers();
    let topics = unique_topics(); // never created
    let (ingest, _registry) = ingest(
        Config {
            produce_timeout: Duration::from_secs(2),
            ..config()
        },
        &brokers,
        &topics,
    );
    assert!(!ingest.ready().await);
    let reply = post_json(&ingest, &event(1, TENANT, "message.received")).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.json
    );
    assert!(reply.retry_after.is_some());
}
