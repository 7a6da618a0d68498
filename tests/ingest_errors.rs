//! Bad requests get the contract §2.4 errors and write nothing; a broker outage is a 503 with
//! Retry-After, never a silent drop.

mod common;

use std::time::Duration;

use common::kafka_nodes::KafkaCluster;
use common::*;
use serde_json::{json, Value};

async fn post_raw(v: &Vigia, key: Option<&str>, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(v.url("/v1/events"))
        .header("Content-Type", content_type)
        .body(body);
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    let r = req.send().await.expect("ingest answers");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn fields_of(body: &Value) -> Vec<(u64, String)> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array in {body}"))
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["field"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_field_errors_and_write_nothing() {
    let ns = Namespace::new("ingest_errors");
    let db = ns.database();
    let vigia = ns.spawn("serve");
    let good = |conv: &str| {
        event(
            "message.received",
            1,
            now(),
            json!({"conversation_id": conv, "channel": "web"}),
        )
    };

    // One valid event and three invalid ones: 400 naming each field, and nothing written.
    let mut bad_time = good("x2");
    bad_time["occurred_at"] = json!("yesterday at noon");
    let mut bad_channel = good("x3");
    bad_channel["channel"] = json!("pigeon");
    let mut missing = good("x4");
    missing.as_object_mut().unwrap().remove("conversation_id");
    let body = json!([good("x1"), bad_time, bad_channel, missing]);
    let (status, errs) = post_events(&vigia, 1, &body).await;
    assert_eq!(status, 400, "{errs}");
    assert_eq!(
        fields_of(&errs),
        vec![
            (1, "occurred_at".to_string()),
            (2, "channel".to_string()),
            (3, "conversation_id".to_string())
        ],
        "{errs}"
    );

    // Unknown type, bad UUID.
    let mut unknown = good("x5");
    unknown["type"] = json!("message.deleted");
    unknown["event_id"] = json!("not-a-uuid");
    let (status, errs) = post_events(&vigia, 1, &unknown).await;
    assert_eq!(status, 400);
    let f: Vec<String> = fields_of(&errs).into_iter().map(|(_, f)| f).collect();
    assert!(
        f.contains(&"type".to_string()) && f.contains(&"event_id".to_string()),
        "{errs}"
    );

    // NDJSON with a broken line.
    let nd = format!("{}\n{{not json\n", good("x6"));
    let (status, errs) = post_raw(
        &vigia,
        Some("key-t1"),
        "application/x-ndjson",
        nd.into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{errs}");
    assert_eq!(fields_of(&errs)[0].0, 1);

    // No key, a wrong key: 401.
    let one = serde_json::to_vec(&good("x7")).unwrap();
    let (status, _) = post_raw(&vigia, None, "application/json", one.clone()).await;
    assert_eq!(status, 401);
    let (status, _) = post_raw(&vigia, Some("wrong"), "application/json", one.clone()).await;
    assert_eq!(status, 401);

    // Tenant 1's key with a tenant-2 event among tenant-1 events: 403 naming that event.
    let mut foreign = good("x8");
    foreign["tenant_id"] = json!(2);
    let foreign_id = foreign["event_id"].clone();
    let (status, errs) = post_events(&vigia, 1, &json!([good("x9"), foreign])).await;
    assert_eq!(status, 403, "{errs}");
    assert!(
        errs.to_string().contains(foreign_id.as_str().unwrap()),
        "{errs}"
    );

    // Over the size limit: 413.
    let mut huge = good("x10");
    huge["text"] = json!("a".repeat(2 * 1024 * 1024));
    let (status, _) = post_events(&vigia, 1, &huge).await;
    assert_eq!(status, 413);

    // An unsupported content type.
    let (status, _) = post_raw(&vigia, Some("key-t1"), "text/plain", one).await;
    assert_eq!(status, 415);

    // Now one good event: once it is in ClickHouse, it must be the only row of this test.
    let marker = good("marker");
    post_ok(&vigia, 1, &marker).await;
    let n = eventually(Duration::from_secs(30), 1, || ch_count(&db, "events", "")).await;
    assert_eq!(n, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids = ch_query(&format!("SELECT toString(event_id) FROM {db}.events")).await;
    assert_eq!(ids.trim(), marker["event_id"].as_str().unwrap());
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_a_503_with_retry_after_in_bounded_time() {
    let ns = Namespace::new("outage");
    // A private broker this test may stop.
    let broker = KafkaCluster::start(1, &ns.data_dir);
    let ns = ns.env("VIGIA_KAFKA_BROKERS", &broker.bootstrap());
    let ingest = ns.spawn("ingest");
    let ev = || {
        event(
            "conversation.closed",
            1,
            now(),
            json!({"conversation_id": "c"}),
        )
    };
    post_ok(&ingest, 1, &ev()).await;

    broker.kill(0);
    let started = std::time::Instant::now();
    let r = reqwest::Client::new()
        .post(ingest.url("/v1/events"))
        .header("X-API-Key", "key-t1")
        .json(&ev())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let retry_after = r
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse::<u64>()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the 503 took {:?}",
        started.elapsed()
    );
    let (status, _) = post_events(&ingest, 1, &ev()).await;
    assert_eq!(status, 503);
}
