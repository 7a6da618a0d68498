//! `vigia bench sink` and `vigia bench transactions` at a small size on the real broker and
//! ClickHouse: each command runs, its checks pass (the commands fail otherwise), and the results
//! file gets its section with the command that reproduces it, other sections kept. The full-size
//! figures are in BENCHMARKS.md; these only keep the commands working.

mod common;

use std::process::Command;

fn results_file() -> std::path::PathBuf {
    let out = std::env::temp_dir().join(format!("vigia-bench-{}.md", uuid::Uuid::new_v4()));
    std::fs::write(
        &out,
        "# Benchmarks\n\n<!-- bench:other -->\nkept\n<!-- /bench:other -->\n",
    )
    .unwrap();
    out
}

fn bench(args: &[&str], out: &std::path::Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_vigia"))
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out)
        .env("VIGIA_KAFKA_BROKERS", common::kafka_brokers())
        .env("VIGIA_CLICKHOUSE_URL", common::clickhouse_url())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stderr}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_sink_benchmark_writes_every_event_once_and_a_rerun_adds_nothing() {
    let out = results_file();
    let report = bench(&["sink", "--events", "3000", "--timeout", "2m"], &out);
    let distinct = report["distinct_events"].as_u64().unwrap();
    // The simulator's stream has duplicate deliveries: fewer distinct events than records.
    assert!(distinct < 3000 && distinct > 2500, "{report}");
    assert_eq!(report["rows"], distinct, "{report}");
    assert_eq!(report["distinct_ids"], distinct, "{report}");
    assert_eq!(report["rows_after_rerun"], distinct, "{report}");
    assert!(report["rows_per_second"].as_f64().unwrap() > 0.0);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("kept"), "other sections stay: {text}");
    assert!(text.contains("<!-- bench:sink -->"), "{text}");
    assert!(
        text.contains("cargo run --release -- bench sink --events 3000"),
        "{text}"
    );
    let _ = std::fs::remove_file(out);
}

#[test]
fn the_transactions_benchmark_measures_both_modes_and_loses_nothing() {
    let out = results_file();
    let report = bench(
        &[
            "transactions",
            "--rate",
            "200",
            "--duration",
            "3s",
            "--burst",
            "1000",
            "--commit-interval",
            "100ms",
        ],
        &out,
    );
    let modes = report["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 2, "{report}");
    for m in modes {
        assert_eq!(m["produced"], 600, "{m}");
        assert_eq!(m["consumed"], 600, "{m}");
        assert_eq!(m["burst"]["consumed"], 1000, "{m}");
        assert!(m["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{m}");
    }
    assert!(modes[0]["commit_interval_ms"].is_null());
    assert_eq!(modes[1]["commit_interval_ms"], 100);
    // About one commit per interval (fewer when commits take longer than the interval).
    let commits = modes[1]["commit_transaction_ms"]["count"].as_u64().unwrap();
    assert!((5..=31).contains(&commits), "{commits} commits in 3 s");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("kept"), "other sections stay: {text}");
    assert!(
        text.contains("bench transactions --rate 200 --duration 3s --commit-interval 100ms"),
        "{text}"
    );
    let _ = std::fs::remove_file(out);
}
