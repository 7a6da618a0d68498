//! Versioned ClickHouse migrations: `sinks/migrations/NNNN_name.sql`, embedded in the binary and
//! applied in order, each recorded in `schema_migrations`.
//!
//! ClickHouse has no transactional DDL, so a migration that fails half-way stays half-applied
//! and is not recorded: every statement must be idempotent (`CREATE ... IF NOT EXISTS`), so that
//! running `vigia migrate` again after fixing the cause completes it. Two `migrate` runs at the
//! same moment are not coordinated; with idempotent statements the worst case is a version
//! recorded twice, which is harmless (versions are read as a set).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::{Config, SinkError};

/// One migration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// The file's text, with `{db}` where the database name goes.
    pub sql: &'static str,
}

/// A migration applied by [`migrate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: u32,
    pub name: String,
    /// Statements executed.
    pub statements: usize,
}

macro_rules! migration {
    ($number:literal, $name:literal) => {
        Migration {
            version: parse_version($number),
            name: $name,
            sql: include_str!(concat!("../migrations/", $number, "_", $name, ".sql")),
        }
    };
}

/// "0007" -> 7, at compile time (a non-digit fails the build).
const fn parse_version(digits: &str) -> u32 {
    let bytes = digits.as_bytes();
    let mut value = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        assert!(
            bytes[i].is_ascii_digit(),
            "a migration number is digits only"
        );
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

/// Every migration, in the order they are applied. A new one gets the next number; an applied
/// one is never edited (a server that has it would not see the change).
pub const MIGRATIONS: &[Migration] = &[
    migration!("0001", "events"),
    migration!("0002", "response_times"),
    migration!("0003", "notifications"),
    migration!("0004", "lead_scores"),
    migration!("0005", "dead_letters"),
    migration!("0006", "seller_hourly"),
    migration!("0007", "seller_metrics"),
    migration!("0008", "corrections"),
    migration!("0009", "conversions"),
    migration!("0010", "unanswered_episodes"),
    migration!("0011", "dead_letter_bounds"),
];

const DDL_TIMEOUT: Duration = Duration::from_secs(60);
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Splits a migration file into statements: a statement ends at a line ending with `;` (the
/// `;` is dropped, since ClickHouse's HTTP interface takes one statement per request). Lines
/// that are only a `--` comment are dropped too, so a comment never ends or makes a statement.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut finish = |lines: &mut Vec<&str>| {
        let text = lines.join("\n");
        let text = text.trim().trim_end_matches(';').trim_end();
        if !text.is_empty() {
            statements.push(text.to_string());
        }
        lines.clear();
    };
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") {
            continue;
        }
        current.push(line);
        if trimmed.ends_with(';') {
            finish(&mut current);
        }
    }
    finish(&mut current);
    statements
}

/// A migration's statements for `database` (backquoted where the file says `{db}`).
pub fn statements_for(migration: &Migration, database: &str) -> Vec<String> {
    split_statements(&migration.sql.replace("{db}", &format!("`{database}`")))
}

/// `ALTER TABLE <db>.<table> ADD COLUMN IF NOT EXISTS <column> ...` split into (table, column,
/// the statement without `IF NOT EXISTS`): ClickHouse 18.16 does not understand the clause, so
/// [`migrate`] checks `system.columns` itself and runs the plain statement when needed.
pub fn add_column_if_not_exists(sql: &str) -> Option<(String, String, String)> {
    const CLAUSE: &str = " ADD COLUMN IF NOT EXISTS ";
    let rest = sql.strip_prefix("ALTER TABLE ")?;
    let at = rest.find(CLAUSE)?;
    let table = rest[..at].trim();
    let table = table.rsplit('.').next()?.trim_matches('`').to_string();
    let column = rest[at + CLAUSE.len()..]
        .split_whitespace()
        .next()?
        .trim_matches('`')
        .to_string();
    let plain = sql.replacen(CLAUSE, " ADD COLUMN ", 1);
    Some((table, column, plain))
}

/// The migrations of `all` not in `applied`, by increasing version.
pub fn pending<'a>(all: &'a [Migration], applied: &BTreeSet<u32>) -> Vec<&'a Migration> {
    let mut todo: Vec<&Migration> = all
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect();
    todo.sort_by_key(|m| m.version);
    todo
}

