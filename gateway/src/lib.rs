//! The notification gateway (contract §5): it consumes the `notifications` topic, keeps every
//! notification in a persistent inbox, and pushes each one the moment it arrives to the WebSocket
//! clients allowed to see it.
//!
//! What it does:
//! - **Auth** ([`auth`]): JWT HS256 (and RS256 with an identity provider's public key) with
//!   claims `sub` (user id), `tenant_id`, `role`, `exp`;
//!   `Authorization: Bearer <jwt>`, or `?token=<jwt>` on `/ws` and Socket.IO, or the Socket.IO
//!   handshake's `auth: {token}`. [`issue_token`] mints tokens
//!   (for `vigia token` and tests).
//! - **Audience rules** ([`can_see`]): a seller sees what is addressed to them, everyone sees what
//!   is addressed to their role, CEO/manager see all of their tenant, nobody sees another tenant.
//! - **Inbox** ([`Inbox`]): SQLite (default) or PostgreSQL through sqlx; insert-if-new keyed by the
//!   notification's deterministic id, unread counts, mark read / read all / clear, newest-first
//!   pages and "everything after sequence N" for clients that reconnect.
//! - **Preferences** ([`preferences`]): per user — enabled types, minimum priority, quiet hours
//!   and work days in the user's time zone, push/e-mail — with role defaults; stored in the
//!   inbox database, `GET|PUT /v1/preferences`. [`should_push`] decides at push time; muted
//!   notifications stay in the inbox (and the unread count) but are not pushed live.
//! - **Hub**: connections grouped per tenant, each with a bounded queue and its user's
//!   preferences; a client whose queue is full is disconnected ("too slow") instead of slowing
//!   anybody else. The hub knows nothing of the wire protocols.
//! - **Transports**: the plain WebSocket `/ws` (protocol in [`protocol`]), Socket.IO v4 at
//!   `/socket.io/` (websocket and long-polling; events in `socketio.rs`), both driving the same
//!   session logic (`session.rs`: unread counts, catch-up, mark read); and the REST inbox
//!   `/v1/notifications*`.
//! - **Live metrics** ([`board`]): the latest seller-metrics snapshot of every seller, read from
//!   the `seller_metrics` topic, with the team's response times of the latest instant and
//!   "unanswered now" kept moving between snapshots by the unanswered alerts;
//!   `GET /v1/metrics/tenant` and `GET /v1/metrics/sellers`, and a `metrics` push to
//!   CEO/manager connections on change, at most once per second per tenant (coalesced, latest
//!   wins; [`Gateway::publish_metrics`]).
//! - **Channels** ([`channels`]): what a tenant configures (by default performance alerts and
//!   daily reports) also goes out by Slack and Teams, and by e-mail to fixed addresses and to
//!   the users of the tenant's address book whose preferences ask for it; through a durable
//!   outbox in the inbox database, with retries, never blocking.
//! - **People** ([`people`]): each user's name and role from the CRM's `user.upserted` events
//!   (read from the `events` topic), kept in the inbox database for every instance;
//!   `GET /v1/people`, so that the dashboard names people instead of showing ids.
//! - **Kafka consumers** of the `notifications` topic (decode, insert if new with its channel
//!   deliveries and the topic's new positions, push in sequence order what this instance has not
//!   pushed yet), of the `seller_metrics` topic (the board) and of the `events` topic (its
//!   `user.upserted` only: the people directory).
//!
//! What it does not: produce notifications or compute metrics (the processors do); serve
//! `/health` or `/metrics` (the root binary does, using [`Gateway::ready`] and the registry
//! passed to [`Gateway::start`]).
//!
//! ## Limits
//! What one client (one token) may cost, whatever it sends:
//! - at most `max_connections_per_user` live connections per user, `/ws` and Socket.IO together
//!   (default 50; the next one gets `429` on `/ws`, a `connect_error` on Socket.IO);
//! - Socket.IO sessions that have not authenticated: at most `max_unauthenticated_sessions` at
//!   once (default 1,000; the next handshake gets `503`), each closed after
//!   `socketio_connect_timeout` (default 10 s);
//! - frames that cost an inbox query are coalesced per connection: an unread count is computed
//!   at most every 250 ms however often `get_unread_count` comes, and a replay of missed
//!   notifications (`subscribe_notifications {since}`) runs at most every 5 s;
//! - tokens valid for longer than `jwt_max_lifetime` (default 24 h) are refused.
//!
//! The HTTP server itself (header and body read timeouts, connections in all) is the root
//! binary's (`src/http.rs`).
//!
//! ## Withdrawals
//! A notification with `withdraws: Some(id)` (e.g. "the conversation was answered") resolves the
//! notification it names, within the same tenant: that one stops counting as unread for everybody
//! in its audience. The withdrawal itself is stored (so reconnecting clients replay it) and pushed
//! live (so open clients can remove the withdrawn card), but it never counts as unread itself.
//! If the withdrawal arrives before the notification it withdraws, the late original is stored
//! already resolved and is not pushed.
//!
//! ## Several gateway instances
//! Any number of instances may share one **PostgreSQL** inbox behind any load balancer (no
//! stickiness needed beyond a connection's life). Each instance reads every notification from
//! Kafka (it assigns itself every partition: no group splits them) and stores it if new (the
//! first instance wins); each pushes every notification to its own clients once, in the
//! inbox's sequence order, whoever stored it (`cluster.rs`); `since`, unread counts, mark-read
//! and preferences are the database's, so any instance answers alike, and a read or a
//! preference change on one instance reaches the user's sockets on the others (PostgreSQL
//! `LISTEN`/`NOTIFY`). Sequences are gap-free under concurrent writers (`inbox.rs`). The
//! channel outbox is leased row by row: a delivery goes out from one instance, and is taken
//! over after its lease if that instance dies (`channels`).
//!
//! Where to read Kafka from is the inbox's, not a consumer group's: the offsets after the last
//! stored records are advanced in the transaction that stores them (`consumer.rs`), so an
//! instance restarted with the same or a new `instance_id`, or a new instance, reads on from
//! where the inbox is complete — it misses nothing, and what it reads again is recognised and
//! not pushed again (an instance pushes only sequences above the inbox's newest at its start).
//! Offsets are also committed to the consumer group `<group_id>.<instance_id>`, for lag
//! monitoring only.
//!
//! `instance_id` (`VIGIA_GATEWAY_INSTANCE_ID`) names the instance in logs, in that group and in
//! the outbox leases; default: `$HOSTNAME` (a container's name), else a random one.
//!
//! **SQLite** serves one instance: a second gateway started on the same SQLite file is refused
//! (the first holds an exclusive lock on `<file>.lock` for as long as it runs; the operating
//! system releases it when the process ends, even by `kill -9`).

