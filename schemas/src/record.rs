//! Records on Kafka between the stages: decoding a consumed record into its type, and the
//! [`DeadLetter`] of a record a stage cannot use.
//!
//! A dead letter is **bounded**: it keeps the first [`DEAD_LETTER_PAYLOAD_BYTES`] of the refused
//! payload, its length and its SHA-1, and the first [`DEAD_LETTER_ERROR_BYTES`] of the error, so
//! that its JSON always fits a Kafka record ([`MAX_RECORD_BYTES`]) whatever the refused record
//! held. (Before, the whole payload went in, escaped once more as a JSON string: a record of
//! ~900 KB of quotes became a dead letter over Kafka's limit, which could not be sent, and the
//! stage stopped on it.) The hash and the length tell a truncated copy from the original
//! (`sha1sum` of the original record's value gives the same hex).
//!
//! The processors and the sink decode and dead-letter records through this one module.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{derive_id, DeadLetter, Event, FieldError, TenantId};

/// The largest Kafka record a stage can rely on producing: librdkafka's default
/// `message.max.bytes`. Every dead letter's JSON is far below it.
pub const MAX_RECORD_BYTES: usize = 1_000_000;
/// Most bytes of the refused payload a dead letter keeps (cut at a character boundary).
pub const DEAD_LETTER_PAYLOAD_BYTES: usize = 64 * 1024;
/// Most bytes of a dead letter's error text.
pub const DEAD_LETTER_ERROR_BYTES: usize = 4 * 1024;
/// Most bytes of a dead letter's Kafka key (the refused record's key, normally a tenant id).
pub const DEAD_LETTER_KEY_BYTES: usize = 256;

/// Why a record was dead-lettered: the `reason` of a [`DeadLetter`] and the label of the stages'
/// dead-letter metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The record has no payload.
    EmptyRecord,
    /// The payload is not UTF-8 text.
    NotUtf8,
    /// A record of the `events` topic that is not a valid event.
    InvalidEvent,
    /// A record of an output topic (or of `dead_letters`) that is not what the topic carries.
    InvalidRecord,
    /// A record of a topic the stage does not handle.
    UnknownTopic,
    /// An event whose `occurred_at` is later than its record's Kafka timestamp by more than the
    /// allowed clock skew.
    ClockSkew,
    /// An event older than the allowed lateness behind its tenant's event time: stored in
    /// `events` for analysts, applied to no rule.
    TooLate,
    /// An event that would add a conversation, lead, session or seller beyond its tenant's
    /// limit: stored in `events` for analysts, applied to no rule.
    OverTenantLimit,
    /// An output larger than Kafka takes in one record.
    OutputTooLarge,
    /// An output Kafka refused for good for another reason (invalid record, policy).
    OutputRefused,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::EmptyRecord => "empty_record",
            DeadLetterReason::NotUtf8 => "not_utf8",
            DeadLetterReason::InvalidEvent => "invalid_event",
            DeadLetterReason::InvalidRecord => "invalid_record",
            DeadLetterReason::UnknownTopic => "unknown_topic",
            DeadLetterReason::ClockSkew => "clock_skew",
            DeadLetterReason::TooLate => "too_late",
            DeadLetterReason::OverTenantLimit => "over_tenant_limit",
            DeadLetterReason::OutputTooLarge => "output_too_large",
            DeadLetterReason::OutputRefused => "output_refused",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a consumed record cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("empty record (no payload)")]
    Empty,
    #[error("the record is not UTF-8 text: {0}")]
    NotUtf8(#[source] std::str::Utf8Error),
    #[error("not a valid event: {}", join_field_errors(.0))]
    InvalidEvent(Vec<FieldError>),
    #[error("not a valid {what}: {source}")]
    Invalid {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl RecordError {
    pub fn reason(&self) -> DeadLetterReason {
        match self {
            RecordError::Empty => DeadLetterReason::EmptyRecord,
            RecordError::NotUtf8(_) => DeadLetterReason::NotUtf8,
            RecordError::InvalidEvent(_) => DeadLetterReason::InvalidEvent,
            RecordError::Invalid { .. } => DeadLetterReason::InvalidRecord,
        }
    }
}

fn join_field_errors(errors: &[FieldError]) -> String {
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    list.join("; ")
}

fn text(payload: Option<&[u8]>) -> Result<&str, RecordError> {
    let bytes = payload.ok_or(RecordError::Empty)?;
    // simdutf8 checks 32 bytes at a step where std falls back to one character at a time past
    // the first non-ASCII byte (every Spanish message has one); std says where it went wrong.
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(_) => std::str::from_utf8(bytes).map_err(RecordError::NotUtf8),
    }
}

/// A record of the `events` topic: its canonical JSON, validated like ingest validates.
pub fn decode_event(payload: Option<&[u8]>) -> Result<Event, RecordError> {
    Event::from_json(text(payload)?).map_err(RecordError::InvalidEvent)
}

/// A record of an output topic (or of `dead_letters`) as its type; `what` names the type in the
/// error ("notification", "lead score", …).
pub fn decode_json<T: DeserializeOwned>(
    payload: Option<&[u8]>,
    what: &'static str,
) -> Result<T, RecordError> {
    serde_json::from_str(text(payload)?).map_err(|source| RecordError::Invalid { what, source })
}

/// Where a refused record was read.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The record's own Kafka timestamp.
    pub timestamp: Option<DateTime<Utc>>,
    /// The record's key (producers key every topic by tenant id).
    pub key: Option<&'a [u8]>,
}

