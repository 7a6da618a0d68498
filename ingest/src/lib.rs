//! HTTP ingest (contract §2.4): `POST /v1/events` validates CRM events and writes them durably to the
//! Kafka `events` topic; `GET /v1/schemas` serves their JSON Schemas.
//!
//! What it does:
//! - Authenticates each request by its `X-API-Key`, bound to one tenant ([`Config::api_keys`]).
//! - Accepts `application/json` (one event object or an array) and `application/x-ndjson` (one
//!   event per non-blank line, `\n` or `\r\n`); anything else is `415`.
//! - All-or-nothing validation before anything is produced: any invalid event →
//!   `400 {"error": "...", "errors": [{"index", "field", "message"}]}` listing every problem of
//!   every event (`index` = position among the request's events; for NDJSON, among its non-blank
//!   lines; a line that is not JSON is an error with `field: ""`). `occurred_at` more than
//!   [`Config::max_future_skew`] ahead of the server clock is such an error, and so is a text
//!   field longer than its limit (see *Field limits* below). Once every event is
//!   valid, one whose `tenant_id` is not the key's tenant → `403` with `errors` naming each such
//!   event by `index` and `event_id`. Request-level problems (body not JSON, no events) are
//!   `400 {"error": "..."}`; `401`, `413` (body over [`Config::max_body_bytes`], more than
//!   [`Config::max_events_per_request`] events, or one event too large for Kafka) and `415` also
//!   answer `{"error": "..."}`.
//! - Duplicate `event_id`s inside one request: the first occurrence is kept and the others are
//!   dropped; `accepted` counts the distinct events written. (Consumers de-duplicate by
//!   `event_id` anyway, across requests too; dropping here only saves work.)
//! - Produces each event's canonical JSON (`Event::to_json`) keyed by `Event::partition_key`, with
//!   headers `event_type` and `tenant_id`, all of a request's events concurrently (enqueued in
//!   request order), and answers `202 {"accepted": N}` only once Kafka acknowledged every one
//!   (`acks=all`, idempotent producer). If any delivery fails or times out
//!   ([`Config::produce_timeout`]) → `503` with `Retry-After` and `{"error", "retryable": true}`:
//!   some of the request's events may have been written, and resending the same request is safe
//!   because `event_id` makes it idempotent. Nothing is dropped silently.
//! - `GET /v1/schemas` (no key needed) → `{"event_types": [...], "schemas": {"<type>": <JSON
//!   Schema>}}`.
//!
//! # Field limits
//!
//! One event cannot carry megabytes into the pipeline: each text field has a length limit, in
//! characters (as JSON Schema's `maxLength`, which the served schemas carry). Over it → `400`
//! naming the field, the limit and the length.
//!
//! | field | default | config (`[ingest]`) | environment |
//! |---|---|---|---|
//! | `message.received.text`, `lead.follow_up_scheduled.note` | 65 536 | `max_text_chars` | `VIGIA_INGEST_MAX_TEXT_CHARS` |
//! | `lead.created.name`, `lead.created.location`, `user.upserted.name` | 256 | `max_name_chars` | `VIGIA_INGEST_MAX_NAME_CHARS` |
//! | `phone_number` | 64 | fixed | |
//! | `user.upserted.time_zone` | 64 | fixed | |
//! | entity ids (`conversation_id`, `lead_id`, `session_id`, `client_id`) | 128 bytes | fixed | |
//! | the request body | 1 MiB | `max_body_bytes` | |
//! | events per request | 10 000 | `max_events_per_request` | |
//!
//! Limits are checked at this door only: the stages behind it take what Kafka holds, and a record
//! written there by other means, however large, is dead-lettered in bounded form if it cannot be
//! used — it never stops a stage.
//!
//! What it does not: create topics (the binary does, before [`Ingest::new`]), serve `/health` or
//! `/metrics` (the binary does, using [`Ingest::ready`] and the registry passed to
//! [`Ingest::new`]), de-duplicate across requests (consumers do), or bind a socket.