mod audience;
pub mod auth;
pub mod board;
pub mod channels;
mod cluster;
mod consumer;
mod hub;
mod inbox;
mod metrics;
pub mod people;
pub mod preferences;
pub mod protocol;
mod rest;
mod session;
mod socketio;
mod throttle;
mod unread;
mod web;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use vigia_schemas::{Notification, Topics};

pub use audience::{can_see, sees_whole_tenant, Viewer};
pub use auth::{issue_token, AuthError, Principal, TokenPolicy, TokenVerifier};
pub use inbox::{
    Inbox, InboxError, Inserted, KafkaPosition, OutboxEntry, OutboxRow, PendingStore, Person,
    PersonUpsert, StoredBatch, StoredNotification,
};
pub use preferences::{email_at, should_push, Preferences, QuietHours};
pub use vigia_schemas::Role;

use hub::Hub;
use metrics::Metrics;

/// The notifications of a batch this instance stored itself, with their sequences.
fn in_hand(
    batch: Vec<Notification>,
    inserted: &[Option<Inserted>],
) -> Vec<(i64, Notification, bool)> {
    batch
        .into_iter()
        .zip(inserted)
        .filter_map(|(n, i)| i.map(|i| (i.sequence, n, i.already_withdrawn)))
        .collect()
}

/// Live metrics are pushed at most this often per tenant.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// The gateway's section of the configuration (`[gateway]` in the root binary's TOML). Unknown
/// keys are refused, like in every other section: a typo must not be a setting silently ignored.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HMAC secret of the HS256 JWTs. Required unless `jwt_rs256_public_key` is set.
    pub jwt_secret: String,
    /// PEM file with the RSA public key of an identity provider whose RS256 JWTs are accepted
    /// too (only RS256 if `jwt_secret` is empty).
    pub jwt_rs256_public_key: Option<std::path::PathBuf>,
    /// `sqlite://<path>?mode=rwc` or `postgres://user:pass@host/db`. The root binary sets the
    /// default to a file in its data directory.
    pub database_url: String,
    /// Prefix of the Kafka consumer groups: the notifications consumer commits to
    /// `<group_id>.<instance_id>` (for lag monitoring: where to read is the inbox's, see
    /// "Several gateway instances").
    pub group_id: String,
    /// This instance's name (`VIGIA_GATEWAY_INSTANCE_ID`): letters, digits, `.`, `_`, `-`.
    /// Default: `$HOSTNAME`, else random.
    pub instance_id: Option<String>,
    /// How often the server sends `{"type":"ping"}`; a client silent (no `pong`) for two
    /// intervals is disconnected.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Per-connection queue of frames waiting to be written; a client that lets it fill up is
    /// disconnected with close reason "too slow".
    pub client_queue: usize,
    /// If set, a token must carry this `iss` (the identity provider's issuer URL for RS256).
    pub jwt_issuer: Option<String>,
    /// If set, a token's `aud` must name this audience (the API's identifier at the provider).
    pub jwt_audience: Option<String>,
    /// Longest token lifetime accepted: `exp - iat`, and `exp` from now; longer ones are
    /// refused (a leaked token is only good for so long).
    #[serde(with = "humantime_serde")]
    pub jwt_max_lifetime: Duration,
    /// Live connections (`/ws` and Socket.IO together) of one user; the next one is refused.
    pub max_connections_per_user: usize,
    /// Socket.IO sessions (Engine.IO handshakes) that have not authenticated yet, all clients
    /// together; past this, new handshakes are refused with 503 until some authenticate or expire.
    pub max_unauthenticated_sessions: usize,
    /// A Socket.IO session that has not authenticated (namespace connect with a valid token)
    /// within this time is closed.
    #[serde(with = "humantime_serde")]
    pub socketio_connect_timeout: Duration,
    /// E-mail, Slack and Teams per tenant (`[gateway.channels]`, see [`channels`]).
    pub channels: channels::ChannelsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            jwt_secret: String::new(),
            jwt_rs256_public_key: None,
            database_url: "sqlite://gateway.db?mode=rwc".to_string(),
            group_id: "vigia-gateway".to_string(),
            instance_id: None,
            ping_interval: Duration::from_secs(20),
            client_queue: 1024,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_max_lifetime: Duration::from_secs(24 * 3600),
            max_connections_per_user: 50,
            max_unauthenticated_sessions: 1000,
            socketio_connect_timeout: Duration::from_secs(10),
            channels: channels::ChannelsConfig::default(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("jwt_secret", &"<redacted>")
            .field("jwt_rs256_public_key", &self.jwt_rs256_public_key)
            .field("database_url", &inbox::redact_url(&self.database_url))
            .field("group_id", &self.group_id)
            .field("instance_id", &self.instance_id)
            .field("ping_interval", &self.ping_interval)
            .field("client_queue", &self.client_queue)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_max_lifetime", &self.jwt_max_lifetime)
            .field("max_connections_per_user", &self.max_connections_per_user)
            .field(
                "max_unauthenticated_sessions",
                &self.max_unauthenticated_sessions,
            )
            .field("socketio_connect_timeout", &self.socketio_connect_timeout)
            .field("channels", &self.channels)
            .finish()
    }
}

