//! Live connections, grouped per tenant, and the fan-out of notifications to them.
//!
//! Transport-agnostic: a transport (the plain WebSocket today, Socket.IO later) registers a
//! [`Subscription`], drains its queue and writes to its socket however it likes. Each connection
//! has its own bounded queue; the hub only ever `try_send`s, so a connection whose queue is full
//! is kicked (its `kicked` token is cancelled, the transport closes it with "too slow") and never
//! delays anybody else.
//!
//! The hub also counts each user's live connections ([`Hub::take_place`]): a transport takes a
//! place before it accepts a connection, so that one user (one token) cannot open connections
//! without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigia_schemas::{TenantId, UserId};

use crate::audience::{can_see, sees_whole_tenant, Viewer};
use crate::inbox::StoredNotification;
use crate::metrics::{Metrics, TransportKind, TransportLabel};
use crate::preferences::{should_push, Preferences};

pub(crate) type ConnectionId = u64;

/// A notification pushed live, shared by every connection it goes to. A live push is the same
/// for every recipient (not read, not withdrawn yet), so each transport encodes its frame once
/// per notification, not once per connection: a broadcast to 10,000 connections serialises
/// the notification twice at most.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) stored: StoredNotification,
    ws_frame: OnceLock<axum::extract::ws::Utf8Bytes>,
    socketio_payload: OnceLock<Box<serde_json::value::RawValue>>,
}

impl Live {
    pub(crate) fn new(stored: StoredNotification) -> Live {
        Live {
            stored,
            ws_frame: OnceLock::new(),
            socketio_payload: OnceLock::new(),
        }
    }

    /// The `/ws` frame, encoded by `encode` the first time.
    pub(crate) fn ws_frame(
        &self,
        encode: impl FnOnce(&StoredNotification) -> String,
    ) -> axum::extract::ws::Utf8Bytes {
        self.ws_frame
            .get_or_init(|| encode(&self.stored).into())
            .clone()
    }

    /// The Socket.IO event's payload, encoded by `encode` the first time.
    pub(crate) fn socketio_payload(
        &self,
        encode: impl FnOnce(&StoredNotification) -> String,
    ) -> &serde_json::value::RawValue {
        self.socketio_payload.get_or_init(|| {
            serde_json::value::RawValue::from_string(encode(&self.stored))
                .expect("the encoder writes JSON")
        })
    }
}

/// What the hub queues for a connection.
#[derive(Debug)]
pub(crate) enum Outbound {
    Notification(Arc<Live>),
    /// A notification the user's preferences keep off this connection: it only counts.
    Muted(Arc<Live>),
    /// The user's read state changed elsewhere (another connection, REST): recount.
    UnreadCountChanged,
    /// Live metrics of the tenant (CEO/manager connections only).
    Metrics(Arc<serde_json::Value>),
}

struct Connection {
    viewer: Viewer,
    /// The user's preferences, applied at push time.
    prefs: Arc<Preferences>,
    tx: mpsc::Sender<Outbound>,
    kicked: CancellationToken,
    /// Set when `kicked` is cancelled: read by every push, where the token's own check would
    /// take its lock, which the connection's task takes too.
    was_kicked: AtomicBool,
    transport: TransportKind,
}

struct HubInner {
    tenants: RwLock<HashMap<TenantId, HashMap<ConnectionId, Connection>>>,
    next_id: AtomicU64,
    metrics: Metrics,
    /// Live connections (and connections being set up) per user.
    places: Mutex<HashMap<(TenantId, UserId), usize>>,
}

/// A user's place among their connections; given back when dropped.
pub(crate) struct UserPlace {
    hub: Arc<HubInner>,
    user: (TenantId, UserId),
}

impl Drop for UserPlace {
    fn drop(&mut self) {
        let mut places = self.hub.places.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = places.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                places.remove(&self.user);
            }
        }
    }
}

/// Refusal of one more connection of a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many connections for this user: {max} are open (gateway.max_connections_per_user); \
     close one (another tab or device) and retry"
)]
pub(crate) struct TooManyConnections {
    pub(crate) max: usize,
}

#[derive(Clone)]
pub(crate) struct Hub {
    inner: Arc<HubInner>,
}

