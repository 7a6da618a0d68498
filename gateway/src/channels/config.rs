//! `[gateway.channels]`: which tenant's notifications go where, and how hard to try.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use vigia_schemas::{NotificationType, Role, TenantId, UserId};

use super::ChannelsError;

/// Where the configuration lives in the root binary's TOML; prefixes every validation message.
const SECTION: &str = "gateway.channels";

/// The channels outside the browser (`[gateway.channels]`): per tenant, e-mail over SMTP and
/// Slack / Microsoft Teams incoming webhooks, plus the attempt and retry settings shared by all.
///
/// The default has no tenant: nothing is sent.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsConfig {
    /// Per tenant id (`[gateway.channels.tenants.42]`). A tenant not listed gets nothing
    /// outside the browser; a tenant's settings are never used for another tenant.
    #[serde(deserialize_with = "tenant_map")]
    pub tenants: BTreeMap<TenantId, TenantChannels>,
    /// Longest a single delivery attempt (SMTP conversation or HTTP request) may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of failed attempts.
    pub retry: RetryConfig,
    /// How long an instance holds a delivery it attempts (`VIGIA_CHANNELS_LEASE`); if it dies
    /// meanwhile, another instance takes the delivery over once this is over. Longer than
    /// `timeout`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How long `sent` deliveries are kept as the record of what went out
    /// (`VIGIA_CHANNELS_KEEP_SENT`); older ones are deleted. `failed` ones are kept.
    #[serde(with = "humantime_serde")]
    pub keep_sent: Duration,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            tenants: BTreeMap::new(),
            timeout: Duration::from_secs(15),
            retry: RetryConfig::default(),
            lease: Duration::from_secs(60),
            keep_sent: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Exponential backoff: attempt `n` (1-based) that fails is retried after
/// `min(initial_delay · 2^(n-1), max_delay)` (or the receiver's `Retry-After`, if longer, still
/// capped), until `max_attempts` attempts were made.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per notification and channel, the first included (1 = no retry).
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    /// 8 attempts, 2 s, 4 s, 8 s … apart, at most 5 min apart: about 4 minutes of trying.
    fn default() -> Self {
        RetryConfig {
            max_attempts: 8,
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(300),
        }
    }
}

impl RetryConfig {
    /// How long to wait after failed attempt number `attempt` (1-based) before the next one.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_delay
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// One tenant's channels.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantChannels {
    /// Notification types sent outside the browser. Default: `performance_alert` and
    /// `daily_report`.
    pub types: Vec<NotificationType>,
    /// E-mail: one message per notification and recipient, to the fixed addresses of `to` and
    /// to the users of the address book `users` whose preferences ask for it.
    pub email: Option<EmailChannel>,
    /// Slack incoming webhook URLs (`https://hooks.slack.com/services/…`), one channel each.
    pub slack_webhooks: Vec<String>,
    /// Microsoft Teams webhook URLs (a Workflows "when a Teams webhook request is received"
    /// trigger, or a legacy incoming webhook), one channel each.
    pub teams_webhooks: Vec<String>,
}

impl Default for TenantChannels {
    fn default() -> Self {
        TenantChannels {
            types: vec![
                NotificationType::PerformanceAlert,
                NotificationType::DailyReport,
            ],
            email: None,
            slack_webhooks: Vec::new(),
            teams_webhooks: Vec::new(),
        }
    }
}

/// Webhook URLs are credentials (whoever has one can post): `Debug` shows only their host.
impl fmt::Debug for TenantChannels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts = |urls: &[String]| urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>();
        f.debug_struct("TenantChannels")
            .field("types", &self.types)
            .field("email", &self.email)
            .field("slack_webhooks", &hosts(&self.slack_webhooks))
            .field("teams_webhooks", &hosts(&self.teams_webhooks))
            .finish()
    }
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain SMTP, no encryption (a relay on the same host or network). Default port 25.
    None,
    /// STARTTLS if the server offers it, plain otherwise (not safe against an active attacker).
    /// Default port 587.
    Opportunistic,
    /// STARTTLS, refusing to go on without it. Default port 587.
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS"). Default port 465.
    Implicit,
}

impl SmtpTls {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::Opportunistic | SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
        }
    }
}

