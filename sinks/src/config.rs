use std::time::Duration;

use serde::Deserialize;

use crate::SinkError;

/// Where ClickHouse is and how the sink batches. Embedded by the root binary under `[clickhouse]`;
/// `VIGIA_CLICKHOUSE_URL` overrides `url`.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP endpoint of ClickHouse.
    pub url: String,
    /// Database holding Vigía's tables; created by [`crate::migrate`] if missing. Letters, digits
    /// and `_` only.
    pub database: String,
    pub user: String,
    pub password: String,
    /// Most rows per table in one INSERT. A batch is flushed when any table reaches it.
    pub batch_size: usize,
    /// Longest time a consumed record waits in memory before it is written ("500ms").
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Kafka consumer group of the sink. Every sink instance of one deployment shares it, so each
    /// partition is written by exactly one of them.
    pub group_id: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "http://127.0.0.1:8123".into(),
            database: "vigia".into(),
            user: "default".into(),
            password: String::new(),
            batch_size: 5000,
            flush_interval: Duration::from_millis(500),
            group_id: "vigia-sink".into(),
        }
    }
}

// Hand-written so that the password never reaches a log line.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("group_id", &self.group_id)
            .finish()
    }
}

impl Config {
    /// Refuses what would break SQL or batching, with a message naming the setting.
    pub fn validate(&self) -> Result<(), SinkError> {
        let db = &self.database;
        let identifier = !db.is_empty()
            && db.len() <= 64
            && !db.starts_with(|c: char| c.is_ascii_digit())
            && db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier {
            return Err(SinkError::Config(format!(
                "clickhouse.database {db:?} must be 1-64 ASCII letters, digits or `_`, \
                 not starting with a digit"
            )));
        }
        if self.batch_size == 0 {
            return Err(SinkError::Config(
                "clickhouse.batch_size must be at least 1".into(),
            ));
        }
        if self.flush_interval.is_zero() {
            return Err(SinkError::Config(
                "clickhouse.flush_interval must be positive, e.g. \"500ms\"".into(),
            ));
        }
        if self.group_id.is_empty() {
            return Err(SinkError::Config(
                "clickhouse.group_id must not be empty".into(),
            ));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(SinkError::Config(format!(
                "clickhouse.url {:?} must be an http:// or https:// URL of ClickHouse's HTTP \
                 interface, e.g. http://127.0.0.1:8123",
                self.url
            )));
        }
        Ok(())
    }

    /// A ClickHouse client for this configuration, without a default database.
    pub(crate) fn client(&self) -> clickhouse::Client {
        let mut client = clickhouse::Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            // RowBinary without the schema round trip: 18.16 has no RowBinaryWithNamesAndTypes.
            .with_validation(false);
        if !self.password.is_empty() {
            client = client.with_password(&self.password);
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_and_valid() {
        let c = Config::default();
        assert_eq!(c.url, "http://127.0.0.1:8123");
        assert_eq!(c.database, "vigia");
        assert_eq!(c.group_id, "vigia-sink");
        assert_eq!(c.batch_size, 5000);
        assert_eq!(c.flush_interval, Duration::from_millis(500));
        c.validate().unwrap();
    }

    #[test]
    fn parses_humane_durations_and_refuses_unknown_fields() {
        let c: Config =
            toml::from_str("flush_interval = \"2s\"\ndatabase = \"vigia_test_1\"").unwrap();
        assert_eq!(c.flush_interval, Duration::from_secs(2));
        assert_eq!(c.batch_size, 5000);
        assert!(toml::from_str::<Config>("batchsize = 3").is_err());
    }

    #[test]
    fn refuses_a_database_name_that_is_not_an_identifier() {
        for bad in ["", "a-b", "a.b", "1abc", "x`y", "vigia; DROP"] {
            let c = Config {
                database: bad.into(),
                ..Config::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("clickhouse.database"), "{bad}: {e}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Config {
            password: "hunter2".into(),
            ..Config::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
