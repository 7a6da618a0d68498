//! Writing one batch of rows into one table exactly once: drop in-batch duplicates, ask
//! ClickHouse which (tenant, id) pairs it already has, insert the rest in a single INSERT.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use uuid::Uuid;

use crate::rows::SinkRow;
use crate::{Config, SinkError};

/// Ids per existence query: keeps the query text (~40 bytes an id) far below ClickHouse's
/// `max_query_size` (256 KiB), and the per-tenant time ranges tight.
const IDS_PER_QUERY: usize = 1000;
/// Longest wait for a SELECT (existence check, process check).
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait to send one chunk of an INSERT, and for ClickHouse to confirm it.
const INSERT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
const INSERT_END_TIMEOUT: Duration = Duration::from_secs(60);

/// What one [`Writer::write`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Rows inserted now.
    pub inserted: usize,
    /// Rows skipped because ClickHouse already had their (tenant, id) (a redelivery).
    pub already_stored: usize,
    /// Rows skipped because an earlier row of the same batch had their (tenant, id).
    pub duplicates_in_batch: usize,
}

/// Writes batches into the tables of one database. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    client: clickhouse::Client,
    url: String,
    database: String,
    /// Identifies this writer's INSERTs in `system.processes` (see [`Writer::write`]).
    instance: String,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct StoredKey {
    tenant_id: u64,
    #[serde(with = "clickhouse::serde::uuid")]
    id: Uuid,
}

/// What identifies a row: its id *within its tenant*. Ids come from the tenants (an event's
/// `event_id`) or derive from tenant-scoped causes, so two tenants may share one; keyed by id
/// alone, one tenant's row would hide another's.
pub(crate) type RowKey = (u64, Uuid);

fn key<R: SinkRow>(r: &R) -> RowKey {
    (r.tenant_id(), r.id())
}

impl Writer {
    pub fn new(cfg: &Config) -> Result<Writer, SinkError> {
        cfg.validate()?;
        Ok(Writer {
            client: cfg.client().with_database(&cfg.database),
            url: cfg.url.clone(),
            database: cfg.database.clone(),
            instance: Uuid::new_v4().simple().to_string(),
        })
    }

    /// Writes `rows` into `R::TABLE` so that each (tenant, id) ends up in the table exactly once,
    /// however often this is called with overlapping batches, and whatever a previous call got
    /// done before it failed.
    ///
    /// 1. Keep the first row of each (tenant, id).
    /// 2. If a previous INSERT of this writer into this table is still running in ClickHouse
    ///    (its client gave up, the server did not), fail with
    ///    [`SinkError::InsertStillRunning`]: its rows are not visible yet, so checking now could
    ///    miss them. Every INSERT of this writer into a table carries the same `query_id`, which
    ///    ClickHouse also refuses to run twice at once.
    /// 3. Ask which (tenant, id) pairs already exist, reading only the batch's tenants and time
    ///    ranges.
    /// 4. Insert the others in one INSERT.
    ///
    /// An error leaves the table with any subset of the batch; calling again with the same rows
    /// completes it.
    pub async fn write<R: SinkRow>(&self, rows: &[R]) -> Result<WriteOutcome, SinkError> {
        let unique = unique_by_id(rows);
        let duplicates_in_batch = rows.len() - unique.len();
        if unique.is_empty() {
            return Ok(WriteOutcome {
                duplicates_in_batch,
                ..WriteOutcome::default()
            });
        }
        let query_id = self.insert_query_id(R::TABLE);
        if self.is_running(&query_id).await? {
            return Err(SinkError::InsertStillRunning {
                table: R::TABLE.to_string(),
                query_id,
            });
        }
        let mut existing = HashSet::new();
        for chunk in unique.chunks(IDS_PER_QUERY) {
            let sql = existing_ids_sql(&self.database, chunk);
            let doing = format!("check which rows of a batch {} already has", R::TABLE);
            let stored: Vec<StoredKey> = self
                .timed(
                    &doing,
                    QUERY_TIMEOUT,
                    self.client.query_raw(&sql).fetch_all(),
                )
                .await?;
            existing.extend(stored.into_iter().map(|r| (r.tenant_id, r.id)));
        }
        let missing = rows_to_insert(rows, &existing);
        let already_stored = rows.len() - duplicates_in_batch - missing.len();
        if !missing.is_empty() {
            self.insert(&query_id, &missing).await?;
        }
        Ok(WriteOutcome {
            inserted: missing.len(),
            already_stored,
            duplicates_in_batch,
        })
    }

