//! Ingest's HTTP contract where no broker is needed: every refusal, `GET /v1/schemas`, and `503`
//! with `Retry-After` when Kafka is unreachable (the producer points at a closed port).

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use prometheus_client::encoding::text::encode;
use serde_json::{json, Value};
use vigia_ingest::Config;

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn unreachable(config: Config) -> (vigia_ingest::Ingest, prometheus_client::registry::Registry) {
    ingest(
        config,
        &format!("127.0.0.1:{}", closed_port()),
        &unique_topics(),
    )
}

#[tokio::test]
async fn unreachable_kafka_is_503_with_retry_after_in_bounded_time() {
    let (ingest, registry) = unreachable(Config {
        produce_timeout: Duration::from_secs(2),
        ..config()
    });
    let started = Instant::now();
    let body = json!([
        event(1, TENANT, "message.received"),
        event(2, TENANT, "message.sent")
    ]);
    let reply = post_json(&ingest, &body).await;
    let elapsed = started.elapsed();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.json
    );
    let retry_after: u64 = reply.retry_after.expect("Retry-After").parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(reply.json["retryable"], json!(true));
    let message = reply.json["error"].as_str().unwrap();
    assert!(message.contains("safe"), "{message}");
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(6),
        "answered after {elapsed:?}, expected about the 2s produce timeout"
    );

    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("vigia_ingest_requests_total{status=\"503\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vigia_ingest_events_rejected_total 2"),
        "{text}"
    );
    assert!(
        text.contains("vigia_ingest_events_accepted_total 0"),
        "{text}"
    );
    assert!(
        text.contains("vigia_ingest_produce_duration_seconds_count 1"),
        "{text}"
    );

    let started = Instant::now();
    assert!(!ingest.ready().await);
    assert!(started.elapsed() < Duration::from_secs(4));
    ingest.flush(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn refusals_have_their_status_and_a_json_error() {
    let (ingest, registry) = unreachable(Config {
        max_body_bytes: 2048,
        max_events_per_request: 3,
        ..config()
    });
    let good = || event(1, TENANT, "message.received");
    let error_of = |reply: &Reply| reply.json["error"].as_str().unwrap_or("").to_string();

    let r = post(&ingest, None, Some("application/json"), good().to_string()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(error_of(&r).contains("X-API-Key"));
    let r = post(
        &ingest,
        Some("nope"),
        Some("application/json"),
        good().to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = post(&ingest, Some(KEY), None, good().to_string()).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = post(
        &ingest,
        Some(KEY),
        Some("application/xml"),
        good().to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(error_of(&r).contains("application/x-ndjson"), "{}", r.json);

    // Over the body limit: 413 with a JSON body, whether or not the size is announced.
    let big = "x".repeat(4096);
    let r = post(&ingest, Some(KEY), Some("application/json"), big.clone()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&r).contains("2048 bytes"), "{}", r.json);
    let chunks = futures::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from("x".repeat(512)))),
    );
    let streamed = axum::body::Body::from_stream(chunks);
    let r = post(&ingest, Some(KEY), Some("application/json"), streamed).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    let four: Vec<Value> = (0..4).map(|_| good()).collect();
    let r = post_json(&ingest, &Value::Array(four)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&r).contains("more than 3 events"), "{}", r.json);

    let r = post(&ingest, Some(KEY), Some("application/json"), "{oops").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(error_of(&r).contains("not valid JSON"));
    let r = post(&ingest, Some(KEY), Some("application/x-ndjson"), "\n\n").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let mut bad = good();
    bad["occurred_at"] = json!("yesterday");
    let r = post(
        &ingest,
        Some(KEY),
        Some("application/x-ndjson"),
        format!("{}\nnot json\n{bad}", good()),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["errors"],
        json!([{"index": 1, "field": "", "message": r.json["errors"][0]["message"]},
               {"index": 2, "field": "occurred_at", "message": r.json["errors"][1]["message"]}])
    );

    let foreign = event(2, 43, "message.sent");
    let r = post_json(&ingest, &json!([good(), foreign])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json["errors"][0]["index"], json!(1));
    assert_eq!(r.json["errors"][0]["field"], json!("tenant_id"));
    assert_eq!(r.json["errors"][0]["event_id"], foreign["event_id"]);

    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    for (status, count) in [(401, 2), (415, 2), (413, 3), (400, 3), (403, 1)] {
        let line = format!("vigia_ingest_requests_total{{status=\"{status}\"}} {count}");
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
    // 3 (invalid NDJSON) + 2 (foreign) events were refused; other refusals count no events.
    assert!(
        text.contains("vigia_ingest_events_rejected_total 5"),
        "{text}"
    );
}

#[tokio::test]
async fn schemas_are_served_without_a_key() {
    let (ingest, _registry) = unreachable(config());
    let response = tower::ServiceExt::oneshot(
        ingest.router(),
        axum::http::Request::get("/v1/schemas")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["event_types"], json!(vigia_schemas::EVENT_TYPES));
    assert_eq!(json["schemas"], vigia_schemas::event_json_schemas());
}

