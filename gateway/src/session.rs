//! What every live connection does, whatever its transport (`/ws` or Socket.IO): register with
//! the hub under the user's preferences, count unread, replay what a reconnecting client missed
//! without sending anything twice, mark read and tell the user's other connections.
//!
//! A transport implements [`Transport`] (how to write a notification or a count to its socket)
//! and drives a [`Session`] from its own event loop.
//!
//! The unread count is kept up to date from the live notifications, not recounted per
//! notification ([`crate::unread`]). What a client asks for costs inbox queries, so it is
//! coalesced per connection: counts it asks for are sent at most once per
//! [`crate::unread::RECOUNT_EVERY`] ([`Session::request_count`]), and replays at most once per
//! [`crate::throttle::REPLAY_EVERY`] (Socket.IO's `subscribe_notifications`; on `/ws` a replay
//! is asked for only when connecting).

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use crate::audience::Viewer;
use crate::hub::{ConnectionId, Live, Outbound, Subscription};
use crate::inbox::{InboxError, StoredNotification};
use crate::metrics::TransportKind;
use crate::preferences::Preferences;
use crate::unread::{CountEffect, UnreadCounter};
use crate::Shared;

/// Page size of the replay of missed notifications.
const REPLAY_PAGE: u32 = 200;
/// How many sequences pushed live are remembered so that a later replay skips them.
const LIVE_MEMORY: usize = 1024;

/// How a transport writes to its socket.
pub(crate) trait Transport {
    type Error;
    /// A notification as the inbox has it for this user (a replay).
    async fn send_notification(&mut self, stored: &StoredNotification) -> Result<(), Self::Error>;
    /// A notification pushed live: the same frame for every recipient (see [`Live`]).
    async fn send_live(&mut self, live: &Live) -> Result<(), Self::Error>;
    async fn send_unread_count(&mut self, count: u64) -> Result<(), Self::Error>;
    /// The error that ends the connection when the inbox fails.
    fn inbox_failed(&self, error: InboxError) -> Self::Error;
}

/// An unread count being computed (see [`Session::start_count`]): the count and the newest
/// sequence it covers, for [`Session::count_arrived`].
pub(crate) type PendingCount =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(u64, i64), InboxError>> + Send>>;

/// Waits for `pending` if there is one; never completes otherwise (for `select!`).
pub(crate) async fn next_count(
    pending: &mut Option<PendingCount>,
) -> Result<(u64, i64), InboxError> {
    match pending.as_mut() {
        Some(count) => {
            let result = count.await;
            *pending = None;
            result
        }
        None => std::future::pending().await,
    }
}

/// What the transport should write for an item from the hub.
pub(crate) enum Deliver {
    Notification(Arc<Live>),
    Metrics(Arc<Value>),
    /// Nothing now (a duplicate, or only the count changed: see [`Session::take_unsent_count`]).
    Nothing,
}

/// The transport-independent state of one live connection.
pub(crate) struct Session {
    shared: Arc<Shared>,
    pub(crate) viewer: Viewer,
    pub(crate) connection_id: ConnectionId,
    /// Everything visible up to this sequence has been replayed; live copies are skipped.
    replayed_through: Option<i64>,
    /// Recent sequences pushed live, so that a replay requested later skips them.
    live_sent: VecDeque<i64>,
    unread: UnreadCounter,
}