impl DeadLetter {
    /// The dead letter of a consumed record that `stage` cannot use.
    pub fn of_record(
        stage: &str,
        origin: &Origin<'_>,
        reason: DeadLetterReason,
        error: &dyn fmt::Display,
        payload: &[u8],
    ) -> DeadLetter {
        let kept = Kept::of(payload);
        DeadLetter {
            stage: stage.to_string(),
            topic: origin.topic.to_string(),
            partition: origin.partition,
            offset: origin.offset,
            error: truncate(error.to_string(), DEAD_LETTER_ERROR_BYTES),
            payload: kept.text,
            origin_timestamp: origin.timestamp,
            reason: Some(reason),
            tenant_id: tenant_of(payload, origin.key),
            payload_bytes: Some(payload.len() as u64),
            payload_sha1: Some(kept.sha1),
            payload_truncated: kept.truncated,
            id: None,
        }
    }

    /// The dead letter of an output that `stage` produced and Kafka would not take: `topic` is
    /// where it was going, (`partition`, `offset`) the consumed position that caused it, `time`
    /// its own event time. An output has no offset of its own, so the dead letter's id derives
    /// from its destination and content: a replay that produces it again gives the same id.
    pub fn of_output(
        stage: &str,
        topic: &str,
        (partition, offset): (i32, i64),
        time: Option<DateTime<Utc>>,
        reason: DeadLetterReason,
        error: &dyn fmt::Display,
        payload: &[u8],
    ) -> DeadLetter {
        let kept = Kept::of(payload);
        DeadLetter {
            id: Some(derive_id("dead_letter/output", &[stage, topic, &kept.sha1])),
            stage: stage.to_string(),
            topic: topic.to_string(),
            partition,
            offset,
            error: truncate(error.to_string(), DEAD_LETTER_ERROR_BYTES),
            payload: kept.text,
            origin_timestamp: time,
            reason: Some(reason),
            tenant_id: tenant_of(payload, None),
            payload_bytes: Some(payload.len() as u64),
            payload_sha1: Some(kept.sha1),
            payload_truncated: kept.truncated,
        }
    }

