//! `GET|PUT /v1/preferences` and their effect on live pushes, plus the `metrics` frame, end to
//! end over a temporary SQLite inbox.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use vigia_gateway::Role;
use vigia_schemas::{Notification, NotificationType, Priority};

const QUIET: Duration = Duration::from_millis(400);

async fn get(gw: &TestGateway, token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(gw.url("/v1/preferences"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn put(gw: &TestGateway, token: &str, body: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .put(gw.url("/v1/preferences"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn defaults_come_from_the_role_and_updates_are_kept_per_user() {
    let gw = TestGateway::start().await;
    let seller = gw.token(1, 10, Role::Seller);
    let (status, prefs) = get(&gw, &seller).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        prefs,
        json!({
            "enabled_types": ["unanswered_conversation", "hot_lead", "follow_up_reminder"],
            "min_priority": "medium", "quiet_hours": null, "time_zone": "UTC",
            "work_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "push": true, "email": false
        })
    );
    let (_, secretary) = get(&gw, &gw.token(1, 20, Role::Secretary)).await;
    assert_eq!(
        secretary["enabled_types"],
        json!(["unanswered_conversation"])
    );
    assert_eq!(secretary["min_priority"], "high");

    let (status, saved) = put(
        &gw,
        &seller,
        r#"{"time_zone": "America/Bogota", "quiet_hours": {"start": "22:00", "end": "07:00"},
            "email": true}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["time_zone"], "America/Bogota");
    assert_eq!(
        saved["quiet_hours"],
        json!({"start": "22:00", "end": "07:00"})
    );
    assert_eq!(saved["min_priority"], "medium", "absent fields are kept");
    assert_eq!(get(&gw, &seller).await.1, saved);
    // Same user id, other tenant: untouched.
    assert_eq!(
        get(&gw, &gw.token(2, 10, Role::Seller)).await.1["time_zone"],
        "UTC"
    );
}

#[tokio::test]
async fn invalid_preferences_are_refused_naming_each_field() {
    let gw = TestGateway::start().await;
    let seller = gw.token(1, 10, Role::Seller);
    let (status, body) = put(
        &gw,
        &seller,
        r#"{"min_priority": "critical", "time_zone": "Mars/Olympus", "push": 1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(fields, vec!["min_priority", "push", "time_zone"]);
    assert!(body["errors"][0]["message"].as_str().unwrap().len() > 5);
    let (status, body) = put(&gw, &seller, "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));
    // Nothing was saved.
    assert_eq!(get(&gw, &seller).await.1["min_priority"], "medium");
    let response = reqwest::Client::new()
        .get(gw.url("/v1/preferences"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn muted_notifications_stay_in_the_inbox_but_are_not_pushed() {
    let gw = TestGateway::start().await;
    let seller = gw.token(1, 10, Role::Seller);
    let (mut ws, _) = gw.connect_ready(1, 10, Role::Seller).await;

    // Below the seller's default minimum (medium): muted.
    let low = Notification {
        kind: NotificationType::FollowUpReminder,
        priority: Priority::Low,
        ..to_user(1, 10)
    };
    assert!(gw.gateway.deliver(low.clone()).await.unwrap());
    let (pushed, count) = settle(&mut ws, QUIET).await;
    assert!(pushed.is_empty(), "{pushed:?}");
    assert_eq!(count, Some(1), "the count still moves");

    // Preferences apply at once to open connections: push off mutes everything.
    let (status, _) = put(&gw, &seller, r#"{"push": false}"#).await;
    assert_eq!(status, StatusCode::OK);
    let hot = to_user(1, 10);
    assert!(gw.gateway.deliver(hot.clone()).await.unwrap());
    let (pushed, count) = settle(&mut ws, QUIET).await;
    assert!(pushed.is_empty(), "{pushed:?}");
    assert_eq!(count, Some(2));

    // Back on, and low priorities allowed.
    let (status, _) = put(&gw, &seller, r#"{"push": true, "min_priority": "low"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let later = Notification {
        id: uuid::Uuid::new_v4(),
        ..low.clone()
    };
    assert!(gw.gateway.deliver(later.clone()).await.unwrap());
    let (pushed, _) = settle(&mut ws, QUIET).await;
    assert_eq!(ids(&pushed), vec![later.id]);

    // Muted ones are in the inbox, and a reconnecting client can replay them.
    let mut again = gw.connect_query(&format!("token={seller}&since=0")).await;
    assert_eq!(expect_handshake(&mut again, 1, 10).await, 3);
    let replayed = notifications_within(&mut again, QUIET).await;
    assert_eq!(ids(&replayed), vec![low.id, hot.id, later.id]);

    // A new connection picks up the saved preferences.
    let (status, _) = put(&gw, &seller, r#"{"enabled_types": []}"#).await;
    assert_eq!(status, StatusCode::OK);
    let (mut fresh, _) = gw.connect_ready(1, 10, Role::Seller).await;
    assert!(gw.gateway.deliver(to_user(1, 10)).await.unwrap());
    assert!(settle(&mut fresh, QUIET).await.0.is_empty());
}

#[tokio::test]
async fn metrics_reach_ceo_and_manager_at_most_once_a_second() {
    let gw = TestGateway::start().await;
    let (mut ceo, _) = gw.connect_ready(1, 1, Role::Ceo).await;
    let (mut manager, _) = gw.connect_ready(1, 2, Role::Manager).await;
    let (mut seller, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let (mut other_ceo, _) = gw.connect_ready(2, 1, Role::Ceo).await;

    let started = std::time::Instant::now();
    for n in 1..=5 {
        gw.gateway
            .publish_metrics(1, json!({"active_conversations": n, "type": "ignored"}));
    }
    for ws in [&mut ceo, &mut manager] {
        let first = expect_frame(ws, "metrics").await;
        assert_eq!(first, json!({"type": "metrics", "active_conversations": 1}));
        // The other four were coalesced into one, the latest, a second later.
        let second = expect_frame(ws, "metrics").await;
        assert_eq!(second["active_conversations"], 5);
        assert!(next_json(ws, QUIET).await.is_none());
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(next_json(&mut seller, QUIET).await.is_none());
    assert!(next_json(&mut other_ceo, QUIET).await.is_none());
}