/// A registered connection. Dropping its [`Registration`] unregisters it.
pub(crate) struct Subscription {
    pub(crate) id: ConnectionId,
    pub(crate) rx: mpsc::Receiver<Outbound>,
    /// Cancelled when the hub gives up on this connection (its queue was full).
    pub(crate) kicked: CancellationToken,
    pub(crate) registration: Registration,
}

pub(crate) struct Registration {
    hub: Arc<HubInner>,
    tenant_id: TenantId,
    id: ConnectionId,
    transport: TransportKind,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut tenants = self.hub.tenants.write().unwrap_or_else(|e| e.into_inner());
        if let Some(connections) = tenants.get_mut(&self.tenant_id) {
            connections.remove(&self.id);
            if connections.is_empty() {
                tenants.remove(&self.tenant_id);
            }
        }
        self.hub
            .metrics
            .connections
            .get_or_create(&self.transport.into())
            .dec();
    }
}

impl Hub {
    pub(crate) fn new(metrics: Metrics) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                tenants: RwLock::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                metrics,
                places: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A place for one more connection of `viewer`'s user, unless they have `max` already.
    pub(crate) fn take_place(
        &self,
        viewer: &Viewer,
        max: usize,
    ) -> Result<UserPlace, TooManyConnections> {
        let user = (viewer.tenant_id, viewer.user_id);
        let mut places = self.inner.places.lock().unwrap_or_else(|e| e.into_inner());
        let taken = places.entry(user).or_default();
        if *taken >= max {
            return Err(TooManyConnections { max });
        }
        *taken += 1;
        Ok(UserPlace {
            hub: self.inner.clone(),
            user,
        })
    }

    /// Registers a connection of `viewer` over `transport`, whose preferences are `prefs`,
    /// with a queue of `queue` frames.
    pub(crate) fn register(
        &self,
        viewer: Viewer,
        transport: TransportKind,
        prefs: Preferences,
        queue: usize,
    ) -> Subscription {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(queue.max(1));
        let kicked = CancellationToken::new();
        self.inner
            .tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(viewer.tenant_id)
            .or_default()
            .insert(
                id,
                Connection {
                    viewer,
                    prefs: Arc::new(prefs),
                    tx,
                    kicked: kicked.clone(),
                    was_kicked: AtomicBool::new(false),
                    transport,
                },
            );
        self.inner
            .metrics
            .connections
            .get_or_create(&transport.into())
            .inc();
        Subscription {
            id,
            rx,
            kicked,
            registration: Registration {
                hub: self.inner.clone(),
                tenant_id: viewer.tenant_id,
                id,
                transport,
            },
        }
    }

    /// Queues `stored` for every connection of its tenant allowed to see it whose user's
    /// preferences let it through at `now`; the connections that may see it but muted it get
    /// it as [`Outbound::Muted`], only for their unread count. Returns how many got the
    /// notification.
    pub(crate) fn push(&self, live: Arc<Live>, now: DateTime<Utc>) -> usize {
        let n = &live.stored.notification;
        let tenants = self.inner.tenants.read().unwrap_or_else(|e| e.into_inner());
        let Some(connections) = tenants.get(&n.tenant_id) else {
            return 0;
        };
        let mut reached: HashMap<TransportKind, u64> = HashMap::new();
        for (id, conn) in connections {
            if !can_see(&conn.viewer, n.tenant_id, &n.audience) {
                continue;
            }
            if !should_push(&conn.prefs, n, now) {
                self.inner.metrics.muted.inc();
                self.offer(*id, conn, Outbound::Muted(live.clone()));
            } else if self.offer(*id, conn, Outbound::Notification(live.clone())) {
                *reached.entry(conn.transport).or_default() += 1;
            }
        }
        for (transport, n) in &reached {
            let label = TransportLabel::from(*transport);
            self.inner.metrics.pushed.get_or_create(&label).inc_by(*n);
        }
        reached.values().sum::<u64>() as usize
    }

    /// Queues `metrics` for the CEO/manager connections of `tenant_id`. Returns how many.
    pub(crate) fn push_metrics(
        &self,
        tenant_id: TenantId,
        metrics: Arc<serde_json::Value>,
    ) -> usize {
        let tenants = self.inner.tenants.read().unwrap_or_else(|e| e.into_inner());
        let Some(connections) = tenants.get(&tenant_id) else {
            return 0;
        };
        connections
            .iter()
            .filter(|(_, conn)| sees_whole_tenant(conn.viewer.role))
            .filter(|(id, conn)| self.offer(**id, conn, Outbound::Metrics(metrics.clone())))
            .count()
    }