    /// The JSON written to the `dead_letters` topic: at most [`max_json_bytes`] bytes.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a DeadLetter serializes")
    }

    /// The id of this dead letter's row: its own [`DeadLetter::id`] if it has one, else derived
    /// from its origin (stage, topic, partition, offset), the same however often the stage
    /// re-reads the refused record.
    pub fn row_id(&self) -> Uuid {
        self.id.unwrap_or_else(|| {
            derive_id(
                "dead_letter",
                &[
                    &self.stage,
                    &self.topic,
                    &self.partition.to_string(),
                    &self.offset.to_string(),
                ],
            )
        })
    }
}

/// The Kafka key of a dead letter: the refused record's key, cut to [`DEAD_LETTER_KEY_BYTES`].
pub fn dead_letter_key(origin_key: Option<&[u8]>) -> Vec<u8> {
    let key = origin_key.unwrap_or_default();
    key[..key.len().min(DEAD_LETTER_KEY_BYTES)].to_vec()
}

/// The most bytes a [`DeadLetter::to_json`] can take, given a stage name and topic of at most
/// 255 bytes each: JSON escapes a character in at most 6 bytes (`\u001f`).
pub const fn max_json_bytes() -> usize {
    6 * (DEAD_LETTER_PAYLOAD_BYTES + DEAD_LETTER_ERROR_BYTES + 2 * 255) + 1024
}

/// The part of a payload a dead letter keeps.
struct Kept {
    text: String,
    truncated: bool,
    sha1: String,
}