impl Config {
    /// What tokens must satisfy besides their signature.
    pub fn token_policy(&self) -> TokenPolicy {
        TokenPolicy {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            max_lifetime: self.jwt_max_lifetime,
        }
    }

    /// Mints an HS256 token with `jwt_secret` that this configuration accepts: with its
    /// `jwt_issuer` and `jwt_audience`, and valid for `ttl` (at most `jwt_max_lifetime`).
    /// For `vigia token`.
    pub fn issue_token(
        &self,
        user_id: u64,
        tenant_id: u64,
        role: Role,
        ttl: Duration,
    ) -> Result<String, GatewayError> {
        if self.jwt_secret.is_empty() {
            return Err(GatewayError::Config(
                "gateway.jwt_secret is empty: tokens are minted with the HS256 secret \
                 (VIGIA_JWT_SECRET); with only an identity provider's key, get tokens from it"
                    .into(),
            ));
        }
        if ttl > self.jwt_max_lifetime {
            return Err(GatewayError::Config(format!(
                "a token valid for {} s would be refused: gateway.jwt_max_lifetime \
                 (VIGIA_JWT_MAX_LIFETIME) is {} s; ask for a shorter one",
                ttl.as_secs(),
                self.jwt_max_lifetime.as_secs()
            )));
        }
        Ok(auth::issue_token_with(
            &self.jwt_secret,
            user_id,
            tenant_id,
            role,
            ttl,
            self.jwt_issuer.as_deref(),
            self.jwt_audience.as_deref(),
        ))
    }

    /// The configured `instance_id`, else `$HOSTNAME` if it is a valid one, else random.
    fn resolved_instance_id(&self) -> String {
        self.instance_id
            .clone()
            .or_else(|| {
                std::env::var("HOSTNAME")
                    .ok()
                    .filter(|h| valid_instance_id(h))
            })
            .unwrap_or_else(|| {
                format!(
                    "gateway-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                )
            })
    }

    fn token_verifier(&self) -> Result<TokenVerifier, GatewayError> {
        let verifier = TokenVerifier::new(&self.jwt_secret).with_policy(self.token_policy());
        let Some(path) = &self.jwt_rs256_public_key else {
            return Ok(verifier);
        };
        let pem = std::fs::read(path).map_err(|e| {
            GatewayError::Config(format!(
                "gateway.jwt_rs256_public_key: cannot read {}: {e}",
                path.display()
            ))
        })?;
        verifier.with_rs256_public_key(&pem).map_err(|e| {
            GatewayError::Config(format!(
                "gateway.jwt_rs256_public_key: {}: {e}",
                path.display()
            ))
        })
    }

    fn validate(&self) -> Result<(), GatewayError> {
        if self.jwt_secret.is_empty() && self.jwt_rs256_public_key.is_none() {
            return Err(GatewayError::Config(
                "gateway.jwt_secret is empty: set VIGIA_JWT_SECRET (or jwt_secret under [gateway]) \
                 to the HS256 secret your tokens are signed with, or VIGIA_JWT_RS256_PUBLIC_KEY \
                 to the PEM file of your identity provider's RSA public key"
                    .into(),
            ));
        }
        if self.client_queue == 0 {
            return Err(GatewayError::Config(
                "gateway.client_queue must be at least 1 (1024 is the default)".into(),
            ));
        }
        if self.ping_interval.is_zero() {
            return Err(GatewayError::Config(
                "gateway.ping_interval must be positive, e.g. \"20s\"".into(),
            ));
        }
        if self.group_id.is_empty() {
            return Err(GatewayError::Config(
                "gateway.group_id must not be empty (default \"vigia-gateway\")".into(),
            ));
        }
        if let Some(id) = &self.instance_id {
            if !valid_instance_id(id) {
                return Err(GatewayError::Config(format!(
                    "gateway.instance_id (VIGIA_GATEWAY_INSTANCE_ID) {id:?} must be 1 to 64 \
                     letters, digits, '.', '_' or '-' (e.g. \"gateway-1\"), or unset"
                )));
            }
        }
        for (value, key) in [
            (&self.jwt_issuer, "gateway.jwt_issuer (VIGIA_JWT_ISSUER)"),
            (
                &self.jwt_audience,
                "gateway.jwt_audience (VIGIA_JWT_AUDIENCE)",
            ),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(GatewayError::Config(format!(
                    "{key} is empty: leave it unset, or set the value tokens must carry"
                )));
            }
        }
        for (value, key) in [
            (
                self.jwt_max_lifetime,
                "gateway.jwt_max_lifetime (VIGIA_JWT_MAX_LIFETIME), e.g. \"24h\"",
            ),
            (
                self.socketio_connect_timeout,
                "gateway.socketio_connect_timeout (VIGIA_SOCKETIO_CONNECT_TIMEOUT), e.g. \"10s\"",
            ),
        ] {
            if value.is_zero() {
                return Err(GatewayError::Config(format!("{key} must be positive")));
            }
        }
        for (value, key) in [
            (
                self.max_connections_per_user,
                "gateway.max_connections_per_user (VIGIA_MAX_CONNECTIONS_PER_USER)",
            ),
            (
                self.max_unauthenticated_sessions,
                "gateway.max_unauthenticated_sessions (VIGIA_MAX_UNAUTHENTICATED_SESSIONS)",
            ),
        ] {
            if value == 0 {
                return Err(GatewayError::Config(format!("{key} must be at least 1")));
            }
        }
        Ok(())
    }
}