mod request;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::stream::{FuturesUnordered, StreamExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use vigia_schemas::{FieldLimits, TenantId, Topics};

use request::{Batch, Limits, Rejection};

/// How long a client is told to wait before retrying after a `503`.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Room left in the producer's `message.max.bytes` for the key, headers and record framing.
const RECORD_OVERHEAD_BYTES: usize = 1024;
/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Timeout of the metadata request behind [`Ingest::ready`].
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Ingest settings (TOML section of the binary's config; env overrides applied by the binary).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// API key → the tenant it may write for. Empty = every request is refused with 401.
    /// From the environment, see [`parse_api_keys`].
    pub api_keys: HashMap<String, TenantId>,
    /// Largest request body accepted, in bytes (default 1 MiB); larger → 413.
    pub max_body_bytes: usize,
    /// Most events in one request (default 10 000); more → 413.
    pub max_events_per_request: usize,
    /// How long Kafka may take to acknowledge an event before the request fails with 503
    /// (librdkafka `message.timeout.ms`; default 10s).
    #[serde(with = "humantime_serde")]
    pub produce_timeout: Duration,
    /// How far ahead of the server clock `occurred_at` may be (default 5m); further → 400.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Longest `text` / `note`, in characters (default 65 536); longer → 400.
    pub max_text_chars: usize,
    /// Longest name or location, in characters (default 256); longer → 400.
    pub max_name_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api_keys: HashMap::new(),
            max_body_bytes: 1024 * 1024,
            max_events_per_request: 10_000,
            produce_timeout: Duration::from_secs(10),
            max_future_skew: Duration::from_secs(5 * 60),
            max_text_chars: FieldLimits::default().text_chars,
            max_name_chars: FieldLimits::default().name_chars,
        }
    }
}

impl Config {
    /// The field limits of [`Config::max_text_chars`] and [`Config::max_name_chars`].
    pub fn field_limits(&self) -> FieldLimits {
        FieldLimits {
            text_chars: self.max_text_chars,
            name_chars: self.max_name_chars,
        }
    }

    /// Applies `VIGIA_INGEST_MAX_TEXT_CHARS` and `VIGIA_INGEST_MAX_NAME_CHARS` (`get` reads a
    /// variable: the process environment, or a test's map).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), IngestError> {
        for (name, value) in [
            ("VIGIA_INGEST_MAX_TEXT_CHARS", &mut self.max_text_chars),
            ("VIGIA_INGEST_MAX_NAME_CHARS", &mut self.max_name_chars),
        ] {
            if let Some(v) = get(name) {
                *value = v.trim().parse().map_err(|e| {
                    IngestError::Config(format!("{name}={v:?} is not a number of characters: {e}"))
                })?;
            }
        }
        Ok(())
    }
}

/// Keys are secrets: Debug shows how many there are and for which tenants, not the keys.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tenants: Vec<_> = self.api_keys.values().collect();
        tenants.sort();
        f.debug_struct("Config")
            .field(
                "api_keys",
                &format_args!("<{} keys for tenants {tenants:?}>", self.api_keys.len()),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_events_per_request", &self.max_events_per_request)
            .field("produce_timeout", &self.produce_timeout)
            .field("max_future_skew", &self.max_future_skew)
            .field("max_text_chars", &self.max_text_chars)
            .field("max_name_chars", &self.max_name_chars)
            .finish()
    }
}

/// A malformed `VIGIA_API_KEYS` value. Entries are named by position and a masked prefix of the
/// key, so the error can be logged without leaking the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "VIGIA_API_KEYS entry {position} ({shown}): {problem}; \
     expected `key=tenant_id,key2=tenant_id2`"
)]
pub struct ConfigError {
    /// 1-based position of the entry in the comma-separated list.
    pub position: usize,
    /// The entry with its key masked.
    pub shown: String,
    pub problem: String,
}