/// E-mail over SMTP for one tenant.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailChannel {
    /// SMTP server (relay) host name or IP address.
    pub host: String,
    /// Default from `tls`: 25, 587 or 465.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    /// SMTP AUTH (PLAIN/LOGIN) user; set with `password` or not at all.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Sender: `alertas@example.com` or `Vigía <alertas@example.com>`.
    pub from: String,
    /// Fixed recipients (same forms as `from`), e.g. a shared mailbox: every notification of
    /// the tenant's `types`, whatever anybody's preferences.
    #[serde(default)]
    pub to: Vec<String>,
    /// The tenant's address book, by user id (the `sub` of their tokens): a user gets a
    /// notification by e-mail when it is addressed to them (their id, or their role; CEOs and
    /// managers see every notification of the tenant) and their stored preferences ask for it
    /// (`email: true`, type enabled, priority reached; quiet hours and days off defer it).
    #[serde(default, deserialize_with = "user_map")]
    pub users: BTreeMap<UserId, EmailUser>,
}

/// One entry of a tenant's e-mail address book.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EmailUser {
    /// `ana@example.com` or `Ana Núñez <ana@example.com>`.
    pub address: String,
    /// `ceo`, `manager`, `seller`, `secretary` or `supervisor`: who the user is for the audience
    /// rules (the same role as in their token) and for their default preferences.
    pub role: String,
}

impl EmailUser {
    /// The role, if `role` names one.
    pub fn role(&self) -> Option<Role> {
        serde_json::from_value(serde_json::Value::String(self.role.trim().to_string())).ok()
    }
}

impl EmailChannel {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }
}

/// A secret (the SMTP password): `Debug` never shows it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `https://hooks.slack.com/…`: scheme and host of a webhook URL, never its secret path.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.host_str() {
            Some(host) => match u.port() {
                Some(port) => format!("{}://{host}:{port}/…", u.scheme()),
                None => format!("{}://{host}/…", u.scheme()),
            },
            None => "<url>".into(),
        },
        Err(_) => "<not a url>".into(),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ChannelsConfig {
    /// Checks everything that can be checked without connecting; the error lists every
    /// problem, each prefixed with its path (`gateway.channels.tenants.42.slack_webhooks[0]: …`).
    pub fn validate(&self) -> Result<(), ChannelsError> {
        let mut problems = Vec::new();
        let mut problem = |path: String, what: &str| problems.push(format!("{path}: {what}"));
        if self.timeout.is_zero() {
            problem(
                format!("{SECTION}.timeout"),
                "must be positive, e.g. \"15s\"",
            );
        }
        if self.lease <= self.timeout {
            problem(
                format!("{SECTION}.lease (VIGIA_CHANNELS_LEASE)"),
                &format!(
                    "must be longer than {SECTION}.timeout ({:?}): a delivery still being \
                     attempted could be taken over and sent twice (default 60s)",
                    self.timeout
                ),
            );
        }
        if self.keep_sent.is_zero() {
            problem(
                format!("{SECTION}.keep_sent (VIGIA_CHANNELS_KEEP_SENT)"),
                "must be positive, e.g. \"7d\"",
            );
        }
        let retry = &self.retry;
        if retry.max_attempts == 0 {
            problem(
                format!("{SECTION}.retry.max_attempts"),
                "must be at least 1 (1 = no retry; default 8)",
            );
        }
        if retry.initial_delay.is_zero() {
            problem(
                format!("{SECTION}.retry.initial_delay"),
                "must be positive, e.g. \"2s\"",
            );
        }
        if retry.max_delay < retry.initial_delay {
            problem(
                format!("{SECTION}.retry.max_delay"),
                "must not be shorter than retry.initial_delay",
            );
        }
        for (tenant, channels) in &self.tenants {
            let at = format!("{SECTION}.tenants.{tenant}");
            if channels.types.is_empty() {
                problem(
                    format!("{at}.types"),
                    "is empty: nothing would be sent (list types such as \"performance_alert\", \
                     or remove the tenant)",
                );
            }
            if channels.email.is_none()
                && channels.slack_webhooks.is_empty()
                && channels.teams_webhooks.is_empty()
            {
                problem(at.clone(), "has no email, slack_webhooks or teams_webhooks");
            }
            if let Some(email) = &channels.email {
                validate_email(&format!("{at}.email"), email, &mut problem);
            }
            for (field, urls) in [
                ("slack_webhooks", &channels.slack_webhooks),
                ("teams_webhooks", &channels.teams_webhooks),
            ] {
                for (i, url) in urls.iter().enumerate() {
                    if let Err(why) = check_webhook_url(url) {
                        problem(format!("{at}.{field}[{i}]"), &why.to_string());
                    }
                    // One webhook, one worker: the same URL twice would be sent everything twice.
                    if let Some(first) = urls[..i].iter().position(|u| u.trim() == url.trim()) {
                        problem(
                            format!("{at}.{field}[{i}]"),
                            &format!("is the same URL as {field}[{first}]"),
                        );
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ChannelsError::Config(problems.join("; ")))
        }
    }
}

fn validate_email(at: &str, email: &EmailChannel, problem: &mut impl FnMut(String, &str)) {
    if email.host.trim().is_empty() {
        problem(format!("{at}.host"), "must not be empty");
    }
    if email.port == Some(0) {
        problem(format!("{at}.port"), "must not be 0");
    }
    if let Err(e) = email.from.parse::<lettre::message::Mailbox>() {
        problem(
            format!("{at}.from"),
            &format!("not an e-mail address ({e}); e.g. \"Vigía <alertas@example.com>\""),
        );
    }
    if email.to.is_empty() && email.users.is_empty() {
        problem(
            at.to_string(),
            "has no recipient: list fixed addresses in `to` and/or users' addresses in `users` \
             (e.g. users = { 1001 = { address = \"ceo@example.com\", role = \"ceo\" } })",
        );
    }
    for (i, to) in email.to.iter().enumerate() {
        if let Err(e) = to.parse::<lettre::message::Mailbox>() {
            problem(
                format!("{at}.to[{i}]"),
                &format!("not an e-mail address ({e})"),
            );
        }
    }
    for (user, entry) in &email.users {
        if let Err(e) = entry.address.parse::<lettre::message::Mailbox>() {
            problem(
                format!("{at}.users.{user}.address"),
                &format!("not an e-mail address ({e}); e.g. \"Ana <ana@example.com>\""),
            );
        }
        if entry.role().is_none() {
            problem(
                format!("{at}.users.{user}.role"),
                &format!(
                    "{:?} is not a role: ceo, manager, seller, secretary or supervisor",
                    entry.role
                ),
            );
        }
    }
    match (&email.username, &email.password) {
        (Some(_), None) => problem(format!("{at}.password"), "is missing (username is set)"),
        (None, Some(_)) => problem(format!("{at}.username"), "is missing (password is set)"),
        (Some(_), Some(_)) if email.tls == SmtpTls::None && !is_loopback_host(&email.host) => {
            problem(
                format!("{at}.tls"),
                "is \"none\" but credentials are set: the password would cross the network in \
                 clear text (use \"starttls\" or \"implicit\")",
            )
        }
        _ => {}
    }
}

/// Why a webhook URL is refused.
#[derive(Debug, thiserror::Error)]
enum WebhookUrlError {
    #[error("not a URL ({0})")]
    NotAUrl(String),
    #[error("not a URL (no host)")]
    NoHost,
    #[error("must be https (plain http only to a loopback address)")]
    PlainHttp,
    #[error("not an http(s) URL (scheme {0:?})")]
    Scheme(String),
}

/// A webhook URL must be absolute `https` (or `http` to a loopback address, for tests and local
/// relays): the URL is a credential, it must not cross a network in clear text.
fn check_webhook_url(url: &str) -> Result<(), WebhookUrlError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| WebhookUrlError::NotAUrl(e.to_string()))?;
    let host = parsed.host_str().ok_or(WebhookUrlError::NoHost)?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_host(host) => Ok(()),
        "http" => Err(WebhookUrlError::PlainHttp),
        other => Err(WebhookUrlError::Scheme(other.to_string())),
    }
}

