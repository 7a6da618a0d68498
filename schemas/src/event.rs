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

/// A decoder of valid events straight from JSON text, without the [`Value`] tree, the
/// field-by-field error collection and the error paths of [`Event::from_value`]: the one
/// behind [`Event::from_json`] for all but invalid (or unusual) events.
///
/// It takes only a JSON object with the envelope's four fields and exactly the fields of its
/// type, each once, none `null`, every value of its type; for that input it gives what
/// [`Event::from_value`] gives (the values go through the same `Deserialize` code, and
/// [`EntityId`] through a visitor with its rules). Anything else gives `None` (tested against
/// `from_value`).
mod fast {
    use std::fmt;

    use chrono::{DateTime, Utc};
    use serde::de::{self, Deserializer, Visitor};
    use serde::Deserialize;
    use uuid::Uuid;

    use super::*;

    pub(super) fn decode(text: &str) -> Option<Event> {
        serde_json::from_str::<Flat>(text).ok()?.into_event()
    }

    /// Every field of every event type, each optional.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Flat {
        #[serde(default, deserialize_with = "present")]
        event_id: Option<Uuid>,
        #[serde(rename = "type", default, deserialize_with = "present")]
        kind: Option<Kind>,
        #[serde(default, deserialize_with = "present")]
        tenant_id: Option<TenantId>,
        #[serde(default, deserialize_with = "present_time")]
        occurred_at: Option<DateTime<Utc>>,
        #[serde(default, deserialize_with = "present")]
        conversation_id: Option<Entity>,
        #[serde(default, deserialize_with = "present")]
        lead_id: Option<Entity>,
        #[serde(default, deserialize_with = "present")]
        session_id: Option<Entity>,
        #[serde(default, deserialize_with = "present")]
        client_id: Option<Entity>,
        #[serde(default, deserialize_with = "present")]
        channel: Option<Channel>,
        #[serde(default, deserialize_with = "present")]
        seller_id: Option<UserId>,
        #[serde(default, deserialize_with = "present")]
        agent_id: Option<UserId>,
        #[serde(default, deserialize_with = "present")]
        user_id: Option<UserId>,
        #[serde(default, deserialize_with = "present")]
        phone_number: Option<String>,
        #[serde(default, deserialize_with = "present")]
        text: Option<String>,
        #[serde(default, deserialize_with = "present")]
        automated: Option<bool>,
        #[serde(default, deserialize_with = "present")]
        source: Option<LeadSource>,
        #[serde(default, deserialize_with = "present")]
        name: Option<String>,
        #[serde(default, deserialize_with = "present")]
        location: Option<String>,
        #[serde(default, deserialize_with = "present")]
        estimated_value: Option<f64>,
        #[serde(default, deserialize_with = "present")]
        status: Option<LeadStatus>,
        #[serde(default, deserialize_with = "present_time")]
        due_at: Option<DateTime<Utc>>,
        #[serde(default, deserialize_with = "present")]
        note: Option<String>,
        #[serde(default, deserialize_with = "present")]
        role: Option<Role>,
        #[serde(default, deserialize_with = "present")]
        time_zone: Option<String>,
        #[serde(default, deserialize_with = "present")]
        active: Option<bool>,
        #[serde(default, deserialize_with = "present")]
        result: Option<SessionResult>,
    }

    /// A field that is there: its value, never `null` (which `from_value` takes as absent for
    /// optional fields and refuses for the others: left to it).
    fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        T::deserialize(d).map(Some)
    }

    /// [`present`] for a timestamp, read as chrono reads it (see [`crate::rfc3339`]).
    fn present_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        d.deserialize_str(crate::rfc3339::Visitor).map(Some)
    }

    impl Flat {
        fn into_event(mut self) -> Option<Event> {
            let payload = match self.kind.take()?.0 {
                EventKind::MessageReceived => Payload::MessageReceived(MessageReceived {
                    conversation_id: self.conversation_id.take()?.0,
                    channel: self.channel.take()?,
                    seller_id: self.seller_id.take(),
                    phone_number: self.phone_number.take(),
                    text: self.text.take(),
                }),
                EventKind::MessageSent => Payload::MessageSent(MessageSent {
                    conversation_id: self.conversation_id.take()?.0,
                    seller_id: self.seller_id.take()?,
                    automated: self.automated.take().unwrap_or(false),
                }),
                EventKind::ConversationAssigned => {
                    Payload::ConversationAssigned(ConversationAssigned {
                        conversation_id: self.conversation_id.take()?.0,
                        seller_id: self.seller_id.take()?,
                    })
                }
                EventKind::ConversationClosed => Payload::ConversationClosed(ConversationClosed {
                    conversation_id: self.conversation_id.take()?.0,
                }),
                EventKind::LeadCreated => Payload::LeadCreated(LeadCreated {
                    lead_id: self.lead_id.take()?.0,
                    source: self.source.take()?,
                    seller_id: self.seller_id.take(),
                    name: self.name.take(),
                    phone_number: self.phone_number.take(),
                    location: self.location.take(),
                    estimated_value: self.estimated_value.take(),
                    conversation_id: self.conversation_id.take().map(|e| e.0),
                }),
                EventKind::LeadStatusChanged => Payload::LeadStatusChanged(LeadStatusChanged {
                    lead_id: self.lead_id.take()?.0,
                    status: self.status.take()?,
                }),
                EventKind::LeadFollowUpScheduled => {
                    Payload::LeadFollowUpScheduled(LeadFollowUpScheduled {
                        lead_id: self.lead_id.take()?.0,
                        seller_id: self.seller_id.take()?,
                        due_at: self.due_at.take()?,
                        note: self.note.take(),
                    })
                }
                EventKind::UserUpserted => Payload::UserUpserted(UserUpserted {
                    user_id: self.user_id.take()?,
                    name: self.name.take()?,
                    role: self.role.take()?,
                    time_zone: self.time_zone.take(),
                    active: self.active.take(),
                }),
                EventKind::SessionStarted => Payload::SessionStarted(self.session_ref()?),
                EventKind::SessionHeartbeat => Payload::SessionHeartbeat(self.session_ref()?),
                EventKind::SessionEnded => Payload::SessionEnded(SessionEnded {
                    session_id: self.session_id.take()?.0,
                    client_id: self.client_id.take()?.0,
                    agent_id: self.agent_id.take()?,
                    result: self.result.take()?,
                }),
            };
            // A field of another type: `from_value` refuses it as unknown.
            if !self.no_payload_field_left() {
                return None;
            }
            Some(Event {
                event_id: self.event_id?,
                tenant_id: self.tenant_id?,
                occurred_at: self.occurred_at?,
                payload,
            })
        }

        fn session_ref(&mut self) -> Option<SessionRef> {
            Some(SessionRef {
                session_id: self.session_id.take()?.0,
                client_id: self.client_id.take()?.0,
                agent_id: self.agent_id.take()?,
            })
        }

        fn no_payload_field_left(&self) -> bool {
            let Flat {
                event_id: _,
                kind: _,
                tenant_id: _,
                occurred_at: _,
                conversation_id,
                lead_id,
                session_id,
                client_id,
                channel,
                seller_id,
                agent_id,
                user_id,
                phone_number,
                text,
                automated,
                source,
                name,
                location,
                estimated_value,
                status,
                due_at,
                note,
                role,
                time_zone,
                active,
                result,
            } = self;
            conversation_id.is_none()
                && lead_id.is_none()
                && session_id.is_none()
                && client_id.is_none()
                && channel.is_none()
                && seller_id.is_none()
                && agent_id.is_none()
                && user_id.is_none()
                && phone_number.is_none()
                && text.is_none()
                && automated.is_none()
                && source.is_none()
                && name.is_none()
                && location.is_none()
                && estimated_value.is_none()
                && status.is_none()
                && due_at.is_none()
                && note.is_none()
                && role.is_none()
                && time_zone.is_none()
                && active.is_none()
                && result.is_none()
        }
    }

    /// `type`, one of [`EVENT_TYPES`].
    struct Kind(EventKind);

    impl<'de> Deserialize<'de> for Kind {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Kind;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an event type")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
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
                    KINDS
                        .into_iter()
                        .find(|k| k.as_str() == v)
                        .map(Kind)
                        .ok_or_else(|| E::custom("unknown event type"))
                }
            }
            d.deserialize_str(V)
        }
    }

    /// An [`EntityId`] under the rules of its `Deserialize`: a non-empty string of at most
    /// [`ENTITY_ID_BYTES`], or a non-negative integer (kept as its decimal text).
    struct Entity(EntityId);

    impl<'de> Deserialize<'de> for Entity {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Entity;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an entity id")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Entity, E> {
                    if !v.is_empty() && v.len() <= ENTITY_ID_BYTES {
                        Ok(Entity(EntityId(SmolStr::new(v))))
                    } else {
                        Err(E::custom("not an entity id"))
                    }
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Entity, E> {
                    Ok(Entity(EntityId(v.to_smolstr())))
                }
            }
            d.deserialize_any(V)
        }
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
