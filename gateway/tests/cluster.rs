//! Several gateway instances on one PostgreSQL inbox (a database of each test's own on the
//! server of `VIGIA_TEST_POSTGRES_URL`; skipped with a message when it is unset), in one
//! process: each pushes to its own clients what another stored, once, with the inbox's
//! sequence; a read or a preference change on one reaches the user's sockets on the other. And a
//! second instance on one SQLite inbox is refused.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use vigia_gateway::{Config, Gateway, GatewayError, Role};

async fn instance(url: &str) -> TestGateway {
    let url = url.to_string();
    TestGateway::start_with(move |cfg| cfg.database_url = url).await
}

/// The `sequence` of each notification frame.
fn sequences(frames: &[serde_json::Value]) -> Vec<i64> {
    frames
        .iter()
        .map(|f| f["sequence"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn each_instance_pushes_every_notification_once_whoever_stored_it() {
    let Some(db) = PgTestDatabase::create().await else {
        return;
    };
    let a = instance(&db.url).await;
    let b = instance(&db.url).await;
    let (mut on_a, _) = a.connect_ready(1, 10, Role::Seller).await;
    let (mut on_b, _) = b.connect_ready(1, 10, Role::Seller).await;
    let (mut other_tenant, _) = b.connect_ready(2, 10, Role::Ceo).await;

    // Stored by A: B's client gets it too, before B reads it from Kafka (the `stored` signal),
    // and not again when it does (B's store is a duplicate).
    let first = to_user(1, 10);
    assert!(a.gateway.deliver(first.clone()).await.unwrap());
    let got_b = notifications_within(&mut on_b, Duration::from_secs(2)).await;
    assert_eq!(ids(&got_b), vec![first.id]);
    assert!(!b.gateway.deliver(first.clone()).await.unwrap());
    // Stored by B, then read by A.
    let second = to_user(1, 10);
    assert!(b.gateway.deliver(second.clone()).await.unwrap());
    assert!(!a.gateway.deliver(second.clone()).await.unwrap());
    let mut got_b_more = notifications_within(&mut on_b, Duration::from_millis(1500)).await;
    let got_a = notifications_within(&mut on_a, Duration::from_millis(1500)).await;
    assert_eq!(ids(&got_b_more), vec![second.id], "once, not again");
    assert_eq!(ids(&got_a), vec![first.id, second.id]);
    // The same sequences everywhere: the inbox's.
    let mut all_b = got_b;
    all_b.append(&mut got_b_more);
    assert_eq!(sequences(&all_b), sequences(&got_a));
    assert!(sequences(&got_a)[0] < sequences(&got_a)[1]);
    assert!(
        notifications_within(&mut other_tenant, Duration::from_millis(300))
            .await
            .is_empty(),
        "nobody else's"
    );
    // `since` on either instance answers alike.
    let seen = sequences(&got_a)[0];
    for gw in [&a, &b] {
        let token = gw.token(1, 10, Role::Seller);
        let mut ws = gw
            .connect_query(&format!("token={token}&since={seen}"))
            .await;
        expect_handshake(&mut ws, 1, 10).await;
        let replayed = notifications_within(&mut ws, Duration::from_millis(500)).await;
        assert_eq!(ids(&replayed), vec![second.id]);
    }
    drop((a, b));
    db.drop_database().await;
}

#[tokio::test]
async fn a_read_or_a_preference_change_on_one_instance_reaches_the_users_sockets_on_another() {
    let Some(db) = PgTestDatabase::create().await else {
        return;
    };
    let a = instance(&db.url).await;
    let b = instance(&db.url).await;
    let (mut on_b, count) = b.connect_ready(1, 10, Role::Seller).await;
    assert_eq!(count, 0);
    let n = to_user(1, 10);
    a.gateway.deliver(n.clone()).await.unwrap();
    let (frames, count) = settle(&mut on_b, Duration::from_millis(1500)).await;
    assert_eq!(ids(&frames), vec![n.id]);
    assert_eq!(count, Some(1));

    // Read through A's REST API: B's socket hears the new count.
    let http = reqwest::Client::new();
    let token = a.token(1, 10, Role::Seller);
    let read = http
        .post(a.url(&format!("/v1/notifications/{}/read", n.id)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let (frames, count) = settle(&mut on_b, Duration::from_millis(1500)).await;
    assert!(frames.is_empty());
    assert_eq!(count, Some(0), "B's socket recounted after the read on A");

    // Push off, saved through A: B stops pushing to this user (the count still moves).
    let put = http
        .put(a.url("/v1/preferences"))
        .bearer_auth(&token)
        .json(&json!({"push": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.gateway.deliver(to_user(1, 10)).await.unwrap();
    let (frames, count) = settle(&mut on_b, Duration::from_millis(1500)).await;
    assert!(
        frames.is_empty(),
        "muted on B by a change made on A: {frames:?}"
    );
    assert_eq!(count, Some(1));
    drop((a, b));
    db.drop_database().await;
}

#[tokio::test]
async fn a_second_instance_on_one_sqlite_inbox_is_refused_until_the_first_stops() {
    let first = TestGateway::start().await;
    let cfg = Config {
        jwt_secret: SECRET.into(),
        database_url: first.dir.sqlite_url(),
        ..Config::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let second = Gateway::start_without_consumer(
        cfg.clone(),
        &mut registry,
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    let Err(err) = second else {
        panic!("a second instance started on the same SQLite inbox");
    };
    assert!(matches!(err, GatewayError::SqliteInUse(_)), "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains("gateway.db.lock") && shown.contains("PostgreSQL"),
        "{shown}"
    );
    first.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let again = Gateway::start_without_consumer(cfg, &mut registry, shutdown.clone()).await;
    assert!(again.is_ok(), "the lock is released when the first stops");
    shutdown.cancel();
}