/// Tenant ids as TOML table keys are strings (`[gateway.channels.tenants.42]`); JSON may give
/// numbers. Both are accepted.
fn tenant_map<'de, D>(d: D) -> Result<BTreeMap<TenantId, TenantChannels>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = BTreeMap::<IdKey<TenantTag>, TenantChannels>::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k.id, v)).collect())
}

/// User ids as keys of the address book (`users = { 1001 = { … } }`), strings or numbers.
fn user_map<'de, D>(d: D) -> Result<BTreeMap<UserId, EmailUser>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = BTreeMap::<IdKey<UserTag>, EmailUser>::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k.id, v)).collect())
}

/// What an id key names, for the error messages.
trait IdName {
    const NAME: &'static str;
}
struct TenantTag;
impl IdName for TenantTag {
    const NAME: &'static str = "tenant id";
}
struct UserTag;
impl IdName for UserTag {
    const NAME: &'static str = "user id";
}

struct IdKey<T> {
    id: u64,
    _name: std::marker::PhantomData<T>,
}

impl<T> PartialEq for IdKey<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl<T> Eq for IdKey<T> {}
impl<T> PartialOrd for IdKey<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for IdKey<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}

impl<'de, T: IdName> Deserialize<'de> for IdKey<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IdKey<T>, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: IdName> serde::de::Visitor<'_> for V<T> {
            type Value = IdKey<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a {} (a non-negative integer)", T::NAME)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IdKey<T>, E> {
                Ok(IdKey {
                    id: v,
                    _name: std::marker::PhantomData,
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IdKey<T>, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{} {v} is negative", T::NAME)))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IdKey<T>, E> {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| E::custom(format!("{} {v:?} is not a number", T::NAME)))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}