/// Issue 13: one field of one event cannot carry megabytes into the pipeline. Every free-text
/// field has a length limit (in characters, as JSON Schema's `maxLength` counts); a field over it
/// is a 400 naming the field and the limit. Before the limits an event with ~900 KB of text was
/// accepted, and its dead letter, re-escaped, no longer fit a Kafka record.
#[tokio::test]
async fn fields_over_their_length_limit_are_400_naming_the_field() {
    let (ingest, _registry) = unreachable(config());
    let long = |n: usize| json!("x".repeat(n));
    let mut message = event(1, TENANT, "message.received");
    message["text"] = long(65_537);
    message["phone_number"] = long(65);
    let mut lead = event(2, TENANT, "lead.created");
    lead["name"] = long(257);
    lead["location"] = long(257);
    lead["phone_number"] = long(65);
    let mut user = event(3, TENANT, "user.upserted");
    user.as_object_mut().unwrap().remove("conversation_id");
    user["user_id"] = json!(7);
    user["role"] = json!("seller");
    user["name"] = long(257);
    user["time_zone"] = long(65);
    let mut follow_up = event(4, TENANT, "lead.follow_up_scheduled");
    follow_up.as_object_mut().unwrap().remove("conversation_id");
    follow_up["lead_id"] = json!("l1");
    follow_up["seller_id"] = json!(7);
    follow_up["due_at"] = json!("2026-02-28T15:00:00Z");
    follow_up["note"] = long(65_537);

    let r = post_json(&ingest, &json!([message, lead, user, follow_up])).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    let errors: Vec<(u64, String, String)> = r.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["field"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let fields: Vec<(u64, &str)> = errors.iter().map(|(i, f, _)| (*i, f.as_str())).collect();
    assert_eq!(
        fields,
        vec![
            (0, "phone_number"),
            (0, "text"),
            (1, "location"),
            (1, "name"),
            (1, "phone_number"),
            (2, "name"),
            (2, "time_zone"),
            (3, "note"),
        ]
    );
    assert!(errors[1].2.contains("65536 characters"), "{}", errors[1].2);
    assert!(errors[3].2.contains("256 characters"), "{}", errors[3].2);
    // The message says how long it was, not what it was: a refusal stays small.
    assert!(
        r.json.to_string().len() < 4096,
        "{}",
        r.json.to_string().len()
    );

    // At the limit, counted in characters (not bytes), the events are valid: they reach Kafka
    // (which is unreachable here: 503).
    let mut message = event(5, TENANT, "message.received");
    message["text"] = json!("ñ".repeat(65_536));
    let mut lead = event(6, TENANT, "lead.created");
    lead["name"] = json!("ñ".repeat(256));
    let r = post_json(&ingest, &json!([message, lead])).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.json);
}

/// The limits are configurable ([ingest] `max_text_chars`, `max_name_chars`), and the served
/// JSON Schemas carry the configured ones as `maxLength`.
#[tokio::test]
async fn configured_field_limits_apply_and_the_schemas_show_them() {
    let mut config = config();
    let limits: Config = serde_json::from_value(json!({"max_text_chars": 10, "max_name_chars": 3}))
        .expect("the limits are [ingest] keys");
    config.max_text_chars = limits.max_text_chars;
    config.max_name_chars = limits.max_name_chars;
    let (ingest, _registry) = unreachable(config);
    let mut message = event(1, TENANT, "message.received");
    message["text"] = json!("x".repeat(11));
    let r = post_json(&ingest, &message).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    assert_eq!(r.json["errors"][0]["field"], json!("text"));
    assert!(r.json["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("10 characters"));

    let response = tower::ServiceExt::oneshot(
        ingest.router(),
        axum::http::Request::get("/v1/schemas")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap();
    let schemas = &json["schemas"];
    assert_eq!(
        schemas["message.received"]["properties"]["text"]["maxLength"],
        json!(10)
    );
    assert_eq!(
        schemas["lead.created"]["properties"]["name"]["maxLength"],
        json!(3)
    );
    assert_eq!(
        schemas["lead.created"]["properties"]["phone_number"]["maxLength"],
        json!(64)
    );
}

#[test]
fn field_limits_come_from_the_environment_too() {
    let mut config = Config::default();
    let env = |k: &str| match k {
        "VIGIA_INGEST_MAX_TEXT_CHARS" => Some("1000".to_string()),
        "VIGIA_INGEST_MAX_NAME_CHARS" => Some(" 80 ".to_string()),
        _ => None,
    };
    config.apply_env(env).unwrap();
    assert_eq!((config.max_text_chars, config.max_name_chars), (1000, 80));
    let e = config
        .apply_env(|k| (k == "VIGIA_INGEST_MAX_NAME_CHARS").then(|| "many".to_string()))
        .unwrap_err();
    assert!(e.to_string().contains("VIGIA_INGEST_MAX_NAME_CHARS"), "{e}");
}
