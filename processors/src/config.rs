//! Configuration: per-tenant rule thresholds (contract §3, defaults in brackets there) and the
//! runner's timing.
//!
//! TOML shape (embedded by the root binary under `[processors]`):
//!
//! ```toml
//! [processors]
//! group_id = "vigia-processors"
//! watermark_delay = "50ms"
//! tick = "200ms"
//! commit_interval = "500ms"
//! max_clock_skew = "10m"
//! max_in_flight = 10000
//! rules = "all"                    # or "conversations": only response time and unanswered
//! checkpoints = true               # engine state checkpoints (see `runner`): recovery replays
//! checkpoint_interval = "10s"      # only what came after the latest one; at most this long
//! checkpoint_max_records = 100000  # apart, or this many records, whichever comes first
//! checkpoint_piece_bytes = 900000  # a checkpoint is split into records of at most this size
//!
//! [processors.defaults]            # every tenant, unless overridden
//! unanswered_after = "1h"
//! session_timeout = "600s"
//! allowed_lateness = "1h"
//! hot_lead_threshold = 0.8
//! hot_lead_rearm = 0.7
//! hot_lead_no_contact = "2h"
//! high_value_locations = ["Bogotá", "Medellín"]
//! follow_up_before = "24h"
//! language = "es"
//! time_zone = "UTC"                # IANA; what "today" and "per day" mean for the tenant
//! response_target = "5m"           # productivity score: full marks for speed at or below this
//! alert_mean_response = "30m"      # performance alert: mean response time today above this
//! alert_unanswered = 5             # … or more than this many unanswered conversations
//! alert_conversion_rate = 0.10     # … or a conversion rate below this
//! alert_conversion_min_leads = 10  #     with more than this many leads
//! max_conversations = 100000       # entities kept per tenant (see `engine::retention`): an
//! max_leads = 100000               # event that would add one beyond its limit is refused
//! max_sessions = 10000             # (dead-lettered, counted) instead of growing memory
//! max_sellers = 10000
//!
//! [processors.tenants.42]          # tenant 42: only what differs
//! unanswered_after = "30m"
//! high_value_locations = ["Lima"]
//! ```

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use vigia_schemas::TenantId;

use crate::texts::Language;
use crate::ProcessorError;

/// The thresholds of every rule, for one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// A customer message with no non-automated reply for this long → unanswered notification.
    #[serde(with = "humantime_serde")]
    pub unanswered_after: Duration,
    /// A call-center session without heartbeat for this long → back to the queue.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How far behind the tenant's newest event time an event may be and still be applied; older
    /// events go to the dead-letter topic.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// A lead's score crossing this upward notifies its seller.
    pub hot_lead_threshold: f64,
    /// After a hot-lead notification the lead must fall below this before it can notify again.
    pub hot_lead_rearm: f64,
    /// Only leads whose conversation had no seller reply for this long are notified as hot.
    #[serde(with = "humantime_serde")]
    pub hot_lead_no_contact: Duration,
    /// Lead locations worth the location bonus; compared ignoring case, accents and surrounding
    /// blanks.
    pub high_value_locations: Vec<String>,
    /// A follow-up reminder fires this long before `due_at`, and again at `due_at`.
    #[serde(with = "humantime_serde")]
    pub follow_up_before: Duration,
    /// Language of notification titles and messages.
    pub language: Language,
    /// The tenant's IANA time zone ("America/Bogota"): the boundaries of "today" in seller
    /// metrics and of the days of performance alerts.
    pub time_zone: String,
    /// Productivity score: a mean response time (7 d) at or below this gets full marks for speed.
    #[serde(with = "humantime_serde")]
    pub response_target: Duration,
    /// Performance alert when a seller's mean response time today is above this.
    #[serde(with = "humantime_serde")]
    pub alert_mean_response: Duration,
    /// Performance alert when a seller has more than this many unanswered conversations.
    pub alert_unanswered: u32,
    /// Performance alert when a seller's conversion rate is below this …
    pub alert_conversion_rate: f64,
    /// … and the seller has more than this many leads.
    pub alert_conversion_min_leads: u32,
    /// At most this many conversations kept for the tenant (see [`crate::engine::retention`]).
    pub max_conversations: usize,
    /// At most this many leads kept for the tenant.
    pub max_leads: usize,
    /// At most this many call-center sessions kept for the tenant.
    pub max_sessions: usize,
    /// At most this many sellers (users named by events) kept for the tenant.
    pub max_sellers: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            unanswered_after: Duration::from_secs(3600),
            session_timeout: Duration::from_secs(600),
            allowed_lateness: Duration::from_secs(3600),
            hot_lead_threshold: 0.8,
            hot_lead_rearm: 0.7,
            hot_lead_no_contact: Duration::from_secs(2 * 3600),
            high_value_locations: Vec::new(),
            follow_up_before: Duration::from_secs(24 * 3600),
            language: Language::Es,
            time_zone: "UTC".into(),
            response_target: Duration::from_secs(5 * 60),
            alert_mean_response: Duration::from_secs(30 * 60),
            alert_unanswered: 5,
            alert_conversion_rate: 0.10,
            alert_conversion_min_leads: 10,
            max_conversations: 100_000,
            max_leads: 100_000,
            max_sessions: 10_000,
            max_sellers: 10_000,
        }
    }
}

