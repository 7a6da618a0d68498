//! Socket.IO v4 at `/socket.io/` (contract §5.4), for front ends using `socket.io-client`; WebSocket
//! and HTTP long-polling transports (Engine.IO v4, via `socketioxide`). Same audience rules,
//! preferences, hub fan-out and catch-up as `/ws` (both drive a [`Session`]).
//!
//! Auth: the JWT in the handshake `auth: {token}`, else `?token=` in the URL, else
//! `Authorization: Bearer`. A missing or bad token refuses the connection: the client gets
//! `connect_error` with `{message}` saying why; so does a user who already has
//! `max_connections_per_user` connections (`/ws` and Socket.IO together).
//!
//! Sessions that have not authenticated yet (an Engine.IO handshake without a namespace
//! connect carrying a valid token) cost memory and a task each: at most
//! `max_unauthenticated_sessions` of them exist at once (past that, a handshake gets `503`), and
//! each is closed after `socketio_connect_timeout` (10 s by default) unless it authenticates.
//!
//! Server → client events (namespace `/`):
//! - `notification_connected` `{user_id, tenant_id, role, unread_count}` — first.
//! - `new_notification` — the contract §4.1 notification JSON plus `sequence` (inbox arrival order),
//!   `read` and `withdrawn`. Live ones flow from the connection on (muted ones excepted, see
//!   [`crate::preferences`]); missed ones after `subscribe_notifications {since}`.
//! - `notification_count_update` `{count}` — after changes (new notification, read elsewhere),
//!   and after a `subscribe_notifications`.
//! - `notification_marked_read` `{notification_id, count}` — answer to `mark_notification_read`.
//! - `notification_error` `{event, message}` — a client event was not understood or failed.
//! - `metrics_update` — live metrics of the tenant, CEO/manager only, at most once a second.
//!
//! Client → server events:
//! - `subscribe_notifications` with optional `{since: <last sequence seen>}`: replays, oldest
//!   first, what the user missed after `since` (nothing if absent), then the live ones continue;
//!   nothing is sent twice. A connection replays at most once per 5 s: requests in between are
//!   coalesced into one replay from the earliest `since`, at the end of those 5 s.
//! - `mark_notification_read` `{notification_id}` (or the id as a bare string).
//!
//! The server disconnects a client that does not read fast enough, when its token expires, and
//! on shutdown. "Not fast enough" is as on `/ws`: the connection's queue of `client_queue`
//! notifications fills up while it waits for room in the socket's own buffer (also
//! `client_queue` packets). A disconnect packet needs room in that buffer too, so it is retried
//! until the client has read enough to take it; a client that reads nothing more is closed by
//! the engine's heartbeat instead (its ping does not fit either).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use socketioxide::{SendError, SocketError, SocketIo, TransportType};
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{AuthError, Principal};
use crate::hub::{Live, Registration, Subscription, TooManyConnections, UserPlace};
use crate::inbox::{InboxError, StoredNotification};
use crate::metrics::TransportKind;
use crate::session::{next_count, Deliver, PendingCount, Session, Transport};
use crate::throttle::{Replays, REPLAY_EVERY};
use crate::Shared;

/// Client events waiting for the connection's task; more than this in flight is abuse.
const CONTROL_QUEUE: usize = 32;

/// How soon a full socket buffer is tried again (socketioxide offers no wait for room).
const FULL_BUFFER_RETRY: Duration = Duration::from_millis(2);

/// How soon a disconnect that did not fit in the socket's buffer is tried again.
const DISCONNECT_RETRY: Duration = Duration::from_millis(20);

/// What the per-socket event handlers ask of the connection's task.
enum Control {
    Subscribe { since: Option<i64> },
    MarkRead { notification_id: Uuid },
}

/// Cancelled when the client is gone (the socket's disconnect handler).
#[derive(Clone)]
struct Gone(CancellationToken);

/// Why a namespace connect is refused (the `connect_error` message).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    TooMany(#[from] TooManyConnections),
}

/// The sessions that have not authenticated yet, all clients together.
struct Unauthenticated {
    count: AtomicUsize,
    max: usize,
}

/// One unauthenticated session's place: given back when it authenticates, or when the session
/// ends (the Engine.IO session keeps its handshake request's extensions, and this with them).
struct Unauthed {
    sessions: Arc<Unauthenticated>,
    given_back: AtomicBool,
}