    /// The `query_id` of this writer's INSERTs into `table` (as seen in `system.processes` and
    /// `system.query_log`).
    pub fn insert_query_id(&self, table: &str) -> String {
        format!("vigia-sink-{}-{table}", self.instance)
    }

    async fn insert<R: SinkRow>(&self, query_id: &str, rows: &[&R]) -> Result<(), SinkError> {
        let doing = format!("insert {} rows into {}", rows.len(), R::TABLE);
        let err = |e| SinkError::clickhouse(&self.url, &doing, e);
        let mut insert = self
            .client
            .insert::<R>(R::TABLE)
            .await
            .map_err(err)?
            .with_setting("query_id", query_id)
            .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
        for row in rows {
            insert.write(row).await.map_err(err)?;
        }
        insert.end().await.map_err(err)
    }

    async fn is_running(&self, query_id: &str) -> Result<bool, SinkError> {
        let sql =
            format!("SELECT toUInt64(count()) FROM system.processes WHERE query_id = '{query_id}'");
        let count: u64 = self
            .timed(
                "look for a still-running INSERT",
                QUERY_TIMEOUT,
                self.client.query_raw(&sql).fetch_one(),
            )
            .await?;
        Ok(count > 0)
    }

    async fn timed<T>(
        &self,
        doing: &str,
        limit: Duration,
        fut: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, SinkError> {
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r.map_err(|e| SinkError::clickhouse(&self.url, doing, e)),
            Err(_) => Err(SinkError::ClickHouseTimeout {
                url: self.url.clone(),
                doing: doing.to_string(),
                seconds: limit.as_secs(),
            }),
        }
    }
}

/// The first row of each (tenant, id), in batch order.
pub(crate) fn unique_by_id<R: SinkRow>(rows: &[R]) -> Vec<&R> {
    let mut seen = HashSet::with_capacity(rows.len());
    rows.iter().filter(|r| seen.insert(key(*r))).collect()
}

/// The rows of a batch that still need inserting, given the (tenant, id) pairs ClickHouse
/// already has: the first row of each pair that is not in `existing`.
pub(crate) fn rows_to_insert<'a, R: SinkRow>(
    rows: &'a [R],
    existing: &HashSet<RowKey>,
) -> Vec<&'a R> {
    unique_by_id(rows)
        .into_iter()
        .filter(|r| !existing.contains(&key(*r)))
        .collect()
}

/// Times of one tenant further apart than this get separate ranges in the existence query, so a
/// late event from hours ago does not make it read everything in between.
const RANGE_GAP_SECS: u32 = 3600;

