//! The shared vocabulary of Vigía: the events that come in (contract §2), the facts and notifications
//! that come out (contract §3–4), the deterministic ids that make outputs idempotent, and the names of
//! the Kafka topics between the stages.
//!
//! What it does: strict, field-naming validation of incoming events ([`Event::from_json`]), their
//! canonical JSON form (what ingest writes to Kafka), and a JSON Schema for each event type
//! ([`event_json_schemas`]).
//!
//! What it does not: any I/O. Every stage depends on this crate; it depends on none of them.

mod event;
mod ids;
mod output;
mod topics;

pub use event::{
    event_json_schemas, Channel, ConversationAssigned, ConversationClosed, EntityId, Event,
    EventKind, FieldError, LeadCreated, LeadFollowUpScheduled, LeadSource, LeadStatus,
    LeadStatusChanged, MessageReceived, MessageSent, Payload, Role, SessionEnded, SessionRef,
    SessionResult, TenantId, UserId, UserUpserted, EVENT_TYPES,
};
pub use ids::derive_id;
pub use output::{
    Action, ActivityLevel, Audience, DeadLetter, LeadScore, Notification, NotificationType,
    Priority, ResponseTimeSample, ResponseTimeStats, SellerMetrics, TeamResponseTimes,
};
pub use topics::Topics;
