//! The shared vocabulary of Vigía: the events that come in (contract §2), the facts and notifications
//! that come out (contract §3–4), the deterministic ids that make outputs idempotent, and the names of
//! the Kafka topics between the stages.
//!
//! What it does: strict, field-naming validation of incoming events ([`Event::from_json`]), their
//! canonical JSON form (what ingest writes to Kafka), and a JSON Schema for each event type
//! ([`event_json_schemas`]).
//!
//! [`record`]: decoding a consumed Kafka record, and the bounded [`DeadLetter`] of one a stage
//! cannot use (shared by the processors and the sink).
//!
//! What it does not: any I/O. Every stage depends on this crate; it depends on none of them.

mod event;
mod ids;
mod output;
pub mod record;
pub mod rfc3339;
mod topics;

pub use event::{
    event_json_schemas, event_json_schemas_with, Channel, ConversationAssigned, ConversationClosed,
    EntityId, Event, EventKind, FieldError, FieldLimits, LeadCreated, LeadFollowUpScheduled,
    LeadSource, LeadStatus, LeadStatusChanged, MessageReceived, MessageSent, Payload, Role,
    SessionEnded, SessionRef, SessionResult, TenantId, UserId, UserUpserted, ENTITY_ID_BYTES,
    EVENT_TYPES, PHONE_NUMBER_CHARS, TIME_ZONE_CHARS,
};
pub use ids::derive_id;
pub use output::{
    Action, ActivityLevel, Audience, DeadLetter, LeadScore, Notification, NotificationType,
    Priority, ResponseTimeSample, ResponseTimeStats, SellerMetrics, TeamResponseTimes,
};
pub use record::{
    dead_letter_key, decode_event, decode_json, DeadLetterReason, Origin, RecordError,
    DEAD_LETTER_ERROR_BYTES, DEAD_LETTER_KEY_BYTES, DEAD_LETTER_PAYLOAD_BYTES, MAX_RECORD_BYTES,
};
pub use topics::Topics;
