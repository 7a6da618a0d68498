//! No log line of the server carries a token, at any level: not the `?token=` of `/ws`,
//! Socket.IO or a report link, not the Socket.IO handshake's `auth`, not a request the server
//! could not parse. Every event of every crate is captured at TRACE, except the test's own
//! clients' (one subscriber for this test binary, hence one test in this file).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::eio::Eio;
use common::*;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use vigia_gateway::Role;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_carries_a_token_at_any_level() {
    let captured = Captured::default();
    // The clients of this test log their own requests (the token with them): not the server's.
    let server_side = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("tungstenite::handshake::client", LevelFilter::OFF)
        .with_target("reqwest", LevelFilter::OFF)
        .with_target("hyper_util::client", LevelFilter::OFF);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(captured.clone())
                .with_ansi(false),
        )
        .with(server_side)
        .init();
    let gw = TestGateway::start().await;
    // A distinct token for each way in, so a leak says which.
    let ws_token = gw.token(1, 10, Role::Seller);
    let query_token = gw.token(1, 11, Role::Seller);
    let auth_token = gw.token(1, 12, Role::Seller);
    let bad_request_token = gw.token(1, 13, Role::Seller);
    let report_token = gw.token(1, 1, Role::Ceo);

    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={ws_token}&since=0", gw.addr))
            .await
            .unwrap();
    expect_handshake(&mut ws, 1, 10).await;

    // Socket.IO: the token in the handshake's query, and in the namespace connect's `auth`.
    let eio = Eio::handshake(gw.addr, &format!("&token={query_token}"))
        .await
        .unwrap();
    eio.connect_namespace(&auth_token).await;
    let (packets, _) = eio
        .collect_until(Duration::from_secs(5), |p| {
            p.iter().any(|p| p.contains("notification_connected"))
        })
        .await;
    assert!(
        packets.iter().any(|p| p.contains("notification_connected")),
        "{packets:?}"
    );
    eio.emit("subscribe_notifications", serde_json::json!({"since": 0}))
        .await;
    eio.collect_until(Duration::from_millis(500), |_| false)
        .await;
    // A request the Engine.IO layer cannot parse (unknown protocol version), with a token.
    let bad = reqwest::get(gw.url(&format!(
        "/socket.io/?EIO=9&transport=polling&token={bad_request_token}"
    )))
    .await
    .unwrap();
    assert!(!bad.status().is_success());
    // A report link of the old form.
    let _ = reqwest::get(gw.url(&format!("/reports/2026-03-02?token={report_token}"))).await;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("websocket connected"),
        "the capture works: the gateway's own debug lines are in it\n{logs}"
    );
    for (how, token) in [
        ("/ws?token=", &ws_token),
        ("the Socket.IO handshake's ?token=", &query_token),
        ("the Socket.IO auth", &auth_token),
        ("an unparsable Engine.IO request", &bad_request_token),
        ("a report link", &report_token),
    ] {
        // The signature alone is the secret part; its presence is the leak.
        let signature = token.rsplit('.').next().unwrap();
        let leaks: Vec<&str> = logs.lines().filter(|l| l.contains(signature)).collect();
        assert!(
            leaks.is_empty(),
            "the token of {how} is in the logs:\n{}",
            leaks.join("\n")
        );
    }
}
