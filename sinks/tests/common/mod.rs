//! Helpers for the sink's integration tests: a throw-away ClickHouse database per test, rows to
//! write, and a raw TSV query.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use vigia_sinks::{Config, EventRow, KafkaOrigin};

/// Sink logs in the test output (shown for failing tests); `RUST_LOG` filters, default info.
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn clickhouse_url() -> String {
    std::env::var("VIGIA_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

pub fn brokers() -> String {
    std::env::var("VIGIA_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A unique database, dropped when this value is dropped (also when the test panics).
pub struct TestDb {
    pub cfg: Config,
}

impl TestDb {
    pub fn new() -> TestDb {
        let id = Uuid::new_v4().simple().to_string();
        TestDb {
            cfg: Config {
                url: clickhouse_url(),
                database: format!("vigia_test_{}", &id[..12]),
                ..Config::default()
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.database
    }

    /// Runs `sql` and returns ClickHouse's TSV answer, trimmed.
    pub async fn tsv(&self, sql: &str) -> String {
        let client = clickhouse::Client::default()
            .with_url(&self.cfg.url)
            .with_validation(false);
        let bytes = client
            .query_raw(sql)
            .fetch_bytes("TSV")
            .expect("query starts")
            .collect()
            .await
            .unwrap_or_else(|e| panic!("ClickHouse refused {sql}: {e}"));
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .trim()
            .to_string()
    }

    /// `SELECT count() FROM <db>.<table>`.
    pub async fn count(&self, table: &str) -> u64 {
        self.tsv(&format!("SELECT count() FROM {}.{table}", self.name()))
            .await
            .parse()
            .unwrap()
    }

    /// `count()` and `uniqExact(<id>)` of a table: equal when no id is stored twice.
    pub async fn count_and_unique(&self, table: &str, id: &str) -> (u64, u64) {
        let row = self
            .tsv(&format!(
                "SELECT count(), uniqExact({id}) FROM {}.{table}",
                self.name()
            ))
            .await;
        let mut it = row.split('\t').map(|v| v.parse::<u64>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Blocking and dependency-free on purpose: Drop cannot await.
        let _ = post_blocking(
            &self.cfg.url,
            &format!("DROP DATABASE IF EXISTS {}", self.cfg.database),
        );
    }
}

fn post_blocking(url: &str, body: &str) -> std::io::Result<String> {
    let host = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/');
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

pub fn at(rfc3339: &str) -> DateTime<Utc> {
    rfc3339.parse().unwrap()
}

/// An events row for `conversation.closed`, with its canonical payload.
pub fn event_row(n: u128, tenant: u64, occurred_at: DateTime<Utc>) -> EventRow {
    let event = vigia_schemas::Event::from_value(serde_json::json!({
        "event_id": Uuid::from_u128(n).to_string(),
        "tenant_id": tenant,
        "type": "conversation.closed",
        "occurred_at": occurred_at.to_rfc3339(),
        "conversation_id": format!("c{n}"),
    }))
    .unwrap();
    EventRow::new(
        &event,
        KafkaOrigin {
            partition: 0,
            offset: n as i64,
        },
    )
}