/// A tenant's departures from [`Config::defaults`]: every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThresholdOverrides {
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub unanswered_after: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub session_timeout: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub allowed_lateness: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_lead_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_lead_rearm: Option<f64>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub hot_lead_no_contact: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_value_locations: Option<Vec<String>>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub follow_up_before: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub response_target: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub alert_mean_response: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_unanswered: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_conversion_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_conversion_min_leads: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_conversations: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_leads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sellers: Option<usize>,
}

impl Thresholds {
    /// [`Self::time_zone`], parsed; UTC if it does not parse (which [`Config::validate`] refuses).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// These thresholds with a tenant's overrides applied.
    pub fn with(&self, o: &ThresholdOverrides) -> Thresholds {
        Thresholds {
            unanswered_after: o.unanswered_after.unwrap_or(self.unanswered_after),
            session_timeout: o.session_timeout.unwrap_or(self.session_timeout),
            allowed_lateness: o.allowed_lateness.unwrap_or(self.allowed_lateness),
            hot_lead_threshold: o.hot_lead_threshold.unwrap_or(self.hot_lead_threshold),
            hot_lead_rearm: o.hot_lead_rearm.unwrap_or(self.hot_lead_rearm),
            hot_lead_no_contact: o.hot_lead_no_contact.unwrap_or(self.hot_lead_no_contact),
            high_value_locations: o
                .high_value_locations
                .clone()
                .unwrap_or_else(|| self.high_value_locations.clone()),
            follow_up_before: o.follow_up_before.unwrap_or(self.follow_up_before),
            language: o.language.unwrap_or(self.language),
            time_zone: o
                .time_zone
                .clone()
                .unwrap_or_else(|| self.time_zone.clone()),
            response_target: o.response_target.unwrap_or(self.response_target),
            alert_mean_response: o.alert_mean_response.unwrap_or(self.alert_mean_response),
            alert_unanswered: o.alert_unanswered.unwrap_or(self.alert_unanswered),
            alert_conversion_rate: o
                .alert_conversion_rate
                .unwrap_or(self.alert_conversion_rate),
            alert_conversion_min_leads: o
                .alert_conversion_min_leads
                .unwrap_or(self.alert_conversion_min_leads),
            max_conversations: o.max_conversations.unwrap_or(self.max_conversations),
            max_leads: o.max_leads.unwrap_or(self.max_leads),
            max_sessions: o.max_sessions.unwrap_or(self.max_sessions),
            max_sellers: o.max_sellers.unwrap_or(self.max_sellers),
        }
    }

