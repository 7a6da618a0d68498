//! The plain WebSocket transport, `GET /ws` (protocol in [`crate::protocol`]).
//!
//! The token is checked before the upgrade (a bad one gets `401` with the reason), and so is the
//! user's number of connections (past `max_connections_per_user`, `429` with the reason). Each
//! connection is one task: it registers with the hub first, then sends `connection_established`,
//! `unread_count` and, with `?since=N`, everything visible after sequence N; live notifications
//! queued meanwhile are forwarded afterwards, skipping those already replayed, so nothing is
//! missed or sent twice.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::{interval_at, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::auth::{bearer_token, AuthError, Principal};
use crate::hub::{Live, Outbound, Registration, Subscription, UserPlace};
use crate::inbox::{InboxError, StoredNotification};
use crate::metrics::TransportKind;
use crate::protocol::{parse_client_frame, ClientFrame, CloseReason, ServerFrame};
use crate::session::{next_count, Deliver, PendingCount, Session, Transport};
use crate::Shared;

/// Client frames are tiny; anything bigger is not ours.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Read buffer of each connection, allocated up front: clients send tiny frames (a pong is 21
/// bytes on the wire, a `mark_read` about 90); a bigger frame grows it as needed, up to
/// [`MAX_CLIENT_MESSAGE`].
pub(crate) const READ_BUFFER: usize = 512;
/// Frames written are gathered up to this many bytes before a write to the socket (every
/// burst is flushed at its end anyway): not an allocation.
const WRITE_BUFFER: usize = 4 * 1024;
/// How long a close frame may take to get out (a kicked client may first have to drain what the
/// server had already written).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
pub(crate) struct WsParams {
    token: Option<String>,
    since: Option<i64>,
}

pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Query<WsParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = match bearer_token(&headers) {
        Some(Ok(token)) => token,
        Some(Err(e)) => return e.into_response(),
        None => match params.token.as_deref() {
            Some(token) if !token.is_empty() => token,
            _ => return AuthError::MissingToken.into_response(),
        },
    };
    let principal = match shared.verifier.verify(token) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    // Held for as long as the connection lives (dropped with the upgrade if it fails).
    let place = match shared
        .hub
        .take_place(&principal.viewer, shared.cfg.max_connections_per_user)
    {
        Ok(place) => place,
        Err(e) => {
            tracing::debug!(
                tenant_id = principal.viewer.tenant_id,
                user_id = principal.viewer.user_id,
                "websocket refused: {e}"
            );
            return (
                StatusCode::TOO_MANY_REQUESTS,
                Json(serde_json::json!({ "error": e.to_string() })),
            )
                .into_response();
        }
    };
    let since = params.since.map(|s| s.max(0));
    // tungstenite's default buffers (128 KiB each way, the read one allocated up front) would
    // cost ~150 KB per idle connection; clients send tiny frames and every frame sent is
    // flushed at once, so small buffers lose nothing (see `vigia bench gateway`).
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            run(socket, shared, principal, since).await;
            drop::<UserPlace>(place);
        })
}

/// How a connection ended: the client left, or the server closes it for a reason.
enum End {
    Gone,
    Close(CloseReason),
}

/// Live frames written to the socket's buffer before it is flushed (when the connection's queue
/// is drained, or after this many): a notification and the count that follows it leave in one
/// write, and a burst in a few.
const FLUSH_EVERY: usize = 16;

struct Connection {
    sink: SplitSink<WebSocket, Message>,
    /// Frames fed to the sink since it was last flushed.
    unflushed: usize,
    principal: Principal,
    ping_interval: Duration,
    kicked: CancellationToken,
    shutdown: CancellationToken,
}

async fn run(socket: WebSocket, shared: Arc<Shared>, principal: Principal, since: Option<i64>) {
    let (sink, mut stream) = socket.split();
    let (mut session, subscription) = Box::pin(Session::open(
        shared.clone(),
        principal.viewer,
        TransportKind::WebSocket,
    ))
    .await;
    let Subscription {
        id,
        mut rx,
        kicked,
        registration,
    } = subscription;
    let mut conn = Connection {
        sink,
        unflushed: 0,
        principal,
        ping_interval: shared.cfg.ping_interval,
        kicked,
        // A token of its own, cancelled with the server's: checked on every wake-up and write,
        // where the server's one token would be one lock shared by every connection.
        shutdown: shared.shutdown.child_token(),
    };
    tracing::debug!(
        connection = id,
        tenant_id = principal.viewer.tenant_id,
        user_id = principal.viewer.user_id,
        "websocket connected"
    );
    let end = conn.serve(&mut session, &mut stream, &mut rx, since).await;
    // Unregister before closing: nothing more is queued for a connection on its way out.
    drop::<Registration>(registration);
    if let End::Close(reason) = end {
        tracing::debug!(
            connection = id,
            reason = reason.reason(),
            "closing websocket"
        );
        let frame = Message::Close(Some(CloseFrame {
            code: reason.code(),
            reason: reason.reason().into(),
        }));
        let _ = timeout(CLOSE_TIMEOUT, conn.sink.send(frame)).await;
        let _ = timeout(Duration::from_secs(1), conn.sink.close()).await;
    }
}