impl Unauthenticated {
    fn admit(self: &Arc<Self>) -> Option<Arc<Unauthed>> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        Some(Arc::new(Unauthed {
            sessions: self.clone(),
            given_back: AtomicBool::new(false),
        }))
    }
}

impl Unauthed {
    fn give_back(&self) {
        if !self.given_back.swap(true, Ordering::AcqRel) {
            self.sessions.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Unauthed {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// Admits an Engine.IO handshake (a request without `sid`) only while fewer than
/// `max_unauthenticated_sessions` sessions wait to authenticate.
async fn admit_handshakes(
    State(sessions): State<Arc<Unauthenticated>>,
    mut request: Request,
    next: Next,
) -> Response {
    let opens_a_session = !request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair.starts_with("sid="));
    if opens_a_session {
        let Some(place) = sessions.admit() else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "5")],
                "too many Socket.IO sessions wait to authenticate \
                 (gateway.max_unauthenticated_sessions); retry shortly",
            )
                .into_response();
        };
        request.extensions_mut().insert(place);
    }
    next.run(request).await
}

/// Builds the Socket.IO server: its routes (`/socket.io` and `/socket.io/`) and its handle.
pub(crate) fn build(shared: Arc<Shared>) -> (axum::Router, SocketIo) {
    let cfg = &shared.cfg;
    let (svc, io) = SocketIo::builder()
        .req_path("/socket.io")
        .ping_interval(cfg.ping_interval)
        .ping_timeout(cfg.ping_interval)
        .max_buffer_size(cfg.client_queue)
        // Client events are tiny.
        .max_payload(64 * 1024)
        // Allocated up front per connection (4 KiB by default); a bigger event grows it.
        .ws_read_buffer_size(crate::ws::READ_BUFFER)
        .connect_timeout(cfg.socketio_connect_timeout)
        .build_svc();
    let unauthenticated = Arc::new(Unauthenticated {
        count: AtomicUsize::new(0),
        max: cfg.max_unauthenticated_sessions,
    });
    let auth_shared = shared.clone();
    let authenticate = move |s: SocketRef, TryData(auth): TryData<Value>| {
        let shared = auth_shared.clone();
        async move {
            let principal = authenticate(&shared, &s, auth.ok().as_ref())?;
            let place = shared
                .hub
                .take_place(&principal.viewer, shared.cfg.max_connections_per_user)?;
            if let Some(unauthed) = s.req_parts().extensions.get::<Arc<Unauthed>>() {
                unauthed.give_back();
            }
            s.extensions.insert(principal);
            s.extensions.insert(Arc::new(place));
            Ok::<(), Refused>(())
        }
    };
    let on_connect = move |s: SocketRef| {
        let shared = shared.clone();
        async move { connected(shared, s).await }
    };
    io.ns("/", on_connect.with(authenticate));
    let routes = axum::Router::new()
        .route_service("/socket.io", svc.clone())
        .route_service("/socket.io/", svc)
        .layer(axum::middleware::from_fn_with_state(
            unauthenticated,
            admit_handshakes,
        ));
    (routes, io)
}

/// The token of a handshake: `auth.token`, else `?token=`, else `Authorization: Bearer`.
fn authenticate(
    shared: &Shared,
    s: &SocketRef,
    auth: Option<&Value>,
) -> Result<Principal, AuthError> {
    let from_auth = auth
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let parts = s.req_parts();
    let from_query = || {
        parts.uri.query().and_then(|q| {
            q.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == "token" && !v.is_empty()).then(|| percent_decode(v))
            })
        })
    };
    let token = match from_auth.or_else(from_query) {
        Some(token) => token,
        None => crate::auth::bearer_token(&parts.headers)
            .ok_or(AuthError::MissingToken)??
            .to_string(),
    };
    shared.verifier.verify(&token)
}

