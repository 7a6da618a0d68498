//! What one client may cost the gateway: live connections per user (`/ws` and Socket.IO
//! together), Socket.IO sessions that never authenticate (few, and short-lived), and frames that
//! each cost an inbox query (`get_unread_count`, `subscribe_notifications {since}`), which are
//! coalesced per connection. Real sockets on loopback; Socket.IO spoken by hand over Engine.IO
//! polling (`common::eio`).

mod common;

use std::time::Duration;

use common::eio::{events, Eio, Poll};
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite;
use vigia_gateway::Role;

/// `connect_async`'s refusal: the HTTP status and body.
async fn ws_refused(url: String) -> Option<(u16, String)> {
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => Some((
            response.status().as_u16(),
            String::from_utf8(response.body().clone().unwrap_or_default()).unwrap(),
        )),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => None,
    }
}

/// A Socket.IO session of `token`, connected to `/`: its `notification_connected` payload, or
/// the `connect_error` message.
async fn socketio_connect(gw: &TestGateway, token: &str) -> (Eio, Result<(), String>) {
    let eio = Eio::handshake(gw.addr, "").await.expect("handshake");
    assert_eq!(eio.connect_namespace(token).await, StatusCode::OK);
    let (packets, _) = eio
        .collect_until(Duration::from_secs(5), |p| {
            p.iter()
                .any(|p| p.starts_with("44") || p.contains("notification_connected"))
        })
        .await;
    let outcome = match packets.iter().find(|p| p.starts_with("44")) {
        Some(error) => Err(error.clone()),
        None if packets.iter().any(|p| p.contains("notification_connected")) => Ok(()),
        None => panic!("neither connected nor refused: {packets:?}"),
    };
    (eio, outcome)
}

#[tokio::test]
async fn connections_per_user_are_capped_across_websocket_and_socket_io() {
    let gw = TestGateway::start_with(|cfg| cfg.max_connections_per_user = 3).await;
    let token = gw.token(1, 10, Role::Seller);
    let (first, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let (_second, _) = gw.connect_ready(1, 10, Role::Seller).await;
    let (_third, outcome) = socketio_connect(&gw, &token).await;
    assert_eq!(outcome, Ok(()), "the third connection is within the cap");

    // A fourth, on either transport, is refused and told why.
    let (status, body) = ws_refused(format!("ws://{}/ws?token={token}", gw.addr))
        .await
        .expect("a fourth /ws connection of one user was accepted");
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too many connections"), "{body}");
    let (_, outcome) = socketio_connect(&gw, &token).await;
    let error = outcome.expect_err("a fourth Socket.IO connection of one user was accepted");
    assert!(error.contains("too many connections"), "{error}");

    // Another user of the tenant is not affected.
    let (_other, _) = gw.connect_ready(1, 11, Role::Seller).await;

    // One closes: there is room again.
    drop(first);
    let mut reconnected = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if ws_refused(format!("ws://{}/ws?token={token}", gw.addr))
            .await
            .is_none()
        {
            reconnected = true;
            break;
        }
    }
    assert!(
        reconnected,
        "no room after one of the user's connections closed"
    );
}

