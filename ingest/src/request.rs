//! Pure request handling for `POST /v1/events`: API key → tenant, content type → body format,
//! body → validated, de-duplicated events, or a [`Rejection`] that knows its HTTP status and JSON
//! body. No I/O and no clock of its own (`now` is passed in), so all of it is unit-tested.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;
use vigia_schemas::{Event, FieldLimits, TenantId};

/// The API key header (HTTP header names are case-insensitive).
pub(crate) const API_KEY_HEADER: &str = "x-api-key";

/// How the body carries its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFormat {
    /// `application/json`: one event object, or an array of them.
    Json,
    /// `application/x-ndjson`: one event object per non-blank line.
    Ndjson,
}

/// The limits the pure layer enforces. (The byte size of the whole body is enforced before the
/// body is read, by the HTTP layer.)
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub max_events: usize,
    pub max_future_skew: Duration,
    /// Largest canonical JSON of one event that Kafka will take (the producer's
    /// `message.max.bytes` minus room for the key, headers and record overhead).
    pub max_event_bytes: usize,
    /// Longest text fields.
    pub fields: FieldLimits,
}

/// One event ready to produce.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Prepared {
    /// Position of the event in the request.
    pub index: usize,
    pub event: Event,
    /// `Event::to_json`, computed once: it is both the size check and the Kafka value.
    pub json: String,
}

/// The events of an accepted request, in request order, first occurrence of each `event_id`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    pub events: Vec<Prepared>,
    /// Events in the request, duplicates included.
    pub received: usize,
}

/// One refused event: where it is in the request and which field is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct EventError {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    pub field: String,
    pub message: String,
}

/// Why a request was refused. Every variant maps to one status and a JSON body with an `error`
/// summary; the per-event ones (400 invalid, 403 foreign tenant) also carry `errors`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rejection {
    /// 401: no API key, or one not configured.
    Unauthorized(String),
    /// 415: the content type is neither JSON nor NDJSON.
    UnsupportedMediaType(String),
    /// 413: body over the byte limit, too many events, or one event too large for Kafka.
    TooLarge(String),
    /// 400 about the request as a whole: unreadable, not JSON, no events.
    BadRequest(String),
    /// 400: some events are invalid (every problem of every event).
    InvalidEvents {
        errors: Vec<EventError>,
        received: usize,
    },
    /// 403: some events belong to another tenant than the key's.
    ForeignTenant {
        errors: Vec<EventError>,
        received: usize,
    },
    /// 503: Kafka did not acknowledge every event.
    Unavailable {
        message: String,
        retry_after: Duration,
    },
}

impl Rejection {
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Unauthorized(_) => 401,
            Rejection::UnsupportedMediaType(_) => 415,
            Rejection::TooLarge(_) => 413,
            Rejection::BadRequest(_) | Rejection::InvalidEvents { .. } => 400,
            Rejection::ForeignTenant { .. } => 403,
            Rejection::Unavailable { .. } => 503,
        }
    }

    pub fn body(&self) -> Value {
        match self {
            Rejection::Unauthorized(m)
            | Rejection::UnsupportedMediaType(m)
            | Rejection::TooLarge(m)
            | Rejection::BadRequest(m) => json!({ "error": m }),
            Rejection::InvalidEvents { errors, received } => {
                let bad: HashSet<usize> = errors.iter().map(|e| e.index).collect();
                json!({
                    "error": format!(
                        "{} of {received} events are invalid; nothing was written. \
                         Fix them and resend the whole request",
                        bad.len()
                    ),
                    "errors": errors,
                })
            }
            Rejection::ForeignTenant { errors, received } => json!({
                "error": format!(
                    "{} of {received} events belong to another tenant than this API key's; \
                     nothing was written",
                    errors.len()
                ),
                "errors": errors,
            }),
            Rejection::Unavailable { message, .. } => json!({
                "error": message,
                "retryable": true,
            }),
        }
    }
}

