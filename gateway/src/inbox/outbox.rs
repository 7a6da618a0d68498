//! The durable channel outbox (table `channel_outbox`): one row per delivery of a notification
//! outside the browser, keyed by (notification id, channel, recipient). Rows are written by
//! [`Inbox::insert_with_deliveries`] in the transaction that stores the notification; the
//! channel workers (`crate::channels`) take the due ones, attempt them and record the outcome.
//!
//! States: `pending` (waiting for its `not_before`, or for a worker), `sent`, `failed` (a
//! permanent error, or out of attempts). `sent` rows are deleted once older than the
//! configured retention ([`Inbox::outbox_delete_sent_before`]); `failed` rows stay until an
//! operator retries them with
//! `UPDATE channel_outbox SET state = 'pending', attempts = 0 WHERE state = 'failed'`.
//!
//! **Leases.** Several gateway instances may work one outbox (PostgreSQL). A worker takes a row
//! by leasing it ([`Inbox::outbox_claim_due`]: `lease_owner`, `lease_until_ms`), in one
//! statement that skips rows leased by others (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so two
//! instances never wait on, nor take, the same row); it then attempts the delivery and records
//! the outcome only if it still holds the lease, which the outcome clears. An instance that dies
//! mid-delivery leaves its lease behind: once it expires, any instance takes the row (and sends
//! it again if the dead one had sent it without recording it — the receivers dedupe on the
//! notification id). The lease must outlast an attempt (`channels.lease` > `channels.timeout`),
//! or a slow attempt could be taken over while it still runs.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;
use vigia_schemas::{Notification, TenantId, UserId};

use super::{db_id, now_text, Dialect, Inbox, InboxError};

/// A delivery to record with a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// `email`, `slack` or `teams`.
    pub channel: &'static str,
    /// The e-mail address, or the webhook's id.
    pub recipient: String,
    /// The user whose preferences chose this delivery (none for fixed recipients and webhooks).
    pub user_id: Option<UserId>,
    /// No attempt before this instant.
    pub not_before: DateTime<Utc>,
}

/// A pending delivery whose time has come.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The row.
    pub id: i64,
    pub recipient: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// The notification, or why its stored form does not decode.
    pub notification: Result<Notification, UndecodableNotification>,
}

/// A stored notification whose JSON does not decode any more (damaged, or written by an
/// incompatible version): its deliveries are given up, never retried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the stored notification does not decode: {0}")]
pub struct UndecodableNotification(std::sync::Arc<serde_json::Error>);

/// One row, as [`Inbox::outbox`] lists them (tests and operators).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxRow {
    pub notification_id: Uuid,
    pub channel: String,
    pub recipient: String,
    pub user_id: Option<UserId>,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    pub attempts: u32,
    pub not_before: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// Statements whose text differs between the dialects.
struct Statements {
    enqueue: &'static str,
    claim_due: &'static str,
    payload: &'static str,
    mark_sent: &'static str,
    mark_retry: &'static str,
    mark_failed: &'static str,
    list: &'static str,
}

// $1 tenant, $2 channel, $3 recipient or '' for any.
macro_rules! selection {
    ($recipient:literal) => {
        concat!(
            "o.tenant_id = $1 AND o.channel = $2 AND (",
            $recipient,
            " = '' OR o.recipient = ",
            $recipient,
            ") AND o.state = 'pending'"
        )
    };
}

// Due at $4 (Unix ms) and not leased, or its lease over.
macro_rules! due {
    () => {
        " AND o.not_before_ms <= $4 AND (o.lease_until_ms IS NULL OR o.lease_until_ms <= $4)"
    };
}

// $1 the row, $2 the lease owner: an outcome counts only from the lease's holder, and ends it.
macro_rules! release {
    () => {
        "lease_owner = NULL, lease_until_ms = NULL WHERE id = $1 AND lease_owner = $2"
    };
}

// A row leased by another instance is due again when its lease ends.
macro_rules! next_time {
    () => {
        "SELECT MIN(CASE WHEN o.lease_until_ms IS NOT NULL AND o.lease_until_ms > o.not_before_ms \
         THEN o.lease_until_ms ELSE o.not_before_ms END) AS next FROM channel_outbox o WHERE "
    };
}