impl Kept {
    fn of(payload: &[u8]) -> Kept {
        let sha1 = format!("{:x}", <sha1::Sha1 as sha1::Digest>::digest(payload));
        let cut = &payload[..payload.len().min(DEAD_LETTER_PAYLOAD_BYTES)];
        // Invalid UTF-8 becomes U+FFFD (3 bytes): cut again after the conversion.
        let lossy = String::from_utf8_lossy(cut).into_owned();
        let whole = lossy.len();
        let text = truncate(lossy, DEAD_LETTER_PAYLOAD_BYTES);
        Kept {
            truncated: cut.len() < payload.len() || text.len() < whole,
            text,
            sha1,
        }
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The tenant of a refused record: its `tenant_id` when it is a JSON object with one, else its
/// key when that is a tenant id (every topic is keyed by tenant).
fn tenant_of(payload: &[u8], key: Option<&[u8]>) -> Option<TenantId> {
    #[derive(Deserialize)]
    struct WithTenant {
        tenant_id: TenantId,
    }
    serde_json::from_slice::<WithTenant>(payload)
        .ok()
        .map(|w| w.tenant_id)
        .or_else(|| {
            key.and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(key: Option<&[u8]>) -> Origin<'_> {
        Origin {
            topic: "vigia.events",
            partition: 1,
            offset: 42,
            timestamp: DateTime::from_timestamp_millis(1_772_204_400_000),
            key,
        }
    }

    #[test]
    fn a_dead_letter_of_any_record_fits_a_kafka_record() {
        // The worst case for JSON: control characters escape to 6 bytes each, quotes to 2.
        let nasty: Vec<u8> = (0..900_000).map(|i| [0x01u8, b'"', b'\\'][i % 3]).collect();
        let error = format!("field `event_id`: {:?}", String::from_utf8_lossy(&nasty));
        let letter = DeadLetter::of_record(
            "processors",
            &origin(Some(b"7")),
            DeadLetterReason::InvalidEvent,
            &error,
            &nasty,
        );
        let json = letter.to_json();
        assert!(json.len() <= max_json_bytes(), "{}", json.len());
        assert!(max_json_bytes() < MAX_RECORD_BYTES);
        assert_eq!(letter.payload.len(), DEAD_LETTER_PAYLOAD_BYTES);
        assert_eq!(letter.error.len(), DEAD_LETTER_ERROR_BYTES);
        assert_eq!(letter.payload_bytes, Some(900_000));
        assert!(letter.payload_truncated);
        assert_eq!(letter.tenant_id, Some(7), "from the key");
        let back: DeadLetter = serde_json::from_str(&json).unwrap();
        assert_eq!(back, letter);
    }

    #[test]
    fn truncation_keeps_whole_characters_and_the_hash_is_the_originals() {
        let payload = "ñ".repeat(DEAD_LETTER_PAYLOAD_BYTES); // 2 bytes each
        let letter = DeadLetter::of_record(
            "sink",
            &origin(None),
            DeadLetterReason::InvalidRecord,
            &"x",
            payload.as_bytes(),
        );
        assert_eq!(letter.payload, "ñ".repeat(DEAD_LETTER_PAYLOAD_BYTES / 2));
        // `printf 'abc' | sha1sum`
        let abc = DeadLetter::of_record(
            "sink",
            &origin(None),
            DeadLetterReason::NotUtf8,
            &"",
            b"abc",
        );
        assert_eq!(
            abc.payload_sha1.as_deref(),
            Some("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert!(!abc.payload_truncated);
        assert_eq!((abc.payload.as_str(), abc.payload_bytes), ("abc", Some(3)));
        // Not UTF-8: kept lossy, the hash still of the bytes.
        let bad = DeadLetter::of_record(
            "sink",
            &origin(None),
            DeadLetterReason::NotUtf8,
            &"",
            &[0xff, b'a'],
        );
        assert_eq!(bad.payload, "\u{fffd}a");
        assert_eq!(bad.tenant_id, None);
    }

    #[test]
    fn the_tenant_comes_from_the_payload_first() {
        let letter = DeadLetter::of_record(
            "processors",
            &origin(Some(b"9")),
            DeadLetterReason::TooLate,
            &"late",
            br#"{"tenant_id": 4, "type": "x"}"#,
        );
        assert_eq!(letter.tenant_id, Some(4));
    }

    #[test]
    fn row_ids_follow_the_origin_or_the_output() {
        let a = DeadLetter::of_record(
            "processors",
            &origin(None),
            DeadLetterReason::TooLate,
            &"",
            b"{}",
        );
        let again = DeadLetter::of_record(
            "processors",
            &origin(None),
            DeadLetterReason::TooLate,
            &"other",
            b"[]",
        );
        assert_eq!(a.row_id(), again.row_id());
        let out = |payload: &[u8]| {
            DeadLetter::of_output(
                "processors",
                "vigia.notifications",
                (1, 42),
                None,
                DeadLetterReason::OutputTooLarge,
                &"too large",
                payload,
            )
        };
        assert_eq!(out(b"{\"id\": 1}").row_id(), out(b"{\"id\": 1}").row_id());
        assert_ne!(out(b"{\"id\": 1}").row_id(), out(b"{\"id\": 2}").row_id());
        assert_ne!(out(b"{\"id\": 1}").row_id(), a.row_id());
    }

    #[test]
    fn old_dead_letters_still_read() {
        let old =
            r#"{"stage":"sink","topic":"t","partition":0,"offset":1,"error":"e","payload":"p"}"#;
        let d: DeadLetter = serde_json::from_str(old).unwrap();
        assert_eq!((d.reason, d.payload_sha1, d.id), (None, None, None));
    }

    #[test]
    fn decoding_says_why() {
        assert_eq!(
            decode_event(None).unwrap_err().reason(),
            DeadLetterReason::EmptyRecord
        );
        assert_eq!(
            decode_event(Some(&[0xff])).unwrap_err().reason(),
            DeadLetterReason::NotUtf8
        );
        let e = decode_event(Some(b"{\"type\": \"x\"}")).unwrap_err();
        assert_eq!(e.reason(), DeadLetterReason::InvalidEvent);
        assert!(e.to_string().starts_with("not a valid event"), "{e}");
        assert!(e.to_string().contains("event_id"), "{e}");
        let e = decode_json::<crate::Notification>(Some(b"[]"), "notification").unwrap_err();
        assert_eq!(e.reason(), DeadLetterReason::InvalidRecord);
        assert!(e.to_string().starts_with("not a valid notification"), "{e}");
    }
}
