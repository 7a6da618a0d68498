//! The HTTP surface every subcommand shares: `/health`, `/health/liveness`, `/health/readiness`
//! and Prometheus `/metrics`, merged with the stage routers (ingest, gateway) on one port.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A named readiness check (Kafka reachable, ClickHouse answers, inbox open…).
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

pub fn probe<F, Fut>(f: F) -> Probe
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

#[derive(Clone)]
struct Ops {
    probes: Arc<Vec<(&'static str, Probe)>>,
    registries: Arc<Vec<Registry>>,
    started: std::time::Instant,
}

/// Health and metrics routes for this process. Each stage registers its metrics in a registry of
/// its own (a stage's `run` borrows its registry for as long as it runs); `/metrics` serves them
/// all as one exposition.
pub fn ops_router(probes: Vec<(&'static str, Probe)>, registries: Vec<Registry>) -> Router {
    let ops = Ops {
        probes: Arc::new(probes),
        registries: Arc::new(registries),
        started: std::time::Instant::now(),
    };
    Router::new()
        .route("/health", get(health))
        .route("/health/readiness", get(readiness))
        .route("/health/liveness", get(liveness))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

async fn check_all(ops: &Ops) -> (bool, serde_json::Map<String, serde_json::Value>) {
    let results = futures::future::join_all(ops.probes.iter().map(|(name, p)| {
        let fut = p();
        async move {
            let ok = tokio::time::timeout(Duration::from_secs(3), fut)
                .await
                .unwrap_or(false);
            (*name, ok)
        }
    }))
    .await;
    let all = results.iter().all(|(_, ok)| *ok);
    let map = results
        .into_iter()
        .map(|(n, ok)| (n.to_string(), json!(if ok { "up" } else { "down" })))
        .collect();
    (all, map)
}

async fn health(State(ops): State<Ops>) -> Response {
    let (ok, components) = check_all(&ops).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ok { "up" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": ops.started.elapsed().as_secs(),
        "components": components,
    });
    (status, Json(body)).into_response()
}

async fn readiness(State(ops): State<Ops>) -> Response {
    let (ok, components) = check_all(&ops).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ok, "components": components}))).into_response()
}

async fn liveness() -> Response {
    (StatusCode::OK, Json(json!({"alive": true}))).into_response()
}

async fn metrics(State(ops): State<Ops>) -> Response {
    let mut out = String::new();
    for registry in ops.registries.iter() {
        let mut one = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut one, registry) {
            return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
        // Each exposition ends with "# EOF"; only the combined one may.
        out.push_str(one.trim_end().trim_end_matches("# EOF"));
    }
    out.push_str("# EOF\n");
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// Serves `app` on `addr` until `shutdown` is cancelled, then drains in-flight requests.
pub async fn serve(
    addr: std::net::SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (VIGIA_HTTP_ADDR): {e}"))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