async fn execute(client: &clickhouse::Client, url: &str, sql: &str) -> Result<(), SinkError> {
    let doing = format!("run `{}`", first_line(sql));
    match tokio::time::timeout(DDL_TIMEOUT, client.query_raw(sql).execute()).await {
        Ok(r) => r.map_err(|e| SinkError::clickhouse(url, doing, e)),
        Err(_) => Err(SinkError::ClickHouseTimeout {
            url: url.to_string(),
            doing,
            seconds: DDL_TIMEOUT.as_secs(),
        }),
    }
}

fn first_line(sql: &str) -> &str {
    sql.lines().next().unwrap_or("").trim()
}

/// Creates the database if needed and applies every migration not applied yet, in order.
/// Returns what it applied (empty when the schema was up to date).
pub async fn migrate(cfg: &Config) -> Result<Vec<AppliedMigration>, SinkError> {
    migrate_until(cfg, u32::MAX).await
}

/// [`migrate`], but only the migrations up to version `last`: a schema as an older release
/// left it (upgrade tests, staged rollouts).
pub async fn migrate_until(cfg: &Config, last: u32) -> Result<Vec<AppliedMigration>, SinkError> {
    cfg.validate()?;
    let db = &cfg.database;
    let client = cfg.client();
    let version = server_version(cfg).await?;
    tracing::info!(server = %version, database = %db, "applying ClickHouse migrations");

    execute(
        &client,
        &cfg.url,
        &format!("CREATE DATABASE IF NOT EXISTS `{db}`"),
    )
    .await?;
    execute(
        &client,
        &cfg.url,
        &format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.schema_migrations (\
             version UInt32 COMMENT 'Number of the migration file (NNNN_name.sql)', \
             name String COMMENT 'Name part of the file', \
             applied_at DateTime('UTC') DEFAULT now() COMMENT 'When it was applied (UTC)') \
             ENGINE = MergeTree() ORDER BY version"
        ),
    )
    .await?;
    let applied: Vec<u32> = client
        .query_raw(&format!("SELECT version FROM `{db}`.schema_migrations"))
        .fetch_all()
        .await
        .map_err(|e| SinkError::clickhouse(&cfg.url, "read schema_migrations", e))?;
    let applied: BTreeSet<u32> = applied.into_iter().collect();

    let mut done = Vec::new();
    for m in pending(MIGRATIONS, &applied)
        .into_iter()
        .filter(|m| m.version <= last)
    {
        let statements = statements_for(m, db);
        for (i, sql) in statements.iter().enumerate() {
            let run = match add_column_if_not_exists(sql) {
                None => Some(sql.clone()),
                Some((table, column, plain)) => {
                    let exists: u64 = client
                        .query_raw(&format!(
                            "SELECT count() FROM system.columns WHERE database = '{}' \
                             AND table = '{}' AND name = '{}'",
                            db.replace('\'', ""),
                            table.replace('\'', ""),
                            column.replace('\'', "")
                        ))
                        .fetch_one()
                        .await
                        .map_err(|e| SinkError::clickhouse(&cfg.url, "read system.columns", e))?;
                    (exists == 0).then_some(plain)
                }
            };
            let Some(sql) = run else { continue };
            execute(&client, &cfg.url, &sql)
                .await
                .map_err(|e| SinkError::Migration {
                    version: m.version,
                    name: m.name.to_string(),
                    statement: i + 1,
                    source: Box::new(e),
                })?;
        }
        execute(
            &client,
            &cfg.url,
            &format!(
                "INSERT INTO `{db}`.schema_migrations (version, name) VALUES ({}, '{}')",
                m.version,
                m.name.replace('\\', "\\\\").replace('\'', "\\'")
            ),
        )
        .await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied ClickHouse migration"
        );
        done.push(AppliedMigration {
            version: m.version,
            name: m.name.to_string(),
            statements: statements.len(),
        });
    }
    Ok(done)
}