impl Session {
    /// Loads the user's preferences (role defaults if the inbox cannot tell) and registers the
    /// connection with the hub.
    pub(crate) async fn open(
        shared: Arc<Shared>,
        viewer: Viewer,
        transport: TransportKind,
    ) -> (Session, Subscription) {
        let prefs = match shared.inbox.preferences(&viewer).await {
            Ok(prefs) => prefs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load preferences; using the role's defaults");
                Preferences::for_role(viewer.role)
            }
        };
        let subscription = shared
            .hub
            .register(viewer, transport, prefs, shared.cfg.client_queue);
        let session = Session {
            shared,
            viewer,
            connection_id: subscription.id,
            replayed_through: None,
            live_sent: VecDeque::new(),
            unread: UnreadCounter::default(),
        };
        (session, subscription)
    }

    /// The user's unread count, now (and kept from here on).
    pub(crate) async fn unread_count(&mut self) -> Result<u64, InboxError> {
        let asked = tokio::time::Instant::now();
        let (count, through) = self.shared.inbox.unread_count_through(&self.viewer).await?;
        self.unread.counted(count, through, asked);
        Ok(count)
    }

    /// Starts counting in the background: the count query can take a while on a big inbox
    /// (a CEO counts the whole tenant's), and the connection must keep draining its queue
    /// meanwhile — a slow query is not a slow client. What arrives during the count marks it
    /// stale again, so a later count catches up.
    pub(crate) fn start_count(&mut self) -> PendingCount {
        self.unread.start(tokio::time::Instant::now());
        let shared = self.shared.clone();
        let viewer = self.viewer;
        Box::pin(async move { shared.inbox.unread_count_through(&viewer).await })
    }

    /// The count started by [`Session::start_count`] arrived: the count to send (corrected for
    /// what was pushed meanwhile).
    pub(crate) fn count_arrived(&mut self, (count, through): (u64, i64)) -> u64 {
        self.unread.arrived(count, through)
    }

    /// The kept count, if it changed since it was last sent: to send once the queue is drained
    /// (no query).
    pub(crate) fn take_unsent_count(&mut self) -> Option<u64> {
        self.unread.take_unsent()
    }

    /// The client asked for its count: it is sent as a stale one is, once due, so that a
    /// client asking in a loop costs one count query per [`crate::unread::RECOUNT_EVERY`], not
    /// one per frame.
    pub(crate) fn request_count(&mut self) {
        self.unread.request();
    }

    /// Sends the unread count.
    pub(crate) async fn send_unread_count<T: Transport>(
        &mut self,
        t: &mut T,
    ) -> Result<(), T::Error> {
        let count = self.unread_count().await.map_err(|e| {
            tracing::warn!(error = %e, "cannot count unread notifications");
            t.inbox_failed(e)
        })?;
        t.send_unread_count(count).await
    }

    /// Sends, oldest first, what the user can see after sequence `after`, except what this
    /// connection already pushed live; live copies of what it replays are skipped afterwards.
    /// Missed notifications are replayed whatever the preferences: the client asked for them.
    pub(crate) async fn replay<T: Transport>(
        &mut self,
        mut after: i64,
        t: &mut T,
    ) -> Result<(), T::Error> {
        after = after.max(0);
        loop {
            let page = self
                .shared
                .inbox
                .since(&self.viewer, after, REPLAY_PAGE)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "cannot replay missed notifications");
                    t.inbox_failed(e)
                })?;
            for stored in &page {
                if !self.live_sent.contains(&stored.sequence) {
                    t.send_notification(stored).await?;
                }
                after = stored.sequence;
            }
            self.replayed_through = Some(self.replayed_through.map_or(after, |t| t.max(after)));
            if page.len() < REPLAY_PAGE as usize {
                return Ok(());
            }
        }
    }

    /// What to write for an item from the hub.
    pub(crate) fn accept(&mut self, outbound: Outbound) -> Deliver {
        match outbound {
            Outbound::Notification(live) => {
                let stored = &live.stored;
                if self
                    .replayed_through
                    .is_some_and(|through| stored.sequence <= through)
                {
                    return Deliver::Nothing;
                }
                if self.live_sent.len() == LIVE_MEMORY {
                    self.live_sent.pop_front();
                }
                self.live_sent.push_back(stored.sequence);
                self.unread.note(stored.sequence, CountEffect::of(stored));
                Deliver::Notification(live)
            }
            Outbound::Muted(live) => {
                let stored = &live.stored;
                self.unread.note(stored.sequence, CountEffect::of(stored));
                Deliver::Nothing
            }
            Outbound::UnreadCountChanged => {
                self.unread.forget();
                Deliver::Nothing
            }
            Outbound::Metrics(metrics) => Deliver::Metrics(metrics),
        }
    }

    /// Whether the count must be asked from the inbox again. Transports ask once their queue
    /// is drained, so that a burst costs one recount.
    pub(crate) fn count_is_stale(&self) -> bool {
        self.unread.is_stale()
    }

    /// When a stale count may be asked: now if it was not asked within
    /// [`crate::unread::RECOUNT_EVERY`].
    pub(crate) fn recount_at(&self) -> tokio::time::Instant {
        self.unread.recount_at(tokio::time::Instant::now())
    }

    /// Whether a recount of a stale count should start now.
    pub(crate) fn count_due(&self) -> bool {
        self.unread.recount_due(tokio::time::Instant::now())
    }

    /// Marks `id` read for this user and tells the user's other connections. `None` if the
    /// user has no such notification, else the new unread count.
    pub(crate) async fn mark_read(&mut self, id: Uuid) -> Result<Option<u64>, InboxError> {
        if !self.shared.inbox.mark_read(&self.viewer, id).await? {
            return Ok(None);
        }
        self.shared
            .read_state_changed(&self.viewer, Some(self.connection_id))
            .await;
        self.unread_count().await.map(Some)
    }
}