    fn validate(&self, whose: &str) -> Result<(), ProcessorError> {
        let bad = |msg: String| Err(ProcessorError::Config(format!("{whose}: {msg}")));
        if !(0.0..=1.0).contains(&self.hot_lead_threshold) {
            return bad(format!(
                "hot_lead_threshold = {} must be within [0, 1]",
                self.hot_lead_threshold
            ));
        }
        if !(0.0..=self.hot_lead_threshold).contains(&self.hot_lead_rearm) {
            return bad(format!(
                "hot_lead_rearm = {} must be within [0, hot_lead_threshold = {}]",
                self.hot_lead_rearm, self.hot_lead_threshold
            ));
        }
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return bad(format!(
                "time_zone = {:?} is not an IANA time zone name (e.g. \"America/Bogota\", \"UTC\")",
                self.time_zone
            ));
        }
        if !(0.0..=1.0).contains(&self.alert_conversion_rate) {
            return bad(format!(
                "alert_conversion_rate = {} must be within [0, 1]",
                self.alert_conversion_rate
            ));
        }
        for (name, d) in [
            ("unanswered_after", self.unanswered_after),
            ("session_timeout", self.session_timeout),
            ("response_target", self.response_target),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be more than 0s"));
            }
        }
        for (name, limit) in [
            ("max_conversations", self.max_conversations),
            ("max_leads", self.max_leads),
            ("max_sessions", self.max_sessions),
            ("max_sellers", self.max_sellers),
        ] {
            if limit == 0 {
                return bad(format!(
                    "{name} must be at least 1 (it bounds what is kept; 0 would refuse every event)"
                ));
            }
        }
        // chrono cannot add durations beyond ~292 years; far below that is plenty.
        let century = Duration::from_secs(100 * 365 * 24 * 3600);
        for (name, d) in [
            ("unanswered_after", self.unanswered_after),
            ("session_timeout", self.session_timeout),
            ("allowed_lateness", self.allowed_lateness),
            ("hot_lead_no_contact", self.hot_lead_no_contact),
            ("follow_up_before", self.follow_up_before),
            ("response_target", self.response_target),
            ("alert_mean_response", self.alert_mean_response),
        ] {
            if d > century {
                return bad(format!("{name} must be less than 100 years"));
            }
        }
        Ok(())
    }
}

/// Which rules the processors run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rules {
    /// Every rule of contract §3.
    #[default]
    All,
    /// Only response-time samples and unanswered-conversation alerts (§3.2); the lead, session,
    /// seller-metric and daily-report rules are off. For measuring beside engines that implement
    /// only those two (`scripts/bench-flink.sh`), not for production.
    Conversations,
}

impl Rules {
    pub fn as_str(self) -> &'static str {
        match self {
            Rules::All => "all",
            Rules::Conversations => "conversations",
        }
    }
}

impl std::str::FromStr for Rules {
    type Err = ProcessorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "all" => Ok(Rules::All),
            "conversations" => Ok(Rules::Conversations),
            other => Err(ProcessorError::Config(format!(
                "processors.rules = {other:?}: must be \"all\" or \"conversations\""
            ))),
        }
    }
}

