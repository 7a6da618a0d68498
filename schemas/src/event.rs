//! Incoming CRM events (contract §2): the envelope, one struct per type, strict validation.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smol_str::{SmolStr, ToSmolStr};
use uuid::Uuid;

pub type TenantId = u64;
pub type UserId = u64;

/// A CRM entity id (conversation, lead, session, client). CRMs send strings or integers; both are
/// accepted and kept as a string, so `17` and `"17"` name the same conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
#[schemars(with = "EntityIdSchema")]
pub struct EntityId(pub SmolStr);

#[derive(JsonSchema)]
#[allow(dead_code)]
#[serde(untagged)]
enum EntityIdSchema {
    Text(#[schemars(length(min = 1, max = 128))] String),
    Number(u64),
}

impl EntityId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EntityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for EntityId {
    fn from(s: &str) -> Self {
        EntityId(SmolStr::new(s))
    }
}

impl<'de> Deserialize<'de> for EntityId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(s) if !s.is_empty() && s.len() <= ENTITY_ID_BYTES => {
                Ok(EntityId(SmolStr::from(s)))
            }
            Value::String(_) => Err(D::Error::custom(
                "must be a non-empty string of at most 128 characters",
            )),
            Value::Number(n) if n.is_u64() => Ok(EntityId(n.to_smolstr())),
            other => Err(D::Error::custom(format!(
                "must be a string or a non-negative integer, not {}",
                json_type(&other)
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Whatsapp,
    Web,
    Email,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LeadSource {
    MetaAds,
    Website,
    Referral,
    Whatsapp,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LeadStatus {
    New,
    Contacted,
    Interested,
    Negotiation,
    Converted,
    Lost,
}

impl LeadStatus {
    /// The name in events and outputs (`"converted"`).
    pub fn as_str(self) -> &'static str {
        match self {
            LeadStatus::New => "new",
            LeadStatus::Contacted => "contacted",
            LeadStatus::Interested => "interested",
            LeadStatus::Negotiation => "negotiation",
            LeadStatus::Converted => "converted",
            LeadStatus::Lost => "lost",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Ceo,
    Manager,
    Seller,
    Secretary,
    /// Call-center supervisor: receives session timeouts.
    Supervisor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionResult {
    Managed,
    NotManaged,
    Closed,
}

/// `message.received`: a customer wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageReceived {
    pub conversation_id: EntityId,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `message.sent`: a seller (or a bot) replied. Automated replies do not count as answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageSent {
    pub conversation_id: EntityId,
    pub seller_id: UserId,
    #[serde(default)]
    pub automated: bool,
}

/// `conversation.assigned`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationAssigned {
    pub conversation_id: EntityId,
    pub seller_id: UserId,
}

/// `conversation.closed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationClosed {
    pub conversation_id: EntityId,
}

/// `lead.created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadCreated {
    pub lead_id: EntityId,
    pub source: LeadSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<EntityId>,
}

/// `lead.status_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadStatusChanged {
    pub lead_id: EntityId,
    pub status: LeadStatus,
}

/// `lead.follow_up_scheduled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadFollowUpScheduled {
    pub lead_id: EntityId,
    pub seller_id: UserId,
    pub due_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `user.upserted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpserted {
    pub user_id: UserId,
    pub name: String,
    pub role: Role,
    /// IANA time zone, e.g. "America/Bogota".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// `session.started` / `session.heartbeat`: a call-center client session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRef {
    pub session_id: EntityId,
    pub client_id: EntityId,
    pub agent_id: UserId,
}

/// `session.ended`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionEnded {
    pub session_id: EntityId,
    pub client_id: EntityId,
    pub agent_id: UserId,
    pub result: SessionResult,
}

/// The type-specific part of an event, tagged by `type` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum Payload {
    #[serde(rename = "message.received")]
    MessageReceived(MessageReceived),
    #[serde(rename = "message.sent")]
    MessageSent(MessageSent),
    #[serde(rename = "conversation.assigned")]
    ConversationAssigned(ConversationAssigned),
    #[serde(rename = "conversation.closed")]
    ConversationClosed(ConversationClosed),
    #[serde(rename = "lead.created")]
    LeadCreated(LeadCreated),
    #[serde(rename = "lead.status_changed")]
    LeadStatusChanged(LeadStatusChanged),
    #[serde(rename = "lead.follow_up_scheduled")]
    LeadFollowUpScheduled(LeadFollowUpScheduled),
    #[serde(rename = "user.upserted")]
    UserUpserted(UserUpserted),
    #[serde(rename = "session.started")]
    SessionStarted(SessionRef),
    #[serde(rename = "session.heartbeat")]
    SessionHeartbeat(SessionRef),
    #[serde(rename = "session.ended")]
    SessionEnded(SessionEnded),
}

/// The event type names, as they appear in `type`.
pub const EVENT_TYPES: [&str; 11] = [
    "message.received",
    "message.sent",
    "conversation.assigned",
    "conversation.closed",
    "lead.created",
    "lead.status_changed",
    "lead.follow_up_scheduled",
    "user.upserted",
    "session.started",
    "session.heartbeat",
    "session.ended",
];

/// A payload's type without its data, for matching and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    MessageReceived,
    MessageSent,
    ConversationAssigned,
    ConversationClosed,
    LeadCreated,
    LeadStatusChanged,
    LeadFollowUpScheduled,
    UserUpserted,
    SessionStarted,
    SessionHeartbeat,
    SessionEnded,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        EVENT_TYPES[self as usize]
    }
}

/// One validated CRM event: the envelope of contract §2.1 plus its typed payload.
///
/// Serializes to the flat JSON of contract §2.1 (`{"event_id":…, "type":…, "tenant_id":…,
/// "occurred_at":…, <payload fields>}`), which is also what ingest writes to Kafka.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// The idempotency key: the same event sent twice counts once.
    pub event_id: Uuid,
    pub tenant_id: TenantId,
    /// Event time, normalised to UTC.
    pub occurred_at: DateTime<Utc>,
    #[serde(flatten)]
    pub payload: Payload,
}

/// Why one field of one event was refused. `field` is a dotted path (`"due_at"`, `"type"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const ENVELOPE: [&str; 4] = ["event_id", "type", "tenant_id", "occurred_at"];

/// Longest `phone_number`, in characters (E.164 needs 16; room for formatting and extensions).
pub const PHONE_NUMBER_CHARS: usize = 64;
/// Longest `time_zone`, in characters (IANA names are at most ~32).
pub const TIME_ZONE_CHARS: usize = 64;
/// Longest entity id (`conversation_id`, `lead_id`, `session_id`, `client_id`), in bytes.
pub const ENTITY_ID_BYTES: usize = 128;

/// Length limits of an event's free-text fields, in characters (Unicode scalar values, as JSON
/// Schema's `maxLength` counts). Ingest refuses an event over them ([`Event::check_lengths`]);
/// the stages behind it take whatever Kafka holds, so a record written there directly can still
/// be larger (and is handled: bounded dead letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldLimits {
    /// `message.received.text` and `lead.follow_up_scheduled.note` (default 65 536).
    pub text_chars: usize,
    /// `lead.created.name`, `lead.created.location` and `user.upserted.name` (default 256).
    pub name_chars: usize,
}

impl Default for FieldLimits {
    fn default() -> Self {
        FieldLimits {
            text_chars: 64 * 1024,
            name_chars: 256,
        }
    }
}

impl FieldLimits {
    /// Every limited field: (event type, field, limit in characters).
    fn fields(&self) -> [(&'static str, &'static str, usize); 8] {
        [
            ("message.received", "phone_number", PHONE_NUMBER_CHARS),
            ("message.received", "text", self.text_chars),
            ("lead.created", "location", self.name_chars),
            ("lead.created", "name", self.name_chars),
            ("lead.created", "phone_number", PHONE_NUMBER_CHARS),
            ("lead.follow_up_scheduled", "note", self.text_chars),
            ("user.upserted", "name", self.name_chars),
            ("user.upserted", "time_zone", TIME_ZONE_CHARS),
        ]
    }
}

impl Event {
    /// Parses and validates one event from JSON text.
    pub fn from_json(text: &str) -> Result<Event, Vec<FieldError>> {
        // Nearly every event is valid: decode it straight from the text first. Whatever that
        // strict path does not take (an error, but also a `null` or a repeated field, which the
        // path below accepts) goes through the path below, which alone says what is wrong.
        if let Some(event) = fast::decode(text) {
            return Ok(event);
        }
        match serde_json::from_str::<Value>(text) {
            Ok(v) => Event::from_value(v),
            Err(e) => Err(vec![FieldError::new("", format!("invalid JSON: {e}"))]),
        }
    }

    /// Validates one event given as a JSON value. Every problem found is reported, each naming
    /// its field; the envelope is checked even when the payload is wrong, and vice versa.
    pub fn from_value(value: Value) -> Result<Event, Vec<FieldError>> {
        let Value::Object(mut obj) = value else {
            return Err(vec![FieldError::new(
                "",
                format!("an event must be a JSON object, not {}", json_type(&value)),
            )]);
        };
        let mut errors = Vec::new();
        let event_id = take_field::<Uuid>(&mut obj, "event_id", "a UUID", &mut errors);
        let tenant_id =
            take_field::<u64>(&mut obj, "tenant_id", "a non-negative integer", &mut errors);
        let occurred_at = take_field::<DateTime<Utc>>(
            &mut obj,
            "occurred_at",
            "an RFC 3339 timestamp with a time zone, e.g. 2026-02-27T15:00:00Z",
            &mut errors,
        );
        let payload = match obj.remove("type") {
            None => {
                errors.push(FieldError::new("type", "missing"));
                None
            }
            Some(Value::String(t)) => parse_payload(&t, obj, &mut errors),
            Some(other) => {
                errors.push(FieldError::new(
                    "type",
                    format!("must be a string, not {}", json_type(&other)),
                ));
                None
            }
        };
        match (event_id, tenant_id, occurred_at, payload) {
            (Some(event_id), Some(tenant_id), Some(occurred_at), Some(payload))
                if errors.is_empty() =>
            {
                Ok(Event {
                    event_id,
                    tenant_id,
                    occurred_at,
                    payload,
                })
            }
            _ => Err(errors),
        }
    }

    /// The fields of this event longer than `limits` allow, in field-name order, each error
    /// saying the limit and the length (never the value: a refusal stays small).
    pub fn check_lengths(&self, limits: &FieldLimits) -> Vec<FieldError> {
        let value = |field: &str| -> Option<&str> {
            match (&self.payload, field) {
                (Payload::MessageReceived(m), "phone_number") => m.phone_number.as_deref(),
                (Payload::MessageReceived(m), "text") => m.text.as_deref(),
                (Payload::LeadCreated(l), "location") => l.location.as_deref(),
                (Payload::LeadCreated(l), "name") => l.name.as_deref(),
                (Payload::LeadCreated(l), "phone_number") => l.phone_number.as_deref(),
                (Payload::LeadFollowUpScheduled(f), "note") => f.note.as_deref(),
                (Payload::UserUpserted(u), "name") => Some(&u.name),
                (Payload::UserUpserted(u), "time_zone") => u.time_zone.as_deref(),
                _ => None,
            }
        };
        let kind = self.kind().as_str();
        limits
            .fields()
            .into_iter()
            .filter(|(t, _, _)| *t == kind)
            .filter_map(|(_, field, max)| {
                let text = value(field)?;
                // Cheap first: a text of at most `max` bytes has at most `max` characters.
                if text.len() <= max {
                    return None;
                }
                let chars = text.chars().count();
                (chars > max).then(|| {
                    FieldError::new(
                        field,
                        format!("must be at most {max} characters, got {chars}"),
                    )
                })
            })
            .collect()
    }

    /// Canonical JSON, as written to Kafka.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an Event always serializes")
    }

    pub fn kind(&self) -> EventKind {
        match &self.payload {
            Payload::MessageReceived(_) => EventKind::MessageReceived,
            Payload::MessageSent(_) => EventKind::MessageSent,
            Payload::ConversationAssigned(_) => EventKind::ConversationAssigned,
            Payload::ConversationClosed(_) => EventKind::ConversationClosed,
            Payload::LeadCreated(_) => EventKind::LeadCreated,
            Payload::LeadStatusChanged(_) => EventKind::LeadStatusChanged,
            Payload::LeadFollowUpScheduled(_) => EventKind::LeadFollowUpScheduled,
            Payload::UserUpserted(_) => EventKind::UserUpserted,
            Payload::SessionStarted(_) => EventKind::SessionStarted,
            Payload::SessionHeartbeat(_) => EventKind::SessionHeartbeat,
            Payload::SessionEnded(_) => EventKind::SessionEnded,
        }
    }

    /// The Kafka record key. All of a tenant's events share one key, so they land on one
    /// partition in order: every per-conversation, per-lead, per-seller and per-tenant rule then
    /// sees a consistent, ordered history without a re-keying step (at the cost of one tenant's
    /// throughput being bounded by one partition).
    pub fn partition_key(&self) -> String {
        self.tenant_id.to_string()
    }
}

/// A decoder of valid events straight from the JSON text: the one behind [`Event::from_json`]
/// for all but invalid (or unusual) events.
///
/// Contract: for every text it takes it gives exactly what
/// `Event::from_value(serde_json::from_str(text)?)` gives; anything else gives `None`, and
/// [`Event::from_value`] decides (it alone writes the errors). So it may be stricter than that
/// path, never looser nor different (tested against it: every event type, key orders,
/// whitespace, escapes, numbers, `null`s, repeated, unknown and foreign fields, truncations and
/// corruptions of valid events).
///
/// Why by hand: serde_json's derive over a struct of every field cost ~5.7k instructions per
/// event (field-name matching, `deserialize_struct`, a `String` per field), a quarter of the
/// processors' per-event work. This is one pass over the bytes that keeps each value as a slice
/// of the text and builds the [`Event`] once the object closes (the keys come in any order: a
/// serialised `Value` puts `type` after most fields). A key is not searched for its end: its
/// first four bytes say which name it can be, and the name and its closing quote are compared
/// as one word; a string's end is searched sixteen bytes at a time.
///
/// It takes one JSON object, with JSON whitespace around any token and only whitespace after
/// it, whose keys are plain strings (no escape), each once: the envelope's four fields and the
/// fields of its type, none other, none `null`, no array or object, each value of its field's
/// type. Values are read by the rules `from_value` applies, or by the very code it calls:
/// - strings: borrowed from the text, copied only where the event keeps them; one with an
///   escape is decoded by serde_json itself, so an escape means what it means there;
/// - integers (`tenant_id`, the user ids, numeric entity ids): digits as JSON writes an
///   integer (no sign, fraction, exponent or leading zero), at most `u64::MAX` (serde_json
///   reads anything else as an `i64` or an `f64`, which these fields refuse);
/// - `estimated_value`: the number's text parsed by serde_json, so rounded as it rounds;
/// - `event_id`, timestamps and enums: uuid's `parse_str`, [`crate::rfc3339::Visitor`] and
///   the types' derived `Deserialize`, as their `Deserialize` impls call them.
mod fast {
    use std::borrow::Cow;

