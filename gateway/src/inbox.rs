//! The persistent inbox: every notification once, in arrival order (`sequence`), with per-user
//! read state. SQLite or PostgreSQL through sqlx's `Any` driver; the two dialects differ only in
//! column types (PostgreSQL keeps UUID, JSONB and TIMESTAMPTZ columns), hence the casts below.
//!
//! What a user sees is decided by the audience rules of [`crate::can_see`], written here in SQL
//! (`visible!`). Read state is a per-user watermark ("read all" and "clear" move it, O(1)) plus
//! one row per notification read individually above it.
//!
//! ## Sequences without gaps, with several writers
//!
//! A client resumes with "everything after sequence N" (`?since=N`), N being the highest
//! sequence it saw. That is only right if no notification with a sequence below N can become
//! visible after N did. With one writer that holds; with several gateway instances inserting
//! into one PostgreSQL inbox it does not: the identity column hands out sequences when rows are
//! inserted, not when they commit, so instance A can take 41, instance B 42, B commit, a client
//! see 42, and A commit 41 afterwards — a client resuming after 42 never gets 41.
//!
//! Chosen: **store transactions are serialised** by a transaction-scoped advisory lock
//! (`pg_advisory_xact_lock`, [`Inbox::store`]), taken before the first insert and released by
//! the commit. A sequence is then only handed out while every smaller one is committed or
//! rolled back, so commit order is sequence order and any snapshot holds a prefix of the
//! sequences: `since`, `list` and the live pushes (which follow the inbox's order,
//! `crate::cluster`) need nothing more. The cost: instances store one batch at a time (each
//! batch is one transaction of up to 500 notifications). `examples/inbox_writers.rs` measures
//! it: three writers each storing the same 5,000 notifications took 22.3 s with the lock and
//! 19.5 s without (median of 3; debug build, load average 11-14 on 2 shared cores: the ratio,
//! not the absolute figures, is what to read). Two batches
//! that share notifications can no longer deadlock either (each would wait on the other's
//! uncommitted insert of the same id).
//!
//! Not chosen: a visibility horizon (store `pg_current_xact_id()` with each row and serve only
//! rows of transactions older than `pg_snapshot_xmin(pg_current_snapshot())`). It lets writers
//! run in parallel, but every reader must filter on it, and any long transaction on the
//! database (a vacuum, a report, an idle-in-transaction session) holds every live push and
//! replay back until it ends.
//!
//! SQLite has one writer at a time anyway (and serves one gateway instance only: `crate::lib`
//! refuses a second through a lock file).

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use uuid::Uuid;
use vigia_schemas::{Audience, Notification};

use crate::audience::{role_name, sees_whole_tenant, Viewer};
use crate::cluster::Signal;
use crate::preferences::{known_fields_only, Preferences};

mod outbox;
mod people;
pub use outbox::{DueDelivery, OutboxEntry, OutboxRow};
pub use people::{Person, PersonUpsert};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error(
        "unsupported inbox database URL {0:?}: use sqlite://<file>?mode=rwc or \
         postgres://user:password@host/database"
    )]
    UnsupportedUrl(String),
    #[error("cannot open the inbox database {url}: {source} (check VIGIA_DATABASE_URL)")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot prepare the inbox database: {0}")]
    Prepare(String),
    #[error("cannot apply the inbox migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("inbox database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored notification #{sequence} is not a valid notification: {error}")]
    Corrupt { sequence: i64, error: String },
    #[error("id {0} does not fit the inbox (at most 2^63-1)")]
    IdOutOfRange(u64),
}

impl InboxError {
    /// Whether retrying cannot help (the notification itself is the problem).
    pub fn is_permanent(&self) -> bool {
        matches!(self, InboxError::IdOutOfRange(_))
    }
}

/// A notification as the inbox holds it for one user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredNotification {
    /// Arrival order in this inbox; strictly increasing.
    pub sequence: i64,
    /// Read by this user, or resolved for everybody (withdrawn, or itself a withdrawal).
    pub read: bool,
    /// Withdrawn by a later notification.
    pub withdrawn: bool,
    pub notification: Notification,
}

/// The outcome of storing a notification that was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub sequence: i64,
    /// Its withdrawal had arrived first: it is stored already resolved and should not be pushed.
    pub already_withdrawn: bool,
    /// Channel deliveries recorded with it (none when it was already withdrawn).
    pub deliveries: usize,
}

/// Where to read a partition of the notifications topic on: the offset after the last record
/// stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaPosition {
    pub topic: String,
    pub partition: i32,
    /// The offset of the next record to read.
    pub next_offset: i64,
}

/// The outcome of [`Inbox::store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// Per notification of the batch: `None` if it was stored already.
    pub inserted: Vec<Option<Inserted>>,
    /// The newest sequence in the inbox when the batch committed: every notification up to it
    /// is committed (or never will be), so an instance may push up to here without a gap.
    pub through: i64,
}

