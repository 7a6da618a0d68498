//! Socket.IO `/socket.io/` end to end with the official `socket.io-client` (npm), over the
//! websocket transport only and over HTTP long-polling only. The client side is
//! `tests/node/socketio.test.mjs`, run with `node --test`; this side starts the gateway on
//! 127.0.0.1:0 over a temporary SQLite inbox and delivers notifications through
//! `Gateway::deliver` once the script says `READY`.
//!
//! Needs node (v20+) and npm, and the npm registry the first time (`npm ci` when
//! `tests/node/node_modules` is missing), hence `#[ignore]`:
//! `cargo test -p vigia-gateway --test socketio -- --ignored`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use uuid::Uuid;
use vigia_gateway::Role;
use vigia_schemas::{NotificationType, Priority};

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// `npm ci` (or `npm install` without a lock file) unless `node_modules` is there already.
fn install_node_modules() {
    let dir = node_dir();
    if dir.join("node_modules/socket.io-client").is_dir() {
        return;
    }
    let command = if dir.join("package-lock.json").is_file() {
        "ci"
    } else {
        "install"
    };
    let output = Command::new("npm")
        .args([command, "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .expect("npm runs (install node v20+ and npm)");
    assert!(
        output.status.success(),
        "npm {command} failed in {}:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node and npm (and the npm registry once): cargo test -p vigia-gateway --test socketio -- --ignored"]
async fn socket_io_client_over_websocket_and_polling() {
    install_node_modules();
    let gw = TestGateway::start().await;

    let missed = to_user(1, 10);
    assert!(gw.gateway.deliver(missed.clone()).await.unwrap());
    let n1 = vigia_schemas::Notification {
        id: Uuid::new_v4(),
        kind: NotificationType::HotLead,
        priority: Priority::Urgent,
        ..to_user(1, 10)
    };
    let n2 = to_user(1, 11);

    let mut child = Command::new("node")
        .args(["--test", "socketio.test.mjs"])
        .current_dir(node_dir())
        .env("GATEWAY_URL", format!("http://{}", gw.addr))
        .env("TOKEN_A", gw.token(1, 10, Role::Seller))
        .env("TOKEN_B", gw.token(1, 11, Role::Seller))
        .env("TOKEN_OTHER_TENANT", gw.token(2, 10, Role::Seller))
        .env("MISSED_ID", missed.id.to_string())
        .env("N1_ID", n1.id.to_string())
        .env("N2_ID", n2.id.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (install node v20+)");

    // Read the script's output on threads: lines go to `lines` as they come, for READY.
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = lines_tx.send(line);
        }
        all
    });
    let stderr = child.stderr.take().unwrap();
    let err_reader =
        std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());

    let ready = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.trim_start_matches(['#', ' ']) == "READY" => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap();

    if ready {
        assert!(gw.gateway.deliver(n1).await.unwrap());
        assert!(gw.gateway.deliver(n2).await.unwrap());
    }

    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let stdout = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let output = format!("--- node stdout ---\n{stdout}--- node stderr ---\n{stderr}");
    assert!(ready, "the node script never printed READY\n{output}");
    match status {
        Some(status) => assert!(status.success(), "node --test failed ({status})\n{output}"),
        None => panic!("node --test did not finish within 60 s\n{output}"),
    }
    // Every client was served and has left.
    assert!(
        gw.gateway
            .inbox()
            .unread_count(&vigia_gateway::Viewer {
                tenant_id: 1,
                user_id: 10,
                role: Role::Seller,
            })
            .await
            .unwrap()
            == 1,
        "the client's mark_notification_read reached the inbox\n{output}"
    );
    // Both Socket.IO transports were served, and counted apart in /metrics.
    for transport in ["socketio_websocket", "socketio_polling"] {
        let label = format!("transport=\"{transport}\"");
        assert!(
            gw.metric_where("vigia_gateway_pushed_total", &label) >= 1.0,
            "nothing pushed over {transport}\n{output}"
        );
    }
    assert_eq!(
        gw.metric_where("vigia_gateway_pushed_total", "transport=\"ws\""),
        0.0
    );
}