const SQLITE: Statements = Statements {
    enqueue:
        "INSERT INTO channel_outbox (notification_id, tenant_id, channel, recipient, user_id, \
              state, attempts, not_before_ms, created_at, updated_at) \
              VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $7) \
              ON CONFLICT (notification_id, channel, recipient) DO NOTHING",
    claim_due: concat!(
        "UPDATE channel_outbox SET lease_owner = $5, lease_until_ms = $6 WHERE id = (\
         SELECT o.id FROM channel_outbox o WHERE ",
        selection!("$3"),
        due!(),
        " ORDER BY o.not_before_ms, o.id LIMIT 1) \
         RETURNING id, recipient, attempts, notification_id"
    ),
    payload: "SELECT payload FROM notifications WHERE id = $1",
    mark_sent: concat!(
        "UPDATE channel_outbox SET state = 'sent', attempts = $3, last_error = NULL, \
         updated_at = $4, sent_at_ms = $5, ",
        release!()
    ),
    mark_retry: concat!(
        "UPDATE channel_outbox SET attempts = $3, not_before_ms = $4, last_error = $5, \
         updated_at = $6, ",
        release!()
    ),
    mark_failed: concat!(
        "UPDATE channel_outbox SET state = 'failed', attempts = $3, last_error = $4, \
         updated_at = $5, ",
        release!()
    ),
    list: "SELECT notification_id, channel, recipient, user_id, state, attempts, not_before_ms, \
           last_error FROM channel_outbox WHERE tenant_id = $1 ORDER BY id",
};

const POSTGRES: Statements = Statements {
    enqueue: "INSERT INTO channel_outbox (notification_id, tenant_id, channel, recipient, user_id, \
              state, attempts, not_before_ms, created_at, updated_at) \
              VALUES ($1::uuid, $2, $3, $4, $5, 'pending', 0, $6, $7::timestamptz, $7::timestamptz) \
              ON CONFLICT (notification_id, channel, recipient) DO NOTHING",
    claim_due: concat!(
        "UPDATE channel_outbox SET lease_owner = $5, lease_until_ms = $6 WHERE id = (\
         SELECT o.id FROM channel_outbox o WHERE ",
        selection!("$3::text"),
        due!(),
        " ORDER BY o.not_before_ms, o.id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, recipient, attempts, notification_id::text AS notification_id"
    ),
    payload: "SELECT payload::text AS payload FROM notifications WHERE id = $1::uuid",
    mark_sent: concat!(
        "UPDATE channel_outbox SET state = 'sent', attempts = $3, last_error = NULL, \
         updated_at = $4::timestamptz, sent_at_ms = $5, ",
        release!()
    ),
    mark_retry: concat!(
        "UPDATE channel_outbox SET attempts = $3, not_before_ms = $4, last_error = $5, \
         updated_at = $6::timestamptz, ",
        release!()
    ),
    mark_failed: concat!(
        "UPDATE channel_outbox SET state = 'failed', attempts = $3, last_error = $4, \
         updated_at = $5::timestamptz, ",
        release!()
    ),
    list: "SELECT notification_id::text AS notification_id, channel, recipient, user_id, state, \
           attempts, not_before_ms, last_error FROM channel_outbox WHERE tenant_id = $1 ORDER BY id",
};

const NEXT_TIME_SQLITE: &str = concat!(next_time!(), selection!("$3"));
const NEXT_TIME_POSTGRES: &str = concat!(next_time!(), selection!("$3::text"));

const DELETE_SENT: &str = "DELETE FROM channel_outbox WHERE state = 'sent' AND sent_at_ms < $1";