    /// Applies `prefs` to every open connection of that user.
    pub(crate) fn set_preferences(&self, tenant_id: TenantId, user_id: UserId, prefs: Preferences) {
        let prefs = Arc::new(prefs);
        let mut tenants = self
            .inner
            .tenants
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(connections) = tenants.get_mut(&tenant_id) {
            for conn in connections.values_mut() {
                if conn.viewer.user_id == user_id {
                    conn.prefs = prefs.clone();
                }
            }
        }
    }

    /// Tells `user_id`'s connections (except `except`) that their unread count changed.
    pub(crate) fn unread_changed(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
        except: Option<ConnectionId>,
    ) {
        let tenants = self.inner.tenants.read().unwrap_or_else(|e| e.into_inner());
        let Some(connections) = tenants.get(&tenant_id) else {
            return;
        };
        for (id, conn) in connections {
            if conn.viewer.user_id == user_id && Some(*id) != except {
                self.offer(*id, conn, Outbound::UnreadCountChanged);
            }
        }
    }

    /// Tells every connection that its unread count may have changed (read-state signals from
    /// other instances may have been lost).
    pub(crate) fn all_counts_changed(&self) {
        let tenants = self.inner.tenants.read().unwrap_or_else(|e| e.into_inner());
        for connections in tenants.values() {
            for (id, conn) in connections {
                self.offer(*id, conn, Outbound::UnreadCountChanged);
            }
        }
    }

