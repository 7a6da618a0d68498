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
