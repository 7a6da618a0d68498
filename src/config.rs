//! One typed configuration for every subcommand: a TOML file (`--config` or `VIGIA_CONFIG`),
//! then the `VIGIA_*` environment variables of contract §7.2 over it. Defaults work on loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;

/// Used when no `VIGIA_JWT_SECRET` is configured and Vigía listens on loopback only: anyone who
/// can reach a loopback port can already read everything, so a known secret adds no exposure.
/// On any other address a missing secret is a start-up error.
pub const DEV_JWT_SECRET: &str = "vigia-dev-secret-change-me";
/// Used when no `VIGIA_API_KEYS` is configured: one key per demo tenant.
pub const DEV_API_KEYS: &str = "dev-key-1=1,dev-key-2=2,dev-key-3=3";

/// The shortest `VIGIA_JWT_SECRET` accepted outside loopback: HS256 is as strong as its key,
/// and 32 random bytes is the hash's own size.
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// JWT secrets published in this repository (the development default, `docker/.env.example`):
/// anyone can sign tokens with them, so they are refused outside loopback.
const EXAMPLE_JWT_SECRETS: &[&str] = &[DEV_JWT_SECRET, "change-me-to-a-long-random-string"];
/// API keys published in this repository (the development defaults, `docker/.env.example`).
const EXAMPLE_API_KEYS: &[&str] = &[
    "dev-key-1",
    "dev-key-2",
    "dev-key-3",
    "change-me-key-1",
    "change-me-key-2",
];
/// What `docker/.env.example` marks every placeholder with.
const PLACEHOLDER_MARK: &str = "change-me";

fn is_example_secret(value: &str, examples: &[&str]) -> bool {
    let value = value.trim();
    examples.contains(&value) || value.to_ascii_lowercase().contains(PLACEHOLDER_MARK)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where local state lives (the SQLite inbox by default).
    pub data_dir: PathBuf,
    /// Which of the settings with a derived default the file or the environment set.
    #[serde(skip)]
    explicit: Explicit,
    pub http: HttpConfig,
    pub kafka: KafkaConfig,
    pub ingest: vigia_ingest::Config,
    pub processors: vigia_processors::Config,
    pub clickhouse: vigia_sinks::Config,
    pub gateway: vigia_gateway::Config,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(".data"),
            explicit: Explicit::default(),
            http: HttpConfig::default(),
            kafka: KafkaConfig::default(),
            ingest: vigia_ingest::Config::default(),
            processors: vigia_processors::Config::default(),
            clickhouse: vigia_sinks::Config::default(),
            gateway: vigia_gateway::Config::default(),
        }
    }
}

/// The settings whose default is derived from others (consumer groups from the topic prefix,
/// the inbox from the data directory), as the file and the environment gave them: `None` when
/// unset. A value set equal to a crate's default is still the operator's choice and is kept.
/// Read from the same TOML as [`Config`] (which refuses unknown keys; this ignores the rest).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Explicit {
    processors: ExplicitGroup,
    clickhouse: ExplicitGroup,
    gateway: ExplicitGateway,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct ExplicitGroup {
    group_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct ExplicitGateway {
    group_id: Option<String>,
    database_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Ingest, gateway, health and metrics share this address in `serve`; each single-stage
    /// subcommand serves its own routes plus health and metrics here.
    pub addr: SocketAddr,
    /// How long graceful shutdown may take before in-flight work is abandoned.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// A connection must send a request's whole header within this time (also how long an idle
    /// keep-alive connection is kept), or it is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request's whole body must arrive within this time of its header.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Open connections (HTTP and WebSocket together); the next one is refused with 503.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:8000".parse().expect("valid address"),
            shutdown_timeout: Duration::from_secs(15),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 20_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    /// Prefix of every topic name, so deployments (and tests) can share a broker.
    pub topic_prefix: String,
    /// Partitions of each topic when Vigía creates it. One tenant's events share a partition.
    pub partitions: i32,
    pub replication_factor: i32,
    /// Extra librdkafka properties for every client (e.g. security settings in production).
    pub properties: HashMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "vigia.".into(),
            partitions: 3,
            replication_factor: 1,
            properties: HashMap::new(),
        }
    }
}