    /// Queues without waiting; a full queue gets the connection kicked.
    fn offer(&self, id: ConnectionId, conn: &Connection, message: Outbound) -> bool {
        if conn.was_kicked.load(Ordering::Relaxed) {
            return false;
        }
        match conn.tx.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if conn.was_kicked.swap(true, Ordering::Relaxed) {
                    return false;
                }
                conn.kicked.cancel();
                self.inner.metrics.dropped_clients.inc();
                tracing::info!(
                    connection = id,
                    tenant_id = conn.viewer.tenant_id,
                    user_id = conn.viewer.user_id,
                    "client too slow: its queue is full; disconnecting it"
                );
                false
            }
            // The connection is ending; its registration goes away with it.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.inner
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(HashMap::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use uuid::Uuid;
    use vigia_schemas::{Audience, Notification, NotificationType, Priority, Role};

    fn hub() -> Hub {
        Hub::new(Metrics::register(&mut Registry::default()))
    }

    fn viewer(tenant_id: TenantId, user_id: UserId, role: Role) -> Viewer {
        Viewer {
            tenant_id,
            user_id,
            role,
        }
    }

    /// Registers with the role's default preferences.
    fn register(hub: &Hub, viewer: Viewer, queue: usize) -> Subscription {
        hub.register(
            viewer,
            TransportKind::WebSocket,
            Preferences::for_role(viewer.role),
            queue,
        )
    }

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    fn stored(tenant_id: TenantId, audience: Audience, sequence: i64) -> Arc<Live> {
        Arc::new(Live::new(StoredNotification {
            sequence,
            read: false,
            withdrawn: false,
            notification: Notification {
                id: Uuid::new_v4(),
                tenant_id,
                kind: NotificationType::HotLead,
                priority: Priority::Urgent,
                audience,
                title: "t".into(),
                message: "m".into(),
                data: serde_json::Value::Null,
                actions: vec![],
                created_at: chrono::Utc::now(),
                withdraws: None,
            },
        }))
    }

    fn received(sub: &mut Subscription) -> Vec<i64> {
        let mut seqs = vec![];
        while let Ok(m) = sub.rx.try_recv() {
            if let Outbound::Notification(live) = m {
                seqs.push(live.stored.sequence);
            }
        }
        seqs
    }

    #[test]
    fn pushes_follow_the_audience_rules() {
        let hub = hub();
        let mut a = register(&hub, viewer(1, 10, Role::Seller), 8);
        let mut b = register(&hub, viewer(1, 11, Role::Seller), 8);
        let mut ceo = register(&hub, viewer(1, 1, Role::Ceo), 8);
        let mut other = register(&hub, viewer(2, 10, Role::Ceo), 8);
        assert_eq!(
            hub.push(stored(1, Audience::User { user_id: 10 }, 1), now()),
            2
        );
        assert_eq!(
            hub.push(stored(1, Audience::Role { role: Role::Seller }, 2), now()),
            3
        );
        assert_eq!(received(&mut a), vec![1, 2]);
        assert_eq!(received(&mut b), vec![2]);
        assert_eq!(received(&mut ceo), vec![1, 2]);
        assert_eq!(received(&mut other), Vec::<i64>::new());
    }

    #[test]
    fn a_full_queue_kicks_only_that_connection() {
        let hub = hub();
        let slow = register(&hub, viewer(1, 10, Role::Seller), 2);
        let mut fast = register(&hub, viewer(1, 10, Role::Seller), 8);
        for seq in 1..=3 {
            hub.push(stored(1, Audience::User { user_id: 10 }, seq), now());
            received(&mut fast);
        }
        assert!(slow.kicked.is_cancelled());
        assert!(!fast.kicked.is_cancelled());
        hub.push(stored(1, Audience::User { user_id: 10 }, 4), now());
        assert_eq!(received(&mut fast), vec![4]);
    }

    #[test]
    fn dropping_the_registration_unregisters() {
        let hub = hub();
        let a = register(&hub, viewer(1, 10, Role::Seller), 8);
        let _b = register(&hub, viewer(2, 10, Role::Seller), 8);
        assert_eq!(hub.connection_count(), 2);
        drop(a);
        assert_eq!(hub.connection_count(), 1);
        assert_eq!(
            hub.push(stored(1, Audience::User { user_id: 10 }, 1), now()),
            0
        );
    }

    #[test]
    fn a_user_has_at_most_max_places_and_gets_them_back() {
        let hub = hub();
        let ana = viewer(1, 10, Role::Seller);
        let places: Vec<_> = (0..3).map(|_| hub.take_place(&ana, 3).unwrap()).collect();
        assert_eq!(
            hub.take_place(&ana, 3).err(),
            Some(TooManyConnections { max: 3 })
        );
        // Another user, or the same id in another tenant, is counted apart.
        assert!(hub.take_place(&viewer(1, 11, Role::Seller), 3).is_ok());
        let other_tenant = hub.take_place(&viewer(2, 10, Role::Seller), 3).unwrap();
        drop(places);
        assert!(hub.take_place(&ana, 3).is_ok());
        drop(other_tenant);
        assert!(
            hub.inner.places.lock().unwrap().is_empty(),
            "nothing left behind"
        );
    }

    #[test]
    fn count_changes_reach_the_users_other_connections() {
        let hub = hub();
        let mut phone = register(&hub, viewer(1, 10, Role::Seller), 8);
        let mut laptop = register(&hub, viewer(1, 10, Role::Seller), 8);
        let mut colleague = register(&hub, viewer(1, 11, Role::Seller), 8);
        hub.unread_changed(1, 10, Some(phone.id));
        assert!(phone.rx.try_recv().is_err());
        assert!(matches!(
            laptop.rx.try_recv(),
            Ok(Outbound::UnreadCountChanged)
        ));
        assert!(colleague.rx.try_recv().is_err());
    }

    #[test]
    fn muted_connections_get_the_notification_only_to_count_it() {
        let hub = hub();
        let mut seller = register(&hub, viewer(1, 10, Role::Seller), 8);
        let mut secretary = register(&hub, viewer(1, 20, Role::Secretary), 8);
        // Hot leads are not among a secretary's default types.
        let n = stored(
            1,
            Audience::Role {
                role: Role::Secretary,
            },
            1,
        );
        assert_eq!(hub.push(n, now()), 0);
        assert!(matches!(secretary.rx.try_recv(), Ok(Outbound::Muted(_))));
        assert!(seller.rx.try_recv().is_err(), "not in the audience at all");

        let all_types = Preferences::for_role(Role::Ceo);
        hub.set_preferences(1, 20, all_types);
        let n = stored(
            1,
            Audience::Role {
                role: Role::Secretary,
            },
            2,
        );
        assert_eq!(hub.push(n, now()), 1);
        assert_eq!(received(&mut secretary), vec![2]);

        let off = Preferences {
            push: false,
            ..Preferences::for_role(Role::Seller)
        };
        hub.set_preferences(1, 10, off);
        assert_eq!(
            hub.push(stored(1, Audience::User { user_id: 10 }, 3), now()),
            0
        );
        assert!(received(&mut seller).is_empty());
    }
}
