//! The HTTP surface every subcommand shares: `/health`, `/health/liveness`, `/health/readiness`
//! and Prometheus `/metrics`, merged with the stage routers (ingest, gateway) on one port.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
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

/// What the server allows each connection, and how many at once (`[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request's whole header must arrive within this time of the connection opening or of
    /// the previous response (so it is also how long an idle keep-alive connection lives).
    pub header_read_timeout: Duration,
    /// A request's whole body must arrive within this time of its header.
    pub body_read_timeout: Duration,
    /// Open connections, HTTP and upgraded (WebSocket) together; the next one is refused.
    pub max_connections: usize,
}

impl From<&crate::config::HttpConfig> for Limits {
    fn from(c: &crate::config::HttpConfig) -> Self {
        Limits {
            header_read_timeout: c.header_read_timeout,
            body_read_timeout: c.body_read_timeout,
            max_connections: c.max_connections,
        }
    }
}

/// Serves `app` on `addr` until `shutdown` is cancelled, then drains in-flight requests.
pub async fn serve(
    addr: std::net::SocketAddr,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (VIGIA_HTTP_ADDR): {e}"))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    serve_on(listener, app, limits, shutdown).await
}

/// File descriptors kept free of connections: Kafka clients, the inbox database, files.
const FD_RESERVE: u64 = 512;

/// How often, at most, refused connections are reported in the log.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a connection past the cap reads before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
    content-length: 36\r\nretry-after: 5\r\nconnection: close\r\n\r\n\
    too many connections; retry shortly\n";

/// The connection cap that fits in `open_files_limit` with [`FD_RESERVE`] to spare.
fn effective_max_connections(configured: usize, open_files_limit: u64) -> usize {
    let room = open_files_limit.saturating_sub(FD_RESERVE).max(1);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Raises the soft limit of open files to the hard one (each connection is one) and returns
/// the cap of connections that fits in it.
fn fit_to_open_files_limit(configured: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open files limit; keeping http.max_connections as configured");
            return configured;
        }
    };
    let cap = effective_max_connections(configured, limit);
    if cap < configured {
        tracing::warn!(
            "http.max_connections is {configured} but this process may open only {limit} files: \
             serving at most {cap} connections (raise `ulimit -Hn`, or LimitNOFILE in systemd)"
        );
    }
    cap
}

impl Limits {
    fn validate(&self) -> anyhow::Result<()> {
        for (value, key) in [
            (
                self.header_read_timeout,
                "http.header_read_timeout (VIGIA_HTTP_HEADER_READ_TIMEOUT)",
            ),
            (
                self.body_read_timeout,
                "http.body_read_timeout (VIGIA_HTTP_BODY_READ_TIMEOUT)",
            ),
        ] {
            if value.is_zero() {
                anyhow::bail!("{key} must be positive, e.g. \"10s\"");
            }
        }
        if self.max_connections == 0 {
            anyhow::bail!(
                "http.max_connections (VIGIA_HTTP_MAX_CONNECTIONS) must be at least 1 (default 20000)"
            );
        }
        Ok(())
    }
}

/// A connection's socket, holding its place under the cap for as long as the socket lives:
/// through an upgrade too, as the upgraded WebSocket owns it then.
struct Counted {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A request body that must be complete by a deadline set when its header arrived (a body
/// trickling in a byte at a time would otherwise hold its connection for hours).
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

#[derive(Debug)]
struct BodyTimedOut(Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {:?} of its header (http.body_read_timeout)",
            self.0
        )
    }
}

impl std::error::Error for BodyTimedOut {}