fn remaining(until: SystemTime) -> Duration {
    until
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

fn notification_frame(stored: &StoredNotification) -> ServerFrame<'_> {
    ServerFrame::Notification {
        sequence: stored.sequence,
        read: stored.read,
        withdrawn: stored.withdrawn,
        notification: &stored.notification,
    }
}

impl Transport for Connection {
    type Error = End;

    async fn send_notification(&mut self, stored: &StoredNotification) -> Result<(), End> {
        self.send(&notification_frame(stored)).await
    }

    async fn send_live(&mut self, live: &Live) -> Result<(), End> {
        let text = live.ws_frame(|stored| notification_frame(stored).to_json());
        self.feed(Message::Text(text)).await
    }

    async fn send_unread_count(&mut self, count: u64) -> Result<(), End> {
        self.send(&ServerFrame::UnreadCount { count }).await
    }

    fn inbox_failed(&self, _error: InboxError) -> End {
        End::Close(CloseReason::InboxUnavailable)
    }
}

impl Connection {
    async fn serve(
        &mut self,
        session: &mut Session,
        stream: &mut SplitStream<WebSocket>,
        rx: &mut tokio::sync::mpsc::Receiver<Outbound>,
        since: Option<i64>,
    ) -> End {
        match self.serve_inner(session, stream, rx, since).await {
            Ok(()) => End::Gone,
            Err(end) => end,
        }
    }