/// The processors' configuration (`[processors]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka consumer group of all processor instances.
    pub group_id: String,
    /// This instance's static membership in the group (Kafka's `group.instance.id`,
    /// `VIGIA_PROCESSOR_INSTANCE_ID`): restarted within the session timeout (after a crash or a
    /// deploy), it gets its partitions back at once — no wait for the dead member's session to
    /// time out, no rebalance of the others. Unique per running instance (Kafka fences the
    /// older of two processes with one id): e.g. a StatefulSet pod name. `None`: dynamic
    /// membership (a restarted instance waits out the session timeout, 15 s).
    pub instance_id: Option<String>,
    /// The watermark trails the newest event time (and, once caught up, the wall clock and the
    /// records' Kafka timestamps) by this much, so that events still on their way — posted
    /// before a deadline, not yet read by the processors — are in time. A deadline fires this
    /// long after it (plus a few milliseconds); an event that arrives later than this still
    /// corrects what was sent (a `corrected` withdrawal), so this trades alert latency against
    /// how often an alert is corrected.
    #[serde(with = "humantime_serde")]
    pub watermark_delay: Duration,
    /// Once caught up, deadlines fire from a timer set to `deadline + watermark_delay`; besides,
    /// every `tick` the wall clock advances the watermark (a fallback, and the retry interval
    /// when the commit before a firing fails).
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// How often consumed offsets whose outputs Kafka acknowledged are committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// An event whose `occurred_at` is more than this after the time its Kafka record was written
    /// is refused (dead letter): one CRM with a wrong clock must not push its tenant's event time
    /// into the future and make every later event "too late".
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// At most this many outputs awaiting Kafka's acknowledgement; consumption pauses beyond.
    pub max_in_flight: usize,
    /// Which rules run (every one unless limited, for benchmarks).
    pub rules: Rules,
    /// Write engine state checkpoints to the `checkpoints` topic and recover from them (else
    /// every assignment replays its partition from the beginning).
    pub checkpoints: bool,
    /// A partition that processed records is checkpointed at most this long after the previous
    /// checkpoint: what a crash leaves to replay is this much traffic (plus the commit lag).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// … or after this many records, whichever comes first: bounds the replay under a burst or
    /// while catching up, when an interval's worth of records is large.
    pub checkpoint_max_records: u64,
    /// Largest checkpoint record (header included); larger checkpoints are split. Below the
    /// brokers' `message.max.bytes` (1 MiB by default).
    pub checkpoint_piece_bytes: usize,
    /// Thresholds of every tenant without an override.
    pub defaults: Thresholds,
    /// Per-tenant overrides, keyed by tenant id (a TOML table key, so written as a string).
    #[serde(deserialize_with = "tenant_keys", serialize_with = "tenant_keys_out")]
    pub tenants: HashMap<TenantId, ThresholdOverrides>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            group_id: "vigia-processors".into(),
            instance_id: None,
            // Above the p99 of an event's Kafka hop here (20–34 ms at 1,000–2,000 events/s;
            // BENCHMARKS.md, pipeline): alerts within ~100 ms of their deadlines, ~0.2% of them
            // corrected by an answer still in flight at 2,000 events/s.
            watermark_delay: Duration::from_millis(50),
            tick: Duration::from_millis(200),
            commit_interval: Duration::from_millis(500),
            max_clock_skew: Duration::from_secs(600),
            max_in_flight: 10_000,
            rules: Rules::All,
            checkpoints: true,
            checkpoint_interval: Duration::from_secs(10),
            checkpoint_max_records: 100_000,
            checkpoint_piece_bytes: 900_000,
            defaults: Thresholds::default(),
            tenants: HashMap::new(),
        }
    }
}

impl Config {
    /// The thresholds of one tenant: the defaults with its overrides.
    pub fn thresholds(&self, tenant: TenantId) -> Thresholds {
        match self.tenants.get(&tenant) {
            Some(o) => self.defaults.with(o),
            None => self.defaults.clone(),
        }
    }

    /// This configuration with everything that does not shape the engine's state reset to the
    /// defaults: what a checkpoint is compared against. The rules' thresholds, the watermark delay
    /// (deadlines fired by log time) and the clock-skew bound (which events are applied) shape
    /// it; consumer group, tick, commit and checkpoint timings, in-flight bound do not — changing
    /// them keeps the checkpoints. Fields added later are compared unless listed here: a new
    /// setting costs a full replay when changed rather than a wrong state.
    pub fn for_state(&self) -> Config {
        let d = Config::default();
        Config {
            group_id: d.group_id,
            instance_id: d.instance_id,
            tick: d.tick,
            commit_interval: d.commit_interval,
            max_in_flight: d.max_in_flight,
            checkpoints: d.checkpoints,
            checkpoint_interval: d.checkpoint_interval,
            checkpoint_max_records: d.checkpoint_max_records,
            checkpoint_piece_bytes: d.checkpoint_piece_bytes,
            ..self.clone()
        }
    }