/// The tenant bound to the request's API key.
pub(crate) fn authenticate(
    api_keys: &HashMap<String, TenantId>,
    key: Option<&[u8]>,
) -> Result<TenantId, Rejection> {
    let Some(key) = key else {
        return Err(Rejection::Unauthorized(
            "missing X-API-Key header: send the API key bound to your tenant".into(),
        ));
    };
    std::str::from_utf8(key)
        .ok()
        .and_then(|k| api_keys.get(k))
        .copied()
        .ok_or_else(|| {
            Rejection::Unauthorized(
                "unknown API key in X-API-Key: check the key configured for your tenant".into(),
            )
        })
}

/// The body format named by a `Content-Type` header value; parameters (`; charset=utf-8`) are
/// ignored, JSON being UTF-8 by definition.
pub(crate) fn body_format(content_type: Option<&[u8]>) -> Result<BodyFormat, Rejection> {
    const EXPECTED: &str = "use Content-Type: application/json (one event object or an array of \
                            them) or application/x-ndjson (one event per line)";
    let Some(raw) = content_type else {
        return Err(Rejection::UnsupportedMediaType(format!(
            "missing Content-Type: {EXPECTED}"
        )));
    };
    let text = String::from_utf8_lossy(raw);
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(BodyFormat::Json)
    } else if essence.eq_ignore_ascii_case("application/x-ndjson") {
        Ok(BodyFormat::Ndjson)
    } else {
        Err(Rejection::UnsupportedMediaType(format!(
            "unsupported Content-Type {text:?}: {EXPECTED}"
        )))
    }
}

/// Splits the body into one JSON value per event (or a per-event parse error), refusing more than
/// `max_events` before any validation work.
fn split_events(
    format: BodyFormat,
    body: &[u8],
    max_events: usize,
) -> Result<Vec<Result<Value, String>>, Rejection> {
    let too_many = || {
        Rejection::TooLarge(format!(
            "more than {max_events} events in one request: split it into smaller requests"
        ))
    };
    match format {
        BodyFormat::Json => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err(Rejection::BadRequest(
                    "empty body: send one event object or an array of events".into(),
                ));
            }
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| Rejection::BadRequest(format!("the body is not valid JSON: {e}")))?;
            match value {
                Value::Array(items) if items.len() > max_events => Err(too_many()),
                Value::Array(items) => Ok(items.into_iter().map(Ok).collect()),
                object @ Value::Object(_) => Ok(vec![Ok(object)]),
                _ => Err(Rejection::BadRequest(
                    "the body must be one event object or an array of events".into(),
                )),
            }
        }
        BodyFormat::Ndjson => {
            let mut values = Vec::new();
            for line in body.split(|b| *b == b'\n') {
                // Blank lines (including a trailing newline, and CRLF's "\r") separate nothing.
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if values.len() == max_events {
                    return Err(too_many());
                }
                values.push(
                    serde_json::from_slice::<Value>(line)
                        .map_err(|e| format!("this line is not valid JSON: {e}")),
                );
            }
            Ok(values)
        }
    }
}