/// `%XX` and `+` decoding of a query value (JWTs are URL-safe, but clients may encode anyway).
fn percent_decode(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn connected(shared: Arc<Shared>, s: SocketRef) {
    let (Some(principal), Some(place)) = (
        s.extensions.get::<Principal>(),
        s.extensions.remove::<Arc<UserPlace>>(),
    ) else {
        // The middleware always inserts them; without them there is nobody to serve.
        let _ = s.disconnect();
        return;
    };
    let viewer = principal.viewer;
    let transport = match s.transport_type() {
        TransportType::Websocket => TransportKind::SocketIoWebSocket,
        TransportType::Polling => TransportKind::SocketIoPolling,
    };
    let (mut session, subscription) = Session::open(shared.clone(), viewer, transport).await;
    let count = match session.unread_count().await {
        Ok(count) => count,
        Err(e) => {
            tracing::warn!(error = %e, "cannot count unread notifications; disconnecting");
            let _ = s.disconnect();
            return;
        }
    };
    if s.emit(
        "notification_connected",
        &json!({
            "user_id": viewer.user_id,
            "tenant_id": viewer.tenant_id,
            "role": viewer.role,
            "unread_count": count,
        }),
    )
    .is_err()
    {
        return;
    }

    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let gone = Gone(CancellationToken::new());
    s.extensions.insert(gone.clone());
    s.on_disconnect(|s: SocketRef, reason: DisconnectReason| async move {
        tracing::debug!(sid = %s.id, ?reason, "socket.io client disconnected");
        if let Some(Gone(token)) = s.extensions.get::<Gone>() {
            token.cancel();
        }
    });
    let tx = control_tx.clone();
    s.on(
        "subscribe_notifications",
        move |s: SocketRef, TryData(data): TryData<Value>| {
            let tx = tx.clone();
            async move {
                let since = data.ok().as_ref().and_then(since_of);
                request(
                    &s,
                    &tx,
                    "subscribe_notifications",
                    Control::Subscribe { since },
                );
            }
        },
    );
    s.on(
        "mark_notification_read",
        move |s: SocketRef, TryData(data): TryData<Value>| {
            let tx = control_tx.clone();
            async move {
                match data.ok().as_ref().and_then(notification_id_of) {
                    Some(notification_id) => request(
                        &s,
                        &tx,
                        "mark_notification_read",
                        Control::MarkRead { notification_id },
                    ),
                    None => emit_error(
                        &s,
                        "mark_notification_read",
                        "needs {\"notification_id\": \"<uuid>\"}".into(),
                    ),
                }
            }
        },
    );
    tracing::debug!(
        sid = %s.id,
        transport = ?s.transport_type(),
        tenant_id = viewer.tenant_id,
        user_id = viewer.user_id,
        "socket.io client connected"
    );
    let expires_at = principal.expires_at_time();
    tokio::spawn(async move {
        let Subscription {
            mut rx,
            kicked,
            registration,
            ..
        } = subscription;
        let mut conn = SocketTransport {
            socket: s.clone(),
            kicked: kicked.clone(),
            gone: gone.0.clone(),
            // Its own token, cancelled with the server's (see the same in ws.rs).
            shutdown: shared.shutdown.child_token(),
        };
        let token_expires = Instant::now()
            + expires_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
        let mut control_rx = control_rx;
        let mut counting: Option<PendingCount> = None;
        let mut replays = Replays::new(REPLAY_EVERY);
        // Made once, not on every turn of the loop (see the same in ws.rs).
        let gone_now = gone.0.clone().cancelled_owned();
        let kicked_now = kicked.clone().cancelled_owned();
        let shutdown = conn.shutdown.clone().cancelled_owned();
        let expires = sleep_until(token_expires);
        tokio::pin!(gone_now, kicked_now, shutdown, expires);
        let end = loop {
            let step = tokio::select! {
                biased;
                _ = &mut gone_now => Err(End::Gone),
                _ = &mut kicked_now => Err(End::TooSlow),
                _ = &mut shutdown => Err(End::Closing("server shutting down")),
                _ = &mut expires => Err(End::Closing("token expired")),
                // Wakes the loop when a held-back count becomes due (see RECOUNT_EVERY); only
                // when a recount could start then (see the same branch in ws.rs).
                _ = sleep_until(session.recount_at()),
                    if session.count_is_stale() && counting.is_none() && rx.is_empty() => Ok(()),
                count = next_count(&mut counting) => match count {
                    Ok(count) => conn.send_unread_count(session.count_arrived(count)).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot count unread notifications");
                        Err(conn.inbox_failed(e))
                    }
                },
                // A replay held back (see Replays) is due.
                _ = sleep_until(replays.due_at().unwrap_or_else(Instant::now)),
                    if replays.due_at().is_some() => {
                    match replays.take_due(Instant::now()) {
                        // Boxed: the inbox's futures would otherwise size every idle task.
                        Some(after) => Box::pin(replay(&mut session, &mut conn, after)).await,
                        None => Ok(()),
                    }
                }
                control = control_rx.recv() => match control {
                    None => Err(End::Gone),
                    Some(control) => {
                        Box::pin(handle(&mut session, &mut conn, &mut replays, control)).await
                    }
                },
                outbound = rx.recv() => match outbound {
                    None => Err(End::Closing("server shutting down")),
                    Some(outbound) => match session.accept(outbound) {
                        Deliver::Notification(live) => conn.send_live(&live).await,
                        Deliver::Metrics(metrics) => conn.emit("metrics_update", &metrics).await,
                        Deliver::Nothing => Ok(()),
                    },
                },
            };
            // As in ws.rs: a kept count that changed is sent once the queue is drained (no
            // query); a stale one is recounted then, one at a time.
            let step = match step {
                Ok(()) if rx.is_empty() => match session.take_unsent_count() {
                    Some(count) => conn.send_unread_count(count).await,
                    None => Ok(()),
                },
                step => step,
            };
            if step.is_ok() && counting.is_none() && session.count_due() && rx.is_empty() {
                counting = Some(session.start_count());
            }
            if let Err(end) = step {
                break end;
            }
        };
        drop::<Registration>(registration);
        drop::<Arc<UserPlace>>(place);
        // Past this, a client that took nothing more was closed by the heartbeat; a shutting
        // down server does not wait that long.
        let give_up = if shared.shutdown.is_cancelled() {
            Duration::from_secs(1)
        } else {
            2 * shared.cfg.ping_interval + Duration::from_secs(1)
        };
        match end {
            End::Gone => {}
            End::TooSlow => {
                tracing::info!(sid = %s.id, "socket.io client too slow; disconnecting it");
                disconnect(s, give_up).await;
            }
            End::Closing(reason) => {
                tracing::debug!(sid = %s.id, reason, "disconnecting socket.io client");
                disconnect(s, give_up).await;
            }
        }
    });
}