impl http_body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// [`serve`] on a bound listener: HTTP/1.1, with upgrades (WebSocket), each connection under
/// [`Limits`]. Past `max_connections`, a new connection reads a 503 and is closed.
///
/// HTTP/1.1 only: HTTP/2 in clear text (prior knowledge) is not what browsers speak, and its
/// preface has no read timeout in hyper's version detection, so a client sending nothing would
/// hold its connection forever.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    limits.validate()?;
    let max_connections = fit_to_open_files_limit(limits.max_connections);
    let places = Arc::new(Semaphore::new(max_connections));
    let body_timeout = limits.body_read_timeout;
    let app = app.layer(axum::middleware::map_request(
        move |request: axum::extract::Request| async move {
            request.map(|inner| {
                Body::new(DeadlineBody {
                    inner,
                    deadline: Box::pin(tokio::time::sleep(body_timeout)),
                    timeout: body_timeout,
                })
            })
        },
    ));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // The timer also starts when a connection opens and after each response, so a client that
    // sends nothing, or stays idle between requests, is closed after the same time.
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Each connection's task holds a receiver: all of them dropped is all drained.
    let (drained_tx, drained_rx) = tokio::sync::watch::channel(());
    let mut refused = 0u64;
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // try again shortly rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            // Not one more socket kept for it: what fits in its send buffer, then closed.
            let _ = stream.try_write(REFUSAL);
            drop(stream);
            refused += 1;
            if last_refusal_log.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
                tracing::warn!(
                    refused,
                    "refusing connections: {max_connections} are open \
                     (http.max_connections, VIGIA_HTTP_MAX_CONNECTIONS)"
                );
                last_refusal_log = Some(Instant::now());
                refused = 0;
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Counted {
            stream,
            _place: place,
        });
        let connection = http1
            .serve_connection(io, TowerToHyperService::new(app.clone()))
            .with_upgrades();
        let shutdown = shutdown.clone();
        let drained = drained_rx.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(drained);
        });
    }
    drop(listener);
    drop(drained_rx);
    drained_tx.closed().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The server's limits against real sockets on loopback.

    use super::*;
    use axum::body::Bytes;
    use axum::routing::post;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::{timeout, Instant};

    const GENEROUS: Limits = Limits {
        header_read_timeout: Duration::from_secs(60),
        body_read_timeout: Duration::from_secs(60),
        max_connections: 10_000,
    };

    struct Server {
        addr: SocketAddr,
        shutdown: CancellationToken,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    /// `GET /` answers "ok"; `POST /echo` answers the body's length; `GET /ws` holds a
    /// WebSocket open until the client leaves.
    async fn start(limits: Limits) -> Server {
        async fn hold(ws: axum::extract::ws::WebSocketUpgrade) -> Response {
            ws.on_upgrade(|mut socket| async move { while socket.recv().await.is_some() {} })
        }
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route(
                "/echo",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .route("/ws", get(hold));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_on(listener, app, limits, shutdown.clone()));
        Server { addr, shutdown }
    }

    /// Reads until the server closes the connection (EOF or reset); what it sent meanwhile.
    /// `None` if it is still open after `wait`.
    async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Option<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into()),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// One keep-alive `GET /` on `stream`; the response's head and body.
    async fn get_ok(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"ok") {
            let n = timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("an answer within 5 s")
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into()
    }

    #[tokio::test]
    async fn connections_that_send_half_a_header_are_closed_after_the_header_timeout() {
        let server = start(Limits {
            header_read_timeout: Duration::from_secs(1),
            ..GENEROUS
        })
        .await;
        // One request, then silence: an idle keep-alive connection is closed after as long.
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        assert!(get_ok(&mut idle).await.starts_with("HTTP/1.1 200"));
        let started = Instant::now();
        let mut slow = vec![idle];
        for i in 0..50 {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            // Half of them send part of a header, the others nothing at all.
            if i % 2 == 0 {
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ")
                    .await
                    .unwrap();
            }
            slow.push(stream);
        }
        for (i, stream) in slow.iter_mut().enumerate() {
            let closed = read_until_closed(stream, Duration::from_secs(5)).await;
            assert!(
                closed.is_some(),
                "connection {i} still open {:?} after it opened",
                started.elapsed()
            );
        }
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "closed before the timeout"
        );
        // A client that sends its header in time is served.
        let mut ok = TcpStream::connect(server.addr).await.unwrap();
        assert!(get_ok(&mut ok).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_body_that_trickles_in_is_cut_off_at_the_body_timeout() {
        let server = start(Limits {
            body_read_timeout: Duration::from_secs(1),
            ..GENEROUS
        })
        .await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let trickle = async {
            loop {
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if started.elapsed() > Duration::from_secs(6) {
                    break;
                }
            }
        };
        let _ = timeout(Duration::from_secs(6), trickle).await;
        let answer = read_until_closed(&mut stream, Duration::from_millis(500)).await;
        let answer = answer.expect("the server still waits for the body after 6 s");
        assert!(
            answer.is_empty() || !answer.starts_with("HTTP/1.1 200"),
            "a 1000-byte body at 5 bytes/s was accepted: {answer}"
        );
        // A body sent at once is read.
        let mut ok = TcpStream::connect(server.addr).await.unwrap();
        ok.write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
            .await
            .unwrap();
        let answer = read_until_closed(&mut ok, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with('3'),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn the_connection_cap_refuses_the_next_connection_until_one_closes() {
        let server = start(Limits {
            max_connections: 10,
            ..GENEROUS
        })
        .await;
        // Ten keep-alive connections, all served and left open.
        let mut open = Vec::new();
        for _ in 0..10 {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            assert!(get_ok(&mut stream).await.starts_with("HTTP/1.1 200"));
            open.push(stream);
        }
        let mut eleventh = TcpStream::connect(server.addr).await.unwrap();
        let _ = eleventh
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await;
        let answer = read_until_closed(&mut eleventh, Duration::from_secs(5))
            .await
            .expect("the 11th connection is closed at once");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
            "the 11th connection was served: {answer}"
        );
        // One leaves: there is room again.
        drop(open.pop());
        let mut again = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            let _ = stream
                .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .await;
            let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
            if answer
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
            {
                again = answer;
                break;
            }
        }
        assert!(again.is_some(), "no room after a connection closed");
    }

    #[tokio::test]
    async fn websocket_connections_count_against_the_cap_while_open() {
        let server = start(Limits {
            max_connections: 2,
            ..GENEROUS
        })
        .await;
        let url = format!("ws://{}/ws", server.addr);
        let (first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let (_second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        assert!(
            tokio_tungstenite::connect_async(&url).await.is_err(),
            "a third WebSocket past a cap of 2"
        );
        drop(first);
        let mut reconnected = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if tokio_tungstenite::connect_async(&url).await.is_ok() {
                reconnected = true;
                break;
            }
        }
        assert!(reconnected, "no room after a WebSocket closed");
    }

    #[test]
    fn the_cap_stays_below_the_open_files_limit() {
        assert_eq!(effective_max_connections(20_000, 1_048_576), 20_000);
        assert_eq!(
            effective_max_connections(20_000, 4096),
            4096 - FD_RESERVE as usize
        );
        assert_eq!(effective_max_connections(20_000, 100), 1);
    }
}
