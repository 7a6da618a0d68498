//! End to end on the real services: events posted to `vigia serve` reach the right WebSocket
//! clients at their deadline, and ClickHouse holds every row exactly once.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use vigia_schemas::Role;

const SELLER_A: u64 = 1010;
const SELLER_B: u64 = 1011;
const CEO_1: u64 = 1001;
const SELLER_T2: u64 = 2010;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_conversation_reaches_the_seller_and_ceo_at_its_deadline_and_nobody_else() {
    let ns = Namespace::new("unanswered").env("VIGIA_UNANSWERED_AFTER", "4s");
    let vigia = ns.spawn("serve");

    let seller_a = WsClient::connect(&vigia, SELLER_A, 1, Role::Seller).await;
    let seller_b = WsClient::connect(&vigia, SELLER_B, 1, Role::Seller).await;
    let ceo = WsClient::connect(&vigia, CEO_1, 1, Role::Ceo).await;
    let other_tenant = WsClient::connect(&vigia, SELLER_T2, 2, Role::Seller).await;
    let other_ceo = WsClient::connect(&vigia, 2001, 2, Role::Ceo).await;

    let t0 = now();
    // Conversation c-late is never answered; c-ok is answered within the threshold.
    let waiting = event(
        "message.received",
        1,
        t0,
        json!({"conversation_id": "c-late", "channel": "whatsapp", "seller_id": SELLER_A, "text": "¿precio?"}),
    );
    let answered_q = event(
        "message.received",
        1,
        t0,
        json!({"conversation_id": "c-ok", "channel": "web", "seller_id": SELLER_A}),
    );
    let answered_a = event(
        "message.sent",
        1,
        t0 + chrono::Duration::seconds(1),
        json!({"conversation_id": "c-ok", "seller_id": SELLER_A}),
    );
    post_ok(&vigia, 1, &json!([waiting, answered_q, answered_a])).await;
    // Tenant 2 has an unanswered conversation of its own: tenant 1's clients must not see it.
    let t2 = event(
        "message.received",
        2,
        t0,
        json!({"conversation_id": "c-t2", "channel": "whatsapp", "seller_id": SELLER_T2}),
    );
    post_ok(&vigia, 2, &t2).await;

    let deadline = t0 + chrono::Duration::seconds(4);
    let is_late = |n: &serde_json::Value| {
        n["type"] == "unanswered_conversation" && n["data"]["conversation_id"] == "c-late"
    };
    let (got_at, n) = seller_a
        .wait_notification(Duration::from_secs(20), is_late)
        .await
        .unwrap_or_else(|| {
            panic!(
                "seller A got no unanswered notification; log:\n{}",
                vigia.log()
            )
        });
    assert!(
        got_at >= deadline - chrono::Duration::milliseconds(50),
        "fired before its deadline: {got_at} < {deadline}"
    );
    let lag = (got_at - deadline).num_milliseconds();
    println!("deadline -> seller frame: {lag} ms");
    assert!(lag < 5000, "fired {lag} ms after its deadline");
    assert_eq!(n["audience"], json!({"user_id": SELLER_A}));
    assert_eq!(n["tenant_id"], json!(1));
    assert_eq!(n["priority"], "high");

    ceo.wait_notification(Duration::from_secs(5), is_late)
        .await
        .expect("the CEO sees the tenant's unanswered notification too");
    other_ceo
        .wait_notification(Duration::from_secs(10), |n| {
            n["data"]["conversation_id"] == "c-t2"
        })
        .await
        .expect("tenant 2's CEO sees tenant 2's notification");

    // Give stray deliveries time to arrive before asserting absence.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in seller_a
        .notifications()
        .iter()
        .chain(ceo.notifications().iter())
    {
        assert_eq!(n.1["tenant_id"], json!(1), "tenant 1 saw {}", n.1);
        assert_ne!(
            n.1["data"]["conversation_id"], "c-ok",
            "an answered conversation was reported: {}",
            n.1
        );
    }
    assert!(
        seller_b.notifications().is_empty(),
        "seller B saw seller A's notification: {:?}",
        seller_b.notifications()
    );
    for (_, n) in other_tenant
        .notifications()
        .iter()
        .chain(other_ceo.notifications().iter())
    {
        assert_eq!(n["tenant_id"], json!(2), "tenant 2 saw {n}");
    }
    drop_database(&ns.database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_holds_every_row_exactly_once_even_when_an_event_is_posted_twice() {
    let ns = Namespace::new("exactly_once").env("VIGIA_UNANSWERED_AFTER", "2s");
    let vigia = ns.spawn("serve");
    let db = ns.database();

    let t0 = now();
    let lead = event(
        "lead.created",
        1,
        t0,
        json!({"lead_id": "l1", "source": "META_ADS", "seller_id": SELLER_A,
               "conversation_id": "c1", "location": "Bogotá"}),
    );
    let question = event(
        "message.received",
        1,
        t0 + chrono::Duration::milliseconds(100),
        json!({"conversation_id": "c1", "channel": "whatsapp", "seller_id": SELLER_A,
               "text": "quiero comprar, ¿cuál es el precio?"}),
    );
    let reply_at = t0 + chrono::Duration::milliseconds(5100);
    let reply = event(
        "message.sent",
        1,
        reply_at,
        json!({"conversation_id": "c1", "seller_id": SELLER_A}),
    );
    post_ok(&vigia, 1, &json!([lead, question])).await;
    // The same events again (a webhook retry), in another request.
    post_ok(&vigia, 1, &json!([lead, question])).await;
    // The reply comes in real time, after the 2 s deadline has fired, and is retried too.
    tokio::time::sleep((reply_at - now()).to_std().unwrap_or_default()).await;
    post_ok(&vigia, 1, &reply).await;
    post_ok(&vigia, 1, &reply).await;

    let within = Duration::from_secs(30);
    let events = eventually(within, 3, || ch_count(&db, "events", "")).await;
    assert_eq!(events, 3, "raw events");
    // The question waited 5 s for its reply: one sample.
    let rt = eventually(within, 1, || ch_count(&db, "response_times", "")).await;
    assert_eq!(rt, 1, "response-time samples");
    // The reply came after the 2 s threshold: one unanswered notification, then its withdrawal.
    let notes = eventually(within, 2, || {
        ch_count(&db, "notifications", "type = 'unanswered_conversation'")
    })
    .await;
    assert_eq!(notes, 2, "unanswered notification and its withdrawal");
    // The lead was scored on creation and on the customer's message.
    let scores = eventually(within, 2, || ch_count(&db, "lead_scores", "")).await;
    assert_eq!(scores, 2, "lead scores");

    // Nothing more arrives later (duplicates would show up as extra rows).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ch_count(&db, "events", "").await, 3);
    assert_eq!(ch_count(&db, "response_times", "").await, 1);
    assert_eq!(ch_count(&db, "lead_scores", "").await, 2);
    let secs = ch_query(&format!("SELECT response_seconds FROM {db}.response_times")).await;
    let secs: f64 = secs.trim().parse().unwrap();
    assert!((secs - 5.0).abs() < 0.01, "response time {secs}");
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_and_schemas() {
    let ns = Namespace::new("health");
    let vigia = ns.spawn("serve");
    let client = reqwest::Client::new();
    for path in ["/health", "/health/readiness", "/health/liveness"] {
        let r = client.get(vigia.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let health: serde_json::Value = client
        .get(vigia.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for c in ["kafka", "clickhouse", "inbox"] {
        assert_eq!(health["components"][c], "up", "{health}");
    }
    let metrics = client
        .get(vigia.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("vigia_ingest"), "{metrics}");
    assert!(metrics.trim_end().ends_with("# EOF"));
    assert_eq!(metrics.matches("# EOF").count(), 1);

    let schemas: serde_json::Value = client
        .get(vigia.url("/v1/schemas"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = schemas.to_string();
    for t in vigia_schemas::EVENT_TYPES {
        assert!(text.contains(&format!("\"{t}\"")), "schema of {t} missing");
    }
    drop_database(&ns.database()).await;
}