    async fn serve_inner(
        &mut self,
        session: &mut Session,
        stream: &mut SplitStream<WebSocket>,
        rx: &mut tokio::sync::mpsc::Receiver<Outbound>,
        since: Option<i64>,
    ) -> Result<(), End> {
        let viewer = self.principal.viewer;
        let ping_interval = self.ping_interval;
        let token_expires = Instant::now() + remaining(self.principal.expires_at_time());

        self.send(&ServerFrame::ConnectionEstablished {
            user_id: viewer.user_id,
            tenant_id: viewer.tenant_id,
            role: viewer.role,
            server_time: Utc::now(),
            ping_interval_ms: ping_interval.as_millis() as u64,
            token_expires_at: DateTime::<Utc>::from(self.principal.expires_at_time()),
        })
        .await?;
        // The inbox's futures are boxed where they are awaited: a task's size is that of its
        // largest await, and an idle connection sits in the loop below, not in these.
        Box::pin(session.send_unread_count(self)).await?;
        if let Some(after) = since {
            Box::pin(session.replay(after, self)).await?;
        }

        let mut ping = interval_at(Instant::now() + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_pong = Instant::now();
        let mut counting: Option<PendingCount> = None;
        // Made once, not on every turn of the loop: a new `cancelled()` joins the token's list of
        // waiters (a lock) and a new sleep joins the timer wheel, and each leaves it again when
        // dropped — per frame delivered.
        let kicked = self.kicked.clone().cancelled_owned();
        let shutdown = self.shutdown.clone().cancelled_owned();
        let expires = sleep_until(token_expires);
        tokio::pin!(kicked, shutdown, expires);
        loop {
            tokio::select! {
                biased;
                _ = &mut kicked => return Err(End::Close(CloseReason::TooSlow)),
                _ = &mut shutdown => return Err(End::Close(CloseReason::ShuttingDown)),
                _ = &mut expires => return Err(End::Close(CloseReason::TokenExpired)),
                // Wakes the loop when a held-back count becomes due (see RECOUNT_EVERY). Only
                // when a recount could start then: with one in flight or frames waiting, a due
                // sleep would win this biased select on every turn and starve both (a busy loop
                // that filled the queue and got CEOs dropped as "too slow" under load).
                _ = sleep_until(session.recount_at()),
                    if session.count_is_stale() && counting.is_none() && rx.is_empty() => {}
                count = next_count(&mut counting) => match count {
                    Ok(count) => self.send_unread_count(session.count_arrived(count)).await?,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot count unread notifications");
                        return Err(self.inbox_failed(e));
                    }
                },
                _ = ping.tick() => {
                    if last_pong.elapsed() >= 2 * ping_interval {
                        return Err(End::Close(CloseReason::PingTimeout));
                    }
                    self.send(&ServerFrame::Ping).await?;
                }
                outbound = rx.recv() => match outbound {
                    // The hub is gone: the gateway is shutting down.
                    None => return Err(End::Close(CloseReason::ShuttingDown)),
                    Some(outbound) => match session.accept(outbound) {
                        Deliver::Notification(live) => self.send_live(&live).await?,
                        Deliver::Metrics(metrics) => {
                            if let Some(metrics) = metrics.as_object() {
                                self.send(&ServerFrame::Metrics { metrics }).await?
                            }
                        }
                        Deliver::Nothing => {}
                    },
                },
                incoming = stream.next() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                    // Answered by the WebSocket layer itself.
                    Some(Ok(Message::Ping(_))) => {}
                    Some(Ok(Message::Binary(_))) => {
                        self.send_error("binary frames are not supported: send JSON text frames".into()).await?;
                    }
                    Some(Ok(Message::Text(text))) => match parse_client_frame(&text) {
                        Ok(ClientFrame::Pong) => last_pong = Instant::now(),
                        // Coalesced: answered once due (see RECOUNT_EVERY).
                        Ok(ClientFrame::GetUnreadCount) => session.request_count(),
                        Ok(ClientFrame::MarkRead { notification_id }) => {
                            match Box::pin(session.mark_read(notification_id)).await {
                                Ok(Some(count)) => self.send_unread_count(count).await?,
                                Ok(None) => {
                                    self.send_error(format!(
                                        "mark_read: no notification {notification_id} for you"
                                    ))
                                    .await?;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "mark_read failed");
                                    self.send_error("mark_read failed: the inbox is unavailable, try again".into()).await?;
                                }
                            }
                        }
                        Err(e) => self.send_error(e.to_string()).await?,
                    },
                },
            }
            if rx.is_empty() {
                // A kept count that changed: one frame per burst, no query, written with the
                // burst's last notification.
                if let Some(count) = session.take_unsent_count() {
                    let frame = ServerFrame::UnreadCount { count };
                    self.feed(Message::Text(frame.to_json().into())).await?;
                }
                self.flush().await?;
                // One recount per burst: only once the queue is drained, one at a time.
                if counting.is_none() && session.count_due() {
                    counting = Some(session.start_count());
                }
            }
        }
    }

    async fn send_error(&mut self, message: String) -> Result<(), End> {
        self.send(&ServerFrame::Error { message }).await
    }

    /// Writes one frame, giving up if the hub kicks this connection or the server shuts down
    /// while the write waits for a slow client.
    async fn send(&mut self, frame: &ServerFrame<'_>) -> Result<(), End> {
        self.send_message(Message::Text(frame.to_json().into()))
            .await
    }

    async fn send_message(&mut self, message: Message) -> Result<(), End> {
        let sent = Self::unless_ended(&self.kicked, &self.shutdown, self.sink.send(message)).await;
        // `send` flushes what was fed before it too.
        self.unflushed = 0;
        sent
    }

    /// Writes one frame without flushing (see [`FLUSH_EVERY`]).
    async fn feed(&mut self, message: Message) -> Result<(), End> {
        Self::unless_ended(&self.kicked, &self.shutdown, self.sink.feed(message)).await?;
        self.unflushed += 1;
        if self.unflushed >= FLUSH_EVERY {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends what was fed.
    async fn flush(&mut self) -> Result<(), End> {
        if self.unflushed == 0 {
            return Ok(());
        }
        Self::unless_ended(&self.kicked, &self.shutdown, self.sink.flush()).await?;
        self.unflushed = 0;
        Ok(())
    }

    /// A write to the socket, given up if the hub kicks this connection or the server shuts
    /// down while it waits for a slow client.
    async fn unless_ended<E>(
        kicked: &CancellationToken,
        shutdown: &CancellationToken,
        write: impl std::future::Future<Output = Result<(), E>>,
    ) -> Result<(), End> {
        // Most writes complete at once (the socket has room): then nothing needs to wait for
        // the tokens, and joining their lists of waiters (a lock each) is skipped. The order of
        // the checks is the select's.
        if kicked.is_cancelled() {
            return Err(End::Close(CloseReason::TooSlow));
        }
        if shutdown.is_cancelled() {
            return Err(End::Close(CloseReason::ShuttingDown));
        }
        let mut write = std::pin::pin!(write);
        if let Some(written) = (&mut write).now_or_never() {
            return written.map_err(|_| End::Gone);
        }
        tokio::select! {
            biased;
            _ = kicked.cancelled() => Err(End::Close(CloseReason::TooSlow)),
            _ = shutdown.cancelled() => Err(End::Close(CloseReason::ShuttingDown)),
            written = write => written.map_err(|_| End::Gone),
        }
    }
}
