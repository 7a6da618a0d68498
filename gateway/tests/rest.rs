//! The REST inbox `/v1/notifications*` end to end, over a temporary SQLite inbox.

mod common;

use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;
use vigia_gateway::{issue_token, Role};

struct Client {
    http: reqwest::Client,
    token: String,
}

impl Client {
    fn new(gw: &TestGateway, tenant_id: u64, user_id: u64, role: Role) -> Client {
        Client {
            http: reqwest::Client::new(),
            token: gw.token(tenant_id, user_id, role),
        }
    }

    async fn call(&self, method: Method, url: String) -> (StatusCode, Value) {
        let response = self
            .http
            .request(method, url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn page_ids(body: &Value) -> Vec<Uuid> {
    body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            item["notification"]["id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_with_the_reason() {
    let gw = TestGateway::start().await;
    let http = reqwest::Client::new();
    let response = http
        .get(gw.url("/v1/notifications/count"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("missing token"));

    let forged = issue_token("wrong", 1, 1, Role::Ceo, Duration::from_secs(60));
    for (method, path) in [
        (Method::GET, "/v1/notifications"),
        (Method::GET, "/v1/notifications/count"),
        (Method::POST, "/v1/notifications/read-all"),
        (Method::DELETE, "/v1/notifications"),
    ] {
        let response = http
            .request(method, gw.url(path))
            .bearer_auth(&forged)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid token signature");
    }
    // `?token=` is for the WebSocket only.
    let token = gw.token(1, 1, Role::Ceo);
    let response = http
        .get(gw.url(&format!("/v1/notifications/count?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn list_pages_newest_first_and_follows_the_audience_rules() {
    let gw = TestGateway::start().await;
    let mine: Vec<_> = (0..5).map(|_| to_user(1, 10)).collect();
    let others = [to_user(1, 11), to_role(1, Role::Secretary), to_user(2, 10)];
    for n in mine.iter().chain(others.iter()) {
        gw.gateway.deliver(n.clone()).await.unwrap();
    }
    let seller = Client::new(&gw, 1, 10, Role::Seller);
    let newest_first: Vec<Uuid> = mine.iter().rev().map(|n| n.id).collect();

    let (status, page1) = seller
        .call(Method::GET, gw.url("/v1/notifications?limit=2"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page_ids(&page1), newest_first[..2]);
    assert_eq!(page1["notifications"][0]["read"], false);
    let before = page1["next_before"].as_i64().unwrap();
    let (_, page2) = seller
        .call(
            Method::GET,
            gw.url(&format!("/v1/notifications?limit=2&before={before}")),
        )
        .await;
    assert_eq!(page_ids(&page2), newest_first[2..4]);
    let before = page2["next_before"].as_i64().unwrap();
    let (_, page3) = seller
        .call(
            Method::GET,
            gw.url(&format!("/v1/notifications?limit=2&before={before}")),
        )
        .await;
    assert_eq!(page_ids(&page3), newest_first[4..]);
    assert!(page3["next_before"].is_null());

    let (_, all) = seller.call(Method::GET, gw.url("/v1/notifications")).await;
    assert_eq!(page_ids(&all), newest_first);

    let ceo = Client::new(&gw, 1, 1, Role::Ceo);
    let (_, ceo_page) = ceo.call(Method::GET, gw.url("/v1/notifications")).await;
    let mut expected: Vec<Uuid> = mine.iter().chain(&others[..2]).map(|n| n.id).collect();
    expected.reverse();
    assert_eq!(page_ids(&ceo_page), expected);

    let secretary = Client::new(&gw, 1, 20, Role::Secretary);
    let (_, secretary_page) = secretary
        .call(Method::GET, gw.url("/v1/notifications"))
        .await;
    assert_eq!(page_ids(&secretary_page), vec![others[1].id]);

    let (status, _) = seller
        .call(Method::GET, gw.url("/v1/notifications?limit=0"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = seller
        .call(Method::GET, gw.url("/v1/notifications?limit=1000"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn count_read_read_all_and_clear() {
    let gw = TestGateway::start().await;
    let mine: Vec<_> = (0..3).map(|_| to_user(1, 10)).collect();
    let someone_elses = to_user(1, 11);
    for n in mine.iter().chain([&someone_elses]) {
        gw.gateway.deliver(n.clone()).await.unwrap();
    }
    let seller = Client::new(&gw, 1, 10, Role::Seller);
    let count_url = gw.url("/v1/notifications/count");
    assert_eq!(
        seller.call(Method::GET, count_url.clone()).await.1["count"],
        3
    );

    // The seller's open WebSocket hears about REST changes.
    let (mut ws, initial) = gw.connect_ready(1, 10, Role::Seller).await;
    assert_eq!(initial, 3);

    let read = |id: Uuid| gw.url(&format!("/v1/notifications/{id}/read"));
    let (status, body) = seller.call(Method::POST, read(mine[0].id)).await;
    assert_eq!((status, body["count"].as_u64()), (StatusCode::OK, Some(2)));
    assert_eq!(expect_frame(&mut ws, "unread_count").await["count"], 2);
    let (_, list) = seller.call(Method::GET, gw.url("/v1/notifications")).await;
    let read_flags: Vec<bool> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["read"].as_bool().unwrap())
        .collect();
    assert_eq!(read_flags, vec![false, false, true]);

    for id in [someone_elses.id, Uuid::new_v4()] {
        let (status, body) = seller.call(Method::POST, read(id)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().contains(&id.to_string()));
    }
    let (status, _) = seller
        .call(Method::POST, gw.url("/v1/notifications/not-a-uuid/read"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = seller
        .call(Method::POST, gw.url("/v1/notifications/read-all"))
        .await;
    assert_eq!((status, body["count"].as_u64()), (StatusCode::OK, Some(0)));
    assert_eq!(expect_frame(&mut ws, "unread_count").await["count"], 0);
    // The other seller's state is their own.
    let other = Client::new(&gw, 1, 11, Role::Seller);
    assert_eq!(
        other.call(Method::GET, count_url.clone()).await.1["count"],
        1
    );

    let newer = to_user(1, 10);
    gw.gateway.deliver(newer.clone()).await.unwrap();
    assert_eq!(
        seller.call(Method::GET, count_url.clone()).await.1["count"],
        1
    );

    let (status, body) = seller
        .call(Method::DELETE, gw.url("/v1/notifications"))
        .await;
    assert_eq!((status, body["count"].as_u64()), (StatusCode::OK, Some(0)));
    let (_, list) = seller.call(Method::GET, gw.url("/v1/notifications")).await;
    assert!(page_ids(&list).is_empty());
    // Cleared for this seller only; and what comes next shows again.
    let ceo = Client::new(&gw, 1, 1, Role::Ceo);
    let (_, ceo_list) = ceo.call(Method::GET, gw.url("/v1/notifications")).await;
    assert_eq!(page_ids(&ceo_list).len(), 5);
    let after_clear = to_user(1, 10);
    gw.gateway.deliver(after_clear.clone()).await.unwrap();
    let (_, list) = seller.call(Method::GET, gw.url("/v1/notifications")).await;
    assert_eq!(page_ids(&list), vec![after_clear.id]);
    assert_eq!(seller.call(Method::GET, count_url).await.1["count"], 1);
}
