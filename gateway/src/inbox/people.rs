//! The people directory (table `people`): each user's name and role as their latest
//! `user.upserted` said, per tenant, in the inbox database, so that every gateway instance
//! sharing the database names them alike. Filled by the consumer of `crate::people`.
//!
//! "Latest" is by event time, ties broken by the larger event id: the order the events arrive
//! in (late, replayed, or stored by two instances at once) never changes which one a row ends
//! with, and storing the same event twice changes nothing. The comparison is in the `UPSERT`
//! itself, so concurrent writers need no lock.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;
use vigia_schemas::{Role, TenantId, UserId};

use super::{db_id, Dialect, Inbox, InboxError};
use crate::audience::role_name;

/// A user as the dashboard names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    pub user_id: UserId,
    pub name: String,
    pub role: Role,
}

/// One `user.upserted`, as the directory stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonUpsert {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub name: String,
    pub role: Role,
    /// The event's `occurred_at`.
    pub at: DateTime<Utc>,
    pub event_id: Uuid,
}

const UPSERT_SQLITE: &str =
    "INSERT INTO people (tenant_id, user_id, name, role, upserted_at, event_id) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (tenant_id, user_id) DO UPDATE SET name = excluded.name, role = excluded.role, \
       upserted_at = excluded.upserted_at, event_id = excluded.event_id \
     WHERE excluded.upserted_at > people.upserted_at \
        OR (excluded.upserted_at = people.upserted_at AND excluded.event_id > people.event_id)";

const UPSERT_POSTGRES: &str =
    "INSERT INTO people (tenant_id, user_id, name, role, upserted_at, event_id) \
     VALUES ($1, $2, $3, $4, $5::timestamptz, $6::uuid) \
     ON CONFLICT (tenant_id, user_id) DO UPDATE SET name = excluded.name, role = excluded.role, \
       upserted_at = excluded.upserted_at, event_id = excluded.event_id \
     WHERE excluded.upserted_at > people.upserted_at \
        OR (excluded.upserted_at = people.upserted_at AND excluded.event_id > people.event_id)";

const OF_TENANT: &str =
    "SELECT user_id, name, role FROM people WHERE tenant_id = $1 ORDER BY user_id";
const ONE: &str = "SELECT user_id, name, role FROM people WHERE tenant_id = $1 AND user_id = $2";

fn role_of(name: &str) -> Option<Role> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// The person of `row`, or `None` (logged) for a role this version does not know.
fn person_from_row(row: &AnyRow) -> Result<Option<Person>, InboxError> {
    let user_id: i64 = row.try_get("user_id")?;
    let name: String = row.try_get("name")?;
    let role: String = row.try_get("role")?;
    let Some(role) = role_of(&role) else {
        tracing::warn!(
            user_id,
            role,
            "skipping a person with a role this version does not know"
        );
        return Ok(None);
    };
    Ok(Some(Person {
        user_id: user_id as UserId,
        name,
        role,
    }))
}

impl Inbox {
    /// Stores `p` unless the directory holds a later `user.upserted` of that user (see the
    /// module docs). Returns whether the row now holds `p` (false: older, or the same again).
    pub async fn upsert_person(&self, p: &PersonUpsert) -> Result<bool, InboxError> {
        let sql = match self.dialect {
            Dialect::Sqlite => UPSERT_SQLITE,
            Dialect::Postgres => UPSERT_POSTGRES,
        };
        let done = sqlx::query(sql)
            .bind(db_id(p.tenant_id)?)
            .bind(db_id(p.user_id)?)
            .bind(p.name.clone())
            .bind(role_name(p.role))
            .bind(p.at.to_rfc3339_opts(SecondsFormat::Micros, true))
            .bind(p.event_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every person of `tenant_id`, by user id.
    pub async fn people(&self, tenant_id: TenantId) -> Result<Vec<Person>, InboxError> {
        let rows = sqlx::query(OF_TENANT)
            .bind(db_id(tenant_id)?)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.extend(person_from_row(row)?);
        }
        Ok(out)
    }

    /// `user_id` of `tenant_id`, if a `user.upserted` of theirs was ever stored.
    pub async fn person(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
    ) -> Result<Option<Person>, InboxError> {
        let row = sqlx::query(ONE)
            .bind(db_id(tenant_id)?)
            .bind(db_id(user_id)?)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => person_from_row(&row)?,
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_name_reads_back() {
        for role in [
            Role::Ceo,
            Role::Manager,
            Role::Seller,
            Role::Secretary,
            Role::Supervisor,
        ] {
            assert_eq!(role_of(role_name(role)), Some(role));
        }
        assert_eq!(role_of("janitor"), None);
    }
}