fn valid_instance_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// How long a starting instance waits for another to release the SQLite inbox.
const SQLITE_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Holds the SQLite inbox for this instance (see "Several gateway instances"); `None` for
/// PostgreSQL and in-memory SQLite. Released when `shutdown` is cancelled, so that a gateway
/// restarted in the same process can take it.
async fn lock_sqlite_inbox(
    url: &str,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<std::fs::File>>, GatewayError> {
    let Some(path) = inbox::sqlite_lock_file(url) else {
        return Ok(None);
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| GatewayError::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| GatewayError::Config(format!("cannot open {}: {e}", path.display())))?;
    // An instance on its way out (a restart) lets go within moments: wait that long.
    let deadline = std::time::Instant::now() + SQLITE_LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(GatewayError::SqliteInUse(path.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(GatewayError::Config(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )))
            }
        }
    }
    let file = Arc::new(file);
    let held = file.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = held.unlock();
    });
    Ok(Some(file))
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "another gateway instance is using this SQLite inbox (it holds {0}): SQLite serves one \
         instance only. Stop the other instance, give this one its own VIGIA_DATA_DIR (or \
         VIGIA_DATABASE_URL), or run several instances on one PostgreSQL inbox \
         (VIGIA_DATABASE_URL=postgres://…)"
    )]
    SqliteInUse(String),
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error("cannot start the notifications consumer (check VIGIA_KAFKA_BROKERS): {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// A metrics push waiting for its tenant's second ([`Gateway::publish_metrics`]).
pub(crate) enum MetricsPush {
    /// These fields, as given.
    Given(serde_json::Value),
    /// The board's figures of the tenant as they are when it is sent.
    Board,
}

/// What the transports and the consumer share.
pub(crate) struct Shared {
    pub(crate) cfg: Config,
    /// Metrics pushes, at most one per second per tenant.
    pub(crate) metrics_throttle: std::sync::Mutex<throttle::Throttle<MetricsPush>>,
    pub(crate) verifier: TokenVerifier,
    pub(crate) inbox: Inbox,
    pub(crate) hub: Hub,
    pub(crate) metrics: Metrics,
    pub(crate) shutdown: CancellationToken,
    /// The latest seller metrics of every tenant (`GET /v1/metrics/*`, the `metrics` push).
    pub(crate) board: std::sync::Mutex<board::Board>,
    /// Notifications that also go out by e-mail, Slack or Teams.
    pub(crate) channels: channels::Dispatcher,
    /// This instance's name (see "Several gateway instances").
    pub(crate) instance_id: String,
    /// Unique per process: the `origin` of this instance's signals.
    pub(crate) origin: String,
    /// What has been pushed to this instance's clients (`cluster.rs`).
    pub(crate) pushed: tokio::sync::Mutex<cluster::Pushed>,
    /// The SQLite inbox's lock, held while this instance runs.
    _sqlite_lock: Option<Arc<std::fs::File>>,
}

impl Shared {
    /// Sends `push` to the tenant's CEO/manager connections: `{"type":"metrics", …fields}` on
    /// `/ws`, `metrics_update` on Socket.IO. A non-object is sent as `{"metrics": <value>}`; a
    /// `type` field is dropped (it is the frame's).
    fn send_metrics(&self, tenant_id: vigia_schemas::TenantId, push: MetricsPush) {
        let metrics = match push {
            MetricsPush::Given(serde_json::Value::Object(mut fields)) => {
                fields.remove("type");
                serde_json::Value::Object(fields)
            }
            MetricsPush::Given(other) => serde_json::json!({ "metrics": other }),
            MetricsPush::Board => self
                .board
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_payload(tenant_id),
        };
        self.hub.push_metrics(tenant_id, Arc::new(metrics));
    }

    /// `v`'s read state changed: their other connections here (all but `except`) and on the
    /// other instances recount.
    pub(crate) async fn read_state_changed(&self, v: &Viewer, except: Option<hub::ConnectionId>) {
        self.hub.unread_changed(v.tenant_id, v.user_id, except);
        let signal = cluster::Signal::Read {
            tenant_id: v.tenant_id,
            user_id: v.user_id,
            origin: self.origin.clone(),
        };
        if let Err(e) = self.inbox.signal(&signal).await {
            tracing::warn!(error = %e, "cannot tell the other instances that a read state changed");
        }
    }

    /// `v` saved `prefs`: their connections here and on the other instances apply them.
    pub(crate) async fn preferences_changed(&self, v: &Viewer, prefs: Preferences) {
        self.hub.set_preferences(v.tenant_id, v.user_id, prefs);
        let signal = cluster::Signal::Preferences {
            tenant_id: v.tenant_id,
            user_id: v.user_id,
            role: v.role,
            origin: self.origin.clone(),
        };
        if let Err(e) = self.inbox.signal(&signal).await {
            tracing::warn!(error = %e, "cannot tell the other instances that preferences changed");
        }
    }
}

/// A running gateway: the inbox, the hub of live connections and (from [`Gateway::start`]) the
/// Kafka consumer feeding them. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    /// The Socket.IO routes (their service holds the Socket.IO server's state).
    socketio: axum::Router,
}