    use chrono::{DateTime, Utc};
    use serde::de::value::{Error as DeError, StrDeserializer};
    use serde::de::Visitor;
    use uuid::Uuid;

    use super::*;

    pub(super) fn decode(text: &str) -> Option<Event> {
        let mut fields = Fields {
            raw: [Raw::Absent; FIELDS],
            present: 0,
        };
        fields.scan(text)?;
        fields.build()
    }

    /// `Field`, one variant per field of any event type (its number is its bit in
    /// [`Fields::present`]), `NAMES`, and `Field::by_head`, which finds the only field whose
    /// name can start with a key's first four bytes (no two names share them: checked in
    /// [`QUOTED_NAMES`]): a `match` on constants, which compiles to a few integer comparisons
    /// rather than a string comparison per name.
    macro_rules! fields {
        ($($field:ident = $name:literal,)*) => {
            #[derive(Clone, Copy)]
            enum Field {
                $($field,)*
            }

            const FIELDS: usize = [$($name),*].len();
            const NAMES: [&str; FIELDS] = [$($name),*];

            impl Field {
                #[allow(non_upper_case_globals)]
                #[inline(always)]
                fn by_head(head: u32) -> Option<Field> {
                    $(const $field: u32 = word($name) as u32;)*
                    match head {
                        $($field => Some(Field::$field),)*
                        _ => None,
                    }
                }
            }
        };
    }

    fields! {
        EventId = "event_id",
        Type = "type",
        TenantId = "tenant_id",
        OccurredAt = "occurred_at",
        ConversationId = "conversation_id",
        LeadId = "lead_id",
        SessionId = "session_id",
        ClientId = "client_id",
        Channel = "channel",
        SellerId = "seller_id",
        AgentId = "agent_id",
        UserId = "user_id",
        PhoneNumber = "phone_number",
        Text = "text",
        Automated = "automated",
        Source = "source",
        Name = "name",
        Location = "location",
        EstimatedValue = "estimated_value",
        Status = "status",
        DueAt = "due_at",
        Note = "note",
        Role = "role",
        TimeZone = "time_zone",
        Active = "active",
        Result = "result",
    }

    impl Field {
        fn bit(self) -> u32 {
            1 << self as u32
        }
    }

    /// The little-endian word of up to 16 bytes, zero above them.
    const fn word(bytes: &str) -> u128 {
        let b = bytes.as_bytes();
        assert!(b.len() <= 16);
        let mut word = 0;
        let mut i = 0;
        while i < b.len() {
            word |= (b[i] as u128) << (8 * i);
            i += 1;
        }
        word
    }

    /// Each field's name with the quote that closes it as a key, as a [`word`] and the mask of
    /// its bytes: what [`key`] compares.
    const QUOTED_NAMES: [(u128, u128); FIELDS] = {
        let mut quoted = [(0, 0); FIELDS];
        let mut i = 0;
        while i < FIELDS {
            let len = NAMES[i].len();
            // At least the four bytes `by_head` reads, and room for the quote in 16 bytes.
            assert!(len >= 4 && len < 16);
            let mut j = 0;
            while j < i {
                assert!(
                    word(NAMES[i]) as u32 != word(NAMES[j]) as u32,
                    "a shared head"
                );
                j += 1;
            }
            let mask = if len == 15 {
                u128::MAX
            } else {
                (1 << (8 * (len + 1))) - 1
            };
            quoted[i] = (word(NAMES[i]) | (b'"' as u128) << (8 * len), mask);
            i += 1;
        }
        quoted
    };