/// `SELECT tenant_id, id FROM table WHERE (<per tenant: tenant_id = t AND time BETWEEN a AND b
/// OR ...>) AND id IN (...)`: the caller matches (tenant, id) pairs, since another tenant's row
/// with one of these ids may be in the ranges too. Every copy of a row has the same tenant and event time, so a stored copy of any
/// of `rows` is within these ranges; the ranges let ClickHouse read only the parts and granules
/// of the batch's tenants and times (the tables are sorted by `(tenant_id, time, id)`).
pub(crate) fn existing_ids_sql<R: SinkRow>(database: &str, rows: &[&R]) -> String {
    let mut times: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for r in rows {
        times.entry(r.tenant_id()).or_default().push(r.time_secs());
    }
    let time = R::TIME_COLUMN;
    let mut ranges = Vec::new();
    for (tenant, mut ts) in times {
        ts.sort_unstable();
        let mut lo = ts[0];
        let mut hi = ts[0];
        for &t in &ts[1..] {
            if t - hi > RANGE_GAP_SECS {
                ranges.push((tenant, lo, hi));
                lo = t;
            }
            hi = t;
        }
        ranges.push((tenant, lo, hi));
    }
    let ranges = ranges
        .iter()
        .map(|(tenant, lo, hi)| {
            format!(
                "(tenant_id = {tenant} AND {time} BETWEEN toDateTime({lo}) AND toDateTime({hi}))"
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    let ids = rows
        .iter()
        .map(|r| format!("'{}'", r.id()))
        .collect::<Vec<_>>()
        .join(", ");
    let id = R::ID_COLUMN;
    format!(
        "SELECT tenant_id, {id} FROM `{database}`.`{table}` WHERE ({ranges}) AND {id} IN ({ids})",
        table = R::TABLE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{EventRow, KafkaOrigin};

    fn row(id: u128, tenant: u64, secs: u32) -> EventRow {
        EventRow {
            event_id: Uuid::from_u128(id),
            tenant_id: tenant,
            kind: "conversation.closed".into(),
            occurred_at: secs,
            occurred_at_ms: secs as u64 * 1000,
            conversation_id: format!("c{id}"),
            lead_id: String::new(),
            seller_id: 0,
            payload: "{}".into(),
            kafka_partition: KafkaOrigin::default().partition,
            kafka_offset: id as i64,
        }
    }

    #[test]
    fn keeps_the_first_copy_of_each_id_and_drops_stored_ones() {
        let rows = vec![
            row(1, 1, 10),
            row(2, 1, 11),
            row(1, 1, 10),
            row(3, 2, 12),
            row(2, 1, 11),
        ];
        let unique: Vec<u64> = unique_by_id(&rows)
            .iter()
            .map(|r| r.kafka_offset as u64)
            .collect();
        assert_eq!(unique, vec![1, 2, 3]);
        // The first copy wins: its lineage is kept.
        assert_eq!(unique_by_id(&rows)[0].kafka_offset, 1);

        let existing: HashSet<RowKey> = [(1, Uuid::from_u128(2)), (1, Uuid::from_u128(99))].into();
        let ids: Vec<Uuid> = rows_to_insert(&rows, &existing)
            .iter()
            .map(|r| r.event_id)
            .collect();
        assert_eq!(ids, vec![Uuid::from_u128(1), Uuid::from_u128(3)]);

        let all: HashSet<RowKey> = [(1, 1), (1, 2), (2, 3)]
            .map(|(t, i)| (t, Uuid::from_u128(i)))
            .into();
        assert!(rows_to_insert(&rows, &all).is_empty());
        // The same id stored under another tenant does not count.
        let elsewhere: HashSet<RowKey> = [(9, Uuid::from_u128(1))].into();
        assert_eq!(rows_to_insert(&rows, &elsewhere).len(), 3);
        assert!(rows_to_insert::<EventRow>(&[], &HashSet::new()).is_empty());
    }

    #[test]
    fn one_id_under_two_tenants_is_two_rows() {
        let rows = vec![row(1, 1, 10), row(1, 2, 10), row(1, 1, 10)];
        let unique: Vec<u64> = unique_by_id(&rows).iter().map(|r| r.tenant_id).collect();
        assert_eq!(unique, vec![1, 2]);
        let existing: HashSet<RowKey> = [(1, Uuid::from_u128(1))].into();
        let missing: Vec<u64> = rows_to_insert(&rows, &existing)
            .iter()
            .map(|r| r.tenant_id)
            .collect();
        assert_eq!(missing, vec![2]);
    }

    #[test]
    fn existence_query_bounds_each_tenant_by_its_own_time_range() {
        let rows = [
            row(1, 7, 100),
            row(2, 7, 50),
            row(3, 9, 1000),
            row(4, 7, 70),
        ];
        let refs: Vec<&EventRow> = rows.iter().collect();
        let sql = existing_ids_sql("vigia_x", &refs);
        assert_eq!(
            sql,
            format!(
                "SELECT tenant_id, event_id FROM `vigia_x`.`events` WHERE \
                 ((tenant_id = 7 AND occurred_at BETWEEN toDateTime(50) AND toDateTime(100)) OR \
                 (tenant_id = 9 AND occurred_at BETWEEN toDateTime(1000) AND toDateTime(1000))) \
                 AND event_id IN ('{}', '{}', '{}', '{}')",
                Uuid::from_u128(1),
                Uuid::from_u128(2),
                Uuid::from_u128(3),
                Uuid::from_u128(4)
            )
        );
    }

    #[test]
    fn distant_times_of_a_tenant_get_their_own_ranges() {
        let rows = [
            row(1, 7, 10_000),
            row(2, 7, 100),
            row(3, 7, 3_700),
            row(4, 7, 10_500),
        ];
        let refs: Vec<&EventRow> = rows.iter().collect();
        let sql = existing_ids_sql("d", &refs);
        assert!(
            sql.contains(
                "WHERE ((tenant_id = 7 AND occurred_at BETWEEN toDateTime(100) AND toDateTime(3700)) \
                 OR (tenant_id = 7 AND occurred_at BETWEEN toDateTime(10000) AND toDateTime(10500))) \
                 AND event_id IN"
            ),
            "{sql}"
        );
    }

    #[test]
    fn a_full_batch_fits_in_a_query_by_chunks() {
        let rows: Vec<EventRow> = (0..IDS_PER_QUERY as u128)
            .map(|i| row(i, i as u64, 1))
            .collect();
        let refs: Vec<&EventRow> = rows.iter().collect();
        let sql = existing_ids_sql("vigia", &refs);
        // ClickHouse's default max_query_size.
        assert!(sql.len() < 256 * 1024, "{} bytes", sql.len());
    }
}