    /// Checks what serde cannot: ranges and relations between values.
    pub fn validate(&self) -> Result<(), ProcessorError> {
        self.defaults.validate("processors.defaults")?;
        for (tenant, o) in &self.tenants {
            self.defaults
                .with(o)
                .validate(&format!("processors.tenants.{tenant}"))?;
        }
        if self.tick.is_zero() || self.commit_interval.is_zero() {
            return Err(ProcessorError::Config(
                "processors.tick and processors.commit_interval must be more than 0s".into(),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ProcessorError::Config(
                "processors.max_in_flight must be at least 1".into(),
            ));
        }
        if self.checkpoint_interval.is_zero() || self.checkpoint_max_records == 0 {
            return Err(ProcessorError::Config(
                "processors.checkpoint_interval and checkpoint_max_records must be more than 0 \
                 (to turn checkpoints off: processors.checkpoints = false)"
                    .into(),
            ));
        }
        if self.checkpoint_piece_bytes <= crate::checkpoint::HEADER_LEN {
            return Err(ProcessorError::Config(format!(
                "processors.checkpoint_piece_bytes = {} must be more than a piece's header ({} \
                 bytes); the default 900000 fits the brokers' default record limit",
                self.checkpoint_piece_bytes,
                crate::checkpoint::HEADER_LEN
            )));
        }
        if self.group_id.is_empty() {
            return Err(ProcessorError::Config(
                "processors.group_id must not be empty".into(),
            ));
        }
        if let Some(id) = &self.instance_id {
            let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if id.is_empty() || id.len() > 200 || !id.chars().all(valid) {
                return Err(ProcessorError::Config(format!(
                    "processors.instance_id = {id:?}: use 1 to 200 letters, digits, '.', '_' or \
                     '-' (e.g. the pod name), unique per running instance"
                )));
            }
        }
        Ok(())
    }
}

fn tenant_keys<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<HashMap<TenantId, ThresholdOverrides>, D::Error> {
    use serde::de::Error;
    let raw = HashMap::<String, ThresholdOverrides>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| match k.trim().parse::<TenantId>() {
            Ok(id) => Ok((id, v)),
            Err(_) => Err(D::Error::custom(format!(
                "tenants.{k:?}: a tenant key must be a tenant id (a non-negative integer)"
            ))),
        })
        .collect()
}