    /// `b[i..i + 16]` as a little-endian word, with zeros past the end of `b`.
    #[inline(always)]
    fn sixteen(b: &[u8], i: usize) -> Option<u128> {
        let rest = b.get(i..)?;
        let bytes = match rest.first_chunk::<16>() {
            Some(chunk) => *chunk,
            None => {
                let mut bytes = [0; 16];
                bytes[..rest.len()].copy_from_slice(rest);
                bytes
            }
        };
        Some(u128::from_le_bytes(bytes))
    }

    /// The field named by the key whose content starts at `b[i]`, and the index after the
    /// key's closing quote; `None` for any other key (a name with an escape included: no name
    /// has a backslash). The name is not searched for: its first four bytes say which field it
    /// can be, and the bytes up to its closing quote are compared at once.
    #[inline(always)]
    fn key(b: &[u8], i: usize) -> Option<(Field, usize)> {
        let chunk = sixteen(b, i)?;
        let field = Field::by_head(chunk as u32)?;
        let (quoted, mask) = QUOTED_NAMES[field as usize];
        ((chunk ^ quoted) & mask == 0).then(|| (field, i + NAMES[field as usize].len() + 1))
    }

    /// A value as it stands in the text, not yet read as its field's type.
    #[derive(Clone, Copy)]
    enum Raw<'a> {
        Absent,
        /// A string without escapes: what is between the quotes.
        Plain(&'a str),
        /// A string with an escape: the whole literal, quotes included, for serde_json.
        Escaped(&'a str),
        /// A number: its text, only delimited here (each field's reader checks it).
        Number(&'a str),
        Bool(bool),
    }

    /// The fields of one event object, as found in the text.
    struct Fields<'a> {
        raw: [Raw<'a>; FIELDS],
        /// The fields found and not yet taken into the event.
        present: u32,
    }

    #[inline(always)]
    fn skip_whitespace(b: &[u8], mut i: usize) -> usize {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
            i += 1;
        }
        i
    }

    /// The index of the byte `c` at `i` or after whitespace from `i`: the common, compact case
    /// first.
    #[inline(always)]
    fn find(b: &[u8], i: usize, c: u8) -> Option<usize> {
        if b.get(i) == Some(&c) {
            return Some(i);
        }
        let i = skip_whitespace(b, i);
        (b.get(i) == Some(&c)).then_some(i)
    }

    impl<'a> Fields<'a> {
        // Not inlined into `decode`: with the building of the event around it, the loop's
        // values spilled to the stack.
        #[inline(never)]
        fn scan(&mut self, text: &'a str) -> Option<()> {
            let b = text.as_bytes();
            let mut present = 0;
            let mut i = find(b, 0, b'{')?;
            loop {
                // A key: this also refuses `{}` and a trailing comma (invalid, or no event).
                i = find(b, i + 1, b'"')?;
                let (field, after) = key(b, i + 1)?;
                // A repeated field: serde_json keeps the last one, the derive refused it. Rare
                // enough to leave to `from_value`.
                if present & field.bit() != 0 {
                    return None;
                }
                present |= field.bit();
                i = find(b, after, b':')?;
                let (raw, next) = value(text, i + 1)?;
                self.raw[field as usize] = raw;
                i = skip_whitespace(b, next);
                match b.get(i) {
                    Some(b',') => {}
                    Some(b'}') => break,
                    _ => return None,
                }
            }
            self.present = present;
            (skip_whitespace(b, i + 1) == b.len()).then_some(())
        }

        /// A field's raw value, now accounted for.
        fn take(&mut self, field: Field) -> Raw<'a> {
            self.present &= !field.bit();
            self.raw[field as usize]
        }

        /// A field the type requires: `None` when absent (every reader refuses `Absent`) or
        /// not a valid value.
        fn required<T>(
            &mut self,
            field: Field,
            read: impl FnOnce(Raw<'a>) -> Option<T>,
        ) -> Option<T> {
            read(self.take(field))
        }

        /// A field the type may have: `Some(None)` when absent, `None` when not a valid value.
        fn optional<T>(
            &mut self,
            field: Field,
            read: impl FnOnce(Raw<'a>) -> Option<T>,
        ) -> Option<Option<T>> {
            match self.take(field) {
                Raw::Absent => Some(None),
                raw => read(raw).map(Some),
            }
        }

        fn build(&mut self) -> Option<Event> {
            use Field as F;
            let payload = match self.required(F::Type, kind)? {
                EventKind::MessageReceived => Payload::MessageReceived(MessageReceived {
                    conversation_id: self.required(F::ConversationId, entity)?,
                    channel: self.required(F::Channel, variant)?,
                    seller_id: self.optional(F::SellerId, integer)?,
                    phone_number: self.optional(F::PhoneNumber, string)?,
                    text: self.optional(F::Text, string)?,
                }),
                EventKind::MessageSent => Payload::MessageSent(MessageSent {
                    conversation_id: self.required(F::ConversationId, entity)?,
                    seller_id: self.required(F::SellerId, integer)?,
                    automated: self.optional(F::Automated, boolean)?.unwrap_or(false),
                }),
                EventKind::ConversationAssigned => {
                    Payload::ConversationAssigned(ConversationAssigned {
                        conversation_id: self.required(F::ConversationId, entity)?,
                        seller_id: self.required(F::SellerId, integer)?,
                    })
                }
                EventKind::ConversationClosed => Payload::ConversationClosed(ConversationClosed {
                    conversation_id: self.required(F::ConversationId, entity)?,
                }),
                EventKind::LeadCreated => Payload::LeadCreated(LeadCreated {
                    lead_id: self.required(F::LeadId, entity)?,
                    source: self.required(F::Source, variant)?,
                    seller_id: self.optional(F::SellerId, integer)?,
                    name: self.optional(F::Name, string)?,
                    phone_number: self.optional(F::PhoneNumber, string)?,
                    location: self.optional(F::Location, string)?,
                    estimated_value: self.optional(F::EstimatedValue, float)?,
                    conversation_id: self.optional(F::ConversationId, entity)?,
                }),
                EventKind::LeadStatusChanged => Payload::LeadStatusChanged(LeadStatusChanged {
                    lead_id: self.required(F::LeadId, entity)?,
                    status: self.required(F::Status, variant)?,
                }),
                EventKind::LeadFollowUpScheduled => {
                    Payload::LeadFollowUpScheduled(LeadFollowUpScheduled {
                        lead_id: self.required(F::LeadId, entity)?,
                        seller_id: self.required(F::SellerId, integer)?,
                        due_at: self.required(F::DueAt, time)?,
                        note: self.optional(F::Note, string)?,
                    })
                }
                EventKind::UserUpserted => Payload::UserUpserted(UserUpserted {
                    user_id: self.required(F::UserId, integer)?,
                    name: self.required(F::Name, string)?,
                    role: self.required(F::Role, variant)?,
                    time_zone: self.optional(F::TimeZone, string)?,
                    active: self.optional(F::Active, boolean)?,
                }),
                EventKind::SessionStarted => Payload::SessionStarted(self.session_ref()?),
                EventKind::SessionHeartbeat => Payload::SessionHeartbeat(self.session_ref()?),
                EventKind::SessionEnded => Payload::SessionEnded(SessionEnded {
                    session_id: self.required(F::SessionId, entity)?,
                    client_id: self.required(F::ClientId, entity)?,
                    agent_id: self.required(F::AgentId, integer)?,
                    result: self.required(F::Result, variant)?,
                }),
            };
            let event = Event {
                event_id: self.required(F::EventId, uuid)?,
                tenant_id: self.required(F::TenantId, integer)?,
                occurred_at: self.required(F::OccurredAt, time)?,
                payload,
            };
            // A field left is of another type: `from_value` refuses it as unknown.
            (self.present == 0).then_some(event)
        }

        fn session_ref(&mut self) -> Option<SessionRef> {
            Some(SessionRef {
                session_id: self.required(Field::SessionId, entity)?,
                client_id: self.required(Field::ClientId, entity)?,
                agent_id: self.required(Field::AgentId, integer)?,
            })
        }
    }

    /// The value that starts at `i`, after whitespace, and the index just after it.
    #[inline(always)]
    fn value(text: &str, mut i: usize) -> Option<(Raw<'_>, usize)> {
        let b = text.as_bytes();
        let mut first = *b.get(i)?;
        if matches!(first, b' ' | b'\t' | b'\n' | b'\r') {
            i = skip_whitespace(b, i);
            first = *b.get(i)?;
        }
        match first {
            b'"' => {
                let end = next_special(b, i + 1)?;
                if b[end] == b'"' {
                    return Some((Raw::Plain(slice(text, i + 1, end)?), end + 1));
                }
                let close = escaped_string_end(b, end)?;
                Some((Raw::Escaped(slice(text, i, close + 1)?), close + 1))
            }
            b't' if b[i..].starts_with(b"true") => Some((Raw::Bool(true), i + 4)),
            b'f' if b[i..].starts_with(b"false") => Some((Raw::Bool(false), i + 5)),
            b'-' | b'0'..=b'9' => {
                let len = b[i..]
                    .iter()
                    .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .unwrap_or(b.len() - i);
                Some((Raw::Number(slice(text, i, i + len)?), i + len))
            }
            // `null` (absent to `from_value` for an optional field, refused for the others),
            // arrays and objects (which no field takes as its value) and invalid JSON.
            _ => None,
        }
    }

    /// `text[start..end]` (always `Some`: the scanner cuts only next to ASCII bytes), without
    /// the out-of-line call of `str`'s indexing.
    #[inline(always)]
    fn slice(text: &str, start: usize, end: usize) -> Option<&str> {
        let (head, _) = text.split_at_checked(end)?;
        Some(head.split_at_checked(start)?.1)
    }

    /// The index of the quote that closes a string, from the first special byte of its
    /// content at `i` on (a string with an escape, or invalid); `None` if it does not close or
    /// has a control character (JSON wants those escaped). Out of line: rare, and it would take
    /// registers from the loop of the common case.
    #[inline(never)]
    fn escaped_string_end(b: &[u8], mut i: usize) -> Option<usize> {
        loop {
            match b[i] {
                b'"' => return Some(i),
                // Skip the backslash and the byte it escapes, which may be a quote; whether the
                // escape is valid is serde_json's to say (see `text`).
                b'\\' => i = next_special(b, i + 2)?,
                _ => return None,
            }
        }
    }

    /// The index of the first quote, backslash or control character from `i` on.
    #[inline(always)]
    fn next_special(b: &[u8], mut i: usize) -> Option<usize> {
        while let Some(chunk) = b.get(i..).and_then(<[u8]>::first_chunk::<16>) {
            if let Some(at) = first_special(chunk) {
                return Some(i + at);
            }
            i += 16;
        }
        Some(i + b.get(i..)?.iter().position(|&c| is_special(c))?)
    }

    /// A byte that ends a string's plain run: its closing quote, an escape, or a control
    /// character (which JSON wants escaped).
    fn is_special(c: u8) -> bool {
        c == b'"' || c == b'\\' || c < 0x20
    }

    /// The first [`is_special`] byte of `chunk`, sixteen at once with SSE2 (which every x86_64
    /// has): ~12 instructions, where `memchr2` cost ~40 per (short) string in its dispatch and
    /// a `u128` bit trick ~30 per sixteen bytes.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn first_special(chunk: &[u8; 16]) -> Option<usize> {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
            _mm_set_epi64x,
        };
        let word = u128::from_le_bytes(*chunk);
        // SAFETY: the intrinsics read and write only their arguments and need SSE2, which is
        // part of x86_64 (every such CPU has it, and the compiler assumes it for this target).
        let found = unsafe {
            let v = _mm_set_epi64x((word >> 64) as i64, word as i64);
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Below 0x20, unsigned: the bytes that `min(byte, 0x1f)` leaves as they are.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control))
        };
        (found != 0).then(|| found.trailing_zeros() as usize)
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn first_special(chunk: &[u8; 16]) -> Option<usize> {
        chunk.iter().position(|&c| is_special(c))
    }

