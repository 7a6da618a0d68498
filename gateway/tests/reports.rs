//! The daily report pages: `GET /v1/reports/{date}` (JSON) and `GET /reports/{date}` (HTML),
//! read from the inbox by the report's deterministic id; the dashboard's assets.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use vigia_gateway::Role;
use vigia_schemas::{derive_id, Audience, NotificationType, Priority};

fn report(tenant: u64, day: &str) -> vigia_schemas::Notification {
    vigia_schemas::Notification {
        id: derive_id("notification/daily_report", &[&tenant.to_string(), day]),
        tenant_id: tenant,
        kind: NotificationType::DailyReport,
        priority: Priority::Low,
        audience: Audience::Role { role: Role::Ceo },
        title: format!("Informe diario del {day}"),
        message: "Ayer: 3 conversaciones".into(),
        data: json!({"day": day, "time_zone": "UTC", "alerts": {"hot_lead": 2}, "alerts_withdrawn": 0,
                     "team": {"conversations": 3, "response": {"mean_seconds": 120.0}},
                     "top_performers": [{"seller_id": 7, "name": "Ana", "productivity_score": 8.0,
                                         "waits_answered": 2, "response": {"mean_seconds": 120.0}}]}),
        actions: vec![],
        created_at: chrono::Utc::now(),
        withdraws: None,
    }
}

async fn get(gw: &TestGateway, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut r = reqwest::Client::new().get(gw.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_report_is_served_as_json_and_html_to_its_tenants_ceo_only() {
    let gw = TestGateway::start().await;
    gw.gateway.deliver(report(1, "2026-03-02")).await.unwrap();
    gw.gateway.deliver(report(2, "2026-03-02")).await.unwrap();
    let ceo = gw.token(1, 1, Role::Ceo);

    let (status, body) = get(&gw, "/v1/reports/2026-03-02", Some(&ceo)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["day"], "2026-03-02");
    assert_eq!(v["report"]["team"]["conversations"], 3);
    assert_eq!(v["title"], "Informe diario del 2026-03-02");

    let (status, html) = get(&gw, "/reports/2026-03-02", Some(&ceo)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<h1>Informe diario del 2026-03-02</h1>"),
        "{html}"
    );
    assert!(html.contains("<td>Ana</td>"));
    assert!(html.contains("<tr><th>hot_lead</th><td>2</td></tr>"));
    let (_, english) = get(&gw, "/reports/2026-03-02?lang=en", Some(&ceo)).await;
    assert!(english.contains("Top performers"));

    // A manager sees it; a seller, another tenant's CEO and a day without report do not.
    let manager = gw.token(1, 2, Role::Manager);
    assert_eq!(
        get(&gw, "/v1/reports/2026-03-02", Some(&manager)).await.0,
        StatusCode::OK
    );
    let seller = gw.token(1, 10, Role::Seller);
    assert_eq!(
        get(&gw, "/v1/reports/2026-03-02", Some(&seller)).await.0,
        StatusCode::NOT_FOUND
    );
    let stranger = gw.token(3, 1, Role::Ceo);
    assert_eq!(
        get(&gw, "/v1/reports/2026-03-02", Some(&stranger)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&gw, "/v1/reports/2026-03-01", Some(&ceo)).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = get(&gw, "/v1/reports/yesterday", Some(&ceo)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("\"field\":\"date\""), "{body}");
    assert_eq!(
        get(&gw, "/reports/2026-03-02", Some("garbage")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn report_pages_take_no_token_in_the_url() {
    // A URL gets shared, bookmarked, logged by proxies and sent as Referer: a report link
    // carries no token. Without `Authorization`, the page is a loader that takes the token from
    // the URL's fragment (`#token=`, never sent to any server) or the dashboard's sign-in, and
    // fetches the report with the header.
    let gw = TestGateway::start().await;
    gw.gateway.deliver(report(1, "2026-03-02")).await.unwrap();
    let ceo = gw.token(1, 1, Role::Ceo);

    let r = reqwest::get(gw.url(&format!("/reports/2026-03-02?token={ceo}")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = r.text().await.unwrap();
    assert!(body.contains("#token="), "says what to do instead: {body}");
    assert!(!body.contains("Informe diario"), "{body}");

    let r = reqwest::get(gw.url("/reports/2026-03-02?lang=en"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let loader = r.text().await.unwrap();
    assert!(
        loader.contains("<script src=\"/assets/report.js\"></script>"),
        "{loader}"
    );
    assert!(
        !loader.contains("Informe diario"),
        "no data without a token"
    );
    let (status, script) = get(&gw, "/assets/report.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(script.contains("location.hash"), "{script}");

    // With the header, the report itself, not to be cached or leak its URL either.
    let r = reqwest::Client::new()
        .get(gw.url("/reports/2026-03-02"))
        .bearer_auth(&ceo)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.text().await.unwrap().contains("Informe diario"));
}

#[tokio::test]
async fn the_dashboard_and_its_assets_are_served_from_the_binary() {
    let gw = TestGateway::start().await;
    let (status, html) = get(&gw, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<script src=\"/assets/app.js\"></script>"));
    for asset in ["app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"] {
        let (status, body) = get(&gw, &format!("/assets/{asset}"), None).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        assert!(body.len() > 500, "{asset}");
    }
    assert_eq!(
        get(&gw, "/assets/nope.js", None).await.0,
        StatusCode::NOT_FOUND
    );
}