fn tenant_keys_out<S: serde::Serializer>(
    m: &HashMap<TenantId, ThresholdOverrides>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut sorted: Vec<_> = m.iter().map(|(k, v)| (k.to_string(), v)).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    s.collect_map(sorted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_tenant_overrides() {
        let text = r#"
            watermark_delay = "2s"
            [defaults]
            unanswered_after = "45m"
            high_value_locations = ["Bogotá"]
            [tenants.42]
            unanswered_after = "30m"
            hot_lead_threshold = 0.9
            language = "en"
        "#;
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.watermark_delay, Duration::from_secs(2));
        assert_eq!(c.tick, Duration::from_millis(200));
        let t42 = c.thresholds(42);
        assert_eq!(t42.unanswered_after, Duration::from_secs(1800));
        assert_eq!(t42.hot_lead_threshold, 0.9);
        assert_eq!(t42.language, Language::En);
        assert_eq!(t42.high_value_locations, vec!["Bogotá".to_string()]);
        let t7 = c.thresholds(7);
        assert_eq!(t7.unanswered_after, Duration::from_secs(2700));
        assert_eq!(t7.session_timeout, Duration::from_secs(600));
        assert_eq!(t7.hot_lead_threshold, 0.8);
    }

    #[test]
    fn a_static_instance_id_is_optional_checked_and_not_part_of_the_state() {
        let c: Config = toml::from_str("instance_id = \"processors-0\"").unwrap();
        c.validate().unwrap();
        assert_eq!(c.for_state(), Config::default().for_state());
        for bad in ["", "pod 0", "ñ", &"x".repeat(201)] {
            let c = Config {
                instance_id: Some(bad.to_string()),
                ..Config::default()
            };
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("processors.instance_id"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn bad_tenant_key_and_bad_values_are_refused() {
        let err = toml::from_str::<Config>("[tenants.acme]\nunanswered_after = \"1m\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant id"), "{err}");
        assert!(toml::from_str::<Config>("[defaults]\ncolour = 1").is_err());
        let c: Config = toml::from_str("[tenants.3]\nhot_lead_rearm = 0.95").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("processors.tenants.3") && err.contains("hot_lead_rearm"),
            "{err}"
        );
        let c: Config = toml::from_str("[tenants.4]\ntime_zone = \"Mars/Olympus\"").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("time_zone") && err.contains("Mars"), "{err}");
        let c: Config = toml::from_str("[tenants.4]\ntime_zone = \"Europe/Madrid\"").unwrap();
        c.validate().unwrap();
        assert_eq!(c.thresholds(4).time_zone, "Europe/Madrid");
    }

    #[test]
    fn defaults_are_the_spec_defaults() {
        let c = Config::default();
        c.validate().unwrap();
        let t = &c.defaults;
        assert_eq!(t.unanswered_after, Duration::from_secs(3600));
        assert_eq!(t.session_timeout, Duration::from_secs(600));
        assert_eq!(t.allowed_lateness, Duration::from_secs(3600));
        assert_eq!((t.hot_lead_threshold, t.hot_lead_rearm), (0.8, 0.7));
        assert_eq!(t.hot_lead_no_contact, Duration::from_secs(7200));
        assert_eq!(t.follow_up_before, Duration::from_secs(86400));
        assert_eq!(c.group_id, "vigia-processors");
        assert_eq!(t.time_zone, "UTC");
        assert_eq!(t.alert_mean_response, Duration::from_secs(1800));
        assert_eq!((t.alert_unanswered, t.alert_conversion_min_leads), (5, 10));
        assert_eq!(t.alert_conversion_rate, 0.10);
        assert_eq!((t.max_conversations, t.max_leads), (100_000, 100_000));
        assert_eq!((t.max_sessions, t.max_sellers), (10_000, 10_000));
    }

    #[test]
    fn only_settings_that_shape_the_state_invalidate_a_checkpoint() {
        let base = Config::default();
        let operational = Config {
            group_id: "other".into(),
            tick: Duration::from_millis(50),
            commit_interval: Duration::from_secs(2),
            max_in_flight: 7,
            checkpoints: false,
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_max_records: 5,
            checkpoint_piece_bytes: 4096,
            ..base.clone()
        };
        assert_eq!(operational.for_state(), base.for_state());
        let delay = Config {
            watermark_delay: Duration::from_secs(2),
            ..base.clone()
        };
        assert_ne!(delay.for_state(), base.for_state());
        let skew = Config {
            max_clock_skew: Duration::from_secs(60),
            ..base.clone()
        };
        assert_ne!(skew.for_state(), base.for_state());
        let mut tenant = base.clone();
        tenant.tenants.insert(
            3,
            ThresholdOverrides {
                unanswered_after: Some(Duration::from_secs(60)),
                ..Default::default()
            },
        );
        assert_ne!(tenant.for_state(), base.for_state());
    }

    #[test]
    fn checkpoint_settings_are_checked() {
        let c: Config = toml::from_str(
            "checkpoint_interval = \"30s\"\ncheckpoint_max_records = 5000\ncheckpoints = false",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.checkpoint_interval, Duration::from_secs(30));
        assert!(!c.checkpoints);
        let c: Config = toml::from_str("checkpoint_interval = \"0s\"").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("checkpoint_interval"), "{err}");
        let c: Config = toml::from_str("checkpoint_piece_bytes = 10").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("checkpoint_piece_bytes"), "{err}");
    }

    #[test]
    fn entity_limits_are_per_tenant_and_must_be_positive() {
        let c: Config = toml::from_str(
            "[defaults]\nmax_conversations = 500\n[tenants.9]\nmax_sessions = 20\nmax_sellers = 3",
        )
        .unwrap();
        c.validate().unwrap();
        let t9 = c.thresholds(9);
        assert_eq!(
            (
                t9.max_conversations,
                t9.max_leads,
                t9.max_sessions,
                t9.max_sellers
            ),
            (500, 100_000, 20, 3)
        );
        assert_eq!(c.thresholds(1).max_sessions, 10_000);
        let c: Config = toml::from_str("[tenants.5]\nmax_leads = 0").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("processors.tenants.5") && err.contains("max_leads"),
            "{err}"
        );
        assert!(toml::from_str::<Config>("[defaults]\nmax_conversation = 5").is_err());
    }
}
