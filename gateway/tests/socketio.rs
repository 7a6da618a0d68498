//! Socket.IO `/socket.io/` end to end with the official `socket.io-client` (npm), over the
//! websocket transport only and over HTTP long-polling only. The client side is
//! `tests/node/socketio.test.mjs`, run with `node --test`; this side starts the gateway on
//! 127.0.0.1:0 over a temporary SQLite inbox and delivers notifications through
//! `Gateway::deliver` once the script says `READY`. A second script,
//! `tests/node/socketio-burst.mjs`, is a CEO reading a long burst of big notifications.
//!
//! Needs node (v20+) and npm, and the npm registry the first time (`npm ci` when
//! `tests/node/node_modules` is missing), hence `#[ignore]`:
//! `cargo test -p vigia-gateway --test socketio -- --ignored`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use uuid::Uuid;
use vigia_gateway::Role;
use vigia_schemas::{NotificationType, Priority};

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// `npm ci` (or `npm install` without a lock file) unless `node_modules` is there already; once
/// per test binary (its tests run in parallel threads, and two `npm ci` in one directory race).
fn install_node_modules() {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(npm_install);
}

fn npm_install() {
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

    let mut node = NodeScript::spawn(
        &["--test", "socketio.test.mjs"],
        &[
            ("GATEWAY_URL", format!("http://{}", gw.addr)),
            ("TOKEN_A", gw.token(1, 10, Role::Seller)),
            ("TOKEN_B", gw.token(1, 11, Role::Seller)),
            ("TOKEN_OTHER_TENANT", gw.token(2, 10, Role::Seller)),
            ("MISSED_ID", missed.id.to_string()),
            ("N1_ID", n1.id.to_string()),
            ("N2_ID", n2.id.to_string()),
        ],
    );
    let ready = node.ready().await;
    if ready {
        assert!(gw.gateway.deliver(n1).await.unwrap());
        assert!(gw.gateway.deliver(n2).await.unwrap());
    }
    let (status, output) = node.finish(Duration::from_secs(60)).await;
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

/// A node process in `tests/node`, its stdout read line by line as it comes (for READY).
struct NodeScript {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl NodeScript {
    fn spawn(args: &[&str], env: &[(&str, String)]) -> NodeScript {
        let mut child = Command::new("node")
            .args(args)
            .current_dir(node_dir())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs (install node v20+)");
        let (lines_tx, lines) = mpsc::channel::<String>();
        let out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                all.push_str(&line);
                all.push('\n');
                let _ = lines_tx.send(line);
            }
            all
        });
        let err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
        NodeScript {
            child,
            lines,
            stdout,
            stderr,
        }
    }

    /// Whether the script printed a line `READY` (`# READY` under `node --test`) within 60 s.
    async fn ready(&mut self) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match tokio::task::block_in_place(|| self.lines.recv_timeout(left)) {
                Ok(line) if line.trim_start_matches(['#', ' ']) == "READY" => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// Waits up to `limit` for the script to end (then kills it: `None`); returns its status
    /// and everything it printed.
    async fn finish(mut self, limit: Duration) -> (Option<ExitStatus>, String) {
        let status = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + limit;
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return (Some(status), self);
                }
                if std::time::Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return (None, self);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .unwrap();
        let (status, node) = status;
        drop(node.lines);
        let stdout = node.stdout.join().unwrap();
        let stderr = node.stderr.join().unwrap();
        (
            status,
            format!("--- node stdout ---\n{stdout}--- node stderr ---\n{stderr}"),
        )
    }
}

/// A CEO on Socket.IO (`tests/node/socketio-burst.mjs`) sent `total` notifications of 32 KB (250
/// a second to a client that reads, as fast as the gateway takes them to a frozen one), its client not reading for `pause` after connecting; returns
/// whether the script printed READY, how it ended, and its output.
async fn burst_to_a_socket_io_ceo(
    gw: &TestGateway,
    total: usize,
    pause: Duration,
    wait: Duration,
) -> (bool, Option<ExitStatus>, String) {
    install_node_modules();
    let mut node = NodeScript::spawn(
        &["socketio-burst.mjs"],
        &[
            ("GATEWAY_URL", format!("http://{}", gw.addr)),
            ("TOKEN_CEO", gw.token(1, 1, Role::Ceo)),
            ("TOTAL", total.to_string()),
            ("WAIT_MS", wait.as_millis().to_string()),
            ("PAUSE_MS", pause.as_millis().to_string()),
        ],
    );
    let ready = node.ready().await;
    if ready {
        let blob = "x".repeat(32 * 1024);
        // A client that reads gets a fast but steady burst (250 frames of 32 KB a second, far
        // past RECOUNT_EVERY): as fast as the gateway takes them, a GC pause of the node client
        // alone could fill its queue and drop it. The queue (64) at this pace absorbs a 256 ms
        // stall of the client: on 2 busy cores (CI runs two test binaries at once) a 64 ms one
        // (32 frames at 2 ms) dropped a client that was reading. A frozen tab gets them unpaced.
        let mut pace = tokio::time::interval(Duration::from_millis(4));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for i in 0..total {
            let mut n = to_role(1, Role::Ceo);
            n.data = serde_json::json!({ "blob": blob });
            gw.gateway.deliver(n).await.unwrap();
            if pause.is_zero() {
                pace.tick().await;
            } else if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
    let (status, output) = node.finish(wait + Duration::from_secs(30)).await;
    (ready, status, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node and npm (and the npm registry once): cargo test -p vigia-gateway --test socketio -- --ignored"]
async fn a_ceo_reading_a_long_burst_over_socket_io_keeps_up_while_unread_counts_are_due() {
    // As the /ws test of the same name (tests/ws.rs): a short queue and a burst of big frames
    // lasting well past RECOUNT_EVERY, read by the official client. The connection must keep
    // draining its queue while recounts fall due (it once spun on the due recount instead), and
    // wait for room in the socket's buffer rather than drop a client that reads (it once did).
    let gw = TestGateway::start_with(|cfg| cfg.client_queue = 64).await;
    let (ready, status, output) =
        burst_to_a_socket_io_ceo(&gw, 3000, Duration::ZERO, Duration::from_secs(60)).await;
    assert!(ready, "the node script never printed READY\n{output}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the CEO did not get every notification ({status:?})\n{output}"
    );
    assert_eq!(gw.metric("vigia_gateway_dropped_clients_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node and npm (and the npm registry once): cargo test -p vigia-gateway --test socketio -- --ignored"]
async fn a_socket_io_client_dropped_as_too_slow_is_told_so() {
    // The client stops reading for 3 s (a frozen tab) during a burst: the socket's buffer fills,
    // then the connection's queue, and the hub drops it. The disconnect packet does not fit in
    // the full buffer; it must still reach the client once it reads again (it once did not: the
    // client stayed connected with nothing feeding it, and would never reconnect and replay).
    // Pings 60 s apart, so that the heartbeat does not close the connection meanwhile.
    let gw = TestGateway::start_with(|cfg| {
        cfg.client_queue = 8;
        cfg.ping_interval = Duration::from_secs(60);
    })
    .await;
    let (ready, status, output) =
        burst_to_a_socket_io_ceo(&gw, 1000, Duration::from_secs(3), Duration::from_secs(20)).await;
    assert!(ready, "the node script never printed READY\n{output}");
    assert!(
        status.is_some() && output.contains("DISCONNECTED (io server disconnect)"),
        "the client was not told it was dropped ({status:?})\n{output}"
    );
    assert!(gw.metric("vigia_gateway_dropped_clients_total") >= 1.0);
}