impl Config {
    /// Reads the file (if any), then applies the environment.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("VIGIA_CONFIG").map(PathBuf::from));
        let mut config = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                let mut config = toml::from_str::<Config>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?;
                config.explicit = toml::from_str(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?;
                config
            }
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.fill_defaults()?;
        Ok(config)
    }

    /// Applies the `VIGIA_*` variables; `get` is injectable so tests need no process env.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        fn dur(name: &str, v: &str) -> Result<Duration> {
            humantime::parse_duration(v.trim())
                .map_err(|e| anyhow!("{name}={v:?} is not a duration like \"90s\" or \"1h\": {e}"))
        }
        if let Some(v) = get("VIGIA_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("VIGIA_HTTP_ADDR") {
            self.http.addr = v
                .parse()
                .map_err(|e| anyhow!("VIGIA_HTTP_ADDR={v:?} is not host:port: {e}"))?;
        }
        if let Some(v) = get("VIGIA_HTTP_HEADER_READ_TIMEOUT") {
            self.http.header_read_timeout = dur("VIGIA_HTTP_HEADER_READ_TIMEOUT", &v)?;
        }
        if let Some(v) = get("VIGIA_HTTP_BODY_READ_TIMEOUT") {
            self.http.body_read_timeout = dur("VIGIA_HTTP_BODY_READ_TIMEOUT", &v)?;
        }
        if let Some(v) = get("VIGIA_HTTP_MAX_CONNECTIONS") {
            self.http.max_connections = v
                .parse()
                .map_err(|e| anyhow!("VIGIA_HTTP_MAX_CONNECTIONS={v:?} is not a count: {e}"))?;
        }
        if let Some(v) = get("VIGIA_KAFKA_BROKERS") {
            self.kafka.brokers = v;
        }
        if let Some(v) = get("VIGIA_KAFKA_TOPIC_PREFIX") {
            self.kafka.topic_prefix = v;
        }
        if let Some(v) = get("VIGIA_KAFKA_PARTITIONS") {
            self.kafka.partitions = v
                .parse()
                .map_err(|e| anyhow!("VIGIA_KAFKA_PARTITIONS={v:?}: {e}"))?;
        }
        if let Some(v) = get("VIGIA_KAFKA_REPLICATION_FACTOR") {
            self.kafka.replication_factor = v
                .parse()
                .map_err(|e| anyhow!("VIGIA_KAFKA_REPLICATION_FACTOR={v:?}: {e}"))?;
        }
        if let Some(v) = get("VIGIA_CLICKHOUSE_URL") {
            self.clickhouse.url = v;
        }
        if let Some(v) = get("VIGIA_CLICKHOUSE_DATABASE") {
            self.clickhouse.database = v;
        }
        if let Some(v) = get("VIGIA_CLICKHOUSE_USER") {
            self.clickhouse.user = v;
        }
        if let Some(v) = get("VIGIA_CLICKHOUSE_PASSWORD") {
            self.clickhouse.password = v;
        }
        if let Some(v) = get("VIGIA_DATABASE_URL") {
            self.gateway.database_url = v.clone();
            self.explicit.gateway.database_url = Some(v);
        }
        if let Some(v) = get("VIGIA_JWT_SECRET") {
            self.gateway.jwt_secret = v;
        }
        if let Some(v) = get("VIGIA_JWT_RS256_PUBLIC_KEY") {
            self.gateway.jwt_rs256_public_key = Some(v.into());
        }
        if let Some(v) = get("VIGIA_JWT_ISSUER") {
            self.gateway.jwt_issuer = Some(v);
        }
        if let Some(v) = get("VIGIA_JWT_AUDIENCE") {
            self.gateway.jwt_audience = Some(v);
        }
        if let Some(v) = get("VIGIA_JWT_MAX_LIFETIME") {
            self.gateway.jwt_max_lifetime = dur("VIGIA_JWT_MAX_LIFETIME", &v)?;
        }
        if let Some(v) = get("VIGIA_MAX_CONNECTIONS_PER_USER") {
            self.gateway.max_connections_per_user = v
                .parse()
                .map_err(|e| anyhow!("VIGIA_MAX_CONNECTIONS_PER_USER={v:?} is not a count: {e}"))?;
        }
        if let Some(v) = get("VIGIA_MAX_UNAUTHENTICATED_SESSIONS") {
            self.gateway.max_unauthenticated_sessions = v.parse().map_err(|e| {
                anyhow!("VIGIA_MAX_UNAUTHENTICATED_SESSIONS={v:?} is not a count: {e}")
            })?;
        }
        if let Some(v) = get("VIGIA_SOCKETIO_CONNECT_TIMEOUT") {
            self.gateway.socketio_connect_timeout = dur("VIGIA_SOCKETIO_CONNECT_TIMEOUT", &v)?;
        }
        if let Some(v) = get("VIGIA_GATEWAY_INSTANCE_ID") {
            self.gateway.instance_id = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = get("VIGIA_CHANNELS_LEASE") {
            self.gateway.channels.lease = dur("VIGIA_CHANNELS_LEASE", &v)?;
        }
        if let Some(v) = get("VIGIA_CHANNELS_KEEP_SENT") {
            self.gateway.channels.keep_sent = dur("VIGIA_CHANNELS_KEEP_SENT", &v)?;
        }
        if let Some(v) = get("VIGIA_API_KEYS") {
            self.ingest.api_keys = vigia_ingest::parse_api_keys(&v).map_err(|e| anyhow!("{e}"))?;
        }
        self.ingest.apply_env(&get)?;
        if let Some(v) = get("VIGIA_WATERMARK_DELAY") {
            self.processors.watermark_delay = dur("VIGIA_WATERMARK_DELAY", &v)?;
        }
        if let Some(v) = get("VIGIA_PROCESSOR_RULES") {
            self.processors.rules = v
                .parse()
                .map_err(|e| anyhow!("VIGIA_PROCESSOR_RULES={v:?}: {e}"))?;
        }
        if let Some(v) = get("VIGIA_PROCESSOR_INSTANCE_ID") {
            self.processors.instance_id = Some(v).filter(|v| !v.trim().is_empty());
        }
        if let Some(v) = get("VIGIA_CHECKPOINTS") {
            self.processors.checkpoints = match v.trim() {
                "true" | "on" | "1" => true,
                "false" | "off" | "0" => false,
                _ => {
                    return Err(anyhow!(
                        "VIGIA_CHECKPOINTS={v:?} must be true or false (on/off, 1/0)"
                    ))
                }
            };
        }
        if let Some(v) = get("VIGIA_CHECKPOINT_INTERVAL") {
            self.processors.checkpoint_interval = dur("VIGIA_CHECKPOINT_INTERVAL", &v)?;
        }
        if let Some(v) = get("VIGIA_CHECKPOINT_MAX_RECORDS") {
            self.processors.checkpoint_max_records = v.parse().map_err(|e| {
                anyhow!("VIGIA_CHECKPOINT_MAX_RECORDS={v:?} is not a count of records: {e}")
            })?;
        }
        let t = &mut self.processors.defaults;
        if let Some(v) = get("VIGIA_UNANSWERED_AFTER") {
            t.unanswered_after = dur("VIGIA_UNANSWERED_AFTER", &v)?;
        }
        if let Some(v) = get("VIGIA_SESSION_TIMEOUT") {
            t.session_timeout = dur("VIGIA_SESSION_TIMEOUT", &v)?;
        }
        if let Some(v) = get("VIGIA_ALLOWED_LATENESS") {
            t.allowed_lateness = dur("VIGIA_ALLOWED_LATENESS", &v)?;
        }
        if let Some(v) = get("VIGIA_HOT_LEAD_THRESHOLD") {
            let x: f64 = v
                .parse()
                .map_err(|e| anyhow!("VIGIA_HOT_LEAD_THRESHOLD={v:?}: {e}"))?;
            if !(0.0..=1.0).contains(&x) {
                return Err(anyhow!(
                    "VIGIA_HOT_LEAD_THRESHOLD={v} must be within [0, 1]"
                ));
            }
            t.hot_lead_threshold = x;
        }
        Ok(())
    }

    /// Defaults that depend on other settings (the data directory) or that are for local use
    /// only: a development JWT secret and API keys, and only while listening on loopback.
    fn fill_defaults(&mut self) -> Result<()> {
        let loopback = self.http.addr.ip().is_loopback();
        // Consumer groups belong to a deployment like its topics do: two deployments (or tests)
        // sharing a broker must not share groups, or they would steal each other's partitions.
        let prefix = &self.kafka.topic_prefix;
        let explicit = &self.explicit;
        for (group, set, stage) in [
            (
                &mut self.processors.group_id,
                &explicit.processors.group_id,
                "processors",
            ),
            (
                &mut self.clickhouse.group_id,
                &explicit.clickhouse.group_id,
                "sink",
            ),
            (
                &mut self.gateway.group_id,
                &explicit.gateway.group_id,
                "gateway",
            ),
        ] {
            if set.is_none() {
                *group = format!("{prefix}{stage}");
            }
        }
        if explicit
            .gateway
            .database_url
            .as_deref()
            .is_none_or(str::is_empty)
        {
            self.gateway.database_url =
                format!("sqlite://{}/gateway.db?mode=rwc", self.data_dir.display());
        }
        // With an identity provider's RSA key and no secret, only its RS256 tokens are accepted.
        if self.gateway.jwt_secret.is_empty() && self.gateway.jwt_rs256_public_key.is_none() {
            if !loopback {
                return Err(anyhow!(
                    "VIGIA_JWT_SECRET is not set and {} is not a loopback address: set a secret (or VIGIA_JWT_RS256_PUBLIC_KEY)",
                    self.http.addr
                ));
            }
            tracing::warn!(
                "VIGIA_JWT_SECRET is not set: using the development secret (loopback only)"
            );
            self.gateway.jwt_secret = DEV_JWT_SECRET.into();
        }
        if self.ingest.api_keys.is_empty() {
            if !loopback {
                return Err(anyhow!(
                    "VIGIA_API_KEYS is not set and {} is not a loopback address: set key=tenant,...",
                    self.http.addr
                ));
            }
            tracing::warn!("VIGIA_API_KEYS is not set: using the development keys {DEV_API_KEYS} (loopback only)");
            self.ingest.api_keys =
                vigia_ingest::parse_api_keys(DEV_API_KEYS).expect("dev keys parse");
        }
        if !loopback {
            self.refuse_weak_secrets()?;
        }
        Ok(())
    }

    /// Outside loopback, secrets must be secret: a JWT secret of at least
    /// [`MIN_JWT_SECRET_BYTES`] that is not an example published in this repository, and no
    /// published example API key. Errors never repeat a secret.
    fn refuse_weak_secrets(&self) -> Result<()> {
        let addr = self.http.addr;
        let secret = &self.gateway.jwt_secret;
        // Empty: RS256 only (checked above).
        if !secret.is_empty() {
            if is_example_secret(secret, EXAMPLE_JWT_SECRETS) {
                return Err(anyhow!(
                    "VIGIA_JWT_SECRET (gateway.jwt_secret) is an example value published in \
                     Vigía's repository, so anyone could sign tokens with it, and {addr} is not \
                     a loopback address: set a secret of your own, e.g. `openssl rand -hex 32`"
                ));
            }
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return Err(anyhow!(
                    "VIGIA_JWT_SECRET (gateway.jwt_secret) is {} bytes long and {addr} is not a \
                     loopback address: use at least {MIN_JWT_SECRET_BYTES} random bytes, e.g. \
                     `openssl rand -hex 32`",
                    secret.len()
                ));
            }
        }
        let mut examples: Vec<(&String, &u64)> = self
            .ingest
            .api_keys
            .iter()
            .filter(|(key, _)| is_example_secret(key, EXAMPLE_API_KEYS))
            .collect();
        examples.sort();
        if let Some((key, tenant)) = examples.first() {
            return Err(anyhow!(
                "VIGIA_API_KEYS (ingest.api_keys) holds the key {key:?} of tenant {tenant}, an \
                 example value published in Vigía's repository, and {addr} is not a loopback \
                 address: give each CRM a key of your own, e.g. `openssl rand -hex 24`"
            ));
        }
        Ok(())
    }

    pub fn topics(&self) -> vigia_schemas::Topics {
        vigia_schemas::Topics::with_prefix(&self.kafka.topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn environment_overrides_file_values() {
        let mut c: Config =
            toml::from_str("[http]\naddr = \"127.0.0.1:9000\"\n[kafka]\nbrokers = \"k:1\"\n")
                .unwrap();
        assert_eq!(c.http.addr.port(), 9000);
        c.apply_env(env(&[
            ("VIGIA_KAFKA_BROKERS", "b:9092"),
            ("VIGIA_UNANSWERED_AFTER", "90s"),
            ("VIGIA_HOT_LEAD_THRESHOLD", "0.75"),
            ("VIGIA_API_KEYS", "k1=4,k2=5"),
            ("VIGIA_WATERMARK_DELAY", "250ms"),
        ]))
        .unwrap();
        assert_eq!(c.processors.watermark_delay, Duration::from_millis(250));
        assert_eq!(c.kafka.brokers, "b:9092");
        assert_eq!(c.http.addr.port(), 9000);
        assert_eq!(
            c.processors.defaults.unanswered_after,
            Duration::from_secs(90)
        );
        assert_eq!(c.processors.defaults.hot_lead_threshold, 0.75);
        assert_eq!(c.ingest.api_keys.get("k2"), Some(&5));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let mut c = Config::default();
        let e = c
            .apply_env(env(&[("VIGIA_UNANSWERED_AFTER", "soon")]))
            .unwrap_err();
        assert!(e.to_string().contains("VIGIA_UNANSWERED_AFTER"), "{e}");
        let e = c
            .apply_env(env(&[("VIGIA_HOT_LEAD_THRESHOLD", "2")]))
            .unwrap_err();
        assert!(e.to_string().contains("VIGIA_HOT_LEAD_THRESHOLD"), "{e}");
        let e = c
            .apply_env(env(&[("VIGIA_WATERMARK_DELAY", "1 fortnight")]))
            .unwrap_err();
        assert!(e.to_string().contains("VIGIA_WATERMARK_DELAY"), "{e}");
        let e = c.apply_env(env(&[("VIGIA_HTTP_ADDR", "x")])).unwrap_err();
        assert!(e.to_string().contains("VIGIA_HTTP_ADDR"), "{e}");
        let e = c
            .apply_env(env(&[("VIGIA_PROCESSOR_RULES", "leads")]))
            .unwrap_err();
        assert!(e.to_string().contains("VIGIA_PROCESSOR_RULES"), "{e}");
    }

    #[test]
    fn the_processor_rules_are_read_from_the_environment() {
        let mut c = Config::default();
        assert_eq!(c.processors.rules, vigia_processors::Rules::All);
        c.apply_env(env(&[("VIGIA_PROCESSOR_RULES", "conversations")]))
            .unwrap();
        assert_eq!(c.processors.rules, vigia_processors::Rules::Conversations);
    }

    #[test]
    fn checkpoint_settings_are_read_from_the_environment() {
        let mut c = Config::default();
        assert!(c.processors.checkpoints);
        c.apply_env(env(&[
            ("VIGIA_CHECKPOINTS", "off"),
            ("VIGIA_CHECKPOINT_INTERVAL", "2s"),
            ("VIGIA_CHECKPOINT_MAX_RECORDS", "5000"),
        ]))
        .unwrap();
        assert!(!c.processors.checkpoints);
        assert_eq!(c.processors.instance_id, None);
        c.apply_env(env(&[("VIGIA_PROCESSOR_INSTANCE_ID", "processors-1")]))
            .unwrap();
        assert_eq!(c.processors.instance_id.as_deref(), Some("processors-1"));
        assert_eq!(c.processors.checkpoint_interval, Duration::from_secs(2));
        assert_eq!(c.processors.checkpoint_max_records, 5000);
        for (k, v) in [
            ("VIGIA_CHECKPOINTS", "maybe"),
            ("VIGIA_CHECKPOINT_INTERVAL", "often"),
            ("VIGIA_CHECKPOINT_MAX_RECORDS", "-1"),
        ] {
            let e = c.apply_env(env(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
    }

    #[test]
    fn limits_are_read_from_the_environment() {
        let mut c = Config::default();
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.http.max_connections, 20_000);
        c.apply_env(env(&[
            ("VIGIA_HTTP_HEADER_READ_TIMEOUT", "5s"),
            ("VIGIA_HTTP_BODY_READ_TIMEOUT", "1m"),
            ("VIGIA_HTTP_MAX_CONNECTIONS", "30000"),
            ("VIGIA_MAX_CONNECTIONS_PER_USER", "7"),
            ("VIGIA_MAX_UNAUTHENTICATED_SESSIONS", "99"),
            ("VIGIA_SOCKETIO_CONNECT_TIMEOUT", "3s"),
            ("VIGIA_JWT_ISSUER", "https://idp.example.com/"),
            ("VIGIA_JWT_AUDIENCE", "vigia-api"),
            ("VIGIA_JWT_MAX_LIFETIME", "1h"),
            ("VIGIA_GATEWAY_INSTANCE_ID", "gateway-2"),
            ("VIGIA_CHANNELS_LEASE", "2m"),
            ("VIGIA_CHANNELS_KEEP_SENT", "30d"),
        ]))
        .unwrap();
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.http.body_read_timeout, Duration::from_secs(60));
        assert_eq!(c.http.max_connections, 30_000);
        let g = &c.gateway;
        assert_eq!(g.max_connections_per_user, 7);
        assert_eq!(g.max_unauthenticated_sessions, 99);
        assert_eq!(g.socketio_connect_timeout, Duration::from_secs(3));
        assert_eq!(g.jwt_issuer.as_deref(), Some("https://idp.example.com/"));
        assert_eq!(g.jwt_audience.as_deref(), Some("vigia-api"));
        assert_eq!(g.jwt_max_lifetime, Duration::from_secs(3600));
        assert_eq!(g.instance_id.as_deref(), Some("gateway-2"));
        assert_eq!(g.channels.lease, Duration::from_secs(120));
        assert_eq!(g.channels.keep_sent, Duration::from_secs(30 * 24 * 3600));
        for bad in [
            "VIGIA_CHANNELS_LEASE",
            "VIGIA_CHANNELS_KEEP_SENT",
            "VIGIA_HTTP_MAX_CONNECTIONS",
            "VIGIA_MAX_CONNECTIONS_PER_USER",
            "VIGIA_HTTP_HEADER_READ_TIMEOUT",
            "VIGIA_JWT_MAX_LIFETIME",
        ] {
            let e = c.apply_env(env(&[(bad, "lots")])).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        assert!(toml::from_str::<Config>("[kafka]\nbrokerz = \"x\"\n").is_err());
    }

    /// A typo in any section is an error naming the key, never a setting silently ignored.
    #[test]
    fn a_typo_in_every_section_is_refused_naming_the_key() {
        let email =
            "host = \"smtp.example.com\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n";
        let cases: Vec<(&str, &str, String)> = vec![
            ("top level", "data_dirr", "data_dirr = \"x\"\n".into()),
            (
                "[http]",
                "adress",
                "[http]\nadress = \"127.0.0.1:1\"\n".into(),
            ),
            ("[kafka]", "brokerz", "[kafka]\nbrokerz = \"x\"\n".into()),
            (
                "[ingest]",
                "max_body_byte",
                "[ingest]\nmax_body_byte = 1\n".into(),
            ),
            (
                "[processors]",
                "watermark_dealy",
                "[processors]\nwatermark_dealy = \"1s\"\n".into(),
            ),
            (
                "[processors.defaults]",
                "unanswered_afterr",
                "[processors.defaults]\nunanswered_afterr = \"1h\"\n".into(),
            ),
            (
                "[processors.tenants.N]",
                "hot_lead_treshold",
                "[processors.tenants.7]\nhot_lead_treshold = 0.9\n".into(),
            ),
            (
                "[clickhouse]",
                "pasword",
                "[clickhouse]\npasword = \"x\"\n".into(),
            ),
            (
                "[gateway]",
                "jwt_secrett",
                "[gateway]\njwt_secrett = \"x\"\n".into(),
            ),
            (
                "[gateway.channels]",
                "timout",
                "[gateway.channels]\ntimout = \"5s\"\n".into(),
            ),
            (
                "[gateway.channels.retry]",
                "max_atempts",
                "[gateway.channels.retry]\nmax_atempts = 3\n".into(),
            ),
            (
                "[gateway.channels.tenants.N]",
                "slack_webhook",
                "[gateway.channels.tenants.7]\nslack_webhook = [\"https://h.example/x\"]\n".into(),
            ),
            (
                "[gateway.channels.tenants.N.email]",
                "portt",
                format!("[gateway.channels.tenants.7.email]\n{email}portt = 25\n"),
            ),
            (
                "[gateway.channels.tenants.N.email.users]",
                "rol",
                format!(
                    "[gateway.channels.tenants.7.email]\n{email}\
                     [gateway.channels.tenants.7.email.users]\n\
                     1001 = {{ address = \"c@example.com\", rol = \"ceo\" }}\n"
                ),
            ),
        ];
        for (section, typo, text) in cases {
            match toml::from_str::<Config>(&text) {
                Ok(_) => panic!("{section}: the typo `{typo}` was silently ignored"),
                Err(e) => assert!(
                    e.to_string().contains(&format!("unknown field `{typo}`")),
                    "{section}: the error does not name `{typo}`: {e}"
                ),
            }
        }
    }

    fn load_text(name: &str, text: &str) -> Result<Config> {
        let dir = std::env::temp_dir().join(format!("vigia-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vigia.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = Config::load(Some(&path));
        std::fs::remove_dir_all(&dir).ok();
        loaded
    }

    /// A value written in the file is the operator's choice, even when it equals the crate's
    /// default; only values left unset get the derived defaults.
    #[test]
    fn values_set_to_their_default_are_kept_and_unset_ones_derived() {
        let c = load_text(
            "explicit",
            "[kafka]\ntopic_prefix = \"t1.\"\n\
             [processors]\ngroup_id = \"vigia-processors\"\n\
             [clickhouse]\ngroup_id = \"vigia-sink\"\n\
             [gateway]\ngroup_id = \"vigia-gateway\"\n\
             database_url = \"sqlite://gateway.db?mode=rwc\"\n",
        )
        .unwrap();
        assert_eq!(c.processors.group_id, "vigia-processors");
        assert_eq!(c.clickhouse.group_id, "vigia-sink");
        assert_eq!(c.gateway.group_id, "vigia-gateway");
        assert_eq!(c.gateway.database_url, "sqlite://gateway.db?mode=rwc");
        let c = load_text(
            "unset",
            "data_dir = \"/tmp/d\"\n[kafka]\ntopic_prefix = \"t1.\"\n",
        )
        .unwrap();
        assert_eq!(c.processors.group_id, "t1.processors");
        assert_eq!(c.clickhouse.group_id, "t1.sink");
        assert_eq!(c.gateway.group_id, "t1.gateway");
        assert_eq!(
            c.gateway.database_url,
            "sqlite:///tmp/d/gateway.db?mode=rwc"
        );
    }

    /// The whole path a user sees: `vigia --config file` names the file and the key.
    #[test]
    fn a_typo_in_the_file_names_the_file_and_the_key() {
        let dir = std::env::temp_dir().join(format!("vigia-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vigia.toml");
        std::fs::write(&path, "[gateway]\nping_intervall = \"5s\"\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            e.contains("vigia.toml") && e.contains("ping_intervall"),
            "{e}"
        );
    }

    #[test]
    fn the_inbox_defaults_to_sqlite_in_the_data_dir() {
        let mut c = Config {
            data_dir: "/tmp/x".into(),
            ..Config::default()
        };
        c.fill_defaults().unwrap();
        assert_eq!(
            c.gateway.database_url,
            "sqlite:///tmp/x/gateway.db?mode=rwc"
        );
        assert_eq!(c.ingest.api_keys.len(), 3);
        assert_eq!(c.clickhouse.group_id, "vigia.sink");
        assert_eq!(c.processors.group_id, "vigia.processors");
    }

    /// The production compose file may only use variables the binary reads (VIGIA_IMAGE is
    /// compose's own: the image tag).
    #[test]
    fn every_variable_of_the_compose_file_is_read() {
        let compose = include_str!("../docker/compose.yaml");
        let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
        Config::default()
            .apply_env(|k| {
                read.borrow_mut().insert(k.to_string());
                None
            })
            .unwrap();
        let read = read.into_inner();
        let mut used: Vec<&str> = compose
            .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .filter(|w| w.starts_with("VIGIA_") && w.len() > 6 && *w != "VIGIA_IMAGE")
            .collect();
        used.sort();
        used.dedup();
        assert!(used.len() >= 8, "compose uses only {used:?}");
        for v in used {
            assert!(
                read.contains(v),
                "docker/compose.yaml uses {v}, which vigia never reads"
            );
        }
    }

    /// A deployment reachable from outside loopback, with real-looking secrets.
    fn public() -> Config {
        let mut c = Config::default();
        c.http.addr = "0.0.0.0:8000".parse().unwrap();
        c.gateway.jwt_secret = "Zq3v9LkP0sX2mN7bR4tY8wE1uI6oA5dF".into();
        c.ingest.api_keys = vigia_ingest::parse_api_keys("kq83JdPq02=1").unwrap();
        c
    }

    #[test]
    fn a_public_deployment_with_real_secrets_starts() {
        public().fill_defaults().unwrap();
    }

    #[test]
    fn a_short_jwt_secret_is_refused_outside_loopback() {
        let mut c = public();
        c.gateway.jwt_secret = "x".repeat(31);
        let e = c.fill_defaults().unwrap_err().to_string();
        assert!(
            e.contains("VIGIA_JWT_SECRET") && e.contains("32") && e.contains("openssl rand"),
            "{e}"
        );
        // 32 bytes is enough; loopback development may use anything.
        let mut c = public();
        c.gateway.jwt_secret = "y".repeat(32);
        c.fill_defaults().unwrap();
        let mut c = Config::default();
        c.gateway.jwt_secret = "s".into();
        c.fill_defaults().unwrap();
    }

    /// Every example value of `VIGIA_JWT_SECRET` and `VIGIA_API_KEYS` the repository ships
    /// (README, docker/.env.example, the development defaults).
    fn shipped_examples(var: &str) -> Vec<String> {
        let mut found = Vec::new();
        for text in [
            include_str!("../docker/.env.example"),
            include_str!("../docker/compose.yaml"),
            include_str!("../docker/README.md"),
            include_str!("../README.md"),
        ] {
            for line in text.lines() {
                if let Some(value) = line.trim().strip_prefix(&format!("{var}=")) {
                    found.push(value.trim().to_string());
                }
            }
        }
        found
    }

    #[test]
    fn example_jwt_secrets_are_refused_outside_loopback() {
        let mut examples = shipped_examples("VIGIA_JWT_SECRET");
        assert!(
            !examples.is_empty(),
            "docker/.env.example has an example secret"
        );
        examples.push(DEV_JWT_SECRET.to_string());
        for example in examples {
            let mut c = public();
            c.gateway.jwt_secret = example.clone();
            let e = c.fill_defaults().unwrap_err().to_string();
            assert!(
                e.contains("VIGIA_JWT_SECRET") && e.contains("example"),
                "{example}: {e}"
            );
            assert!(!e.contains(&example), "the error repeats the secret: {e}");
        }
    }

    #[test]
    fn example_api_keys_are_refused_outside_loopback() {
        let mut examples = shipped_examples("VIGIA_API_KEYS");
        assert!(!examples.is_empty(), "docker/.env.example has example keys");
        examples.push(DEV_API_KEYS.to_string());
        for example in examples {
            for (key, tenant) in vigia_ingest::parse_api_keys(&example).unwrap() {
                let mut c = public();
                // Among real keys too: one known key is one tenant open to anybody.
                c.ingest.api_keys.insert(key.clone(), tenant);
                let e = c.fill_defaults().unwrap_err().to_string();
                assert!(
                    e.contains("VIGIA_API_KEYS") && e.contains("example"),
                    "{key}: {e}"
                );
            }
        }
    }

    #[test]
    fn development_secrets_only_on_loopback() {
        let mut c = Config::default();
        c.http.addr = "0.0.0.0:8000".parse().unwrap();
        let e = c.fill_defaults().unwrap_err();
        assert!(e.to_string().contains("VIGIA_JWT_SECRET"), "{e}");
        let secret = "a-production-secret-of-32-bytes!!";
        c.gateway.jwt_secret = secret.into();
        let e = c.fill_defaults().unwrap_err();
        assert!(e.to_string().contains("VIGIA_API_KEYS"), "{e}");
        c.ingest.api_keys = vigia_ingest::parse_api_keys("k=1").unwrap();
        c.fill_defaults().unwrap();
        assert_eq!(c.gateway.jwt_secret, secret);
    }
}