/// Validates a request's events, all-or-nothing.
///
/// Order of checks: every event is validated (schema, then `occurred_at` not beyond
/// `now + max_future_skew` and its text fields within [`Limits::fields`]) and all problems are returned together (400). Only a request whose
/// events are all valid is checked for tenant (403, naming each foreign event). Then duplicate
/// `event_id`s within the request are dropped, keeping the first occurrence: Kafka consumers
/// de-duplicate by `event_id` anyway, so this only saves work; the request's `accepted` count is
/// the number of distinct events written.
pub(crate) fn parse_events(
    format: BodyFormat,
    body: &[u8],
    tenant: TenantId,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Batch, Rejection> {
    let values = split_events(format, body, limits.max_events)?;
    if values.is_empty() {
        return Err(Rejection::BadRequest(
            "no events in the request: send at least one".into(),
        ));
    }
    let received = values.len();
    let latest_allowed = chrono::Duration::from_std(limits.max_future_skew)
        .ok()
        .and_then(|skew| now.checked_add_signed(skew))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);

    let mut errors = Vec::new();
    let mut events = Vec::with_capacity(received);
    for (index, value) in values.into_iter().enumerate() {
        let error = |field: &str, message: String| EventError {
            index,
            event_id: None,
            field: field.to_string(),
            message,
        };
        let value = match value {
            Ok(v) => v,
            Err(message) => {
                errors.push(error("", message));
                continue;
            }
        };
        match Event::from_value(value) {
            Err(field_errors) => {
                errors.extend(field_errors.into_iter().map(|e| error(&e.field, e.message)));
            }
            Ok(event) if event.occurred_at > latest_allowed => {
                errors.push(error(
                    "occurred_at",
                    format!(
                        "{} is more than {} in the future (server time {}): event time must \
                         not be ahead of the clock; check the sender's clock and time zone",
                        event.occurred_at.to_rfc3339(),
                        humantime_serde::re::humantime::format_duration(limits.max_future_skew),
                        now.to_rfc3339(),
                    ),
                ));
            }
            Ok(event) => {
                let too_long = event.check_lengths(&limits.fields);
                if too_long.is_empty() {
                    events.push((index, event));
                } else {
                    errors.extend(too_long.into_iter().map(|e| error(&e.field, e.message)));
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(Rejection::InvalidEvents { errors, received });
    }

    let foreign: Vec<EventError> = events
        .iter()
        .filter(|(_, e)| e.tenant_id != tenant)
        .map(|(index, e)| EventError {
            index: *index,
            event_id: Some(e.event_id),
            field: "tenant_id".into(),
            message: format!(
                "event {} is for tenant {}, but the API key belongs to tenant {tenant}",
                e.event_id, e.tenant_id
            ),
        })
        .collect();
    if !foreign.is_empty() {
        return Err(Rejection::ForeignTenant {
            errors: foreign,
            received,
        });
    }

    let mut seen = HashSet::with_capacity(events.len());
    let mut prepared = Vec::with_capacity(events.len());
    for (index, event) in events {
        if !seen.insert(event.event_id) {
            continue;
        }
        let json = event.to_json();
        if json.len() > limits.max_event_bytes {
            return Err(Rejection::TooLarge(format!(
                "event {index} ({}) is {} bytes as JSON, over the {} bytes Kafka accepts for \
                 one event; nothing was written",
                event.event_id,
                json.len(),
                limits.max_event_bytes
            )));
        }
        prepared.push(Prepared { index, event, json });
    }
    Ok(Batch {
        events: prepared,
        received,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TENANT: TenantId = 42;

    fn now() -> DateTime<Utc> {
        "2026-02-27T15:00:00Z".parse().unwrap()
    }

    fn limits() -> Limits {
        Limits {
            max_events: 5,
            max_future_skew: Duration::from_secs(300),
            max_event_bytes: 10_000,
            fields: FieldLimits::default(),
        }
    }

    fn event(id: u32, tenant: TenantId) -> Value {
        json!({"event_id": format!("00000000-0000-4000-8000-{id:012}"), "type": "conversation.closed",
               "tenant_id": tenant, "occurred_at": "2026-02-27T14:59:00Z", "conversation_id": "c1"})
    }

    fn parse(format: BodyFormat, body: &str) -> Result<Batch, Rejection> {
        parse_events(format, body.as_bytes(), TENANT, &limits(), now())
    }

    fn ids(batch: &Batch) -> Vec<String> {
        batch
            .events
            .iter()
            .map(|p| p.event.event_id.to_string())
            .collect()
    }

    fn invalid(r: Result<Batch, Rejection>) -> Vec<(usize, String)> {
        match r {
            Err(Rejection::InvalidEvents { errors, .. }) => {
                errors.into_iter().map(|e| (e.index, e.field)).collect()
            }
            other => panic!("expected InvalidEvents, got {other:?}"),
        }
    }

    #[test]
    fn api_key_maps_to_its_tenant_and_anything_else_is_401() {
        let keys = HashMap::from([("k1".to_string(), 7), ("k2".to_string(), 8)]);
        assert_eq!(authenticate(&keys, Some(b"k2")), Ok(8));
        for bad in [
            None,
            Some(&b"nope"[..]),
            Some(&b""[..]),
            Some(&[0xff, 0xfe][..]),
        ] {
            let r = authenticate(&keys, bad).unwrap_err();
            assert_eq!(r.status(), 401);
            assert!(r.body()["error"].as_str().unwrap().contains("X-API-Key"));
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(body_format(Some(b"application/json")), Ok(BodyFormat::Json));
        assert_eq!(
            body_format(Some(b"Application/JSON; charset=utf-8")),
            Ok(BodyFormat::Json)
        );
        assert_eq!(
            body_format(Some(b"application/x-ndjson")),
            Ok(BodyFormat::Ndjson)
        );
        for bad in [
            None,
            Some(&b"text/plain"[..]),
            Some(&b"application/xml"[..]),
        ] {
            let r = body_format(bad).unwrap_err();
            assert_eq!(r.status(), 415);
            let msg = r.body()["error"].as_str().unwrap().to_string();
            assert!(msg.contains("application/x-ndjson"), "{msg}");
        }
    }

    #[test]
    fn one_object_and_an_array() {
        let one = parse(BodyFormat::Json, &event(1, TENANT).to_string()).unwrap();
        assert_eq!(one.events.len(), 1);
        assert_eq!(one.received, 1);
        let body = json!([event(1, TENANT), event(2, TENANT), event(3, TENANT)]).to_string();
        let batch = parse(BodyFormat::Json, &body).unwrap();
        assert_eq!(ids(&batch).len(), 3);
        assert_eq!(
            batch.events.iter().map(|p| p.index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        // The value produced is the canonical JSON, which round-trips to the same event.
        for p in &batch.events {
            assert_eq!(p.json, p.event.to_json());
            assert_eq!(Event::from_json(&p.json).unwrap(), p.event);
        }
    }

    #[test]
    fn ndjson_with_blank_lines_and_crlf() {
        let body = format!(
            "\r\n{}\r\n\n   \n{}\r\n{}",
            event(1, TENANT),
            event(2, TENANT),
            event(3, TENANT)
        );
        let batch = parse(BodyFormat::Ndjson, &body).unwrap();
        assert_eq!(batch.received, 3);
        assert_eq!(
            ids(&batch),
            [1, 2, 3].map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        );
    }

    #[test]
    fn ndjson_line_that_is_not_json_is_an_error_at_its_index() {
        let body = format!("{}\n\n{{oops\n{}\n", event(1, TENANT), event(2, TENANT));
        match parse(BodyFormat::Ndjson, &body) {
            Err(Rejection::InvalidEvents { errors, received }) => {
                assert_eq!(received, 3);
                assert_eq!(errors.len(), 1);
                assert_eq!((errors[0].index, errors[0].field.as_str()), (1, ""));
                assert!(errors[0].message.contains("not valid JSON"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_json_body_and_non_event_bodies_are_400() {
        for body in ["{", "[1,", "\"text\"", "42", "null"] {
            let r = parse(BodyFormat::Json, body).unwrap_err();
            assert!(matches!(r, Rejection::BadRequest(_)), "{body}: {r:?}");
            assert_eq!(r.status(), 400);
        }
    }

    #[test]
    fn no_events_is_400() {
        for (format, body) in [
            (BodyFormat::Json, ""),
            (BodyFormat::Json, "  \n"),
            (BodyFormat::Json, "[]"),
            (BodyFormat::Ndjson, ""),
            (BodyFormat::Ndjson, "\n\r\n  \n"),
        ] {
            let r = parse(format, body).unwrap_err();
            assert!(matches!(r, Rejection::BadRequest(_)), "{body:?}: {r:?}");
        }
    }

    #[test]
    fn every_error_of_every_event_is_reported_with_its_index() {
        let mut bad_envelope = event(2, TENANT);
        bad_envelope["event_id"] = json!("nope");
        bad_envelope["occurred_at"] = json!("yesterday");
        let mut bad_payload = event(4, TENANT);
        bad_payload["colour"] = json!("red");
        let body = json!([event(1, TENANT), bad_envelope, 7, bad_payload]).to_string();
        let r = parse(BodyFormat::Json, &body);
        let body_json = r.clone().unwrap_err().body();
        assert_eq!(
            invalid(r),
            vec![
                (1, "event_id".to_string()),
                (1, "occurred_at".to_string()),
                (2, String::new()),
                (3, "colour".to_string()),
            ]
        );
        assert_eq!(body_json["errors"][0]["index"], json!(1));
        assert_eq!(body_json["errors"][0]["field"], json!("event_id"));
        assert!(body_json["errors"][0].get("event_id").is_none());
        assert!(body_json["error"]
            .as_str()
            .unwrap()
            .starts_with("3 of 4 events are invalid"));
    }

    #[test]
    fn an_event_from_another_tenant_is_403_naming_it() {
        let body = json!([event(1, TENANT), event(2, 43), event(3, TENANT)]).to_string();
        let r = parse(BodyFormat::Json, &body).unwrap_err();
        assert_eq!(r.status(), 403);
        let Rejection::ForeignTenant { errors, .. } = &r else {
            panic!("{r:?}")
        };
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].index, 1);
        assert_eq!(errors[0].field, "tenant_id");
        let body = r.body();
        assert_eq!(
            body["errors"][0]["event_id"],
            json!("00000000-0000-4000-8000-000000000002")
        );
        assert!(body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("tenant 43"));
    }

    #[test]
    fn invalid_events_take_precedence_over_foreign_ones() {
        let mut bad = event(2, TENANT);
        bad["type"] = json!("nope");
        let body = json!([event(1, 43), bad]).to_string();
        assert_eq!(
            invalid(parse(BodyFormat::Json, &body)),
            vec![(1, "type".into())]
        );
    }

    #[test]
    fn duplicate_event_ids_keep_the_first() {
        let mut second_copy = event(1, TENANT);
        second_copy["conversation_id"] = json!("other");
        let body = format!(
            "{}\n{}\n{}\n",
            event(1, TENANT),
            event(2, TENANT),
            second_copy
        );
        let batch = parse(BodyFormat::Ndjson, &body).unwrap();
        assert_eq!(batch.received, 3);
        assert_eq!(
            batch.events.iter().map(|p| p.index).collect::<Vec<_>>(),
            [0, 1]
        );
        assert!(batch.events[0].json.contains("\"c1\""));
    }

    #[test]
    fn too_many_events_is_413_for_both_formats() {
        let six: Vec<Value> = (1..=6).map(|i| event(i, TENANT)).collect();
        let r = parse(BodyFormat::Json, &Value::Array(six.clone()).to_string()).unwrap_err();
        assert_eq!(r.status(), 413);
        let lines: Vec<String> = six.iter().map(Value::to_string).collect();
        let r = parse(BodyFormat::Ndjson, &lines.join("\n")).unwrap_err();
        assert_eq!(r.status(), 413);
        // Exactly the limit is fine, blank lines don't count.
        let r = parse(BodyFormat::Ndjson, &lines[..5].join("\n\n"));
        assert_eq!(r.unwrap().events.len(), 5);
    }

    #[test]
    fn an_event_too_large_for_kafka_is_413() {
        let mut big = event(1, TENANT);
        big["conversation_id"] = json!("c");
        big["type"] = json!("message.received");
        big["channel"] = json!("web");
        big["text"] = json!("x".repeat(20_000));
        let body = json!([event(2, TENANT), big]).to_string();
        let r = parse(BodyFormat::Json, &body).unwrap_err();
        assert_eq!(r.status(), 413);
        assert!(r.body()["error"].as_str().unwrap().contains("event 1"));
    }

    #[test]
    fn occurred_at_too_far_in_the_future_is_400_naming_occurred_at() {
        let mut ahead = event(1, TENANT);
        ahead["occurred_at"] = json!("2026-02-27T15:05:01Z");
        assert_eq!(
            invalid(parse(BodyFormat::Json, &ahead.to_string())),
            vec![(0, "occurred_at".into())]
        );
        // Within the skew, and any time in the past (late events are normal), are fine.
        for ok in [
            "2026-02-27T15:05:00Z",
            "2026-02-27T10:04:59-05:00",
            "2020-01-01T00:00:00Z",
        ] {
            let mut e = event(1, TENANT);
            e["occurred_at"] = json!(ok);
            assert!(parse(BodyFormat::Json, &e.to_string()).is_ok(), "{ok}");
        }
    }

    #[test]
    fn unavailable_is_503_and_says_retry_is_safe() {
        let r = Rejection::Unavailable {
            message: "Kafka is down; retry".into(),
            retry_after: Duration::from_secs(5),
        };
        assert_eq!(r.status(), 503);
        assert_eq!(r.body()["retryable"], json!(true));
    }
}