    #[cfg(test)]
    #[test]
    fn first_special_finds_the_first_special_byte() {
        // Every byte value at every position of a plain chunk, and after a special byte.
        for at in 0..16 {
            for c in 0..=255u8 {
                let mut chunk = [b'a'; 16];
                chunk[at] = c;
                let expected = is_special(c).then_some(at);
                assert_eq!(first_special(&chunk), expected, "{c:#x} at {at}");
                chunk[15 - at / 2] = b'"';
                let first = chunk.iter().position(|&c| is_special(c));
                assert_eq!(first_special(&chunk), first, "{c:#x} at {at}");
            }
        }
    }

    /// A string's content: borrowed when it has no escape, else as serde_json decodes it.
    fn text(raw: Raw<'_>) -> Option<Cow<'_, str>> {
        match raw {
            Raw::Plain(s) => Some(Cow::Borrowed(s)),
            Raw::Escaped(literal) => serde_json::from_str::<String>(literal).ok().map(Cow::Owned),
            _ => None,
        }
    }

    fn string(raw: Raw<'_>) -> Option<String> {
        text(raw).map(Cow::into_owned)
    }

    /// A `u64` as serde_json reads one from JSON: an integer without sign, fraction or
    /// exponent (JSON allows no leading zero), not above `u64::MAX` (serde_json reads a larger
    /// one as an `f64`).
    fn integer(raw: Raw<'_>) -> Option<u64> {
        let Raw::Number(n) = raw else {
            return None;
        };
        let digits = n.as_bytes();
        if digits.len() > 1 && digits[0] == b'0' {
            return None;
        }
        digits.iter().try_fold(0u64, |v, &c| {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v.checked_mul(10)?.checked_add(u64::from(d))
        })
    }

    /// An [`EntityId`] under the rules of its `Deserialize`: a string of 1 to
    /// [`ENTITY_ID_BYTES`] bytes, or a `u64` kept as its decimal text.
    fn entity(raw: Raw<'_>) -> Option<EntityId> {
        if let Raw::Number(n) = raw {
            // `integer` takes only the canonical digits of a u64, which are its `to_string()`.
            integer(raw)?;
            return Some(EntityId(SmolStr::new(n)));
        }
        let s = text(raw)?;
        (!s.is_empty() && s.len() <= ENTITY_ID_BYTES).then(|| EntityId(SmolStr::new(&*s)))
    }

    /// Rounded by serde_json (with the features the build gives it), as `from_value` rounds.
    fn float(raw: Raw<'_>) -> Option<f64> {
        let Raw::Number(n) = raw else {
            return None;
        };
        serde_json::from_str(n).ok()
    }

    fn boolean(raw: Raw<'_>) -> Option<bool> {
        match raw {
            Raw::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// What uuid's `Deserialize` calls for a string.
    fn uuid(raw: Raw<'_>) -> Option<Uuid> {
        Uuid::parse_str(&text(raw)?).ok()
    }

    /// As chrono reads a `DateTime<Utc>`, through [`crate::rfc3339`] when it can.
    fn time(raw: Raw<'_>) -> Option<DateTime<Utc>> {
        crate::rfc3339::Visitor
            .visit_str::<DeError>(&text(raw)?)
            .ok()
    }

    /// A unit variant by its serde name, through the type's derived `Deserialize`.
    fn variant<T: DeserializeOwned>(raw: Raw<'_>) -> Option<T> {
        T::deserialize(StrDeserializer::<DeError>::new(&text(raw)?)).ok()
    }

    /// `type`, one of [`EVENT_TYPES`].
    fn kind(raw: Raw<'_>) -> Option<EventKind> {
        const KINDS: [EventKind; 11] = [
            EventKind::MessageReceived,
            EventKind::MessageSent,
            EventKind::ConversationAssigned,
            EventKind::ConversationClosed,
            EventKind::LeadCreated,
            EventKind::LeadStatusChanged,
            EventKind::LeadFollowUpScheduled,
            EventKind::UserUpserted,
            EventKind::SessionStarted,
            EventKind::SessionHeartbeat,
            EventKind::SessionEnded,
        ];
        let name = text(raw)?;
        KINDS.into_iter().find(|k| k.as_str() == name)
    }
}

/// Longest value an error message quotes: a refusal (or a dead letter's error) stays small.
const SHOWN_BYTES: usize = 64;

fn take_field<T: DeserializeOwned>(
    obj: &mut Map<String, Value>,
    name: &str,
    expected: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match obj.remove(name) {
        None => {
            errors.push(FieldError::new(name, "missing"));
            None
        }
        Some(v) => match serde_json::from_value::<T>(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let shown = match &v {
                    Value::String(s) if s.len() <= SHOWN_BYTES => format!("{s:?}"),
                    Value::String(s) => format!("a string of {} bytes", s.len()),
                    other => json_type(other).to_string(),
                };
                errors.push(FieldError::new(
                    name,
                    format!("must be {expected}, got {shown} ({e})"),
                ));
                None
            }
        },
    }
}

fn parse_payload(
    type_name: &str,
    obj: Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Option<Payload> {
    fn typed<T: DeserializeOwned>(
        obj: Map<String, Value>,
        errors: &mut Vec<FieldError>,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(Value::Object(obj)) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(payload_error(&e));
                None
            }
        }
    }
    let payload = match type_name {
        "message.received" => Payload::MessageReceived(typed(obj, errors)?),
        "message.sent" => Payload::MessageSent(typed(obj, errors)?),
        "conversation.assigned" => Payload::ConversationAssigned(typed(obj, errors)?),
        "conversation.closed" => Payload::ConversationClosed(typed(obj, errors)?),
        "lead.created" => Payload::LeadCreated(typed(obj, errors)?),
        "lead.status_changed" => Payload::LeadStatusChanged(typed(obj, errors)?),
        "lead.follow_up_scheduled" => Payload::LeadFollowUpScheduled(typed(obj, errors)?),
        "user.upserted" => Payload::UserUpserted(typed(obj, errors)?),
        "session.started" => Payload::SessionStarted(typed(obj, errors)?),
        "session.heartbeat" => Payload::SessionHeartbeat(typed(obj, errors)?),
        "session.ended" => Payload::SessionEnded(typed(obj, errors)?),
        other => {
            errors.push(FieldError::new(
                "type",
                format!(
                    "unknown event type {other:?}; expected one of {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
            return None;
        }
    };
    Some(payload)
}

/// Turns a serde error into a field error. serde reports missing and unknown fields at the
/// object's own path, with the field's name in backticks in the message: take it from there.
fn payload_error(e: &serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = e.path().to_string();
    let message = e.inner().to_string();
    // serde_json appends " at line L column C", meaningless for a value: drop it.
    let message = match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    let named = |prefix: &str| -> Option<String> {
        let rest = message.strip_prefix(prefix)?;
        let start = rest.find('`')? + 1;
        let len = rest[start..].find('`')?;
        Some(rest[start..start + len].to_string())
    };
    if let Some(field) = named("missing field") {
        return FieldError::new(join_path(&path, &field), "missing");
    }
    if let Some(field) = named("unknown field") {
        // serde_path_to_error already puts an unknown field at the end of the path.
        let at = if path == field || path.ends_with(&format!(".{field}")) {
            path
        } else {
            join_path(&path, &field)
        };
        return FieldError::new(at, format!("unknown field ({message})"));
    }
    FieldError::new(
        if path == "." { String::new() } else { path },
        shorten(message),
    )
}

/// Longest message taken from serde, which quotes offending values (an unknown enum variant):
/// a refusal stays small whatever the value.
const MESSAGE_BYTES: usize = 512;

fn shorten(mut message: String) -> String {
    if message.len() > MESSAGE_BYTES {
        let mut end = MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

fn join_path(path: &str, field: &str) -> String {
    if path == "." || path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// The JSON Schema (draft 2020-12) of every event type, keyed by type name: the envelope's fields
/// plus the type's own, with no other fields allowed, and the default [`FieldLimits`] as
/// `maxLength`. Served at `GET /v1/schemas` (with the configured limits: see
/// [`event_json_schemas_with`]).
pub fn event_json_schemas() -> Value {
    event_json_schemas_with(&FieldLimits::default())
}

/// [`event_json_schemas`] with `limits` as the text fields' `maxLength`.
pub fn event_json_schemas_with(limits: &FieldLimits) -> Value {
    let mut schemas = event_json_schemas_unlimited();
    for (kind, field, max) in limits.fields() {
        if let Some(property) = schemas
            .get_mut(kind)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(field))
            .and_then(Value::as_object_mut)
        {
            property.insert("maxLength".into(), Value::from(max));
        }
    }
    schemas
}

fn event_json_schemas_unlimited() -> Value {
    fn one<T: JsonSchema>(type_name: &str) -> Value {
        let mut schema = serde_json::to_value(schemars::schema_for!(T)).expect("schema is JSON");
        let obj = schema
            .as_object_mut()
            .expect("a struct schema is an object");
        obj.insert("title".into(), Value::String(type_name.to_string()));
        let props = obj
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("properties is an object");
        props.insert(
            "event_id".into(),
            serde_json::json!({"type": "string", "format": "uuid",
                "description": "Idempotency key: the same event_id twice counts once"}),
        );
        props.insert("type".into(), serde_json::json!({"const": type_name}));
        props.insert(
            "tenant_id".into(),
            serde_json::json!({"type": "integer", "minimum": 0}),
        );
        props.insert(
            "occurred_at".into(),
            serde_json::json!({"type": "string", "format": "date-time",
                "description": "Event time, RFC 3339 with a time zone"}),
        );
        let required = obj
            .entry("required")
            .or_insert_with(|| Value::Array(vec![]))
            .as_array_mut()
            .expect("required is an array");
        for f in ENVELOPE {
            required.push(Value::String(f.to_string()));
        }
        schema
    }
    let mut out = Map::new();
    let schemas = [
        (
            "message.received",
            one::<MessageReceived> as fn(&str) -> Value,
        ),
        ("message.sent", one::<MessageSent>),
        ("conversation.assigned", one::<ConversationAssigned>),
        ("conversation.closed", one::<ConversationClosed>),
        ("lead.created", one::<LeadCreated>),
        ("lead.status_changed", one::<LeadStatusChanged>),
        ("lead.follow_up_scheduled", one::<LeadFollowUpScheduled>),
        ("user.upserted", one::<UserUpserted>),
        ("session.started", one::<SessionRef>),
        ("session.heartbeat", one::<SessionRef>),
        ("session.ended", one::<SessionEnded>),
    ];
    for (name, f) in schemas {
        out.insert(name.to_string(), f(name));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base(t: &str) -> Value {
        json!({"event_id": "0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d", "type": t, "tenant_id": 42,
               "occurred_at": "2026-02-27T15:00:00Z"})
    }

    fn with(mut v: Value, extra: Value) -> Value {
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    }

    fn fields(r: Result<Event, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn parses_a_valid_message_and_round_trips() {
        let v = with(
            base("message.received"),
            json!({"conversation_id": "c1", "channel": "whatsapp", "seller_id": 7, "text": "hola"}),
        );
        let e = Event::from_value(v).unwrap();
        assert_eq!(e.tenant_id, 42);
        assert_eq!(e.kind(), EventKind::MessageReceived);
        let again = Event::from_json(&e.to_json()).unwrap();
        assert_eq!(e, again);
    }

    #[test]
    fn numeric_entity_ids_are_accepted_as_strings() {
        let v = with(base("conversation.closed"), json!({"conversation_id": 17}));
        let Payload::ConversationClosed(c) = Event::from_value(v).unwrap().payload else {
            panic!()
        };
        assert_eq!(c.conversation_id.as_str(), "17");
    }

    #[test]
    fn timestamps_with_offsets_are_normalised_to_utc() {
        let mut v = with(base("conversation.closed"), json!({"conversation_id": "c"}));
        v["occurred_at"] = json!("2026-02-27T10:00:00-05:00");
        let e = Event::from_value(v).unwrap();
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-02-27T15:00:00+00:00");
    }

    #[test]
    fn each_error_names_its_field() {
        let v = json!({"event_id": "nope", "type": "message.sent", "tenant_id": -1,
                       "occurred_at": "yesterday", "conversation_id": "c"});
        let f = fields(Event::from_value(v));
        assert_eq!(f, vec!["event_id", "tenant_id", "occurred_at", "seller_id"]);
    }

    #[test]
    fn missing_envelope_fields_and_unknown_type() {
        assert_eq!(
            fields(Event::from_value(json!({"type": "x.y"}))),
            vec!["event_id", "tenant_id", "occurred_at", "type"]
        );
        assert_eq!(
            fields(Event::from_value(
                json!({"event_id": "0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d",
                "tenant_id": 1, "occurred_at": "2026-02-27T15:00:00Z"})
            )),
            vec!["type"]
        );
    }

    #[test]
    fn unknown_enum_value_and_ill_typed_and_unknown_fields() {
        let v = with(
            base("message.received"),
            json!({"conversation_id": "c", "channel": "pigeon"}),
        );
        let e = Event::from_value(v).unwrap_err();
        assert_eq!(e[0].field, "channel");
        assert!(e[0].message.contains("pigeon"), "{}", e[0].message);

        let v = with(
            base("message.sent"),
            json!({"conversation_id": "c", "seller_id": "seven"}),
        );
        assert_eq!(fields(Event::from_value(v)), vec!["seller_id"]);

        let v = with(
            base("conversation.closed"),
            json!({"conversation_id": "c", "colour": "red"}),
        );
        assert_eq!(fields(Event::from_value(v)), vec!["colour"]);

        let v = with(
            base("lead.follow_up_scheduled"),
            json!({"lead_id": "l", "seller_id": 1, "due_at": "tomorrow"}),
        );
        assert_eq!(fields(Event::from_value(v)), vec!["due_at"]);
    }

    #[test]
    fn not_an_object_and_bad_json() {
        assert_eq!(fields(Event::from_value(json!([1]))), vec![""]);
        assert_eq!(fields(Event::from_json("{")), vec![""]);
    }

    #[test]
    fn every_type_has_a_schema_requiring_the_envelope() {
        let s = event_json_schemas();
        for t in EVENT_TYPES {
            let req = s[t]["required"].as_array().unwrap();
            for f in ENVELOPE {
                assert!(req.contains(&json!(f)), "{t} lacks {f}");
            }
            assert_eq!(s[t]["properties"]["type"]["const"], json!(t));
        }
        assert_eq!(s["message.received"]["additionalProperties"], json!(false));
    }

    #[test]
    fn lengths_are_checked_in_characters_and_errors_do_not_quote_the_value() {
        let limits = FieldLimits {
            text_chars: 4,
            name_chars: 2,
        };
        let v = with(
            base("message.received"),
            json!({"conversation_id": "c", "channel": "web", "text": "ññññ"}),
        );
        let e = Event::from_value(v).unwrap();
        assert!(e.check_lengths(&limits).is_empty(), "4 characters, 8 bytes");
        let v = with(
            base("lead.created"),
            json!({"lead_id": "l", "source": "WEBSITE", "name": "abc", "location": "xyz",
                   "phone_number": "1".repeat(65)}),
        );
        let errors = Event::from_value(v).unwrap().check_lengths(&limits);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["location", "name", "phone_number"]);
        assert_eq!(errors[1].message, "must be at most 2 characters, got 3");
        assert!(!errors[2].message.contains("111"), "{}", errors[2].message);
    }

    #[test]
    fn schemas_carry_the_limits() {
        let s = event_json_schemas_with(&FieldLimits {
            text_chars: 10,
            name_chars: 3,
        });
        assert_eq!(
            s["message.received"]["properties"]["text"]["maxLength"],
            json!(10)
        );
        assert_eq!(
            s["lead.follow_up_scheduled"]["properties"]["note"]["maxLength"],
            json!(10)
        );
        assert_eq!(
            s["user.upserted"]["properties"]["name"]["maxLength"],
            json!(3)
        );
        assert_eq!(
            s["user.upserted"]["properties"]["time_zone"]["maxLength"],
            json!(64)
        );
        assert_eq!(
            event_json_schemas()["lead.created"]["properties"]["name"]["maxLength"],
            json!(256)
        );
    }

    #[test]
    fn a_huge_unknown_variant_is_not_quoted_whole() {
        let v = with(
            base("message.received"),
            json!({"conversation_id": "c", "channel": "ñ".repeat(10_000)}),
        );
        let errors = Event::from_value(v).unwrap_err();
        assert_eq!(errors[0].field, "channel");
        assert!(
            errors[0].message.len() <= MESSAGE_BYTES + 3,
            "{}",
            errors[0].message.len()
        );
    }

    #[test]
    fn a_huge_invalid_value_is_not_quoted_in_its_error() {
        let mut v = with(base("conversation.closed"), json!({"conversation_id": "c"}));
        v["event_id"] = json!("\"".repeat(100_000));
        let errors = Event::from_value(v).unwrap_err();
        assert_eq!(errors[0].field, "event_id");
        assert!(errors[0].message.len() < 300, "{}", errors[0].message);
        assert!(
            errors[0].message.contains("100000 bytes"),
            "{}",
            errors[0].message
        );
    }

    /// Every event the strict text decoder takes, `from_value` takes as the same event; and it
    /// takes the usual ones.
    #[test]
    fn the_text_fast_path_agrees_with_from_value() {
        let env = r#""event_id":"0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d","tenant_id":42,"occurred_at":"2026-02-27T15:00:00Z""#;
        let taken = [
            r#""type":"message.received","conversation_id":"c1","channel":"whatsapp""#,
            r#""type":"message.received","conversation_id":17,"channel":"web","seller_id":3,"phone_number":"+57 300","text":"¿Cuánto \"cuesta\"?\n""#,
            r#""type":"message.sent","conversation_id":"c","seller_id":7"#,
            r#""type":"message.sent","conversation_id":"c","seller_id":7,"automated":true"#,
            r#""type":"message.sent","conversation_id":"c","seller_id":7,"automated":false"#,
            r#""type":"conversation.assigned","conversation_id":"c","seller_id":0"#,
            r#""type":"conversation.closed","conversation_id":"c""#,
            r#""type":"lead.created","lead_id":"l","source":"META_ADS""#,
            r#""type":"lead.created","lead_id":"l","source":"REFERRAL","seller_id":2,"name":"Ana","phone_number":"1","location":"Bogotá","estimated_value":1500,"conversation_id":"c9""#,
            r#""type":"lead.created","lead_id":"l","source":"WEBSITE","estimated_value":0.1"#,
            r#""type":"lead.created","lead_id":"l","source":"WEBSITE","estimated_value":1.7976931348623157e308"#,
            r#""type":"lead.status_changed","lead_id":"l","status":"converted""#,
            r#""type":"lead.follow_up_scheduled","lead_id":"l","seller_id":1,"due_at":"2026-02-28T10:00:00-05:00""#,
            r#""type":"lead.follow_up_scheduled","lead_id":"l","seller_id":1,"due_at":"2026-02-28T10:00:00.123456Z","note":"x""#,
            r#""type":"user.upserted","user_id":5,"name":"Bo","role":"supervisor""#,
            r#""type":"user.upserted","user_id":5,"name":"Bo","role":"seller","time_zone":"America/Lima","active":false"#,
            r#""type":"session.started","session_id":"s","client_id":9,"agent_id":4"#,
            r#""type":"session.heartbeat","session_id":"s","client_id":"k","agent_id":4"#,
            r#""type":"session.ended","session_id":"s","client_id":"k","agent_id":4,"result":"not_managed""#,
        ];
        let left = [
            // Accepted by from_value, but not by the strict path.
            r#""type":"message.received","conversation_id":"c","channel":"web","seller_id":null"#,
            r#""type":"message.received","conversation_id":"c","channel":"web","text":null"#,
            r#""type":"message.sent","conversation_id":"c","seller_id":7,"seller_id":8"#,
            r#""type":"conversation.closed","conversation_id":"a","conversation_id":"b""#,
            // Refused by both.
            r#""type":"message.sent","conversation_id":"c","seller_id":null"#,
            r#""type":"message.sent","conversation_id":"c","seller_id":7,"automated":null"#,
            r#""type":"message.sent","conversation_id":"c""#,
            r#""type":"message.sent","conversation_id":"c","seller_id":7,"text":"hola""#,
            r#""type":"conversation.closed","conversation_id":"c","lead_id":"l""#,
            r#""type":"conversation.closed","conversation_id":"c","colour":"red""#,
            r#""type":"conversation.closed","conversation_id":"""#,
            r#""type":"conversation.closed","conversation_id":-1"#,
            r#""type":"conversation.closed","conversation_id":1.0"#,
            r#""type":"conversation.closed","conversation_id":18446744073709551616"#,
            r#""type":"conversation.closed","conversation_id":true"#,
            r#""type":"conversation.closed""#,
            r#""type":"conversation.opened","conversation_id":"c""#,
            r#""type":7,"conversation_id":"c""#,
            r#""conversation_id":"c""#,
            r#""type":"message.received","conversation_id":"c","channel":"pigeon""#,
            r#""type":"lead.created","lead_id":"l","source":"website""#,
            r#""type":"lead.follow_up_scheduled","lead_id":"l","seller_id":1,"due_at":"tomorrow""#,
            r#""type":"lead.follow_up_scheduled","lead_id":"l","seller_id":1,"due_at":"2026-02-28T10:00:00""#,
            r#""type":"user.upserted","user_id":-5,"name":"Bo","role":"seller""#,
            r#""type":"session.ended","session_id":"s","client_id":"k","agent_id":4"#,
        ];
        let long_id = format!(
            r#""type":"conversation.closed","conversation_id":"{}""#,
            "x".repeat(ENTITY_ID_BYTES + 1)
        );
        let longest_id = format!(
            r#""type":"conversation.closed","conversation_id":"{}""#,
            "x".repeat(ENTITY_ID_BYTES)
        );
        let mut texts: Vec<(String, bool)> = Vec::new();
        for t in taken.iter().copied().chain([longest_id.as_str()]) {
            texts.push((format!("{{{env},{t}}}"), true));
            texts.push((format!(" {{ {t} , {env} }} "), true));
        }
        for t in left.iter().copied().chain([long_id.as_str()]) {
            texts.push((format!("{{{env},{t}}}"), false));
        }
        let bad_envelopes = [
            r#"{"event_id":"nope","tenant_id":1,"occurred_at":"2026-02-27T15:00:00Z","type":"conversation.closed","conversation_id":"c"}"#,
            r#"{"event_id":"0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d","tenant_id":1.5,"occurred_at":"2026-02-27T15:00:00Z","type":"conversation.closed","conversation_id":"c"}"#,
            r#"{"event_id":"0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d","occurred_at":"2026-02-27T15:00:00Z","type":"conversation.closed","conversation_id":"c"}"#,
            r#"{"event_id":"0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d","tenant_id":1,"type":"conversation.closed","conversation_id":"c"}"#,
            r#"{"event_id":null,"tenant_id":1,"occurred_at":"2026-02-27T15:00:00Z","type":"conversation.closed","conversation_id":"c"}"#,
            r#"{"event_id":"0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d","tenant_id":1,"occurred_at":"2026-02-27T15:00:00Z","type":"conversation.closed","conversation_id":"c"} x"#,
            r#"[1]"#,
            r#"{"#,
            "",
        ];
        for t in bad_envelopes {
            texts.push((t.to_string(), false));
        }
        for (text, fast_takes_it) in &texts {
            let fast = fast::decode(text);
            let slow = serde_json::from_str::<Value>(text)
                .map_err(|_| ())
                .and_then(|v| Event::from_value(v).map_err(|_| ()));
            assert_eq!(fast.is_some(), *fast_takes_it, "{text}");
            if let Some(event) = fast {
                assert_eq!(Ok(&event), slow.as_ref(), "{text}");
            }
            // Whichever path decides, from_json answers as from_value does.
            match (Event::from_json(text), serde_json::from_str::<Value>(text)) {
                (Ok(a), Ok(v)) => assert_eq!(Ok(a), Event::from_value(v), "{text}"),
                (Err(a), Ok(v)) => assert_eq!(Err(a), Event::from_value(v), "{text}"),
                (Ok(a), Err(e)) => panic!("{text}: took {a:?} from invalid JSON ({e})"),
                (Err(a), Err(_)) => assert_eq!(a[0].field, "", "{text}"),
            }
        }
    }

    /// The fast path's invariant on one text: it takes it (`Some`) only when `from_value` takes
    /// it, and then as the same event (and the same canonical JSON: a float to the bit).
    /// Returns whether it took it.
    fn fast_agrees(text: &str) -> bool {
        let Some(event) = fast::decode(text) else {
            return false;
        };
        let value = serde_json::from_str::<Value>(text)
            .unwrap_or_else(|e| panic!("{text:?}: taken, but not JSON ({e})"));
        let slow = Event::from_value(value)
            .unwrap_or_else(|e| panic!("{text:?}: taken, but from_value refuses it: {e:?}"));
        assert_eq!(event, slow, "{text:?}");
        assert_eq!(event.to_json(), slow.to_json(), "{text:?}");
        true
    }

    fn slow_takes(text: &str) -> bool {
        serde_json::from_str::<Value>(text).is_ok_and(|v| Event::from_value(v).is_ok())
    }

    const EVENT_ID: &str = r#""0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d""#;
    const OCCURRED_AT: &str = r#""2026-03-02T08:00:01.250Z""#;

    /// Every event type with valid values: (type, required fields, optional fields), each field
    /// a key and the JSON text of its value. Entity ids both as strings and as integers; texts
    /// with non-ASCII characters, as the simulator writes them.
    type Spec = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
    );
    const SPECS: [Spec; 11] = [
        (
            "message.received",
            &[
                ("conversation_id", r#""t3-c17""#),
                ("channel", r#""whatsapp""#),
            ],
            &[
                ("seller_id", "7"),
                ("phone_number", r#""+573001234567""#),
                ("text", r#""¿Cuál es el precio del plan anual?""#),
            ],
        ),
        (
            "message.sent",
            &[("conversation_id", "17"), ("seller_id", "7")],
            &[("automated", "true")],
        ),
        (
            "conversation.assigned",
            &[("conversation_id", r#""c""#), ("seller_id", "0")],
            &[],
        ),
        ("conversation.closed", &[("conversation_id", r#""c""#)], &[]),
        (
            "lead.created",
            &[("lead_id", r#""t3-l17""#), ("source", r#""META_ADS""#)],
            &[
                ("seller_id", "2"),
                ("name", r#""Cliente 17""#),
                ("phone_number", r#""+573001234567""#),
                ("location", r#""Bogotá""#),
                ("estimated_value", "1500.0"),
                ("conversation_id", r#""t3-c17""#),
            ],
        ),
        (
            "lead.status_changed",
            &[
                ("lead_id", "18446744073709551615"),
                ("status", r#""converted""#),
            ],
            &[],
        ),
        (
            "lead.follow_up_scheduled",
            &[
                ("lead_id", r#""l""#),
                ("seller_id", "1"),
                ("due_at", r#""2026-02-28T10:00:00-05:00""#),
            ],
            &[("note", r#""Llamar para cerrar""#)],
        ),
        (
            "user.upserted",
            &[
                ("user_id", "5"),
                ("name", r#""Vendedor 3-1""#),
                ("role", r#""seller""#),
            ],
            &[("time_zone", r#""America/Bogota""#), ("active", "false")],
        ),
        (
            "session.started",
            &[
                ("session_id", r#""s1""#),
                ("client_id", "9"),
                ("agent_id", "4"),
            ],
            &[],
        ),
        (
            "session.heartbeat",
            &[
                ("session_id", r#""s1""#),
                ("client_id", r#""k""#),
                ("agent_id", "4"),
            ],
            &[],
        ),
        (
            "session.ended",
            &[
                ("session_id", r#""s1""#),
                ("client_id", r#""k""#),
                ("agent_id", "4"),
                ("result", r#""not_managed""#),
            ],
            &[],
        ),
    ];

    type Fields = Vec<(&'static str, String)>;

    /// The envelope, then the type's required fields, then `optional` of its optional ones.
    fn sample(spec: &Spec, optional: impl Fn(usize) -> bool) -> Fields {
        let (kind, required, optionals) = spec;
        let mut fields: Fields = vec![
            ("event_id", EVENT_ID.to_string()),
            ("type", format!("\"{kind}\"")),
            ("tenant_id", "42".to_string()),
            ("occurred_at", OCCURRED_AT.to_string()),
        ];
        fields.extend(required.iter().map(|&(k, v)| (k, v.to_string())));
        fields.extend(
            optionals
                .iter()
                .enumerate()
                .filter(|(i, _)| optional(*i))
                .map(|(_, &(k, v))| (k, v.to_string())),
        );
        fields
    }

    /// Every type with every optional field: the events the tests below vary.
    fn full_samples() -> Vec<Fields> {
        SPECS.iter().map(|s| sample(s, |_| true)).collect()
    }

    /// The JSON object of `fields`, with `ws` around every token.
    fn render(fields: &[(&str, String)], ws: &str) -> String {
        let members: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}"))
            .collect();
        format!("{ws}{{{}}}{ws}", members.join(","))
    }

    fn with_value(fields: &Fields, key: &str, value: &str) -> Fields {
        let mut fields = fields.clone();
        fields.iter_mut().find(|(k, _)| *k == key).unwrap().1 = value.to_string();
        fields
    }

    /// Every event type, with each subset of its optional fields, with the keys in several
    /// orders (the simulator's is sorted: `type` after most fields) and whitespace of every
    /// kind between the tokens, and as `to_json` writes it: all taken, as `from_value` takes it.
    #[test]
    fn fast_takes_every_type_with_or_without_its_optional_fields_in_any_order() {
        let mut taken = 0;
        for spec in &SPECS {
            for subset in 0..1u32 << spec.2.len() {
                let fields = sample(spec, |i| subset & (1 << i) != 0);
                let mut reversed = fields.clone();
                reversed.reverse();
                let mut sorted = fields.clone();
                sorted.sort();
                let mut type_last = fields.clone();
                type_last.rotate_left(2);
                for order in [&fields, &reversed, &sorted, &type_last] {
                    for ws in ["", " ", "\t", "\n", "\r\n \t"] {
                        let text = render(order, ws);
                        assert!(fast_agrees(&text), "left to the slow path: {text:?}");
                        taken += 1;
                    }
                }
                let canonical = fast::decode(&render(&fields, "")).unwrap().to_json();
                assert!(fast_agrees(&canonical), "{canonical}");
            }
        }
        assert_eq!(taken, (8 + 2 + 1 + 1 + 64 + 1 + 2 + 4 + 1 + 1 + 1) * 4 * 5);
    }

    /// The values tried in every field of every type: valid and invalid ones of every field,
    /// escapes, every kind of number, entity ids at and over their limit.
    fn values() -> Vec<String> {
        let mut values: Vec<String> = [
            // Literals, and what no field takes.
            "null",
            "true",
            "false",
            "[]",
            r#"["web"]"#,
            "{}",
            r#"{"web":null}"#,
            "nul",
            "tru",
            "True",
            // Integers and what a u64 field refuses.
            "0",
            "7",
            "42",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "00",
            "07",
            "-7",
            "-0",
            "+7",
            "0x7",
            // Fractions and exponents.
            "7.0",
            "7e0",
            "7E+1",
            "7e-1",
            "7.",
            ".7",
            "1e400",
            "1e-400",
            "-",
            "1-2",
            "1.2.3",
            "--1",
            "1e",
            "1.5e+",
            "0.1",
            "1500",
            "1500.0",
            "-2.5",
            "-0.0",
            "2.5e-310",
            "4.9e-324",
            "1.7976931348623157e308",
            "0.30000000000000004",
            "123456789012345678901234567890",
            "1.000000000000000000000000000001",
            // Strings: empty, entity ids at and over ENTITY_ID_BYTES (in bytes, after escapes).
            r#""""#,
            r#""x""#,
            r#""7""#,
            r#"" ""#,
            // Escapes, valid and not.
            r#""a\"b""#,
            r#""a\\b""#,
            r#""a\nb""#,
            r#""\u00e9""#,
            r#""\u00E9""#,
            r#""\ud83d\ude00""#,
            r#""\/\b\f\r\t""#,
            r#""x\u0000y""#,
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83dx""#,
            r#""\x""#,
            r#""\u12""#,
            r#""\u00g0""#,
            r#""\""#,
            r#""\\""#,
            r#""\\\""#,
            "\"a\u{1}b\"",
            "\"a\tb\"",
            "\"a\nb\"",
            "\"a\u{7f}b\"",
            "\"a\u{1f}\"",
            // Timestamps: the strict form, offsets and what chrono refuses.
            r#""2026-03-02T08:00:00Z""#,
            r#""2026-03-02T08:00:00.123456789Z""#,
            r#""2026-03-02T08:00:00+05:30""#,
            r#""2026-03-02t08:00:00z""#,
            r#""2026-03-02 08:00:00Z""#,
            r#""2026-02-30T08:00:00Z""#,
            r#""2026-03-02T08:00:60Z""#,
            r#""2026-03-02T08:00:00""#,
            // Uuids in every form uuid parses, and not.
            r#""0B9A3C52-8A4E-4D1F-9B27-3E440C81A95D""#,
            r#""0b9a3c528a4e4d1f9b273e440c81a95d""#,
            r#""{0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d}""#,
            r#""urn:uuid:0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d""#,
            r#""0b9a3c52-8a4e-4d1f-9b27-3e440c81a95""#,
            r#""0b9a3c52-8a4e-4d1f-9b27-3e440c81a95g""#,
            r#""0b9a3c52_8a4e_4d1f_9b27_3e440c81a95d""#,
            // Every variant of every enum, and near misses.
            r#""whatsapp""#,
            r#""web""#,
            r#""email""#,
            r#""other""#,
            r#""META_ADS""#,
            r#""WEBSITE""#,
            r#""REFERRAL""#,
            r#""WHATSAPP""#,
            r#""OTHER""#,
            r#""new""#,
            r#""contacted""#,
            r#""interested""#,
            r#""negotiation""#,
            r#""converted""#,
            r#""lost""#,
            r#""ceo""#,
            r#""manager""#,
            r#""seller""#,
            r#""secretary""#,
            r#""supervisor""#,
            r#""managed""#,
            r#""not_managed""#,
            r#""closed""#,
            r#""Web""#,
            r#""meta_ads""#,
            r#""web ""#,
            r#""notManaged""#,
            r#""0""#,
        ]
        .map(str::to_string)
        .to_vec();
        let x = |n: usize| "x".repeat(n);
        values.extend([
            format!("\"{}\"", x(ENTITY_ID_BYTES)),
            format!("\"{}\"", x(ENTITY_ID_BYTES + 1)),
            format!("\"{}\"", "ñ".repeat(ENTITY_ID_BYTES / 2)),
            format!("\"{}x\"", "ñ".repeat(ENTITY_ID_BYTES / 2)),
            format!(r#""{}\n""#, x(ENTITY_ID_BYTES - 1)),
            format!(r#""{}\n""#, x(ENTITY_ID_BYTES)),
            format!("\"{}\"", r"\u00f1".repeat(ENTITY_ID_BYTES / 2)),
            format!("\"{}\"", r"\u00f1".repeat(ENTITY_ID_BYTES / 2 + 1)),
        ]);
        // Every type name, and every valid value of the samples, also with its first
        // character escaped (`"\u0077eb"`): the same string to serde_json.
        let mut valid: Vec<String> = EVENT_TYPES.iter().map(|t| format!("\"{t}\"")).collect();
        valid.extend([EVENT_ID, OCCURRED_AT].map(str::to_string));
        for (_, required, optional) in &SPECS {
            valid.extend(required.iter().chain(*optional).map(|(_, v)| v.to_string()));
        }
        let escaped: Vec<String> = valid
            .iter()
            .filter_map(|v| {
                let first = v.strip_prefix('"')?.chars().next()?;
                let rest = &v[1 + first.len_utf8()..];
                Some(format!(r#""\u{:04x}{rest}"#, first as u32))
            })
            .collect();
        values.extend(valid);
        values.extend(escaped);
        values
    }

    /// Every value above in every field of every type: the fast path takes exactly what
    /// `from_value` takes, as the same event, but for `null`s, arrays and objects, which it
    /// leaves to `from_value`.
    #[test]
    fn fast_decides_every_value_of_every_field_as_from_value_does() {
        let values = values();
        let mut taken = 0;
        for fields in full_samples() {
            for (key, _) in &fields {
                for value in &values {
                    let text = render(&with_value(&fields, key, value), "");
                    let fast = fast_agrees(&text);
                    if value == "null" || value.starts_with(['[', '{']) {
                        assert!(!fast, "{text}");
                    } else {
                        assert_eq!(fast, slow_takes(&text), "{text}");
                    }
                    taken += usize::from(fast);
                }
            }
        }
        // Each field takes several of the values (its own, escaped or not, at least): 3902.
        assert!(taken > 3000, "{taken}");
    }

    #[test]
    fn fast_keeps_numeric_entity_ids_as_their_decimal_text_and_escaped_strings_decoded() {
        let fields = sample(&SPECS[3], |_| true);
        let id = |value: &str| -> Option<String> {
            let event = fast::decode(&render(&with_value(&fields, "conversation_id", value), ""))?;
            let Payload::ConversationClosed(c) = event.payload else {
                panic!("{event:?}")
            };
            Some(c.conversation_id.0.to_string())
        };
        assert_eq!(id("0").as_deref(), Some("0"));
        assert_eq!(
            id("18446744073709551615").as_deref(),
            Some("18446744073709551615")
        );
        assert_eq!(id("18446744073709551616"), None);
        assert_eq!(id("017"), None);
        assert_eq!(
            id(r#""a\"\\\/\n\u00e9\ud83d\ude00""#).as_deref(),
            Some("a\"\\/\né😀")
        );
        assert_eq!(id(r#""\ud83d""#), None);
    }

    /// What the fast path leaves to `from_value` though it is valid or nearly: `null`s, repeated
    /// fields, escaped keys; and what both refuse: unknown fields, fields of another type,
    /// whitespace JSON does not know, anything around the object.
    #[test]
    fn fast_leaves_nulls_repeats_escaped_keys_and_foreign_fields_to_from_value() {
        let all_fields: Vec<(&str, &str)> = SPECS
            .iter()
            .flat_map(|(_, required, optional)| required.iter().chain(*optional).copied())
            .collect();
        for fields in full_samples() {
            let text = render(&fields, "");
            assert!(fast_agrees(&text), "{text}");
            for (i, (key, value)) in fields.iter().enumerate() {
                // `null`, and a repeat of the same or of another value (serde_json keeps the
                // last): taken by from_value when the field is optional, or the same twice.
                let mut null = fields.clone();
                null[i].1 = "null".to_string();
                let mut repeated = fields.clone();
                repeated.push((key, value.clone()));
                let mut first_invalid = fields.clone();
                first_invalid.insert(0, (key, "[]".to_string()));
                // An escape in the key: the same key to serde_json.
                let escaped = format!("\\u{:04x}{}", key.as_bytes()[0], &key[1..]);
                let mut escaped_key: Vec<(&str, String)> = fields.clone();
                escaped_key[i].0 = &escaped;
                for fields in [null, repeated, first_invalid, escaped_key] {
                    let text = render(&fields, "");
                    assert!(!fast_agrees(&text), "{text}");
                }
            }
            // Unknown keys, and the fields of the other types.
            let own: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
            let foreign = all_fields.iter().filter(|(k, _)| !own.contains(k));
            let unknown = ["colour", "Type", "type ", "", "event_id\u{0}"].map(|k| (k, "1"));
            for &(key, value) in foreign.chain(&unknown) {
                let mut more = fields.clone();
                more.insert(2, (key, value.to_string()));
                let text = render(&more, "");
                assert!(!fast_agrees(&text) && !slow_takes(&text), "{text}");
            }
            // Around and between the tokens: only JSON's whitespace, only one object.
            for text in [
                format!("\u{feff}{text}"),
                format!("{text}\u{c}"),
                format!("{text}\u{a0}"),
                text.replacen(',', "\u{c},", 1),
                text.replacen(',', ",,", 1),
                text.replacen(',', " ", 1),
                text.replacen(':', " ", 1),
                text.replacen('}', ",}", 1),
                format!("{text}{text}"),
                format!("{text},"),
                format!("{text}x"),
                format!("[{text}]"),
                format!("{{\"e\":{text}}}"),
                "{}".to_string(),
                String::new(),
                " ".to_string(),
            ] {
                assert!(!fast_agrees(&text) && !slow_takes(&text), "{text:?}");
            }
        }
    }

    /// Every valid event cut at every character, and with one byte replaced, removed or
    /// doubled at every offset: the fast path gives `None` or what `from_value` gives.
    #[test]
    fn fast_is_none_or_right_on_truncated_and_corrupted_events() {
        const BYTES: &[u8] = b" \t\n\r\"\\{}[],:0123456789-+.eEtrufalsnx\x00\x1f\x7f";
        let mut texts = 0;
        let mut taken = 0;
        for fields in full_samples() {
            let mut sorted = fields.clone();
            sorted.sort();
            for text in [render(&fields, ""), render(&sorted, " ")] {
                let b = text.as_bytes();
                for cut in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
                    let prefix = &text[..cut];
                    // Only the trailing whitespace may go.
                    let whole = prefix.trim_end() == text.trim_end();
                    assert_eq!(fast_agrees(prefix), whole, "{prefix:?}");
                }
                for i in 0..b.len() {
                    let mut variants: Vec<Vec<u8>> = Vec::new();
                    for &c in BYTES {
                        let mut v = b.to_vec();
                        v[i] = c;
                        variants.push(v);
                    }
                    let mut removed = b.to_vec();
                    removed.remove(i);
                    let mut doubled = b.to_vec();
                    doubled.insert(i, b[i]);
                    variants.extend([removed, doubled]);
                    for v in variants {
                        if let Ok(t) = String::from_utf8(v) {
                            texts += 1;
                            taken += usize::from(fast_agrees(&t));
                        }
                    }
                }
            }
        }
        // Some corruptions leave a valid event (another digit, a whitespace), most do not
        // (30,034 of 202,376 texts taken).
        assert!(taken > 1000 && taken < texts / 4, "{taken} of {texts}");
    }

    #[test]
    fn event_kind_names_match_serialized_type() {
        let v = with(
            base("session.ended"),
            json!({"session_id": "s", "client_id": "c",
            "agent_id": 3, "result": "not_managed"}),
        );
        let e = Event::from_value(v).unwrap();
        let json: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(json["type"], json!(e.kind().as_str()));
    }
}
