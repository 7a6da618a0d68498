//! The CEO dashboard in a real headless browser (Debian's chromium, driven through chromedriver
//! with fantoccini) against `vigia serve` on the real services: the CEO signs in, events are
//! posted, and without a reload the leaderboard and the KPIs fill in and the bell count rises;
//! marking read lowers it; a seller signing in sees only their own row and notifications.
//! Screenshots are saved under `target/test-artifacts/`. The test also measures the time from
//! posting an event to the page's update (the bell of an alert it causes). A second test checks
//! that no token is left in an address the page shows or links to (sign-in link, report links).
//! A third that people are named, not numbered (leaderboard, bell, header), by the names of
//! their tenant only, escaped, renamed live, and by id when no name was ever seen.

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

    // Sign in as the CEO: the token in the URL's fragment (also kept for reloads).
    c.goto(&vigia.url(&format!("/#token={}", token(CEO, 1, Role::Ceo))))
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
    c.goto(&vigia.url(&format!("/#token={}", token(SELLER_B, 1, Role::Seller))))
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

/// A daily report for the CEOs of tenant 1, as the processors would send it.
fn daily_report(day: &str) -> vigia_schemas::Notification {
    use vigia_schemas::{derive_id, Audience, NotificationType, Priority};
    vigia_schemas::Notification {
        id: derive_id("notification/daily_report", &["1", day]),
        tenant_id: 1,
        kind: NotificationType::DailyReport,
        priority: Priority::Low,
        audience: Audience::Role { role: Role::Ceo },
        title: format!("Informe diario del {day}"),
        message: "Ayer: 3 conversaciones".into(),
        data: json!({"day": day, "time_zone": "UTC", "alerts": {}, "alerts_withdrawn": 0,
                     "team": {"conversations": 3}, "top_performers": []}),
        actions: vec![],
        created_at: chrono::Utc::now(),
        withdraws: None,
    }
}