/// A store whose transaction is still open (see [`Inbox::store_uncommitted`]).
#[doc(hidden)]
pub struct PendingStore {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    pub inserted: Option<Inserted>,
}

impl PendingStore {
    pub async fn commit(self) -> Result<(), InboxError> {
        Ok(self.tx.commit().await?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// Statements whose text differs between the dialects.
struct Statements {
    insert: &'static str,
    withdraw: &'static str,
    withdrawn_before_arrival: &'static str,
    find_visible: &'static str,
    mark_read: &'static str,
    list: &'static str,
    since: &'static str,
    get: &'static str,
    get_preferences: &'static str,
    put_preferences: &'static str,
    recent_of_type: &'static str,
    tail: &'static str,
}

// Parameters shared by every per-user statement: $1 tenant id, $2 1 if the viewer sees the whole
// tenant (CEO/manager) else 0, $3 user id, $4 role name.
macro_rules! visible {
    () => {
        "n.tenant_id = $1 AND ($2 = 1 OR n.audience_user_id = $3 OR n.audience_role = $4)"
    };
}

macro_rules! tail_withdrawn {
    () => {
        "CAST(CASE WHEN withdrawn_at IS NULL THEN 0 ELSE 1 END AS BIGINT) AS is_withdrawn"
    };
}

// $1 after, $2 through, $3 limit.
macro_rules! tail_range {
    () => {
        "WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
    };
}

macro_rules! page {
    ($payload:literal) => {
        concat!(
            "SELECT n.seq AS seq, ",
            $payload,
            " AS payload, \
             CAST(CASE WHEN n.withdraws IS NOT NULL OR n.withdrawn_at IS NOT NULL \
                  OR n.seq <= COALESCE(u.read_through_seq, 0) \
                  OR EXISTS (SELECT 1 FROM notification_reads r WHERE r.tenant_id = $1 \
                             AND r.user_id = $3 AND r.notification_seq = n.seq) \
                  THEN 1 ELSE 0 END AS BIGINT) AS is_read, \
             CAST(CASE WHEN n.withdrawn_at IS NULL THEN 0 ELSE 1 END AS BIGINT) AS is_withdrawn \
             FROM notifications n \
             LEFT JOIN inbox_users u ON u.tenant_id = $1 AND u.user_id = $3 \
             WHERE ",
            visible!(),
            " AND n.seq > COALESCE(u.cleared_through_seq, 0)"
        )
    };
}

const SQLITE: Statements = Statements {
    insert: "INSERT INTO notifications (id, tenant_id, audience_user_id, audience_role, type, \
             priority, withdraws, payload, created_at, stored_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO NOTHING RETURNING seq",
    withdraw: "UPDATE notifications SET withdrawn_at = $3 \
               WHERE tenant_id = $1 AND id = $2 AND withdrawn_at IS NULL",
    withdrawn_before_arrival: "UPDATE notifications SET withdrawn_at = $3 WHERE seq = $1 \
               AND EXISTS (SELECT 1 FROM notifications w WHERE w.tenant_id = $2 AND w.withdraws = $4)",
    find_visible: concat!("SELECT n.seq AS seq FROM notifications n WHERE ", visible!(), " AND n.id = $5"),
    mark_read: "INSERT INTO notification_reads (tenant_id, user_id, notification_seq, read_at) \
                VALUES ($1, $2, $3, $4) \
                ON CONFLICT (tenant_id, user_id, notification_seq) DO NOTHING",
    list: concat!(page!("n.payload"), " AND n.seq < $5 ORDER BY n.seq DESC LIMIT $6"),
    since: concat!(page!("n.payload"), " AND n.seq > $5 ORDER BY n.seq ASC LIMIT $6"),
    get: concat!(page!("n.payload"), " AND n.id = $5"),
    get_preferences: "SELECT preferences FROM user_preferences WHERE tenant_id = $1 AND user_id = $2",
    put_preferences: "INSERT INTO user_preferences (tenant_id, user_id, preferences, updated_at) \
                      VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, user_id) DO UPDATE \
                      SET preferences = excluded.preferences, updated_at = excluded.updated_at",
    recent_of_type: "SELECT seq, payload FROM notifications WHERE type = $1 AND created_at >= $2 \
                     ORDER BY seq",
    tail: concat!("SELECT seq, payload, ", tail_withdrawn!(), " FROM notifications ", tail_range!()),
};

const POSTGRES: Statements = Statements {
    insert: "INSERT INTO notifications (id, tenant_id, audience_user_id, audience_role, type, \
             priority, withdraws, payload, created_at, stored_at) \
             VALUES ($1::uuid, $2, $3, $4, $5, $6, $7::uuid, $8::jsonb, $9::timestamptz, $10::timestamptz) \
             ON CONFLICT (id) DO NOTHING RETURNING seq",
    withdraw: "UPDATE notifications SET withdrawn_at = $3::timestamptz \
               WHERE tenant_id = $1 AND id = $2::uuid AND withdrawn_at IS NULL",
    withdrawn_before_arrival: "UPDATE notifications SET withdrawn_at = $3::timestamptz WHERE seq = $1 \
               AND EXISTS (SELECT 1 FROM notifications w WHERE w.tenant_id = $2 AND w.withdraws = $4::uuid)",
    find_visible: concat!("SELECT n.seq AS seq FROM notifications n WHERE ", visible!(), " AND n.id = $5::uuid"),
    mark_read: "INSERT INTO notification_reads (tenant_id, user_id, notification_seq, read_at) \
                VALUES ($1, $2, $3, $4::timestamptz) \
                ON CONFLICT (tenant_id, user_id, notification_seq) DO NOTHING",
    list: concat!(page!("n.payload::text"), " AND n.seq < $5 ORDER BY n.seq DESC LIMIT $6"),
    since: concat!(page!("n.payload::text"), " AND n.seq > $5 ORDER BY n.seq ASC LIMIT $6"),
    get: concat!(page!("n.payload::text"), " AND n.id = $5::uuid"),
    get_preferences: "SELECT preferences::text AS preferences FROM user_preferences \
                      WHERE tenant_id = $1 AND user_id = $2",
    put_preferences: "INSERT INTO user_preferences (tenant_id, user_id, preferences, updated_at) \
                      VALUES ($1, $2, $3::jsonb, $4::timestamptz) ON CONFLICT (tenant_id, user_id) \
                      DO UPDATE SET preferences = excluded.preferences, updated_at = excluded.updated_at",
    recent_of_type: "SELECT seq, payload::text AS payload FROM notifications \
                     WHERE type = $1 AND created_at >= $2::timestamptz ORDER BY seq",
    tail: concat!(
        "SELECT seq, payload::text AS payload, ",
        tail_withdrawn!(),
        " FROM notifications ",
        tail_range!()
    ),
};

/// Serialises the store transactions of every instance on a PostgreSQL inbox (module docs). Any
/// fixed key: the inbox's database holds nothing else taking advisory locks.
const INSERT_LOCK: &str = "SELECT pg_advisory_xact_lock(5089071865290)";
const NOTIFY: &str = "SELECT pg_notify('vigia_gateway', $1)";
/// The channel of [`Signal`]s between instances.
pub(crate) const SIGNAL_CHANNEL: &str = "vigia_gateway";
const MAX_SEQ: &str = "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS seq FROM notifications";
const UPSERT_OFFSET_POSTGRES: &str =
    "INSERT INTO inbox_offsets (topic, kafka_partition, next_offset) VALUES ($1, $2, $3) \
     ON CONFLICT (topic, kafka_partition) DO UPDATE \
     SET next_offset = GREATEST(inbox_offsets.next_offset, excluded.next_offset)";
const UPSERT_OFFSET_SQLITE: &str =
    "INSERT INTO inbox_offsets (topic, kafka_partition, next_offset) VALUES ($1, $2, $3) \
     ON CONFLICT (topic, kafka_partition) DO UPDATE \
     SET next_offset = MAX(inbox_offsets.next_offset, excluded.next_offset)";
const SELECT_OFFSETS: &str =
    "SELECT kafka_partition, next_offset FROM inbox_offsets WHERE topic = $1";

/// The unread notifications of user `$2` of tenant `$1` among `$from` (the table as `n`) that
/// match `$audience`: neither a withdrawal nor withdrawn, above the user's read watermark, not
/// read one by one. Each audience is its own term (no `OR`) so that the planner walks the
/// matching partial index of `0011_unread_indexes.sql`, which holds only what can still be
/// unread: the `OR` of every audience made it walk the tenant's whole history, table rows and
/// all, at every count (a CEO's count at 2,000 events/s read most of the inbox file four times a
/// second).
macro_rules! unread_of {
    ($from:literal, $audience:literal) => {
        concat!(
            "SELECT COUNT(*) FROM ",
            $from,
            " WHERE n.tenant_id = $1",
            $audience,
            " AND n.withdraws IS NULL AND n.withdrawn_at IS NULL \
             AND n.seq > COALESCE((SELECT u.read_through_seq FROM inbox_users u \
                                   WHERE u.tenant_id = $1 AND u.user_id = $2), 0) \
             AND NOT EXISTS (SELECT 1 FROM notification_reads r WHERE r.tenant_id = $1 \
                             AND r.user_id = $2 AND r.notification_seq = n.seq)"
        )
    };
}

/// What a CEO or manager has unread (binds: tenant, user). SQLite is told the index: its
/// planner prefers `notifications_by_withdraws` (an equality on two columns), which reads every
/// row of the tenant.
macro_rules! unread_whole_tenant {
    (sqlite) => {
        unread_of!(
            "notifications n INDEXED BY notifications_unread_by_tenant",
            ""
        )
    };
    (postgres) => {
        unread_of!("notifications n", "")
    };
}

/// What anyone else has unread (binds: tenant, user, role): what names them plus what names
/// their role (a notification names exactly one of the two).
macro_rules! unread_own {
    () => {
        concat!(
            "(",
            unread_of!("notifications n", " AND n.audience_user_id = $2"),
            ") + (",
            unread_of!("notifications n", " AND n.audience_role = $3"),
            ")"
        )
    };
}

/// With the count, in the same statement (so the same snapshot), the newest sequence of the
/// tenant: the count covers every sequence up to it (commit order is sequence order), which lets
/// a connection add what is pushed after it without asking again.
macro_rules! with_through {
    ($count:expr) => {
        concat!(
            "SELECT (",
            $count,
            ") AS unread, (SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM notifications \
             WHERE tenant_id = $1) AS through"
        )
    };
}

/// The unread-count statements of one dialect.
struct UnreadCounts {
    whole_tenant: &'static str,
    own: &'static str,
}

const UNREAD_SQLITE: UnreadCounts = UnreadCounts {
    whole_tenant: with_through!(unread_whole_tenant!(sqlite)),
    own: with_through!(unread_own!()),
};
const UNREAD_POSTGRES: UnreadCounts = UnreadCounts {
    whole_tenant: with_through!(unread_whole_tenant!(postgres)),
    own: with_through!(unread_own!()),
};

// The watermark moves to the newest notification of the tenant (not only the visible ones: the
// invisible ones never matter to this user), and never backwards.
const READ_ALL: &str =
    "INSERT INTO inbox_users (tenant_id, user_id, read_through_seq, cleared_through_seq) \
     SELECT $1, $2, COALESCE(MAX(seq), 0), 0 FROM notifications WHERE tenant_id = $1 \
     ON CONFLICT (tenant_id, user_id) DO UPDATE SET read_through_seq = \
       CASE WHEN excluded.read_through_seq > inbox_users.read_through_seq \
            THEN excluded.read_through_seq ELSE inbox_users.read_through_seq END";

const CLEAR: &str = "INSERT INTO inbox_users (tenant_id, user_id, read_through_seq, cleared_through_seq) \
     SELECT $1, $2, COALESCE(MAX(seq), 0), COALESCE(MAX(seq), 0) FROM notifications WHERE tenant_id = $1 \
     ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
       read_through_seq = CASE WHEN excluded.read_through_seq > inbox_users.read_through_seq \
            THEN excluded.read_through_seq ELSE inbox_users.read_through_seq END, \
       cleared_through_seq = CASE WHEN excluded.cleared_through_seq > inbox_users.cleared_through_seq \
            THEN excluded.cleared_through_seq ELSE inbox_users.cleared_through_seq END";

// Individual reads under the watermark say nothing more.
const PRUNE_READS: &str = "DELETE FROM notification_reads WHERE tenant_id = $1 AND user_id = $2 \
     AND notification_seq <= (SELECT read_through_seq FROM inbox_users \
                              WHERE tenant_id = $1 AND user_id = $2)";

/// The notifications store. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct Inbox {
    pool: AnyPool,
    dialect: Dialect,
    url: std::sync::Arc<str>,
    /// Whether stores take the insert lock (always, but for the benchmark that measures it).
    serialised: bool,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn db_id(id: u64) -> Result<i64, InboxError> {
    i64::try_from(id).map_err(|_| InboxError::IdOutOfRange(id))
}

/// `url` with the password, if any, replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// The lock file that keeps a second gateway instance off the SQLite inbox of `url` (`None`:
/// not a SQLite file).
pub(crate) fn sqlite_lock_file(url: &str) -> Option<std::path::PathBuf> {
    sqlite_file(url).map(|f| std::path::PathBuf::from(format!("{f}.lock")))
}

/// The file of a `sqlite:` URL, if it names one.
fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && !path.starts_with(":memory:")).then_some(path)
}

fn dialect_of(url: &str) -> Result<Dialect, InboxError> {
    if url.starts_with("sqlite:") {
        Ok(Dialect::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Dialect::Postgres)
    } else {
        Err(InboxError::UnsupportedUrl(redact_url(url)))
    }
}

impl Inbox {
    /// Opens the database at `url` (`sqlite://…` or `postgres://…`) and applies the migrations.
    /// For SQLite, creates the file's directory if needed and switches the file to WAL so that
    /// readers never wait for the writer.
    pub async fn connect(url: &str) -> Result<Inbox, InboxError> {
        sqlx::any::install_default_drivers();
        let dialect = dialect_of(url)?;
        let connect_error = |source| InboxError::Connect {
            url: redact_url(url),
            source,
        };
        if dialect == Dialect::Sqlite {
            if let Some(parent) = sqlite_file(url)
                .map(std::path::Path::new)
                .and_then(|p| p.parent())
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    InboxError::Prepare(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
        }
        // One direct connection first: an unreachable database fails now, with its own error,
        // rather than after the pool's acquire timeout.
        {
            use sqlx::{Connection, Executor};
            let mut conn = sqlx::AnyConnection::connect(url)
                .await
                .map_err(connect_error)?;
            if dialect == Dialect::Sqlite {
                conn.execute("PRAGMA journal_mode = WAL").await?;
            }
            conn.close().await?;
        }
        let max_connections = match dialect {
            Dialect::Sqlite => 4,
            Dialect::Postgres => 10,
        };
        let pool = AnyPoolOptions::new()
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    if dialect == Dialect::Sqlite {
                        // WAL with synchronous=NORMAL: a commit no longer waits for an fsync,
                        // which capped the inbox at a few hundred notifications a second and
                        // backed up the pushes. A process crash loses nothing and the file
                        // never corrupts; a power cut or OS crash can lose the last commits
                        // (their Kafka offsets may be committed already). PostgreSQL is the
                        // production inbox.
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        // 16 MiB of page cache per connection instead of SQLite's 2 MiB: the
                        // index pages of a busy inbox no longer go back to the file (a pread
                        // per page) on every statement.
                        conn.execute("PRAGMA cache_size = -16384").await?;
                    }
                    Ok(())
                })
            })
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(connect_error)?;
        match dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Inbox {
            pool,
            dialect,
            url: url.into(),
            serialised: true,
        })
    }

    fn sql(&self) -> &'static Statements {
        match self.dialect {
            Dialect::Sqlite => &SQLITE,
            Dialect::Postgres => &POSTGRES,
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Stores `n` unless a notification with its id is already stored. A new withdrawal resolves
    /// the notification it withdraws (same tenant only). `None` if it was already stored.
    pub async fn insert(&self, n: &Notification) -> Result<Option<Inserted>, InboxError> {
        self.insert_with_deliveries(n, &[]).await
    }

    /// [`Inbox::insert`], recording in the same transaction `deliveries` of `n` to the channel
    /// outbox (unless `n` is not new, or arrives already withdrawn): a notification is never
    /// stored without its deliveries, and a replayed one queues nothing again.
    pub async fn insert_with_deliveries(
        &self,
        n: &Notification,
        deliveries: &[OutboxEntry],
    ) -> Result<Option<Inserted>, InboxError> {
        let mut batch = self.store(&[(n, deliveries)], &[]).await?;
        Ok(batch.inserted.pop().flatten())
    }

    /// [`Inbox::insert_with_deliveries`] of each of `batch`, in order, in one transaction: all or
    /// none are stored. One commit for many notifications is what lets the inbox keep up with a
    /// busy notifications topic (a commit per notification capped it at a few hundred a second).
    pub async fn insert_many_with_deliveries(
        &self,
        batch: &[(&Notification, &[OutboxEntry])],
    ) -> Result<Vec<Option<Inserted>>, InboxError> {
        Ok(self.store(batch, &[]).await?.inserted)
    }

    /// Stores `batch` as [`Inbox::insert_many_with_deliveries`] does and, in the same
    /// transaction, advances the stored Kafka positions to `offsets` (never backwards): what is
    /// stored and where to read on are one commit. Also tells where the inbox is complete up to
    /// ([`StoredBatch::through`]).
    pub async fn store(
        &self,
        batch: &[(&Notification, &[OutboxEntry])],
        offsets: &[KafkaPosition],
    ) -> Result<StoredBatch, InboxError> {
        let mut tx = self.begin_store().await?;
        let mut inserted = Vec::with_capacity(batch.len());
        for (n, deliveries) in batch {
            inserted.push(self.insert_in(&mut tx, n, deliveries).await?);
        }
        let through = self.finish_store(&mut tx, &inserted, offsets).await?;
        tx.commit().await?;
        Ok(StoredBatch { inserted, through })
    }

    /// A store transaction. On PostgreSQL it first takes the inbox's insert lock (module docs:
    /// commit order is sequence order), held until it commits or rolls back.
    async fn begin_store(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, InboxError> {
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres && self.serialised {
            sqlx::query(INSERT_LOCK).execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// The end of a store transaction: the Kafka positions, a `stored` signal to the other
    /// instances (sent by PostgreSQL at commit), and the newest sequence.
    async fn finish_store(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        inserted: &[Option<Inserted>],
        offsets: &[KafkaPosition],
    ) -> Result<i64, InboxError> {
        let upsert = match self.dialect {
            Dialect::Sqlite => UPSERT_OFFSET_SQLITE,
            Dialect::Postgres => UPSERT_OFFSET_POSTGRES,
        };
        for p in offsets {
            sqlx::query(upsert)
                .bind(p.topic.clone())
                .bind(p.partition)
                .bind(p.next_offset)
                .execute(&mut **tx)
                .await?;
        }
        if self.dialect == Dialect::Postgres && inserted.iter().any(Option::is_some) {
            sqlx::query(NOTIFY)
                .bind(Signal::Stored.to_payload())
                .execute(&mut **tx)
                .await?;
        }
        let row = sqlx::query(MAX_SEQ).fetch_one(&mut **tx).await?;
        Ok(row.try_get("seq")?)
    }

    /// Stores `n` and keeps the transaction open: for tests that must order commits by hand
    /// (the gap-free `since` test). Commit with [`PendingStore::commit`].
    #[doc(hidden)]
    pub async fn store_uncommitted(&self, n: &Notification) -> Result<PendingStore, InboxError> {
        let mut tx = self.begin_store().await?;
        let inserted = self.insert_in(&mut tx, n, &[]).await?;
        Ok(PendingStore { tx, inserted })
    }

    /// This inbox without the insert lock: sequences may then become visible out of order.
    /// Only for `examples/inbox_writers.rs`, which measures what the lock costs.
    #[doc(hidden)]
    pub fn without_insert_lock(mut self) -> Inbox {
        self.serialised = false;
        self
    }

    /// The newest sequence stored (0 if none).
    pub async fn max_sequence(&self) -> Result<i64, InboxError> {
        let row = sqlx::query(MAX_SEQ).fetch_one(&self.pool).await?;
        Ok(row.try_get("seq")?)
    }

    /// Up to `limit` notifications, all tenants, with sequence in `(after, through]`, oldest
    /// first, and whether each is withdrawn: what this instance has not pushed yet.
    pub(crate) async fn tail(
        &self,
        after: i64,
        through: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Notification, bool)>, InboxError> {
        let rows = sqlx::query(self.sql().tail)
            .bind(after)
            .bind(through)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let sequence: i64 = row.try_get("seq")?;
            let payload: String = row.try_get("payload")?;
            let withdrawn: i64 = row.try_get("is_withdrawn")?;
            match serde_json::from_str(&payload) {
                Ok(n) => out.push((sequence, n, withdrawn != 0)),
                Err(e) => {
                    tracing::warn!(sequence, error = %e, "not pushing a stored notification that does not decode")
                }
            }
        }
        Ok(out)
    }

    /// The stored Kafka positions of `topic`: partition → offset of the next record to read.
    pub async fn kafka_positions(
        &self,
        topic: &str,
    ) -> Result<std::collections::HashMap<i32, i64>, InboxError> {
        let rows = sqlx::query(SELECT_OFFSETS)
            .bind(topic.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kafka_partition")?, r.try_get("next_offset")?)))
            .collect()
    }

    /// Advances the stored Kafka positions alone (records that were no notification).
    pub(crate) async fn store_positions(
        &self,
        offsets: &[KafkaPosition],
    ) -> Result<(), InboxError> {
        self.store(&[], offsets).await.map(drop)
    }

    /// Tells the other instances on this database (PostgreSQL `NOTIFY`; nothing on SQLite).
    pub(crate) async fn signal(&self, signal: &Signal) -> Result<(), InboxError> {
        if self.dialect == Dialect::Postgres {
            sqlx::query(NOTIFY)
                .bind(signal.to_payload())
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Whether the inbox is PostgreSQL (shared by instances) rather than SQLite.
    pub(crate) fn is_shared(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    /// The database URL (the PostgreSQL listener opens its own connection).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    async fn insert_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        n: &Notification,
        deliveries: &[OutboxEntry],
    ) -> Result<Option<Inserted>, InboxError> {
        let sql = self.sql();
        let (audience_user_id, audience_role) = match &n.audience {
            Audience::User { user_id } => (Some(db_id(*user_id)?), None),
            Audience::Role { role } => (None, Some(role_name(*role))),
        };
        let tenant_id = db_id(n.tenant_id)?;
        let payload = serde_json::to_string(n).expect("notifications always serialize");
        let now = now_text();
        let row = sqlx::query(sql.insert)
            .bind(n.id.to_string())
            .bind(tenant_id)
            .bind(audience_user_id)
            .bind(audience_role)
            .bind(n.kind.as_str())
            .bind(priority_name(n))
            .bind(n.withdraws.map(|id| id.to_string()))
            .bind(payload)
            .bind(n.created_at.to_rfc3339_opts(SecondsFormat::Micros, true))
            .bind(now.clone())
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sequence: i64 = row.try_get("seq")?;
        if let Some(withdrawn) = n.withdraws {
            sqlx::query(sql.withdraw)
                .bind(tenant_id)
                .bind(withdrawn.to_string())
                .bind(now.clone())
                .execute(&mut **tx)
                .await?;
        }
        let already_withdrawn = sqlx::query(sql.withdrawn_before_arrival)
            .bind(sequence)
            .bind(tenant_id)
            .bind(now)
            .bind(n.id.to_string())
            .execute(&mut **tx)
            .await?
            .rows_affected()
            > 0;
        let deliveries = if already_withdrawn {
            0
        } else {
            self.enqueue(tx, n, deliveries).await?
        };
        Ok(Some(Inserted {
            sequence,
            already_withdrawn,
            deliveries,
        }))
    }

    /// The notifications of type `kind` created at or after `since`, in arrival order (the board
    /// reloads the recent unanswered-conversation notifications at start). Rows that do not
    /// decode are skipped with a warning.
    pub async fn recent_of_type(
        &self,
        kind: vigia_schemas::NotificationType,
        since: chrono::DateTime<Utc>,
    ) -> Result<Vec<Notification>, InboxError> {
        let rows = sqlx::query(self.sql().recent_of_type)
            .bind(kind.as_str())
            .bind(since.to_rfc3339_opts(SecondsFormat::Micros, true))
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let sequence: i64 = row.try_get("seq")?;
            let payload: String = row.try_get("payload")?;
            match serde_json::from_str(&payload) {
                Ok(n) => out.push(n),
                Err(e) => {
                    tracing::warn!(sequence, error = %e, "skipping a stored notification that does not decode")
                }
            }
        }
        Ok(out)
    }

    /// Stores `n` if new; true only if it was not stored before.
    pub async fn insert_if_new(&self, n: &Notification) -> Result<bool, InboxError> {
        Ok(self.insert(n).await?.is_some())
    }

    fn viewer_query<'q>(
        sql: &'static str,
        v: &Viewer,
    ) -> Result<sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>, InboxError> {
        Ok(sqlx::query(sql)
            .bind(db_id(v.tenant_id)?)
            .bind(i64::from(sees_whole_tenant(v.role)))
            .bind(db_id(v.user_id)?)
            .bind(role_name(v.role)))
    }

    /// Notifications visible to `v`, not read, not resolved.
    pub async fn unread_count(&self, v: &Viewer) -> Result<u64, InboxError> {
        Ok(self.unread_count_through(v).await?.0)
    }

    /// [`Inbox::unread_count`] and the newest sequence of `v`'s tenant it covers: every
    /// notification with a higher sequence was stored after the count.
    pub async fn unread_count_through(&self, v: &Viewer) -> Result<(u64, i64), InboxError> {
        let statements = match self.dialect {
            Dialect::Sqlite => &UNREAD_SQLITE,
            Dialect::Postgres => &UNREAD_POSTGRES,
        };
        let query = if sees_whole_tenant(v.role) {
            sqlx::query(statements.whole_tenant)
                .bind(db_id(v.tenant_id)?)
                .bind(db_id(v.user_id)?)
        } else {
            sqlx::query(statements.own)
                .bind(db_id(v.tenant_id)?)
                .bind(db_id(v.user_id)?)
                .bind(role_name(v.role))
        };
        let row = query.fetch_one(&self.pool).await?;
        let count: i64 = row.try_get("unread")?;
        let through: i64 = row.try_get("through")?;
        Ok((count.max(0) as u64, through))
    }

    /// Marks one notification read for `v`; false if `v` cannot see a notification with that id.
    pub async fn mark_read(&self, v: &Viewer, id: Uuid) -> Result<bool, InboxError> {
        let sql = self.sql();
        let Some(row) = Self::viewer_query(sql.find_visible, v)?
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(false);
        };
        let sequence: i64 = row.try_get("seq")?;
        sqlx::query(sql.mark_read)
            .bind(db_id(v.tenant_id)?)
            .bind(db_id(v.user_id)?)
            .bind(sequence)
            .bind(now_text())
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    /// Marks everything stored so far read for `v`.
    pub async fn mark_all_read(&self, v: &Viewer) -> Result<(), InboxError> {
        self.move_watermark(READ_ALL, v).await
    }

    /// Hides everything stored so far from `v`'s lists (and marks it read); newer notifications
    /// still show.
    pub async fn clear(&self, v: &Viewer) -> Result<(), InboxError> {
        self.move_watermark(CLEAR, v).await
    }

    async fn move_watermark(&self, sql: &'static str, v: &Viewer) -> Result<(), InboxError> {
        let (tenant_id, user_id) = (db_id(v.tenant_id)?, db_id(v.user_id)?);
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql)
            .bind(tenant_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(PRUNE_READS)
            .bind(tenant_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` notifications visible to `v` and not cleared, newest first, with sequence
    /// below `before` (all if `None`).
    pub async fn list(
        &self,
        v: &Viewer,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredNotification>, InboxError> {
        let rows = Self::viewer_query(self.sql().list, v)?
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_from_row).collect()
    }

    /// The notification `id` if `v` can see it (and has not cleared it).
    pub async fn get(
        &self,
        v: &Viewer,
        id: Uuid,
    ) -> Result<Option<StoredNotification>, InboxError> {
        let row = Self::viewer_query(self.sql().get, v)?
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(stored_from_row).transpose()
    }

    /// Up to `limit` notifications visible to `v` and not cleared, with sequence above `after`,
    /// oldest first: what a reconnecting client missed.
    pub async fn since(
        &self,
        v: &Viewer,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredNotification>, InboxError> {
        let rows = Self::viewer_query(self.sql().since, v)?
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_from_row).collect()
    }
}

impl Inbox {
    /// `v`'s effective preferences: what they saved, else their role's defaults. A stored row
    /// that no longer validates (written by another version) falls back to the defaults for
    /// the fields that fail, with a warning.
    pub async fn preferences(&self, v: &Viewer) -> Result<Preferences, InboxError> {
        let defaults = Preferences::for_role(v.role);
        let row = sqlx::query(self.sql().get_preferences)
            .bind(db_id(v.tenant_id)?)
            .bind(db_id(v.user_id)?)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(defaults);
        };
        let text: String = row.try_get("preferences")?;
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let stored = known_fields_only(&stored);
        match defaults.updated(&stored) {
            Ok(prefs) => Ok(prefs),
            Err(errors) => {
                tracing::warn!(
                    tenant_id = v.tenant_id,
                    user_id = v.user_id,
                    ?errors,
                    "stored preferences do not validate; using the valid fields only"
                );
                let mut prefs = defaults;
                if let Some(fields) = stored.as_object() {
                    for (name, value) in fields {
                        let one = serde_json::json!({ name.clone(): value.clone() });
                        if let Ok(p) = prefs.updated(&one) {
                            prefs = p;
                        }
                    }
                }
                Ok(prefs)
            }
        }
    }

    /// Saves `prefs` as `v`'s preferences (whole).
    pub async fn set_preferences(&self, v: &Viewer, prefs: &Preferences) -> Result<(), InboxError> {
        sqlx::query(self.sql().put_preferences)
            .bind(db_id(v.tenant_id)?)
            .bind(db_id(v.user_id)?)
            .bind(prefs.to_json().to_string())
            .bind(now_text())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn priority_name(n: &Notification) -> String {
    match serde_json::to_value(n.priority) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{:?}", n.priority).to_lowercase(),
    }
}

fn stored_from_row(row: &AnyRow) -> Result<StoredNotification, InboxError> {
    let sequence: i64 = row.try_get("seq")?;
    let payload: String = row.try_get("payload")?;
    let read: i64 = row.try_get("is_read")?;
    let withdrawn: i64 = row.try_get("is_withdrawn")?;
    let notification = serde_json::from_str(&payload).map_err(|e| InboxError::Corrupt {
        sequence,
        error: e.to_string(),
    })?;
    Ok(StoredNotification {
        sequence,
        read: read != 0,
        withdrawn: withdrawn != 0,
        notification,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://vigia:s3cret@db:5432/vigia"),
            "postgres://vigia:***@db:5432/vigia"
        );
        assert_eq!(
            redact_url("sqlite:///data/gateway.db?mode=rwc"),
            "sqlite:///data/gateway.db?mode=rwc"
        );
        assert_eq!(redact_url("postgres://db/vigia"), "postgres://db/vigia");
    }

    #[test]
    fn the_dialect_comes_from_the_url() {
        assert_eq!(
            dialect_of("sqlite://x.db?mode=rwc").unwrap(),
            Dialect::Sqlite
        );
        assert_eq!(dialect_of("sqlite::memory:").unwrap(), Dialect::Sqlite);
        assert_eq!(dialect_of("postgres://h/db").unwrap(), Dialect::Postgres);
        assert_eq!(dialect_of("postgresql://h/db").unwrap(), Dialect::Postgres);
        assert!(matches!(
            dialect_of("mysql://u:pw@h/db"),
            Err(InboxError::UnsupportedUrl(u)) if !u.contains("pw")
        ));
    }

    #[test]
    fn the_sqlite_file_is_found_in_the_url() {
        assert_eq!(
            sqlite_file("sqlite:///data/gw.db?mode=rwc"),
            Some("/data/gw.db")
        );
        assert_eq!(sqlite_file("sqlite://gw.db"), Some("gw.db"));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }
}