/// Disconnects the client, retrying while the socket's buffer is full: a client that never gets
/// the disconnect packet would stay connected with nothing feeding it, and would neither
/// reconnect nor replay what it missed.
async fn disconnect(s: SocketRef, give_up: Duration) {
    let deadline = Instant::now() + give_up;
    while let Err(SocketError::InternalChannelFull) = s.clone().disconnect() {
        if Instant::now() >= deadline {
            tracing::info!(sid = %s.id, "socket.io client reads nothing; leaving it to the heartbeat");
            return;
        }
        sleep(DISCONNECT_RETRY).await;
    }
}

/// Hands a client event to the connection's task.
fn request(s: &SocketRef, tx: &mpsc::Sender<Control>, event: &str, control: Control) {
    if tx.try_send(control).is_err() {
        emit_error(
            s,
            event,
            "too many requests in flight; wait for the answers".into(),
        );
    }
}

fn emit_error(s: &SocketRef, event: &str, message: String) {
    let _ = s.emit(
        "notification_error",
        &json!({"event": event, "message": message}),
    );
}

/// `since` of `subscribe_notifications`: `{since: N}` (number or numeric string).
fn since_of(data: &Value) -> Option<i64> {
    match data.get("since")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The id of `mark_notification_read`: `{notification_id}` or a bare string.
fn notification_id_of(data: &Value) -> Option<Uuid> {
    let id = match data {
        Value::String(s) => s.as_str(),
        other => other.get("notification_id")?.as_str()?,
    };
    Uuid::parse_str(id).ok()
}

/// Replays what the user missed after `after`; the count follows (coalesced).
async fn replay(session: &mut Session, conn: &mut SocketTransport, after: i64) -> Result<(), End> {
    session.replay(after, conn).await?;
    session.request_count();
    Ok(())
}

async fn handle(
    session: &mut Session,
    conn: &mut SocketTransport,
    replays: &mut Replays,
    control: Control,
) -> Result<(), End> {
    match control {
        Control::Subscribe { since } => {
            match since.and_then(|since| replays.request(since, Instant::now())) {
                Some(after) => replay(session, conn, after).await?,
                // Without `since`, or held back: the count (coalesced too) says the request
                // was heard.
                None => session.request_count(),
            }
            Ok(())
        }
        Control::MarkRead { notification_id } => match session.mark_read(notification_id).await {
            Ok(Some(count)) => {
                conn.emit(
                    "notification_marked_read",
                    &json!({"notification_id": notification_id, "count": count}),
                )
                .await
            }
            Ok(None) => {
                emit_error(
                    &conn.socket,
                    "mark_notification_read",
                    format!("no notification {notification_id} for you"),
                );
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "mark_notification_read failed");
                emit_error(
                    &conn.socket,
                    "mark_notification_read",
                    "the inbox is unavailable, try again".into(),
                );
                Ok(())
            }
        },
    }
}