impl Gateway {
    /// Connects to the inbox database and applies its migrations, registers the gateway's metrics,
    /// and spawns the consumer of `topics.notifications` (see "Several gateway instances"), the
    /// board's of `topics.seller_metrics` and the people directory's of `topics.events` (group
    /// `<group_id>-people`, shared by the instances). The consumers and every live connection stop
    /// when `shutdown` is cancelled (connections get close code 1001).
    pub async fn start(
        cfg: Config,
        kafka: &rdkafka::ClientConfig,
        topics: &Topics,
        registry: &mut prometheus_client::registry::Registry,
        shutdown: CancellationToken,
    ) -> Result<Gateway, GatewayError> {
        let gateway = Self::start_without_consumer(cfg, registry, shutdown.clone()).await?;
        consumer::spawn(
            gateway.clone(),
            kafka,
            &topics.notifications,
            &gateway.shared.cfg.group_id,
            &gateway.shared.instance_id,
            shutdown.clone(),
        )?;
        consumer::spawn_board(
            gateway.clone(),
            kafka,
            &topics.seller_metrics,
            &gateway.shared.cfg.group_id,
            shutdown.clone(),
        )?;
        people::spawn(
            gateway.shared.inbox.clone(),
            kafka,
            &topics.events,
            &gateway.shared.cfg.group_id,
            registry,
            shutdown,
        )?;
        Ok(gateway)
    }

    /// [`Gateway::start`] without the Kafka consumer: notifications come in only through
    /// [`Gateway::deliver`]. For tests.
    #[doc(hidden)]
    pub async fn start_without_consumer(
        cfg: Config,
        registry: &mut prometheus_client::registry::Registry,
        shutdown: CancellationToken,
    ) -> Result<Gateway, GatewayError> {
        cfg.validate()?;
        let verifier = cfg.token_verifier()?;
        let sqlite_lock = lock_sqlite_inbox(&cfg.database_url, &shutdown).await?;
        let inbox = Inbox::connect(&cfg.database_url).await?;
        let metrics = Metrics::register(registry);
        // "Unanswered now" between snapshots: the alerts that reached the gateway before this
        // start (newer ones come through the consumer).
        let mut board = board::Board::default();
        let since = Utc::now() - board::UNANSWERED_RELOAD;
        for n in inbox
            .recent_of_type(
                vigia_schemas::NotificationType::UnansweredConversation,
                since,
            )
            .await?
        {
            board.note_unanswered(&n);
        }
        // Clients that connect from now on get what is older through `since`.
        let pushed = cluster::Pushed {
            through: inbox.max_sequence().await?,
        };
        // Last: it spawns the channel workers, which resume the outbox at once.
        let channels = channels::Dispatcher::start(
            cfg.channels.clone(),
            inbox.clone(),
            registry,
            shutdown.clone(),
        )
        .await
        .map_err(|e| match e {
            channels::ChannelsError::Inbox(e) => GatewayError::Inbox(e),
            other => GatewayError::Config(other.to_string()),
        })?;
        let instance_id = cfg.resolved_instance_id();
        let origin = format!(
            "{instance_id}.{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        tracing::info!(
            instance_id,
            shared_inbox = inbox.is_shared(),
            "gateway instance starting"
        );
        let shared = Shared {
            metrics_throttle: std::sync::Mutex::new(throttle::Throttle::new(METRICS_INTERVAL)),
            verifier,
            hub: Hub::new(metrics.clone()),
            inbox,
            metrics,
            cfg,
            shutdown,
            board: std::sync::Mutex::new(board),
            channels,
            instance_id,
            origin,
            pushed: tokio::sync::Mutex::new(pushed),
            _sqlite_lock: sqlite_lock,
        };
        let shared = Arc::new(shared);
        let (socketio, _io) = socketio::build(shared.clone());
        let gateway = Gateway { shared, socketio };
        tokio::spawn(gateway.clone().catch_up_every_second());
        if gateway.shared.inbox.is_shared() {
            tokio::spawn(gateway.clone().listen());
        }
        Ok(gateway)
    }

