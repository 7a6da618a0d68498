//! The CEO dashboard in a real headless browser (Debian's chromium, driven through chromedriver
//! with fantoccini) against `vigia serve` on the real services: the CEO signs in, events are
//! posted, and without a reload the leaderboard and the KPIs fill in and the bell count rises;
//! marking read lowers it; a seller signing in sees only their own row and notifications.
//! Screenshots are saved under `target/test-artifacts/`. The test also measures the time from
//! posting an event to the page's update (the bell of an alert it causes).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use vigia_schemas::Role;

const SELLER_A: u64 = 1010;
const SELLER_B: u64 = 1011;
const CEO: u64 = 1001;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> (Driver, Client) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs (scripts/install-deps.sh installs chromium-driver)");
    let driver = Driver(driver);
    let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1366,1000"]
        }
    }))
    .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a chromium session through chromedriver: {e}"),
        }
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls `script` (a JS expression) until it is truthy, or panics with `what`.
async fn wait_js(c: &Client, script: &str, within: Duration, what: &str) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = js(c, &format!("return ({script});")).await;
        if v.as_bool() != Some(false) && !v.is_null() && v != json!(0) && v != json!("") {
            return v;
        }
        if Instant::now() > deadline {
            let page = js(c, "return document.body.innerText").await;
            panic!("timed out waiting for {what}; page:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn artifact(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(artifact(name), png).unwrap();
}

fn received(conv: &str, seller: u64, at: chrono::DateTime<chrono::Utc>) -> Value {
    event(
        "message.received",
        1,
        at,
        json!({"conversation_id": conv, "channel": "whatsapp", "seller_id": seller, "text": "hola"}),
    )
}

fn sent(conv: &str, seller: u64, at: chrono::DateTime<chrono::Utc>) -> Value {
    event(
        "message.sent",
        1,
        at,
        json!({"conversation_id": conv, "seller_id": seller}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, ClickHouse, chromium and chromedriver (scripts/services.sh up)"]
async fn the_ceo_sees_the_pipeline_live_and_a_seller_only_their_own() {
    let ns = Namespace::new("dashboard").env("VIGIA_UNANSWERED_AFTER", "5s");
    let vigia = ns.spawn("serve");
    let (_driver, c) = browser().await;

    // Sign in as the CEO: the token in the URL (also kept for reloads).
    c.goto(&vigia.url(&format!("/?token={}", token(CEO, 1, Role::Ceo))))
        .await
        .unwrap();
    wait_js(
        &c,
        "document.getElementById('live').classList.contains('on')",
        Duration::from_secs(20),
        "the live connection",
    )
    .await;
    js(&c, "window.__vigiaPageId = Math.random(); return 1").await;
    let page_id = js(&c, "return window.__vigiaPageId").await;
    assert_eq!(text(&c, "#unread").await, "0");
    assert_eq!(text(&c, "#k-conversations").await, "0", "an empty tenant");
    assert_eq!(
        js(
            &c,
            "return document.querySelectorAll('#leaderboard tbody tr').length"
        )
        .await,
        json!(0)
    );

    // Two sellers' traffic over the last minutes: answered waits for both, and for A a customer
    // left waiting past the (compressed) unanswered threshold. Event time crosses minute
    // boundaries, so the processors publish seller snapshots.
    let t0 = now() - chrono::Duration::minutes(3);
    let s = chrono::Duration::seconds;
    let events = json!([
        event(
            "user.upserted",
            1,
            t0,
            json!({"user_id": SELLER_A, "name": "Ana", "role": "seller"})
        ),
        event(
            "user.upserted",
            1,
            t0,
            json!({"user_id": SELLER_B, "name": "Beto", "role": "seller"})
        ),
        received("a1", SELLER_A, t0),
        sent("a1", SELLER_A, t0 + s(20)),
        received("b1", SELLER_B, t0 + s(30)),
        sent("b1", SELLER_B, t0 + s(90)),
        received("a2", SELLER_A, t0 + s(100)),
        received("b2", SELLER_B, t0 + s(130)),
        sent("b2", SELLER_B, t0 + s(131)),
        received("a3", SELLER_A, now() - s(1)),
    ]);
    post_ok(&vigia, 1, &events).await;

    wait_js(
        &c,
        "document.querySelectorAll('#leaderboard tbody tr').length >= 2",
        Duration::from_secs(30),
        "the leaderboard",
    )
    .await;
    // Snapshots are per minute of event time: how many conversations the latest one saw
    // depends on where the minute boundaries fell among the events.
    wait_js(
        &c,
        "Number(document.getElementById('k-conversations').textContent) >= 2",
        Duration::from_secs(10),
        "the KPIs",
    )
    .await;
    // Response times are the team's own (the snapshots carry them): never the "≤ worst seller"
    // fallback of old snapshots.
    for kpi in ["#k-rt-1h", "#k-rt-today"] {
        let shown = text(&c, kpi).await;
        assert!(
            shown.contains(" / ") && !shown.contains('≤'),
            "{kpi}: {shown}"
        );
    }
    wait_js(
        &c,
        "Number(document.getElementById('unread').textContent) >= 1",
        Duration::from_secs(30),
        "the bell",
    )
    .await;
    let rows = js(
        &c,
        "return [...document.querySelectorAll('#leaderboard tbody tr')].map(r => r.dataset.seller)",
    )
    .await;
    assert_eq!(
        rows,
        json!([SELLER_B.to_string(), SELLER_A.to_string()]),
        "B answered everything: first"
    );
    assert_eq!(
        js(&c, "return window.__vigiaPageId").await,
        page_id,
        "no reload"
    );

    // The time from posting an event to the page showing its effect: a customer message whose
    // deadline has passed raises an alert at once; the bell changes when it arrives.
    let before: u64 = text(&c, "#unread").await.parse().unwrap();
    js(&c, "window.__bellAt = null; new MutationObserver(() => { if (!window.__bellAt) window.__bellAt = Date.now(); }).observe(document.getElementById('unread'), {childList: true, characterData: true, subtree: true}); return 1").await;
    let posted_at = chrono::Utc::now().timestamp_millis();
    post_ok(&vigia, 1, &json!([received("a4", SELLER_A, now() - s(10))])).await;
    wait_js(
        &c,
        &format!("Number(document.getElementById('unread').textContent) > {before}"),
        Duration::from_secs(20),
        "the new alert",
    )
    .await;
    let bell_at = js(&c, "return window.__bellAt").await.as_i64().unwrap();
    println!(
        "event POSTed → bell updated in the browser: {} ms",
        bell_at - posted_at
    );
    std::fs::write(
        artifact("dashboard-latency.txt"),
        format!("{}\n", bell_at - posted_at),
    )
    .unwrap();

    wait_js(
        &c,
        "document.querySelector('#chart canvas') !== null",
        Duration::from_secs(10),
        "the chart",
    )
    .await;

    // The notification center: one read, then all read.
    c.find(Locator::Id("bell"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let unread: u64 = text(&c, "#unread").await.parse().unwrap();
    c.find(Locator::Css("#notifications li.unread"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &c,
        &format!(
            "Number(document.getElementById('unread').textContent) === {}",
            unread - 1
        ),
        Duration::from_secs(10),
        "one read",
    )
    .await;
    screenshot(&c, "dashboard-ceo.png").await;
    c.find(Locator::Id("read-all"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &c,
        "document.getElementById('unread').textContent === '0'",
        Duration::from_secs(10),
        "all read",
    )
    .await;

    // English by the switch.
    c.find(Locator::Id("lang"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(js(
        &c,
        "return document.body.innerText.includes('Seller leaderboard')"
    )
    .await
    .as_bool()
    .unwrap());
    screenshot(&c, "dashboard-ceo-en.png").await;
    c.find(Locator::Id("lang"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // A seller: only their own row and their own notifications.
    c.find(Locator::Id("signout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.goto(&vigia.url(&format!("/?token={}", token(SELLER_B, 1, Role::Seller))))
        .await
        .unwrap();
    wait_js(
        &c,
        "document.getElementById('live').classList.contains('on')",
        Duration::from_secs(20),
        "the seller's live connection",
    )
    .await;
    wait_js(
        &c,
        "document.querySelectorAll('#leaderboard tbody tr').length === 1",
        Duration::from_secs(10),
        "the seller's row",
    )
    .await;
    let rows = js(
        &c,
        "return [...document.querySelectorAll('#leaderboard tbody tr')].map(r => r.dataset.seller)",
    )
    .await;
    assert_eq!(rows, json!([SELLER_B.to_string()]));
    assert_eq!(text(&c, "#unread").await, "0", "A's alerts are not B's");
    assert_eq!(text(&c, "#k-unanswered").await, "0");
    screenshot(&c, "dashboard-seller.png").await;
    c.close().await.unwrap();
}