/// The server's version string, e.g. "18.16.1" or "25.3.2.39".
pub async fn server_version(cfg: &Config) -> Result<String, SinkError> {
    let client = cfg.client();
    match tokio::time::timeout(
        DDL_TIMEOUT,
        client.query_raw("SELECT version()").fetch_one::<String>(),
    )
    .await
    {
        Ok(r) => r.map_err(|e| SinkError::clickhouse(&cfg.url, "read its version", e)),
        Err(_) => Err(SinkError::ClickHouseTimeout {
            url: cfg.url.clone(),
            doing: "read its version".into(),
            seconds: DDL_TIMEOUT.as_secs(),
        }),
    }
}

/// Whether ClickHouse answers a trivial query within 3 s (readiness probe).
pub async fn ready(cfg: &Config) -> bool {
    let client = cfg.client();
    matches!(
        tokio::time::timeout(PING_TIMEOUT, client.query_raw("SELECT 1").fetch_one::<u8>()).await,
        Ok(Ok(1))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_column_if_not_exists_is_split_for_old_servers() {
        let sql = "ALTER TABLE `vigia`.response_times ADD COLUMN IF NOT EXISTS sign Int8 DEFAULT 1";
        assert_eq!(
            add_column_if_not_exists(sql),
            Some((
                "response_times".into(),
                "sign".into(),
                "ALTER TABLE `vigia`.response_times ADD COLUMN sign Int8 DEFAULT 1".into()
            ))
        );
        assert_eq!(
            add_column_if_not_exists("ALTER TABLE a MODIFY COLUMN x Int64"),
            None
        );
        assert_eq!(add_column_if_not_exists("CREATE TABLE a (x UInt8)"), None);
    }

    #[test]
    fn splits_on_semicolon_lines_and_drops_comment_lines() {
        let sql = "-- header; with a semicolon;\n\
                   CREATE TABLE a\n(\n  x UInt8 COMMENT 'a; b'\n)\nENGINE = Memory;\n\n\
                   -- between\n\
                   CREATE VIEW v AS\nSELECT 1 ;  \n\
                   SELECT 2";
        let s = split_statements(sql);
        assert_eq!(
            s,
            vec![
                "CREATE TABLE a\n(\n  x UInt8 COMMENT 'a; b'\n)\nENGINE = Memory",
                "CREATE VIEW v AS\nSELECT 1",
                "SELECT 2",
            ]
        );
        assert!(split_statements("-- only a comment;\n\n").is_empty());
    }

    #[test]
    fn migrations_are_numbered_in_order_and_every_file_is_listed() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<u32> = (1..=MIGRATIONS.len() as u32).collect();
        assert_eq!(
            versions, expected,
            "versions must be 1, 2, 3... without gaps"
        );

        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(
            files, listed,
            "every migrations/*.sql must be in MIGRATIONS"
        );
    }

    #[test]
    fn every_statement_is_idempotent_and_names_the_database() {
        for m in MIGRATIONS {
            let statements = statements_for(m, "vigia_x");
            assert!(!statements.is_empty(), "{} is empty", m.name);
            for s in statements {
                // Also idempotent: dropping if it exists, changing a column to a type.
                assert!(
                    s.contains("IF NOT EXISTS")
                        || s.starts_with("DROP TABLE IF EXISTS ")
                        || (s.starts_with("ALTER TABLE ")
                            && (s.contains(" MODIFY COLUMN ") || s.contains(" COMMENT COLUMN "))),
                    "{}: not idempotent: {s}",
                    m.name
                );
                assert!(s.contains("`vigia_x`."), "{}: no database: {s}", m.name);
                assert!(!s.contains("{db}") && !s.ends_with(';'), "{s}");
            }
        }
    }

    #[test]
    fn pending_is_what_is_not_applied_in_version_order() {
        let m = |version| Migration {
            version,
            name: "x",
            sql: "",
        };
        let all = [m(3), m(1), m(2), m(4)];
        let applied: BTreeSet<u32> = [1, 3].into();
        let todo: Vec<u32> = pending(&all, &applied).iter().map(|m| m.version).collect();
        assert_eq!(todo, vec![2, 4]);
        assert!(pending(&all, &[1, 2, 3, 4].into()).is_empty());
    }
}