    /// `/ws`, `/socket.io/`, `/v1/notifications*` and `/v1/preferences`, ready to be merged
    /// into the root binary's router.
    pub fn router(&self) -> axum::Router {
        use axum::routing::{get, post};
        axum::Router::new()
            .route("/ws", get(ws::upgrade))
            .route("/v1/notifications", get(rest::list).delete(rest::clear))
            .route("/v1/notifications/count", get(rest::count))
            .route("/v1/metrics/tenant", get(rest::metrics_tenant))
            .route("/v1/metrics/sellers", get(rest::metrics_sellers))
            .route("/v1/metrics/series", get(rest::metrics_series))
            .route("/v1/people", get(people::list))
            .route("/v1/reports/{date}", get(web::report_json))
            .route("/reports/{date}", get(web::report_html))
            .route("/", get(web::index))
            .route("/assets/{name}", get(web::asset))
            .route("/v1/notifications/read-all", post(rest::read_all))
            .route("/v1/notifications/{id}/read", post(rest::read_one))
            .route(
                "/v1/preferences",
                get(rest::get_preferences).put(rest::put_preferences),
            )
            .with_state(self.shared.clone())
            .merge(self.socketio.clone())
    }

    /// Whether the inbox database answers.
    pub async fn ready(&self) -> bool {
        self.shared.inbox.ping().await
    }

    /// Stores `notification` if its id is new and pushes, in sequence order, everything stored
    /// up to it not pushed yet (it included, whichever instance stored it) to the connections
    /// allowed to see it. Returns whether it was new. Tests' way in.
    #[doc(hidden)]
    pub async fn deliver(&self, notification: Notification) -> Result<bool, GatewayError> {
        // Stored with its deliveries outside the browser (e-mail, Slack, Teams) in one
        // transaction: a replayed record queues nothing again.
        let stored = self.shared.channels.store(&notification).await?;
        let new = self.count_stored(stored.inserted.is_some());
        let in_hand = in_hand(vec![notification], &[stored.inserted]);
        self.push_stored(stored.through, in_hand).await;
        Ok(new)
    }

    /// [`Gateway::deliver`] of each of `batch`, stored in one inbox transaction (all or none)
    /// that also advances the stored Kafka positions to `offsets`; whether each was new.
    pub(crate) async fn deliver_many(
        &self,
        batch: Vec<Notification>,
        offsets: &[KafkaPosition],
    ) -> Result<Vec<bool>, GatewayError> {
        let stored = self.shared.channels.store_many(&batch, offsets).await?;
        let through = stored.last().map_or(0, |s| s.through);
        let inserted: Vec<Option<Inserted>> = stored.iter().map(|s| s.inserted).collect();
        let new = inserted
            .iter()
            .map(|i| self.count_stored(i.is_some()))
            .collect();
        self.push_stored(through, in_hand(batch, &inserted)).await;
        Ok(new)
    }

    /// [`Gateway::push_through`] after a store: a failure is not the store's (it is committed);
    /// the catch-up pushes the rest.
    async fn push_stored(&self, through: i64, in_hand: Vec<(i64, Notification, bool)>) {
        if let Err(e) = self.push_through(through, in_hand).await {
            tracing::warn!(error = %e, "cannot read the inbox to push what is new; will retry");
        }
    }

    fn count_stored(&self, new: bool) -> bool {
        if new {
            self.shared.metrics.stored.inc();
        } else {
            self.shared.metrics.duplicates.inc();
        }
        new
    }

    /// Pushes every notification with a sequence up to `through` that this instance has not
    /// pushed yet, in sequence order (`cluster.rs`): those of `in_hand` as they are, the others
    /// read from the inbox. On an inbox error nothing more is marked pushed (the next call, or
    /// the catch-up every second, pushes the rest).
    async fn push_through(
        &self,
        through: i64,
        in_hand: Vec<(i64, Notification, bool)>,
    ) -> Result<(), InboxError> {
        const PAGE: u32 = 500;
        let mut pushed = self.shared.pushed.lock().await;
        let sequences: Vec<i64> = in_hand.iter().map(|(s, _, _)| *s).collect();
        match pushed.plan(through, &sequences) {
            cluster::Plan::Nothing => return Ok(()),
            cluster::Plan::InHand => {
                let mut in_hand = in_hand;
                in_hand.sort_by_key(|(s, _, _)| *s);
                for (sequence, n, withdrawn) in in_hand {
                    if sequence > pushed.through && sequence <= through {
                        self.push_one(sequence, n, withdrawn);
                    }
                }
            }
            cluster::Plan::Read => {
                let mut held: std::collections::HashMap<i64, (Notification, bool)> =
                    in_hand.into_iter().map(|(s, n, w)| (s, (n, w))).collect();
                loop {
                    let page = self
                        .shared
                        .inbox
                        .tail(pushed.through, through, PAGE)
                        .await?;
                    let full = page.len() == PAGE as usize;
                    for (sequence, n, withdrawn) in page {
                        let (n, withdrawn) = held.remove(&sequence).unwrap_or((n, withdrawn));
                        self.push_one(sequence, n, withdrawn);
                        pushed.through = sequence;
                    }
                    if !full {
                        break;
                    }
                }
            }
        }
        pushed.through = through;
        Ok(())
    }