/// Parses `VIGIA_API_KEYS`: `key=tenant_id,key2=tenant_id2`. Whitespace around keys and ids and
/// empty entries (a trailing comma) are ignored. A key must be printable ASCII without spaces (it
/// travels in an HTTP header) and may appear only once; several keys may share a tenant.
pub fn parse_api_keys(s: &str) -> Result<HashMap<String, TenantId>, ConfigError> {
    fn mask(key: &str) -> String {
        let visible: String = key.chars().take(3).collect();
        if key.chars().count() > 3 {
            format!("{visible}…")
        } else {
            visible
        }
    }
    let mut keys = HashMap::new();
    for (i, entry) in s.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let err = |shown: String, problem: &str| ConfigError {
            position: i + 1,
            shown,
            problem: problem.to_string(),
        };
        let Some((key, tenant)) = entry.split_once('=') else {
            return Err(err(mask(entry), "no `=` between key and tenant id"));
        };
        let (key, tenant) = (key.trim(), tenant.trim());
        let shown = format!("{}={tenant}", mask(key));
        if key.is_empty() {
            return Err(err(shown, "empty key"));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err(
                shown,
                "a key must be printable ASCII without spaces (it is sent as an HTTP header)",
            ));
        }
        let Ok(tenant_id) = tenant.parse::<TenantId>() else {
            return Err(err(shown, "the tenant id must be a non-negative integer"));
        };
        if keys.insert(key.to_string(), tenant_id).is_some() {
            return Err(err(shown, "this key appears more than once"));
        }
    }
    Ok(keys)
}

/// Why [`Ingest::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid ingest config: {0}")]
    Config(String),
    #[error("cannot create the Kafka producer (check the kafka settings): {0}")]
    Producer(#[from] KafkaError),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

struct Metrics {
    requests: Family<StatusLabel, Counter>,
    accepted: Counter,
    rejected: Counter,
    produce_seconds: Histogram,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            accepted: Counter::default(),
            rejected: Counter::default(),
            // 0.5 ms … ~16 s
            produce_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        };
        registry.register(
            "vigia_ingest_requests",
            "POST /v1/events requests by HTTP status",
            m.requests.clone(),
        );
        registry.register(
            "vigia_ingest_events_accepted",
            "Events acknowledged by Kafka (distinct within their request)",
            m.accepted.clone(),
        );
        registry.register(
            "vigia_ingest_events_rejected",
            "Events of requests refused as invalid (400), foreign-tenant (403) or not \
             acknowledged by Kafka (503); other refusals (401, 413, 415, body not JSON) are \
             counted by vigia_ingest_requests_total only",
            m.rejected.clone(),
        );
        registry.register(
            "vigia_ingest_produce_duration_seconds",
            "Time from enqueueing a request's events to Kafka acknowledging (or failing) all",
            m.produce_seconds.clone(),
        );
        m
    }
}

struct Inner {
    config: Config,
    limits: Limits,
    producer: FutureProducer,
    topic: String,
    metrics: Metrics,
    schemas: Bytes,
}

/// The ingest stage. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

