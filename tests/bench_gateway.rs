//! `vigia bench gateway` at a small size on the real broker: the command runs, every client
//! gets every frame it should (the command fails otherwise), and the results file gets its
//! section with the command that reproduces it. The 10,000-connection figures are in
//! BENCHMARKS.md; this only keeps the commands working.

mod common;

use std::process::Command;

#[test]
fn the_gateway_benchmark_runs_and_writes_its_section() {
    let out = std::env::temp_dir().join(format!("vigia-bench-{}.md", uuid::Uuid::new_v4()));
    std::fs::write(
        &out,
        "# Benchmarks\n\n<!-- bench:other -->\nkept\n<!-- /bench:other -->\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vigia"))
        .args([
            "bench",
            "gateway",
            "--connections",
            "300",
            "--broadcasts",
            "2",
        ])
        .args(["--broadcast-every", "300ms", "--singles", "30", "--out"])
        .arg(&out)
        .env("VIGIA_KAFKA_BROKERS", common::kafka_brokers())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["broadcast_frames"], 600, "{report}");
    assert_eq!(report["missing"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    assert!(report["bytes_per_connection"]["idle"].as_f64().unwrap() > 0.0);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("kept"), "other sections stay: {text}");
    assert!(text.contains("fan-out to 300 WebSocket clients"), "{text}");
    assert!(text.contains("cargo run --release -- bench gateway --connections 300"));
    let _ = std::fs::remove_file(out);
}

/// `vigia bench gateway-peers` on Vigía's own targets (the peers need the install of
/// scripts/bench-gateway-peers.sh): both endpoints and the two-instance gateway deliver every
/// frame once (the command fails otherwise), and the section has the table and the command.
#[test]
fn the_peers_benchmark_runs_and_writes_its_section() {
    let out = std::env::temp_dir().join(format!("vigia-bench-{}.md", uuid::Uuid::new_v4()));
    let output = Command::new(env!("CARGO_BIN_EXE_vigia"))
        .args(["bench", "gateway-peers", "--targets"])
        .args(["vigia-ws,vigia-ws-2,vigia-socketio", "--runs", "1"])
        .args(["--connections", "100", "--broadcasts", "2"])
        .args(["--broadcast-every", "300ms", "--singles", "20", "--out"])
        .arg(&out)
        .env("VIGIA_KAFKA_BROKERS", common::kafka_brokers())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stderr}");
    let runs: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 3, "{runs}");
    for run in runs.as_array().unwrap() {
        let f = &run["figures"];
        assert_eq!(f["frames"], 220, "{run}");
        assert_eq!(f["missing"], 0, "{run}");
        assert!(f["server_cpu_per_100k"].as_f64().unwrap() > 0.0, "{run}");
        assert!(f["kafka_hop_p99"].as_f64().is_some(), "{run}");
    }
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("## Gateway beside its peers"), "{text}");
    assert!(text.contains("| vigia-ws-2 ÷ vigia-ws |"), "{text}");
    assert!(text.contains("bench-gateway-peers.sh --targets vigia-ws,vigia-ws-2"));
    let _ = std::fs::remove_file(out);
}