/// Why a Socket.IO connection's task ends.
enum End {
    /// The client left.
    Gone,
    /// Its buffer is full.
    TooSlow,
    /// The server ends it.
    Closing(&'static str),
}

struct SocketTransport {
    socket: SocketRef,
    /// The hub gave up on this connection.
    kicked: CancellationToken,
    /// The client left.
    gone: CancellationToken,
    shutdown: CancellationToken,
}

impl SocketTransport {
    /// Emits, waiting while the socket's buffer is full (as a WebSocket write waits for the
    /// client): a client reading a burst falls behind for a moment without being dropped; one
    /// that does not keep up lets the connection's queue fill and the hub kicks it.
    async fn emit<T: serde::Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), End> {
        loop {
            match self.socket.emit(event, data) {
                Ok(()) => return Ok(()),
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {}
                Err(SendError::Socket(SocketError::Closed)) => return Err(End::Gone),
                Err(e) => {
                    // Disconnect rather than leave the client connected with nothing feeding it.
                    tracing::warn!(error = %e, event, "cannot emit to a socket.io client");
                    return Err(End::Closing("cannot emit to the client"));
                }
            }
            tokio::select! {
                biased;
                _ = self.kicked.cancelled() => return Err(End::TooSlow),
                _ = self.gone.cancelled() => return Err(End::Gone),
                _ = self.shutdown.cancelled() => return Err(End::Closing("server shutting down")),
                _ = sleep(FULL_BUFFER_RETRY) => {}
            }
        }
    }
}

/// The `new_notification` payload: the notification plus `sequence`, `read`, `withdrawn`.
fn new_notification_payload(stored: &StoredNotification) -> Value {
    let mut payload = serde_json::to_value(&stored.notification).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut payload {
        fields.insert("sequence".into(), json!(stored.sequence));
        fields.insert("read".into(), json!(stored.read));
        fields.insert("withdrawn".into(), json!(stored.withdrawn));
    }
    payload
}

impl Transport for SocketTransport {
    type Error = End;

    async fn send_notification(&mut self, stored: &StoredNotification) -> Result<(), End> {
        self.emit("new_notification", &new_notification_payload(stored))
            .await
    }

    async fn send_live(&mut self, live: &Live) -> Result<(), End> {
        let payload = live.socketio_payload(|stored| new_notification_payload(stored).to_string());
        self.emit("new_notification", payload).await
    }

    async fn send_unread_count(&mut self, count: u64) -> Result<(), End> {
        self.emit("notification_count_update", &json!({ "count": count }))
            .await
    }

    fn inbox_failed(&self, _error: InboxError) -> End {
        End::Closing("inbox unavailable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_payloads_are_read_leniently() {
        assert_eq!(since_of(&json!({"since": 7})), Some(7));
        assert_eq!(since_of(&json!({"since": "7"})), Some(7));
        assert_eq!(since_of(&json!({})), None);
        assert_eq!(since_of(&json!(null)), None);
        let id = Uuid::new_v4();
        assert_eq!(
            notification_id_of(&json!({"notification_id": id})),
            Some(id)
        );
        assert_eq!(notification_id_of(&json!(id.to_string())), Some(id));
        assert_eq!(notification_id_of(&json!({"notification_id": "x"})), None);
        assert_eq!(notification_id_of(&json!(3)), None);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("a.b-c_d"), "a.b-c_d");
        assert_eq!(percent_decode("a%2Eb%3d"), "a.b=");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn new_notification_is_the_notification_plus_its_sequence() {
        let n: vigia_schemas::Notification = serde_json::from_value(json!({
            "id": Uuid::nil(), "tenant_id": 42, "type": "hot_lead", "priority": "urgent",
            "audience": {"user_id": 7}, "title": "t", "message": "m",
            "created_at": "2026-02-27T15:00:00Z"
        }))
        .unwrap();
        let payload = new_notification_payload(&StoredNotification {
            sequence: 9,
            read: false,
            withdrawn: false,
            notification: n,
        });
        assert_eq!(payload["sequence"], 9);
        assert_eq!(payload["type"], "hot_lead");
        assert_eq!(payload["audience"], json!({"user_id": 7}));
        assert_eq!(payload["id"], Uuid::nil().to_string());
    }
}