async fn produce_notification(ns: &Namespace, n: &vigia_schemas::Notification) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    let topic = vigia_schemas::Topics::with_prefix(&format!("{}.", ns.name)).notifications;
    let payload = serde_json::to_vec(n).unwrap();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(&n.tenant_id.to_string())
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Whether the browser's current address, or `what`, carries the token.
fn has_token(url: &str, token: &str) -> bool {
    let signature = token.rsplit('.').next().unwrap();
    url.contains("token") || url.contains(signature)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, chromium and chromedriver (scripts/services.sh up)"]
async fn no_token_is_left_in_an_address_the_dashboard_shows_or_links_to() {
    let ns = Namespace::new("dashlinks");
    let vigia = ns.spawn("gateway");
    produce_notification(&ns, &daily_report("2026-03-02")).await;
    let (_driver, c) = browser().await;
    let ceo = token(CEO, 1, Role::Ceo);

    // The sign-in link carries the token in the fragment, which no server sees; once read, it
    // is gone from the address bar (and so from bookmarks, history and screenshots).
    c.goto(&vigia.url(&format!("/#token={ceo}"))).await.unwrap();
    wait_js(
        &c,
        "document.getElementById('live').classList.contains('on')",
        Duration::from_secs(20),
        "the live connection",
    )
    .await;
    let address = c.current_url().await.unwrap().to_string();
    assert!(!has_token(&address, &ceo), "{address}");

    // The report link of the daily report: no token in it.
    let href = wait_js(
        &c,
        "document.querySelector('#notifications a') && document.querySelector('#notifications a').href",
        Duration::from_secs(20),
        "the daily report's link",
    )
    .await;
    let href = href.as_str().unwrap().to_string();
    assert!(href.contains("/reports/2026-03-02"), "{href}");
    assert!(
        !has_token(&href, &ceo),
        "the report link carries the token: {href}"
    );
    // It opens (in a new tab) with the dashboard's sign-in.
    let dashboard = c.window().await.unwrap();
    c.find(Locator::Id("bell"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("#notifications a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let report_tab = loop {
        let windows = c.windows().await.unwrap();
        if let Some(w) = windows.into_iter().find(|w| *w != dashboard) {
            break w;
        }
        assert!(Instant::now() < deadline, "the report did not open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.switch_to_window(report_tab).await.unwrap();
    wait_js(
        &c,
        "document.querySelector('h1') && document.querySelector('h1').textContent.includes('Informe diario del 2026-03-02')",
        Duration::from_secs(10),
        "the report page",
    )
    .await;
    let address = c.current_url().await.unwrap().to_string();
    assert!(!has_token(&address, &ceo), "{address}");
    screenshot(&c, "report-page.png").await;
    c.close_window().await.unwrap();
    c.switch_to_window(dashboard).await.unwrap();

    // A report link handed to someone not signed in: the token after `#`, read and removed.
    js(&c, "localStorage.clear(); return 1").await;
    c.goto(&vigia.url(&format!("/reports/2026-03-02?lang=en#token={ceo}")))
        .await
        .unwrap();
    wait_js(
        &c,
        "document.querySelector('h1') && document.querySelector('h1').textContent.includes('Informe diario')",
        Duration::from_secs(10),
        "the report page from a #token= link",
    )
    .await;
    assert!(
        js(&c, "return document.body.innerText.includes('Team totals')")
            .await
            .as_bool()
            .unwrap()
    );
    let address = c.current_url().await.unwrap().to_string();
    assert!(!has_token(&address, &ceo), "{address}");

    // The old form, a token in the query, is not used to sign in, and not left in the address.
    js(&c, "localStorage.clear(); return 1").await;
    c.goto(&vigia.url(&format!("/?token={ceo}"))).await.unwrap();
    wait_js(
        &c,
        "!document.getElementById('signin').hidden",
        Duration::from_secs(10),
        "the sign-in form",
    )
    .await;
    let address = c.current_url().await.unwrap().to_string();
    assert!(!has_token(&address, &ceo), "{address}");
    assert_eq!(
        js(&c, "return localStorage.getItem('vigia.token')").await,
        Value::Null
    );
    c.close().await.unwrap();
}

/// The name of a seller in `#leaderboard` (its second cell), or null without a row.
fn leaderboard_name(seller: u64) -> String {
    format!(
        "(() => {{ const tr = document.querySelector('#leaderboard tbody tr[data-seller=\"{seller}\"]'); \
         return tr ? tr.children[1].textContent : null; }})()"
    )
}

/// The texts of the bell's "about whom" lines.
const BELL_WHO: &str =
    "[...document.querySelectorAll('#notifications .who')].map(e => e.textContent)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, ClickHouse, chromium and chromedriver (scripts/services.sh up)"]
async fn people_are_named_escaped_renamed_and_by_id_without_a_name() {
    // Markup in a name must stay text: if it became an element, its handler would set the flag.
    const HOSTILE: &str = "<img src=x onerror=\"window.__pwned=1\">Ana";
    let ns = Namespace::new("dashnames").env("VIGIA_UNANSWERED_AFTER", "5s");
    let vigia = ns.spawn("serve");
    let (_driver, c) = browser().await;
    let t0 = now() - chrono::Duration::minutes(3);
    let s = chrono::Duration::seconds;
    // Another tenant names its own user 1011; tenant 1 never names B: B stays "#1011" there.
    post_ok(
        &vigia,
        2,
        &json!([event(
            "user.upserted",
            2,
            t0,
            json!({"user_id": SELLER_B, "name": "Intrusa", "role": "seller"})
        )]),
    )
    .await;

    c.goto(&vigia.url(&format!("/#token={}", token(CEO, 1, Role::Ceo))))
        .await
        .unwrap();
    wait_js(
        &c,
        "document.getElementById('live').classList.contains('on')",
        Duration::from_secs(20),
        "the live connection",
    )
    .await;
    assert!(
        text(&c, "#who").await.contains(&format!("ceo #{CEO}")),
        "no name yet: the id"
    );
    js(&c, "window.__vigiaPageId = Math.random(); return 1").await;
    let page_id = js(&c, "return window.__vigiaPageId").await;

    let events = json!([
        event(
            "user.upserted",
            1,
            t0,
            json!({"user_id": CEO, "name": "Carla Directora", "role": "ceo"})
        ),
        event(
            "user.upserted",
            1,
            t0,
            json!({"user_id": SELLER_A, "name": HOSTILE, "role": "seller"})
        ),
        received("a1", SELLER_A, t0),
        sent("a1", SELLER_A, t0 + s(20)),
        received("b1", SELLER_B, t0 + s(30)),
        sent("b1", SELLER_B, t0 + s(90)),
        // Left waiting past the (compressed) threshold: an alert about each seller.
        received("a2", SELLER_A, t0 + s(100)),
        received("b2", SELLER_B, t0 + s(130)),
        received("a3", SELLER_A, now() - s(1)),
    ]);
    post_ok(&vigia, 1, &events).await;

    // The leaderboard: A by name (the markup as text), B by id.
    wait_js(
        &c,
        &format!("{} === {}", leaderboard_name(SELLER_A), json!(HOSTILE)),
        Duration::from_secs(40),
        "A's name on the leaderboard",
    )
    .await;
    assert_eq!(
        js(&c, &format!("return {}", leaderboard_name(SELLER_B))).await,
        json!(format!("#{SELLER_B}")),
        "no name in tenant 1 for B: the id, never tenant 2's name"
    );
    // The header: the CEO's own name.
    wait_js(
        &c,
        "document.getElementById('who').textContent.includes('Carla Directora')",
        Duration::from_secs(20),
        "the CEO's name in the header",
    )
    .await;
    // The bell: each alert says whom it is about.
    c.find(Locator::Id("bell"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &c,
        &format!(
            "{BELL_WHO}.includes({}) && {BELL_WHO}.includes({})",
            json!(format!("Vendedor: {HOSTILE}")),
            json!(format!("Vendedor: #{SELLER_B}"))
        ),
        Duration::from_secs(30),
        "the bell naming A and B",
    )
    .await;
    // Nothing of the name became markup anywhere on the page.
    assert_eq!(
        js(&c, "return document.querySelectorAll('img').length").await,
        json!(0)
    );
    assert_eq!(
        js(&c, "return window.__pwned === undefined").await,
        json!(true)
    );
    assert!(!js(&c, "return document.body.innerText")
        .await
        .as_str()
        .unwrap()
        .contains("Intrusa"));
    screenshot(&c, "dashboard-names.png").await;

    // A rename, later in event time: shown without a reload, on the leaderboard and the bell.
    post_ok(
        &vigia,
        1,
        &json!([event(
            "user.upserted",
            1,
            now(),
            json!({"user_id": SELLER_A, "name": "Ana María", "role": "seller"})
        )]),
    )
    .await;
    wait_js(
        &c,
        &format!(
            "{} === 'Ana María' && {BELL_WHO}.includes('Vendedor: Ana María')",
            leaderboard_name(SELLER_A)
        ),
        Duration::from_secs(40),
        "the new name",
    )
    .await;
    assert_eq!(
        js(&c, "return window.__vigiaPageId").await,
        page_id,
        "no reload"
    );
    assert_eq!(
        js(&c, "return window.__pwned === undefined").await,
        json!(true)
    );

    // A seller sees their own name in the header.
    c.find(Locator::Id("signout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.goto(&vigia.url(&format!("/#token={}", token(SELLER_A, 1, Role::Seller))))
        .await
        .unwrap();
    wait_js(
        &c,
        "document.getElementById('who').textContent.includes('Ana María')",
        Duration::from_secs(20),
        "the seller's own name",
    )
    .await;
    c.close().await.unwrap();
}