const PENDING_SUMMARY: &str = "SELECT tenant_id, channel, recipient, COUNT(*) AS pending \
     FROM channel_outbox WHERE state = 'pending' GROUP BY tenant_id, channel, recipient";

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl Inbox {
    fn outbox_sql(&self) -> &'static Statements {
        match self.dialect {
            Dialect::Sqlite => &SQLITE,
            Dialect::Postgres => &POSTGRES,
        }
    }

    /// Records `entries` for the notification `n` within `tx` (already holding `n`); an entry
    /// whose (notification, channel, recipient) is already there is skipped. Returns how many
    /// were new.
    pub(super) async fn enqueue(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        n: &Notification,
        entries: &[OutboxEntry],
    ) -> Result<usize, InboxError> {
        let now = now_text();
        let mut added = 0;
        for e in entries {
            let user_id = e.user_id.map(db_id).transpose()?;
            added += sqlx::query(self.outbox_sql().enqueue)
                .bind(n.id.to_string())
                .bind(db_id(n.tenant_id)?)
                .bind(e.channel)
                .bind(e.recipient.clone())
                .bind(user_id)
                .bind(millis(e.not_before))
                .bind(now.clone())
                .execute(&mut **tx)
                .await?
                .rows_affected() as usize;
        }
        Ok(added)
    }

    /// Leases to `owner`, until `now + lease`, the pending delivery of `tenant`'s `channel` (to
    /// `recipient`, or to anybody if `None`) that is due at `now`, not leased by anybody else,
    /// and has waited longest.
    pub async fn outbox_claim_due(
        &self,
        tenant: TenantId,
        channel: &str,
        recipient: Option<&str>,
        now: DateTime<Utc>,
        owner: &str,
        lease: std::time::Duration,
    ) -> Result<Option<DueDelivery>, InboxError> {
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let row = sqlx::query(self.outbox_sql().claim_due)
            .bind(db_id(tenant)?)
            .bind(channel.to_string())
            .bind(recipient.unwrap_or("").to_string())
            .bind(millis(now))
            .bind(owner.to_string())
            .bind(millis(now).saturating_add(lease.num_milliseconds()))
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let notification_id: String = row.try_get("notification_id")?;
        let payload: String = sqlx::query(self.outbox_sql().payload)
            .bind(notification_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("payload")?;
        let attempts: i64 = row.try_get("attempts")?;
        Ok(Some(DueDelivery {
            id: row.try_get("id")?,
            recipient: row.try_get("recipient")?,
            attempts: count(attempts),
            notification: serde_json::from_str(&payload)
                .map_err(|e| UndecodableNotification(std::sync::Arc::new(e))),
        }))
    }

    /// When the next pending delivery of that selection is due (`None`: nothing pending).
    pub async fn outbox_next_time(
        &self,
        tenant: TenantId,
        channel: &str,
        recipient: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, InboxError> {
        let sql = match self.dialect {
            Dialect::Sqlite => NEXT_TIME_SQLITE,
            Dialect::Postgres => NEXT_TIME_POSTGRES,
        };
        let row = sqlx::query(sql)
            .bind(db_id(tenant)?)
            .bind(channel.to_string())
            .bind(recipient.unwrap_or("").to_string())
            .fetch_one(&self.pool)
            .await?;
        let next: Option<i64> = row.try_get("next")?;
        Ok(next.map(from_millis))
    }

    /// Delivery `id`, leased by `owner`, went through on attempt number `attempts`. False if
    /// `owner` no longer held its lease (nothing recorded).
    pub async fn outbox_mark_sent(
        &self,
        id: i64,
        owner: &str,
        attempts: u32,
    ) -> Result<bool, InboxError> {
        let now = Utc::now();
        let done = sqlx::query(self.outbox_sql().mark_sent)
            .bind(id)
            .bind(owner.to_string())
            .bind(i64::from(attempts))
            .bind(now_text())
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Attempt number `attempts` of delivery `id`, leased by `owner`, failed; the next one not
    /// before `next`. False if `owner` no longer held its lease.
    pub async fn outbox_mark_retry(
        &self,
        id: i64,
        owner: &str,
        attempts: u32,
        next: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, InboxError> {
        let done = sqlx::query(self.outbox_sql().mark_retry)
            .bind(id)
            .bind(owner.to_string())
            .bind(i64::from(attempts))
            .bind(millis(next))
            .bind(error.to_string())
            .bind(now_text())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Delivery `id`, leased by `owner`, is given up after `attempts` attempts. False if
    /// `owner` no longer held its lease.
    pub async fn outbox_mark_failed(
        &self,
        id: i64,
        owner: &str,
        attempts: u32,
        error: &str,
    ) -> Result<bool, InboxError> {
        let done = sqlx::query(self.outbox_sql().mark_failed)
            .bind(id)
            .bind(owner.to_string())
            .bind(i64::from(attempts))
            .bind(error.to_string())
            .bind(now_text())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Gives up `owner`'s lease of delivery `id` (an attempt interrupted by shutdown) without
    /// an outcome: the row is due again at once.
    pub async fn outbox_release(&self, id: i64, owner: &str) -> Result<(), InboxError> {
        sqlx::query(concat!("UPDATE channel_outbox SET ", release!()))
            .bind(id)
            .bind(owner.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes the `sent` rows sent before `cutoff`; returns how many.
    pub async fn outbox_delete_sent_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, InboxError> {
        let done = sqlx::query(DELETE_SENT)
            .bind(millis(cutoff))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Pending deliveries per (tenant, channel, recipient).
    pub async fn outbox_pending(&self) -> Result<Vec<(TenantId, String, String, u64)>, InboxError> {
        let rows = sqlx::query(PENDING_SUMMARY).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let tenant: i64 = r.try_get("tenant_id")?;
                let pending: i64 = r.try_get("pending")?;
                Ok((
                    tenant.max(0) as TenantId,
                    r.try_get("channel")?,
                    r.try_get("recipient")?,
                    pending.max(0) as u64,
                ))
            })
            .collect()
    }

    /// Every outbox row of `tenant`, oldest first.
    #[doc(hidden)]
    pub async fn outbox(&self, tenant: TenantId) -> Result<Vec<OutboxRow>, InboxError> {
        let rows = sqlx::query(self.outbox_sql().list)
            .bind(db_id(tenant)?)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("notification_id")?;
                let user_id: Option<i64> = r.try_get("user_id")?;
                let attempts: i64 = r.try_get("attempts")?;
                let not_before: i64 = r.try_get("not_before_ms")?;
                Ok(OutboxRow {
                    notification_id: id.parse().map_err(|e| InboxError::Corrupt {
                        sequence: 0,
                        error: format!("outbox notification id {id:?}: {e}"),
                    })?,
                    channel: r.try_get("channel")?,
                    recipient: r.try_get("recipient")?,
                    user_id: user_id.map(|u| u.max(0) as UserId),
                    state: r.try_get("state")?,
                    attempts: count(attempts),
                    not_before: from_millis(not_before),
                    last_error: r.try_get("last_error")?,
                })
            })
            .collect()
    }
}