#[tokio::test]
async fn socket_io_sessions_that_never_authenticate_expire_within_ten_seconds() {
    let gw = TestGateway::start().await;
    let idle = Eio::handshake(gw.addr, "").await.expect("handshake");
    let started = tokio::time::Instant::now();
    // It never connects to a namespace; it keeps polling (and answering pings) like a client.
    let (packets, end) = idle.collect_until(Duration::from_secs(13), |_| false).await;
    let gone = match end {
        Some(Poll::Refused(status, _)) => status == StatusCode::BAD_REQUEST,
        Some(Poll::Packets(p)) => p == ["1"],
        _ => false,
    };
    assert!(
        gone,
        "an unauthenticated session is still open after {:?} (got {packets:?})",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "closed only after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unauthenticated_socket_io_sessions_are_bounded_in_number() {
    let gw = TestGateway::start_with(|cfg| cfg.max_unauthenticated_sessions = 3).await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(Eio::handshake(gw.addr, "").await.expect("within the bound"));
    }
    let (status, body) = match Eio::handshake(gw.addr, "").await {
        Ok(_) => panic!("a fourth unauthenticated session was opened past a bound of 3"),
        Err(refused) => refused,
    };
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("authenticate"), "{body}");
    // The WebSocket transport's handshake is bounded too.
    let ws = format!("ws://{}/socket.io/?EIO=4&transport=websocket", gw.addr);
    assert_eq!(
        ws_refused(ws).await.map(|(status, _)| status),
        Some(503),
        "a WebSocket handshake past the bound"
    );

    // One authenticates: its place is free.
    let token = gw.token(1, 10, Role::Seller);
    assert_eq!(waiting[0].connect_namespace(&token).await, StatusCode::OK);
    let (packets, _) = waiting[0]
        .collect_until(Duration::from_secs(5), |p| {
            p.iter().any(|p| p.contains("notification_connected"))
        })
        .await;
    assert!(
        packets.iter().any(|p| p.contains("notification_connected")),
        "{packets:?}"
    );
    let fourth = Eio::handshake(gw.addr, "")
        .await
        .expect("room once one session authenticated");

    // A failed authentication does not free a place.
    assert_eq!(
        waiting[1].connect_namespace("not-a-token").await,
        StatusCode::OK
    );
    let (packets, _) = waiting[1]
        .collect_until(Duration::from_secs(5), |p| {
            p.iter().any(|p| p.starts_with("44"))
        })
        .await;
    assert!(packets.iter().any(|p| p.starts_with("44")), "{packets:?}");
    assert!(Eio::handshake(gw.addr, "").await.is_err());

    // The ones that never authenticate expire (10 s), and give their places back.
    let started = tokio::time::Instant::now();
    let mut admitted = None;
    while started.elapsed() < Duration::from_secs(14) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(session) = Eio::handshake(gw.addr, "").await {
            admitted = Some(session);
            break;
        }
    }
    assert!(
        admitted.is_some(),
        "no place given back by sessions that expired"
    );
    drop(fourth);
}

#[tokio::test]
async fn a_flood_of_get_unread_count_frames_is_answered_coalesced() {
    let gw = TestGateway::start().await;
    for _ in 0..3 {
        gw.gateway.deliver(to_user(1, 10)).await.unwrap();
    }
    let (mut ws, count) = gw.connect_ready(1, 10, Role::Seller).await;
    assert_eq!(count, 3);
    let started = tokio::time::Instant::now();
    for _ in 0..500 {
        send_json(&mut ws, json!({"type": "get_unread_count"})).await;
    }
    let mut answers = 0;
    let mut last = None;
    while let Some(v) = next_json(&mut ws, Duration::from_millis(700)).await {
        assert_eq!(v["type"], "unread_count", "{v}");
        answers += 1;
        last = v["count"].as_u64();
    }
    let elapsed = started.elapsed().as_secs_f64();
    // At most one count per 250 ms (plus the first at once).
    let allowed = 2 + (elapsed / 0.25) as usize;
    assert!(
        answers <= allowed,
        "{answers} answers in {elapsed:.1} s to 500 get_unread_count frames (at most {allowed})"
    );
    assert!(answers >= 1, "asked, never answered");
    assert_eq!(last, Some(3), "the last answer is the count");
}

#[tokio::test]
async fn a_flood_of_socket_io_replays_is_coalesced() {
    let gw = TestGateway::start().await;
    for _ in 0..20 {
        gw.gateway.deliver(to_user(1, 10)).await.unwrap();
    }
    let token = gw.token(1, 10, Role::Seller);
    let (eio, outcome) = socketio_connect(&gw, &token).await;
    assert_eq!(outcome, Ok(()));
    // 30 requests for everything since the beginning, in one POST.
    let replay = format!("42{}", json!(["subscribe_notifications", {"since": 0}]));
    assert_eq!(eio.send(&vec![replay; 30]).await, StatusCode::OK);
    let (packets, end) = eio.collect_until(Duration::from_secs(3), |_| false).await;
    assert!(end.is_none(), "the session ended: {end:?}");
    let received = events(&packets);
    let replayed = received
        .iter()
        .filter(|(name, _)| name == "new_notification")
        .count();
    let counts = received
        .iter()
        .filter(|(name, _)| name == "notification_count_update")
        .count();
    assert_eq!(
        replayed, 20,
        "30 replays of 20 notifications within 3 s sent {replayed} (coalesced: one)"
    );
    assert!(counts <= 14, "{counts} count updates in 3 s");
    assert!(
        !received
            .iter()
            .any(|(name, _)| name == "notification_error"),
        "{received:?}"
    );
}