    /// Notes and pushes one notification of the inbox (not if it is withdrawn already: its
    /// withdrawal came first, clients know it is over).
    fn push_one(&self, sequence: i64, notification: Notification, withdrawn: bool) {
        let shared = &self.shared;
        self.note_unanswered(&notification);
        if withdrawn {
            return;
        }
        let age = (Utc::now() - notification.created_at)
            .num_milliseconds()
            .max(0) as f64
            / 1000.0;
        shared.metrics.push_age_seconds.observe(age);
        let stored = StoredNotification {
            sequence,
            read: notification.withdraws.is_some(),
            withdrawn: false,
            notification,
        };
        shared
            .hub
            .push(Arc::new(hub::Live::new(stored)), Utc::now());
    }

    /// Pushes whatever the inbox holds beyond what was pushed: what other instances stored
    /// while their signal was lost, or what a failed push left.
    async fn catch_up(&self) -> Result<(), InboxError> {
        let through = self.shared.inbox.max_sequence().await?;
        self.push_through(through, vec![]).await
    }

    async fn catch_up_every_second(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.catch_up().await {
                        tracing::warn!(error = %e, "cannot read the inbox to push what is new; will retry");
                    }
                }
            }
        }
    }

    /// Follows the other instances' [`cluster::Signal`]s (PostgreSQL `LISTEN`), reconnecting
    /// after a failure; after a reconnection every connection recounts (read signals may have
    /// been lost).
    async fn listen(self) {
        use sqlx::postgres::PgListener;
        let shared = &self.shared;
        let mut backoff = Duration::from_millis(200);
        while !shared.shutdown.is_cancelled() {
            let connected = async {
                let mut listener = PgListener::connect(shared.inbox.url()).await?;
                listener.listen(inbox::SIGNAL_CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                l = connected => match l {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "cannot listen to the other gateway instances; will retry");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            backoff = Duration::from_millis(200);
            shared.hub.all_counts_changed();
            loop {
                let received = tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    r = listener.try_recv() => r,
                };
                match received {
                    Ok(Some(n)) => self.on_signal(n.payload()).await,
                    Ok(None) => {
                        // Reconnecting: what was signalled meanwhile is lost.
                        tracing::warn!("lost the connection listening to the other gateway instances; reconnecting");
                        shared.hub.all_counts_changed();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "listening to the other gateway instances failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    async fn on_signal(&self, payload: &str) {
        let shared = &self.shared;
        match cluster::Signal::parse(payload) {
            Some(cluster::Signal::Stored) => {
                if let Err(e) = self.catch_up().await {
                    tracing::warn!(error = %e, "cannot read the inbox to push what is new; will retry");
                }
            }
            Some(cluster::Signal::Read {
                tenant_id,
                user_id,
                origin,
            }) if origin != shared.origin => shared.hub.unread_changed(tenant_id, user_id, None),
            Some(cluster::Signal::Preferences {
                tenant_id,
                user_id,
                role,
                origin,
            }) if origin != shared.origin => {
                let viewer = Viewer {
                    tenant_id,
                    user_id,
                    role,
                };
                match shared.inbox.preferences(&viewer).await {
                    Ok(prefs) => shared.hub.set_preferences(tenant_id, user_id, prefs),
                    Err(e) => {
                        tracing::warn!(error = %e, tenant_id, user_id, "cannot reload preferences changed on another instance")
                    }
                }
            }
            Some(_) => {}
            None => tracing::debug!(payload, "ignoring a signal this version does not know"),
        }
    }

    /// Puts a seller-metrics snapshot on the board; if it is the seller's newest, pushes the
    /// tenant's figures (throttled, see [`Gateway::publish_metrics`]). Returns whether it was.
    /// The path of every record of the `seller_metrics` topic.
    #[doc(hidden)]
    pub fn apply_seller_metrics(&self, snapshot: vigia_schemas::SellerMetrics) -> bool {
        let tenant = snapshot.tenant_id;
        {
            let mut board = self.shared.board.lock().unwrap_or_else(|e| e.into_inner());
            if !board.apply(snapshot) {
                return false;
            }
        }
        self.offer_metrics(tenant, MetricsPush::Board);
        true
    }

    /// Takes a newly stored notification into the board's "unanswered now" (see [`board`]) and,
    /// if the tenant's figures changed, pushes them (throttled).
    fn note_unanswered(&self, n: &Notification) {
        {
            let mut board = self.shared.board.lock().unwrap_or_else(|e| e.into_inner());
            if !board.note_unanswered(n) {
                return;
            }
        }
        self.offer_metrics(n.tenant_id, MetricsPush::Board);
    }

    /// Pushes live metrics of `tenant_id` to its CEO/manager connections: `{"type":"metrics",
    /// …fields of `metrics`}` on `/ws`, `metrics_update` with `metrics` on Socket.IO. At most
    /// once per second per tenant: metrics published sooner are held back and only the latest
    /// is sent when the second is over. A non-object is sent as `{"metrics": <value>}`; a
    /// `type` field is dropped (it is the frame's).
    pub fn publish_metrics(&self, tenant_id: vigia_schemas::TenantId, metrics: serde_json::Value) {
        self.offer_metrics(tenant_id, MetricsPush::Given(metrics));
    }

    /// [`Gateway::publish_metrics`] of `push`, built only when it is sent: the board's figures
    /// change with every snapshot and unanswered alert (hundreds a second per busy tenant), and
    /// building them each time, to keep one a second, was most of the gateway's own work.
    fn offer_metrics(&self, tenant_id: vigia_schemas::TenantId, push: MetricsPush) {
        use throttle::Decision;
        let now = tokio::time::Instant::now();
        let decision = self
            .shared
            .metrics_throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .offer(tenant_id, push, now);
        match decision {
            Decision::Send(push) => self.shared.send_metrics(tenant_id, push),
            Decision::Schedule { at } => {
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = shared.shutdown.cancelled() => {}
                        _ = tokio::time::sleep_until(at) => {
                            let due = shared
                                .metrics_throttle
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .take_due(tenant_id, tokio::time::Instant::now());
                            if let Some(push) = due {
                                shared.send_metrics(tenant_id, push);
                            }
                        }
                    }
                });
            }
            Decision::Coalesced => {}
        }
    }

    /// Waits until the channel workers have stopped, once `shutdown` was cancelled (what is
    /// still pending stays in the outbox for the next start).
    #[doc(hidden)]
    pub async fn stopped(&self) {
        self.shared.channels.stopped().await;
    }

    /// The inbox behind this gateway.
    #[doc(hidden)]
    pub fn inbox(&self) -> &Inbox {
        &self.shared.inbox
    }

    /// Live connections (all tenants).
    #[doc(hidden)]
    pub fn connection_count(&self) -> usize {
        self.shared.hub.connection_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_humane_durations() {
        let cfg: Config =
            serde_json::from_value(serde_json::json!({"ping_interval": "90s", "jwt_secret": "s"}))
                .unwrap();
        assert_eq!(cfg.ping_interval, Duration::from_secs(90));
        assert_eq!(cfg.client_queue, 1024);
        assert_eq!(cfg.group_id, "vigia-gateway");
        assert!(cfg.database_url.starts_with("sqlite://"));
        assert!(cfg.validate().is_ok());
        assert_eq!(Config::default().ping_interval, Duration::from_secs(20));
    }

    #[test]
    fn invalid_configs_are_refused_with_what_to_do() {
        let err = Config::default().validate().unwrap_err().to_string();
        assert!(err.contains("VIGIA_JWT_SECRET"), "{err}");
        let base = Config {
            jwt_secret: "s".into(),
            ..Config::default()
        };
        for cfg in [
            Config {
                client_queue: 0,
                ..base.clone()
            },
            Config {
                ping_interval: Duration::ZERO,
                ..base.clone()
            },
            Config {
                group_id: String::new(),
                ..base.clone()
            },
            Config {
                jwt_issuer: Some(String::new()),
                ..base.clone()
            },
            Config {
                jwt_audience: Some(String::new()),
                ..base.clone()
            },
            Config {
                jwt_max_lifetime: Duration::ZERO,
                ..base.clone()
            },
            Config {
                max_connections_per_user: 0,
                ..base.clone()
            },
            Config {
                max_unauthenticated_sessions: 0,
                ..base.clone()
            },
            Config {
                socketio_connect_timeout: Duration::ZERO,
                ..base.clone()
            },
            Config {
                instance_id: Some("gateway 1".into()),
                ..base.clone()
            },
            Config {
                instance_id: Some(String::new()),
                ..base.clone()
            },
        ] {
            assert!(matches!(cfg.validate(), Err(GatewayError::Config(_))));
        }
    }

    #[test]
    fn an_instance_is_named_by_its_setting_else_its_host_else_at_random() {
        let named = Config {
            instance_id: Some("gw-1".into()),
            ..Config::default()
        };
        assert_eq!(named.resolved_instance_id(), "gw-1");
        let unnamed = Config::default().resolved_instance_id();
        assert!(valid_instance_id(&unnamed), "{unnamed}");
        assert!(!valid_instance_id(&"x".repeat(65)));
        assert!(valid_instance_id("3f2a9c1b7d4e"));
    }

    #[test]
    fn minted_tokens_follow_the_configured_policy() {
        let cfg = Config {
            jwt_secret: "s".into(),
            jwt_issuer: Some("vigia".into()),
            jwt_audience: Some("vigia-gateway".into()),
            jwt_max_lifetime: Duration::from_secs(3600),
            ..Config::default()
        };
        let verifier = cfg.token_verifier().unwrap();
        let token = cfg
            .issue_token(7, 1, Role::Ceo, Duration::from_secs(3600))
            .unwrap();
        assert_eq!(verifier.verify(&token).unwrap().viewer.user_id, 7);
        let err = cfg
            .issue_token(7, 1, Role::Ceo, Duration::from_secs(7200))
            .unwrap_err()
            .to_string();
        assert!(err.contains("VIGIA_JWT_MAX_LIFETIME"), "{err}");
        let rs256_only = Config {
            jwt_secret: String::new(),
            ..cfg
        };
        assert!(rs256_only
            .issue_token(7, 1, Role::Ceo, Duration::from_secs(60))
            .is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let cfg = Config {
            jwt_secret: "top-secret".into(),
            database_url: "postgres://vigia:hunter2@db/vigia".into(),
            ..Config::default()
        };
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("top-secret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