impl Ingest {
    /// Creates the idempotent producer (from `kafka`, which has `bootstrap.servers`, plus
    /// ingest's settings) and registers the metrics. Does not contact the broker.
    pub fn new(
        config: Config,
        kafka: &ClientConfig,
        topics: &Topics,
        registry: &mut Registry,
    ) -> Result<Ingest, IngestError> {
        if config.max_body_bytes == 0
            || config.max_events_per_request == 0
            || config.max_text_chars == 0
            || config.max_name_chars == 0
        {
            return Err(IngestError::Config(
                "max_body_bytes, max_events_per_request, max_text_chars and max_name_chars must \
                 be at least 1"
                    .into(),
            ));
        }
        let timeout_ms = config.produce_timeout.as_millis();
        if !(100..=i32::MAX as u128).contains(&timeout_ms) {
            return Err(IngestError::Config(format!(
                "produce_timeout must be between 100ms and ~24 days, got {:?}",
                config.produce_timeout
            )));
        }
        if config.api_keys.is_empty() {
            tracing::warn!("ingest has no API keys configured: every POST /v1/events gets 401");
        }

        let mut producer_config = kafka.clone();
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", timeout_ms.to_string())
            // Every POST waits for its events' acknowledgement: a batch that waits to fill adds
            // its wait to each answer and to each event's way to the processors. 1 ms still
            // gathers what arrives together at high rates (librdkafka's default is 5).
            .set("linger.ms", "1")
            // librdkafka has lz4 built in, so the bundled build always supports it.
            .set("compression.type", "lz4")
            // Topics are created by the binary; a missing one must fail, not be auto-created.
            .set("allow.auto.create.topics", "false");
        if producer_config.get("client.id").is_none() {
            producer_config.set("client.id", "vigia-ingest");
        }
        let message_max_bytes = producer_config
            .get("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
        let producer: FutureProducer = producer_config.create()?;

        let schemas = serde_json::json!({
            "event_types": vigia_schemas::EVENT_TYPES,
            "schemas": vigia_schemas::event_json_schemas_with(&config.field_limits()),
        });
        let inner = Inner {
            limits: Limits {
                max_events: config.max_events_per_request,
                max_future_skew: config.max_future_skew,
                max_event_bytes: message_max_bytes.saturating_sub(RECORD_OVERHEAD_BYTES),
                fields: config.field_limits(),
            },
            config,
            producer,
            topic: topics.events.clone(),
            metrics: Metrics::register(registry),
            schemas: Bytes::from(schemas.to_string()),
        };
        Ok(Ingest {
            inner: Arc::new(inner),
        })
    }

    /// `POST /v1/events` and `GET /v1/schemas`, ready to merge into the binary's router.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/v1/events",
                post(post_events).layer(DefaultBodyLimit::max(self.inner.config.max_body_bytes)),
            )
            .route("/v1/schemas", get(get_schemas))
            .with_state(self.inner.clone())
    }

    /// Whether Kafka answers a metadata request (within ~2s) and lists the events topic.
    pub async fn ready(&self) -> bool {
        let inner = self.inner.clone();
        let probe = tokio::task::spawn_blocking(move || {
            inner
                .producer
                .client()
                .fetch_metadata(Some(&inner.topic), READY_TIMEOUT)
                .map(|metadata| {
                    metadata.topics().iter().any(|t| {
                        t.name() == inner.topic && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
        });
        match probe.await {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "ingest not ready: Kafka metadata request failed");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "ingest readiness probe panicked");
                false
            }
        }
    }

    /// Waits up to `timeout` for queued events to be delivered. Call at shutdown, after the HTTP
    /// server stopped accepting requests.
    pub async fn flush(&self, timeout: Duration) {
        let inner = self.inner.clone();
        let flushed = tokio::task::spawn_blocking(move || inner.producer.flush(timeout)).await;
        match flushed {
            Ok(Ok(())) => tracing::info!("ingest producer flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "ingest producer flush incomplete"),
            Err(e) => tracing::warn!(error = %e, "ingest producer flush panicked"),
        }
    }
}

async fn get_schemas(State(inner): State<Arc<Inner>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        inner.schemas.clone(),
    )
        .into_response()
}

async fn post_events(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let response = match handle(&inner, request).await {
        Ok(accepted) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "accepted": accepted })),
        )
            .into_response(),
        Err(rejection) => {
            let status = StatusCode::from_u16(rejection.status())
                .expect("rejections use valid status codes");
            let mut response = (status, axum::Json(rejection.body())).into_response();
            if let Rejection::Unavailable { retry_after, .. } = &rejection {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            response
        }
    };
    let status = response.status().as_u16();
    inner
        .metrics
        .requests
        .get_or_create(&StatusLabel { status })
        .inc();
    response
}

/// Authenticate, check the content type, read and validate the body, produce. Returns the number
/// of distinct events acknowledged.
async fn handle(inner: &Inner, request: Request) -> Result<usize, Rejection> {
    let headers = request.headers();
    let tenant = request::authenticate(
        &inner.config.api_keys,
        headers
            .get(request::API_KEY_HEADER)
            .map(HeaderValue::as_bytes),
    )?;
    let format =
        request::body_format(headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes))?;
    // Reads the body within the `DefaultBodyLimit` set on the route.
    let body = Bytes::from_request(request, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Rejection::TooLarge(format!(
                "request body over the limit of {} bytes: split it into smaller requests",
                inner.config.max_body_bytes
            ))
        } else {
            Rejection::BadRequest(format!("could not read the request body: {e}"))
        }
    })?;
    let batch = request::parse_events(format, &body, tenant, &inner.limits, chrono::Utc::now())
        .inspect_err(|rejection| {
            if let Rejection::InvalidEvents { received, .. }
            | Rejection::ForeignTenant { received, .. } = rejection
            {
                inner.metrics.rejected.inc_by(*received as u64);
            }
            tracing::debug!(tenant, status = rejection.status(), "events refused");
        })?;
    let received = batch.received;
    match produce(inner, &batch, tenant).await {
        Ok(()) => {
            inner.metrics.accepted.inc_by(batch.events.len() as u64);
            tracing::debug!(
                tenant,
                accepted = batch.events.len(),
                received,
                "events written"
            );
            Ok(batch.events.len())
        }
        Err(error) => {
            inner.metrics.rejected.inc_by(received as u64);
            tracing::warn!(tenant, events = batch.events.len(), %error, "Kafka did not acknowledge the request's events; answering 503");
            Err(Rejection::Unavailable {
                message: format!(
                    "Kafka did not acknowledge every event ({error}). Some may have been \
                     written; resending the same request is safe (event_id makes it idempotent). \
                     Retry after {} seconds",
                    RETRY_AFTER.as_secs()
                ),
                retry_after: RETRY_AFTER,
            })
        }
    }
}

