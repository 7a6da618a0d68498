//! The live metrics API (`GET /v1/metrics/tenant`, `GET /v1/metrics/sellers`) and the `metrics`
//! push, fed with seller-metrics snapshots: who sees what, windows, validation.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use vigia_gateway::Role;

async fn get(gw: &TestGateway, token: &str, path: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

fn sellers(body: &Value) -> Vec<u64> {
    body["sellers"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|r| r["seller_id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn ceo_sees_the_tenant_a_seller_only_their_row_and_no_one_another_tenant() {
    let gw = TestGateway::start().await;
    assert!(gw
        .gateway
        .apply_seller_metrics(seller_metrics(1, 10, 1, 4.0)));
    assert!(gw
        .gateway
        .apply_seller_metrics(seller_metrics(1, 11, 1, 7.0)));
    assert!(gw
        .gateway
        .apply_seller_metrics(seller_metrics(2, 10, 1, 9.0)));
    assert!(
        !gw.gateway
            .apply_seller_metrics(seller_metrics(1, 11, 0, 1.0)),
        "older"
    );

    let ceo = gw.token(1, 1, Role::Ceo);
    let (status, kpis) = get(&gw, &ceo, "/v1/metrics/tenant").await;
    assert_eq!(status, StatusCode::OK, "{kpis}");
    assert_eq!(kpis["tenant_id"], 1);
    assert_eq!(kpis["sellers"], 2);
    assert_eq!(kpis["conversations_today"], 8);
    assert_eq!(kpis["unanswered_now"], 2);
    assert_eq!(kpis["response_today"]["count"], 6);
    assert_eq!(kpis["response_today"]["mean_seconds"], 60.0);
    assert_eq!(kpis["conversion_rate"], 0.5);

    let (status, board) = get(&gw, &ceo, "/v1/metrics/sellers?window=7d").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sellers(&board), vec![11, 10], "best first");
    assert_eq!(board["sellers"][0]["position"], 1);
    assert_eq!(
        board["sellers"][0]["response"]["count"], 9,
        "the 7 d window"
    );
    assert_eq!(board["window"], "7d");

    let manager = gw.token(1, 2, Role::Manager);
    assert_eq!(
        sellers(&get(&gw, &manager, "/v1/metrics/sellers").await.1),
        vec![11, 10]
    );

    let seller = gw.token(1, 10, Role::Seller);
    let (status, own) = get(&gw, &seller, "/v1/metrics/sellers?window=1h").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sellers(&own), vec![10], "only their own row");
    assert_eq!(own["sellers"][0]["position"], 2, "but their real position");
    assert_eq!(own["sellers"][0]["response"]["count"], 1);
    let (status, body) = get(&gw, &seller, "/v1/metrics/tenant").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let other_ceo = gw.token(2, 1, Role::Ceo);
    assert_eq!(
        sellers(&get(&gw, &other_ceo, "/v1/metrics/sellers").await.1),
        vec![10]
    );
    assert_eq!(
        get(&gw, &other_ceo, "/v1/metrics/tenant").await.1["sellers"],
        1
    );
    let stranger = gw.token(3, 1, Role::Ceo);
    assert_eq!(
        sellers(&get(&gw, &stranger, "/v1/metrics/sellers").await.1),
        Vec::<u64>::new()
    );
}

#[tokio::test]
async fn bad_window_and_missing_token_are_refused() {
    let gw = TestGateway::start().await;
    let (status, body) = get(
        &gw,
        &gw.token(1, 1, Role::Ceo),
        "/v1/metrics/sellers?window=2h",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "window");
    let r = reqwest::get(gw.url("/v1/metrics/tenant")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_new_snapshot_is_pushed_to_the_tenants_ceo_and_not_to_sellers_or_other_tenants() {
    let gw = TestGateway::start().await;
    let (mut ceo, _) = gw.connect_ready(1, 1, Role::Ceo).await;
    let (mut seller, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let (mut other, _) = gw.connect_ready(2, 1, Role::Ceo).await;
    gw.gateway
        .apply_seller_metrics(seller_metrics(1, 10, 1, 4.0));
    let frame = loop {
        let v = next_json(&mut ceo, Duration::from_secs(5))
            .await
            .expect("a metrics frame");
        if v["type"] == "metrics" {
            break v;
        }
    };
    assert_eq!(frame["tenant"]["sellers"], 1, "{frame}");
    assert_eq!(frame["sellers"][0]["seller_id"], 10);
    for ws in [&mut seller, &mut other] {
        while let Some(v) = next_json(ws, Duration::from_millis(300)).await {
            assert_ne!(v["type"], "metrics", "{v}");
        }
    }
}

/// The next `metrics` frame on `ws` for which `want` holds (others are skipped).
async fn metrics_frame(ws: &mut Ws, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline - tokio::time::Instant::now();
        let v = next_json(ws, left).await.expect("a metrics frame in time");
        if v["type"] == "metrics" && want(&v) {
            return v;
        }
    }
}

fn team(p90_1h: f64, p90_today: f64) -> vigia_schemas::TeamResponseTimes {
    let stats = |count, mean, p90| vigia_schemas::ResponseTimeStats {
        count,
        mean_seconds: Some(mean),
        p50_seconds: Some(mean),
        p90_seconds: Some(p90),
        max_seconds: Some(p90 * 2.0),
    };
    vigia_schemas::TeamResponseTimes {
        response_1h: stats(2, 25.0, p90_1h),
        response_today: stats(6, 50.0, p90_today),
        response_7d: stats(18, 80.0, 150.0),
    }
}

#[tokio::test]
async fn the_team_p90_is_the_teams_own_in_the_api_and_the_push() {
    let gw = TestGateway::start().await;
    let (mut ceo, _) = gw.connect_ready(1, 1, Role::Ceo).await;
    // Two sellers at one instant; each seller's today p90 is 120 s (2 × 60), the team's 95 s.
    for seller in [10, 11] {
        let mut m = seller_metrics(1, seller, 1, 4.0);
        m.team = Some(team(45.0, 95.0));
        gw.gateway.apply_seller_metrics(m);
    }
    let token = gw.token(1, 1, Role::Ceo);
    let (status, kpis) = get(&gw, &token, "/v1/metrics/tenant").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kpis["response_today"]["p90_seconds"], 95.0, "{kpis}");
    assert_eq!(kpis["response_today"]["source"], "team");
    assert_eq!(kpis["response_today"]["count"], 6);
    assert_eq!(kpis["response_1h"]["p90_seconds"], 45.0);
    assert!(kpis["response_today"]
        .get("worst_seller_p90_seconds")
        .is_none());
    let frame = metrics_frame(&mut ceo, |v| v["tenant"]["sellers"] == 2).await;
    assert_eq!(
        frame["tenant"]["response_today"]["p90_seconds"], 95.0,
        "{frame}"
    );
    // An old snapshot (no team figures) as the newest instant: the highest seller p90, said so.
    gw.gateway
        .apply_seller_metrics(seller_metrics(1, 12, 2, 4.0));
    let (_, kpis) = get(&gw, &token, "/v1/metrics/tenant").await;
    assert_eq!(kpis["response_today"]["source"], "sellers");
    assert_eq!(kpis["response_today"]["p90_seconds"], 120.0);
}

fn unanswered_alert(seller: u64, at: chrono::DateTime<chrono::Utc>) -> vigia_schemas::Notification {
    let mut n = to_user(1, seller);
    n.data = serde_json::json!({"conversation_id": format!("c-{}", n.id), "seller_id": seller});
    n.created_at = at;
    n
}

fn withdrawal_of(
    alert: &vigia_schemas::Notification,
    at: chrono::DateTime<chrono::Utc>,
) -> vigia_schemas::Notification {
    let mut w = alert.clone();
    w.id = uuid::Uuid::new_v4();
    w.withdraws = Some(alert.id);
    w.created_at = at;
    w.data["state"] = "resolved".into();
    w
}

/// "Unanswered now" between snapshots: alerts that fire on an idle stream move it at once (in
/// the REST figures, the leaderboard rows and the push), withdrawals move it back, a newer
/// snapshot takes over; and a gateway restarted on the same inbox shows the same figures.
#[tokio::test]
async fn unanswered_now_moves_with_the_alerts_and_survives_a_restart() {
    let db = TempDir::new();
    let url = db.sqlite_url();
    let now = chrono::Utc::now();
    let minutes = |m: i64| now - chrono::Duration::minutes(m);
    let mut snapshot = seller_metrics(1, 10, 1, 4.0);
    snapshot.snapshot_at = minutes(10); // 1 unanswered
    let token_of = |gw: &TestGateway| gw.token(1, 1, Role::Ceo);
    let unanswered = |kpis: &Value| kpis["unanswered_now"].as_u64().unwrap();

    let first_alert = unanswered_alert(10, minutes(8));
    {
        let url = url.clone();
        let gw = TestGateway::start_with(move |cfg| cfg.database_url = url).await;
        let (mut ceo, _) = gw.connect_ready(1, 1, Role::Ceo).await;
        gw.gateway.apply_seller_metrics(snapshot.clone());
        metrics_frame(&mut ceo, |v| v["tenant"]["unanswered_now"] == 1).await;

        // The stream is idle; two alerts fire by the clock, one is then answered.
        let second_alert = unanswered_alert(10, minutes(6));
        gw.gateway.deliver(first_alert.clone()).await.unwrap();
        gw.gateway.deliver(second_alert.clone()).await.unwrap();
        let frame = metrics_frame(&mut ceo, |v| v["tenant"]["unanswered_now"] == 3).await;
        assert_eq!(
            frame["sellers"][0]["conversations_unanswered"], 3,
            "{frame}"
        );
        gw.gateway
            .deliver(withdrawal_of(&second_alert, minutes(4)))
            .await
            .unwrap();
        metrics_frame(&mut ceo, |v| v["tenant"]["unanswered_now"] == 2).await;
        // Delivered again (a replay): counted once.
        gw.gateway.deliver(first_alert.clone()).await.unwrap();
        let (_, kpis) = get(&gw, &token_of(&gw), "/v1/metrics/tenant").await;
        assert_eq!(unanswered(&kpis), 2, "{kpis}");
        let (_, rows) = get(&gw, &token_of(&gw), "/v1/metrics/sellers").await;
        assert_eq!(rows["sellers"][0]["conversations_unanswered"], 2, "{rows}");
        gw.shutdown.cancel();
    }

    // A restart: the board re-reads the snapshots, the alerts come back from the inbox.
    let gw = TestGateway::start_with(move |cfg| cfg.database_url = url).await;
    gw.gateway.apply_seller_metrics(snapshot.clone());
    let (_, kpis) = get(&gw, &token_of(&gw), "/v1/metrics/tenant").await;
    assert_eq!(
        unanswered(&kpis),
        2,
        "the same as before the restart: {kpis}"
    );

    // A newer snapshot counts the overdue waits itself: no double counting.
    let mut newer = snapshot.clone();
    newer.id = uuid::Uuid::new_v4();
    newer.snapshot_at = minutes(2);
    newer.conversations_unanswered = 2;
    gw.gateway.apply_seller_metrics(newer);
    let (_, kpis) = get(&gw, &token_of(&gw), "/v1/metrics/tenant").await;
    assert_eq!(unanswered(&kpis), 2, "{kpis}");
    // The first alert's conversation is answered now: one less.
    gw.gateway
        .deliver(withdrawal_of(&first_alert, minutes(1)))
        .await
        .unwrap();
    let (_, kpis) = get(&gw, &token_of(&gw), "/v1/metrics/tenant").await;
    assert_eq!(unanswered(&kpis), 1, "{kpis}");
}
