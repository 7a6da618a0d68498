//! The plain WebSocket `/ws` end to end: real clients against the router on 127.0.0.1:0 with a
//! temporary SQLite inbox; notifications enter through `Gateway::deliver`, the consumer's path.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;
use vigia_gateway::{issue_token, Role};
use vigia_schemas::{Notification, NotificationType};

const QUIET: Duration = Duration::from_millis(400);

#[tokio::test]
async fn each_connection_gets_exactly_what_the_audience_rules_allow() {
    let gw = TestGateway::start().await;
    let (mut seller_a, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let (mut seller_b, _) = gw.connect_ready(1, 11, Role::Seller).await;
    let (mut ceo, _) = gw.connect_ready(1, 1, Role::Ceo).await;
    let (mut manager, _) = gw.connect_ready(1, 2, Role::Manager).await;
    let (mut secretary, _) = gw.connect_ready(1, 20, Role::Secretary).await;
    let (mut supervisor, _) = gw.connect_ready(1, 30, Role::Supervisor).await;
    // Same user id and role as seller A, other tenant.
    let (mut other_tenant_seller, _) = gw.connect_ready(2, 10, Role::Seller).await;
    let (mut other_tenant_ceo, _) = gw.connect_ready(2, 1, Role::Ceo).await;

    let for_a = to_user(1, 10);
    let for_b = to_user(1, 11);
    let for_secretaries = to_role(1, Role::Secretary);
    // Supervisors receive only session timeouts by default (their preferences).
    let for_supervisors = Notification {
        kind: NotificationType::SessionTimeout,
        ..to_role(1, Role::Supervisor)
    };
    let for_ceos = to_role(1, Role::Ceo);
    let other_tenant_for_10 = to_user(2, 10);
    for n in [
        &for_a,
        &for_b,
        &for_secretaries,
        &for_supervisors,
        &for_ceos,
        &other_tenant_for_10,
    ] {
        assert!(gw.gateway.deliver(n.clone()).await.unwrap());
    }

    let tenant_1_all = vec![
        for_a.id,
        for_b.id,
        for_secretaries.id,
        for_supervisors.id,
        for_ceos.id,
    ];
    assert_eq!(
        ids(&notifications_within(&mut seller_a, QUIET).await),
        vec![for_a.id]
    );
    assert_eq!(
        ids(&notifications_within(&mut seller_b, QUIET).await),
        vec![for_b.id]
    );
    assert_eq!(
        ids(&notifications_within(&mut ceo, QUIET).await),
        tenant_1_all
    );
    assert_eq!(
        ids(&notifications_within(&mut manager, QUIET).await),
        tenant_1_all
    );
    assert_eq!(
        ids(&notifications_within(&mut secretary, QUIET).await),
        vec![for_secretaries.id]
    );
    assert_eq!(
        ids(&notifications_within(&mut supervisor, QUIET).await),
        vec![for_supervisors.id]
    );
    assert_eq!(
        ids(&notifications_within(&mut other_tenant_seller, QUIET).await),
        vec![other_tenant_for_10.id]
    );
    assert_eq!(
        ids(&notifications_within(&mut other_tenant_ceo, QUIET).await),
        vec![other_tenant_for_10.id]
    );
    assert_eq!(gw.metric("vigia_gateway_connections"), 8.0);
    assert_eq!(
        gw.metric_where("vigia_gateway_connections", "transport=\"ws\""),
        8.0
    );
    // 1 (A) + 1 (B) + 5 (CEO) + 5 (manager) + 1 + 1 + 2 (tenant 2).
    assert_eq!(gw.metric("vigia_gateway_pushed_total"), 16.0);
}

#[tokio::test]
async fn a_notification_frame_carries_the_notification_and_its_sequence() {
    let gw = TestGateway::start().await;
    let (mut ws, count) = gw.connect_ready(1, 10, Role::Seller).await;
    assert_eq!(count, 0);
    let n = to_user(1, 10);
    gw.gateway.deliver(n.clone()).await.unwrap();
    let frame = expect_frame(&mut ws, "notification").await;
    assert_eq!(frame["notification"], serde_json::to_value(&n).unwrap());
    assert!(frame["sequence"].as_i64().unwrap() > 0);
    assert_eq!(frame["read"], false);
    assert_eq!(expect_frame(&mut ws, "unread_count").await["count"], 1);
}

#[tokio::test]
async fn a_duplicate_is_stored_and_pushed_once() {
    let gw = TestGateway::start().await;
    let (mut ws, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let n = to_user(1, 10);
    assert!(gw.gateway.deliver(n.clone()).await.unwrap());
    assert!(!gw.gateway.deliver(n.clone()).await.unwrap());
    assert_eq!(ids(&notifications_within(&mut ws, QUIET).await), vec![n.id]);
    assert_eq!(
        gw.metric("vigia_gateway_notifications_duplicate_total"),
        1.0
    );
}

#[tokio::test]
async fn unread_count_mark_read_and_errors() {
    let gw = TestGateway::start().await;
    let (mut phone, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let (mut laptop, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let mine: Vec<_> = (0..3).map(|_| to_user(1, 10)).collect();
    let someone_elses = to_user(1, 11);
    for n in mine.iter().chain([&someone_elses]) {
        gw.gateway.deliver(n.clone()).await.unwrap();
    }
    for ws in [&mut phone, &mut laptop] {
        let (frames, count) = settle(ws, QUIET).await;
        assert_eq!(ids(&frames), mine.iter().map(|n| n.id).collect::<Vec<_>>());
        assert_eq!(count, Some(3));
    }

    send_json(
        &mut phone,
        json!({"type": "mark_read", "notification_id": mine[1].id}),
    )
    .await;
    assert_eq!(expect_frame(&mut phone, "unread_count").await["count"], 2);
    // The user's other device hears of it too.
    assert_eq!(expect_frame(&mut laptop, "unread_count").await["count"], 2);

    // Marking again changes nothing.
    send_json(
        &mut phone,
        json!({"type": "mark_read", "notification_id": mine[1].id}),
    )
    .await;
    assert_eq!(expect_frame(&mut phone, "unread_count").await["count"], 2);

    for id in [someone_elses.id, Uuid::new_v4()] {
        send_json(
            &mut phone,
            json!({"type": "mark_read", "notification_id": id}),
        )
        .await;
        let error = expect_frame(&mut phone, "error").await;
        assert!(
            error["message"].as_str().unwrap().contains(&id.to_string()),
            "{error}"
        );
    }
    send_json(&mut phone, json!({"type": "get_unread_count"})).await;
    assert_eq!(expect_frame(&mut phone, "unread_count").await["count"], 2);

    send_json(&mut phone, json!({"type": "subscribe"})).await;
    let error = expect_frame(&mut phone, "error").await;
    assert!(error["message"].as_str().unwrap().contains("subscribe"));
    tungstenite_send(&mut phone, Message::Text("not json".into())).await;
    assert!(expect_frame(&mut phone, "error").await["message"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));
    tungstenite_send(&mut phone, Message::Binary(vec![1, 2, 3].into())).await;
    expect_frame(&mut phone, "error").await;
    // Still alive and counting.
    send_json(&mut phone, json!({"type": "get_unread_count"})).await;
    assert_eq!(expect_frame(&mut phone, "unread_count").await["count"], 2);

    // The other seller's count is untouched by all this.
    let (_, other_count) = gw.connect_ready(1, 11, Role::Seller).await;
    assert_eq!(other_count, 1);
}

async fn tungstenite_send(ws: &mut Ws, m: Message) {
    use futures::SinkExt;
    ws.send(m).await.unwrap();
}

#[tokio::test]
async fn a_withdrawal_is_pushed_and_resolves_the_withdrawn_one() {
    let gw = TestGateway::start().await;
    let (mut seller, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let (mut ceo, _) = gw.connect_ready(1, 1, Role::Ceo).await;
    let alert = to_user(1, 10);
    let other = to_user(1, 10);
    gw.gateway.deliver(alert.clone()).await.unwrap();
    gw.gateway.deliver(other.clone()).await.unwrap();
    for ws in [&mut seller, &mut ceo] {
        let (frames, count) = settle(ws, QUIET).await;
        assert_eq!(ids(&frames), vec![alert.id, other.id]);
        assert_eq!(count, Some(2));
    }

    let mut answered = to_user(1, 10);
    answered.withdraws = Some(alert.id);
    gw.gateway.deliver(answered.clone()).await.unwrap();
    for ws in [&mut seller, &mut ceo] {
        let frame = expect_frame(ws, "notification").await;
        assert_eq!(frame["notification"]["withdraws"], alert.id.to_string());
        assert_eq!(frame["read"], true, "a withdrawal never counts as unread");
        assert_eq!(expect_frame(ws, "unread_count").await["count"], 1);
    }

    // A withdrawal that arrives before what it withdraws: the late original is not pushed.
    let late = to_user(1, 10);
    let mut early_withdrawal = to_user(1, 10);
    early_withdrawal.withdraws = Some(late.id);
    gw.gateway.deliver(early_withdrawal.clone()).await.unwrap();
    assert!(gw.gateway.deliver(late.clone()).await.unwrap());
    assert_eq!(
        ids(&notifications_within(&mut seller, QUIET).await),
        vec![early_withdrawal.id]
    );
    let (_, count) = gw.connect_ready(1, 10, Role::Seller).await;
    assert_eq!(count, 1);
}

#[tokio::test]
async fn reconnecting_with_since_replays_what_was_missed_once_and_in_order() {
    let gw = TestGateway::start().await;
    let (mut ws, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let first = to_user(1, 10);
    gw.gateway.deliver(first.clone()).await.unwrap();
    let seen = expect_frame(&mut ws, "notification").await["sequence"]
        .as_i64()
        .unwrap();
    drop(ws);

    let missed: Vec<_> = (0..3).map(|_| to_user(1, 10)).collect();
    for n in &missed {
        gw.gateway.deliver(n.clone()).await.unwrap();
        gw.gateway.deliver(to_user(1, 11)).await.unwrap(); // not for us
        gw.gateway.deliver(n.clone()).await.unwrap(); // redelivered: recognised
    }

    let token = gw.token(1, 10, Role::Seller);
    let mut ws = gw
        .connect_query(&format!("token={token}&since={seen}"))
        .await;
    assert_eq!(expect_handshake(&mut ws, 1, 10).await, 4);
    let live = to_user(1, 10);
    let replayed = notifications_within(&mut ws, QUIET).await;
    assert_eq!(
        ids(&replayed),
        missed.iter().map(|n| n.id).collect::<Vec<_>>()
    );
    let sequences: Vec<i64> = replayed
        .iter()
        .map(|f| f["sequence"].as_i64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]) && sequences[0] > seen);
    gw.gateway.deliver(live.clone()).await.unwrap();
    assert_eq!(
        ids(&notifications_within(&mut ws, QUIET).await),
        vec![live.id]
    );
}

#[tokio::test]
async fn notifications_arriving_during_the_replay_are_neither_lost_nor_doubled() {
    let gw = TestGateway::start().await;
    let mut expected = vec![];
    for _ in 0..300 {
        let n = to_user(1, 10);
        expected.push(n.id);
        gw.gateway.deliver(n).await.unwrap();
    }
    let more: Vec<_> = (0..100).map(|_| to_user(1, 10)).collect();
    expected.extend(more.iter().map(|n| n.id));
    let token = gw.token(1, 10, Role::Seller);
    let deliverer = {
        let gateway = gw.gateway.clone();
        tokio::spawn(async move {
            for n in more {
                gateway.deliver(n).await.unwrap();
            }
        })
    };
    let mut ws = gw.connect_query(&format!("token={token}&since=0")).await;
    let mut got = vec![];
    let mut sequences = vec![];
    while got.len() < expected.len() {
        let v = next_json(&mut ws, Duration::from_secs(10))
            .await
            .expect("all notifications arrive");
        if v["type"] == "notification" {
            got.push(
                v["notification"]["id"]
                    .as_str()
                    .unwrap()
                    .parse::<Uuid>()
                    .unwrap(),
            );
            sequences.push(v["sequence"].as_i64().unwrap());
        }
    }
    deliverer.await.unwrap();
    assert!(notifications_within(&mut ws, QUIET).await.is_empty());
    assert_eq!(got, expected);
    assert!(sequences.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn a_slow_client_is_disconnected_while_others_keep_receiving() {
    let gw = TestGateway::start_with(|cfg| cfg.client_queue = 8).await;
    let (mut slow, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let (fast, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let (received_tx, mut received_rx) = tokio::sync::watch::channel(0usize);
    // Reads until the connection ends, and says why it ended.
    let mut reader = tokio::spawn(async move {
        let mut fast = fast;
        let mut count = 0;
        loop {
            let frame = match tokio::time::timeout(Duration::from_secs(60), fast.next()).await {
                Err(_) => return format!("silent for 60 s after {count} notifications"),
                Ok(None) => return format!("ended after {count} notifications"),
                Ok(Some(Err(e))) => return format!("failed after {count} notifications: {e}"),
                Ok(Some(Ok(Message::Close(f)))) => {
                    return format!("closed after {count} notifications: {f:?}")
                }
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
            };
            let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
            if v["type"] == "notification" {
                count += 1;
                received_tx.send_replace(count);
            }
        }
    });

    // Big notifications so the slow client's socket buffers fill up quickly; the fast one
    // reads each before the next is sent.
    let blob = "x".repeat(128 * 1024);
    let mut delivered = 0;
    while gw.metric("vigia_gateway_dropped_clients_total") < 1.0 {
        assert!(delivered < 1000, "the slow client was never disconnected");
        let mut n = to_user(1, 10);
        n.data = json!({ "blob": blob });
        gw.gateway.deliver(n).await.unwrap();
        delivered += 1;
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            received_rx.wait_for(|c| *c >= delivered),
        )
        .await
        .expect("the fast client keeps receiving")
        .is_ok();
        if !waited {
            panic!(
                "the fast client's connection {}",
                (&mut reader).await.unwrap()
            );
        }
    }
    println!("the slow client was dropped after {delivered} notifications of 128 KiB");
    // The fast one keeps receiving after the slow one is gone.
    for _ in 0..3 {
        gw.gateway.deliver(to_user(1, 10)).await.unwrap();
        delivered += 1;
    }
    let waited = tokio::time::timeout(
        Duration::from_secs(10),
        received_rx.wait_for(|c| *c >= delivered),
    )
    .await
    .expect("the fast client still receives")
    .is_ok();
    if !waited {
        panic!(
            "the fast client's connection {}",
            (&mut reader).await.unwrap()
        );
    }

    let (code, reason) = expect_close(&mut slow, Duration::from_secs(20)).await;
    assert_eq!((code, reason.as_str()), (4002, "too slow"));
    assert_eq!(gw.connection_count_eventually(1).await, 1);
    assert_eq!(gw.metric("vigia_gateway_dropped_clients_total"), 1.0);
    reader.abort();
}

trait Eventually {
    async fn connection_count_eventually(&self, expected: usize) -> usize;
}

impl Eventually for TestGateway {
    async fn connection_count_eventually(&self, expected: usize) -> usize {
        for _ in 0..100 {
            if self.gateway.connection_count() == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.gateway.connection_count()
    }
}

async fn refused(
    gw: &TestGateway,
    request: impl tungstenite::client::IntoClientRequest + Unpin,
) -> (u16, String) {
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8(response.body().clone().unwrap_or_default()).unwrap(),
        ),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("{} accepted a bad token", gw.addr),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_and_a_reason_before_the_upgrade() {
    let gw = TestGateway::start().await;
    let url = |query: &str| format!("ws://{}/ws{query}", gw.addr);

    let (status, body) = refused(&gw, url("")).await;
    assert_eq!(status, 401);
    assert!(body.contains("missing token"), "{body}");

    let forged = issue_token("not-the-secret", 10, 1, Role::Ceo, Duration::from_secs(60));
    let (status, body) = refused(&gw, url(&format!("?token={forged}"))).await;
    assert_eq!(status, 401);
    assert!(body.contains("invalid token signature"), "{body}");

    let (status, body) = refused(&gw, url("?token=garbage")).await;
    assert_eq!(status, 401);
    assert!(body.contains("malformed token"), "{body}");

    let mut request = tungstenite::client::IntoClientRequest::into_client_request(url("")).unwrap();
    request
        .headers_mut()
        .insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
    let (status, body) = refused(&gw, request).await;
    assert_eq!(status, 401);
    assert!(body.contains("Bearer"), "{body}");

    // The header is honoured too.
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(url("")).unwrap();
    let token = gw.token(1, 10, Role::Seller);
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    expect_handshake(&mut ws, 1, 10).await;
}

#[tokio::test]
async fn an_expired_token_is_refused_and_a_live_socket_is_closed_when_its_token_expires() {
    let gw = TestGateway::start().await;
    let expired = issue_token(SECRET, 10, 1, Role::Seller, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = refused(&gw, format!("ws://{}/ws?token={expired}", gw.addr)).await;
    assert_eq!(status, 401);
    assert!(body.contains("token expired"), "{body}");

    let short = issue_token(SECRET, 10, 1, Role::Seller, Duration::from_secs(2));
    let mut ws = gw.connect_query(&format!("token={short}")).await;
    let hello = expect_frame(&mut ws, "connection_established").await;
    assert!(hello["token_expires_at"].is_string());
    let (code, reason) = expect_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_and_one_that_answers_is_not() {
    let gw = TestGateway::start_with(|cfg| cfg.ping_interval = Duration::from_millis(200)).await;
    let (mut silent, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let (answering, _) = gw.connect_ready(1, 11, Role::Seller).await;
    let keeper = tokio::spawn(async move {
        let mut ws = answering;
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        while let Ok(Some(message)) = tokio::time::timeout_at(until, ws.next()).await {
            match message.unwrap() {
                Message::Text(text) if text.contains("\"ping\"") => {
                    pings += 1;
                    send_json(&mut ws, json!({"type": "pong"})).await;
                }
                Message::Close(frame) => panic!("the answering client was closed: {frame:?}"),
                _ => {}
            }
        }
        (ws, pings)
    });
    let started = std::time::Instant::now();
    let (code, reason) = expect_close(&mut silent, Duration::from_secs(3)).await;
    assert_eq!((code, reason.as_str()), (4003, "ping timeout"));
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (mut ws, pings) = keeper.await.unwrap();
    assert!(pings >= 5, "only {pings} pings in 1.5 s at 200 ms");
    send_json(&mut ws, json!({"type": "get_unread_count"})).await;
    expect_frame(&mut ws, "unread_count").await;
}

#[tokio::test]
async fn shutdown_closes_live_connections_with_1001() {
    let gw = TestGateway::start().await;
    let (mut ws, _) = gw.connect_ready(1, 10, Role::Seller).await;
    gw.shutdown.cancel();
    let (code, reason) = expect_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
}

#[tokio::test]
async fn connections_are_counted_and_unregistered() {
    let gw = TestGateway::start().await;
    let (a, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let (b, _) = gw.connect_ready(2, 10, Role::Ceo).await;
    assert_eq!(gw.gateway.connection_count(), 2);
    drop(a);
    drop(b);
    assert_eq!(gw.connection_count_eventually(0).await, 0);
    assert_eq!(gw.metric("vigia_gateway_connections"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ceo_reading_a_long_burst_keeps_up_while_unread_counts_are_due() {
    // A short queue and a burst lasting well past RECOUNT_EVERY (250 ms): recounts fall due
    // while frames keep arriving. The connection must keep draining its queue (it once spun on
    // the due recount instead, and was dropped as "too slow" with its client reading).
    let gw = TestGateway::start_with(|cfg| cfg.client_queue = 64).await;
    let (ceo, _) = gw.connect_ready(1, 1, Role::Ceo).await;
    let (received_tx, received_rx) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut ceo = ceo;
        let mut count = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), ceo.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if v["type"] == "notification" {
                        count += 1;
                        received_tx.send_replace(count);
                    }
                }
                Ok(Some(Ok(Message::Close(f)))) => return format!("closed: {f:?}"),
                Ok(Some(Ok(_))) => {}
                other => return format!("ended after {count}: {other:?}"),
            }
        }
    });
    let total = 1500;
    // Frames big enough that writing one takes a while, so others wait in the queue meanwhile.
    let blob = "x".repeat(32 * 1024);
    let started = std::time::Instant::now();
    let mut rx = received_rx;
    for i in 0..total {
        // At most LEAD frames ahead of what the client has read: a reader starved for a while
        // by a busy machine (CI) then never overflows the queue, while a connection that stops
        // draining it (the spin) stalls the burst and fails below.
        const LEAD: usize = 24;
        if i >= LEAD {
            let caught_up =
                tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| *c + LEAD >= i))
                    .await;
            if !caught_up.is_ok_and(|r| r.is_ok()) {
                break;
            }
        }
        let mut n = to_role(1, Role::Ceo);
        n.data = json!({ "blob": blob });
        gw.gateway.deliver(n).await.unwrap();
    }
    println!("{total} notifications delivered in {:?}", started.elapsed());
    let all = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|c| *c >= total))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        all,
        "the CEO got {} of {total}; connection: {}",
        *rx.borrow(),
        if reader.is_finished() {
            reader.await.unwrap()
        } else {
            "open".into()
        }
    );
    assert_eq!(gw.metric("vigia_gateway_dropped_clients_total"), 0.0);
}