/// Enqueues every event in request order, then waits for all acknowledgements. The first
/// failure is returned; the others are not waited for, since the answer is 503 either way.
async fn produce(inner: &Inner, batch: &Batch, tenant: TenantId) -> Result<(), KafkaError> {
    let started = Instant::now();
    // A full local queue is waited out, but no longer than a delivery may take.
    let enqueue_deadline = started + inner.config.produce_timeout;
    let tenant_header = tenant.to_string();
    let result = async {
        let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(batch.events.len());
        for prepared in &batch.events {
            let key = prepared.event.partition_key();
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: "event_type",
                    value: Some(prepared.event.kind().as_str()),
                })
                .insert(Header {
                    key: "tenant_id",
                    value: Some(&tenant_header),
                });
            let mut record = FutureRecord::to(&inner.topic)
                .key(&key)
                .payload(&prepared.json)
                .headers(headers);
            loop {
                match inner.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if Instant::now() < enqueue_deadline =>
                    {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((error, _)) => return Err(error),
                }
            }
        }
        let mut pending: FuturesUnordered<DeliveryFuture> = deliveries.into_iter().collect();
        while let Some(delivered) = pending.next().await {
            match delivered {
                Ok(Ok(_)) => {}
                Ok(Err((error, _message))) => return Err(error),
                Err(_canceled) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    }
    .await;
    inner
        .metrics
        .produce_seconds
        .observe(started.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_parse() {
        let keys = parse_api_keys(" k1=1, k-2 = 2 ,k3=1,").unwrap();
        assert_eq!(
            keys,
            HashMap::from([
                ("k1".to_string(), 1),
                ("k-2".to_string(), 2),
                ("k3".to_string(), 1)
            ])
        );
        assert!(parse_api_keys("").unwrap().is_empty());
    }

    #[test]
    fn api_key_errors_name_the_entry_without_leaking_the_key() {
        let cases = [
            ("a=1,secretkey", 2, "no `=`"),
            ("a=1,b=2,=3", 3, "empty key"),
            ("secretkey=x", 1, "non-negative integer"),
            ("secretkey=-4", 1, "non-negative integer"),
            ("a=1,a=2", 2, "more than once"),
            ("sec ret=1", 1, "printable ASCII"),
        ];
        for (input, position, problem) in cases {
            let e = parse_api_keys(input).unwrap_err();
            assert_eq!(e.position, position, "{input}");
            let text = e.to_string();
            assert!(text.contains(problem), "{input}: {text}");
            assert!(text.contains(&format!("entry {position}")), "{text}");
            assert!(!text.contains("secretkey"), "{text}");
        }
    }

    #[test]
    fn config_from_toml_like_json_with_humantime_and_debug_hides_keys() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "api_keys": {"secret": 7}, "produce_timeout": "2s", "max_future_skew": "1m"
        }))
        .unwrap();
        assert_eq!(config.produce_timeout, Duration::from_secs(2));
        assert_eq!(config.max_future_skew, Duration::from_secs(60));
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.max_events_per_request, 10_000);
        let debug = format!("{config:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("[7]"), "{debug}");
        assert!(serde_json::from_value::<Config>(serde_json::json!({"max_body": 1})).is_err());
    }
}
