//! What the processors emit: notifications (contract §4.1) and facts for analysts (contract §4.2–4.5, §6).
//!
//! Every output carries a deterministic `id` derived from its cause (see [`crate::derive_id`]) and
//! timestamps taken from event time, never from the wall clock, so that reprocessing the same
//! events gives byte-identical records that the sinks and the inbox recognise as already seen.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{EntityId, LeadStatus, Role, TenantId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationType {
    UnansweredConversation,
    HotLead,
    FollowUpReminder,
    PerformanceAlert,
    SessionTimeout,
    DailyReport,
}

impl NotificationType {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::UnansweredConversation => "unanswered_conversation",
            NotificationType::HotLead => "hot_lead",
            NotificationType::FollowUpReminder => "follow_up_reminder",
            NotificationType::PerformanceAlert => "performance_alert",
            NotificationType::SessionTimeout => "session_timeout",
            NotificationType::DailyReport => "daily_report",
        }
    }

    /// The contract §4.1 priority of each type.
    pub fn default_priority(self) -> Priority {
        match self {
            NotificationType::UnansweredConversation => Priority::High,
            NotificationType::HotLead => Priority::Urgent,
            NotificationType::FollowUpReminder => Priority::Medium,
            NotificationType::PerformanceAlert => Priority::Medium,
            NotificationType::SessionTimeout => Priority::High,
            NotificationType::DailyReport => Priority::Low,
        }
    }
}

/// Ordered: `Low < Medium < High < Urgent`, so "minimum priority" filters compare directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Medium,
    High,
    Urgent,
}

/// Who a notification is for: one user, or everyone of a role in the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    User { user_id: UserId },
    Role { role: Role },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub label: String,
    /// What the front end should do: `open_chat`, `open_lead`, …
    pub action: String,
    #[serde(default)]
    pub params: serde_json::Value,
}

/// A notification for a person (contract §4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Deterministic from the cause: the same cause never notifies twice.
    pub id: Uuid,
    pub tenant_id: TenantId,
    #[serde(rename = "type")]
    pub kind: NotificationType,
    pub priority: Priority,
    pub audience: Audience,
    pub title: String,
    pub message: String,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default)]
    pub actions: Vec<Action>,
    /// Event time of the cause (for a deadline: the deadline itself).
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    /// Set on an update that withdraws an earlier notification (e.g. an unanswered conversation
    /// that has now been answered): the id of the one withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdraws: Option<Uuid>,
}

/// How long a customer waited for a seller's first non-automated reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseTimeSample {
    /// Derived from the customer message that started the wait.
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub conversation_id: EntityId,
    pub seller_id: UserId,
    /// The customer message that started the wait.
    pub customer_event_id: Uuid,
    /// The reply that ended it.
    pub reply_event_id: Uuid,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub waiting_since: DateTime<Utc>,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub replied_at: DateTime<Utc>,
    pub response_seconds: f64,
    /// Set on a *retraction*: a late event changed the wait, so the sample with this id no
    /// longer holds. A retraction repeats that sample's fields (so a sum over samples can
    /// subtract it) under its own id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retracts: Option<Uuid>,
}

impl ResponseTimeSample {
    /// The retraction of this sample (see [`ResponseTimeSample::retracts`]).
    pub fn retraction(&self) -> ResponseTimeSample {
        ResponseTimeSample {
            id: crate::derive_id("response_time/retraction", &[&self.id.to_string()]),
            retracts: Some(self.id),
            ..self.clone()
        }
    }
}

/// A lead's hot-lead score after an event that changed it, with its components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadScore {
    /// Derived from the lead and the event that caused the recomputation.
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub lead_id: EntityId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<UserId>,
    pub score: f64,
    pub source_score: f64,
    pub engagement_score: f64,
    pub recency_score: f64,
    pub intent_score: f64,
    pub location_score: f64,
    /// The event that caused this recomputation.
    pub cause_event_id: Uuid,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub computed_at: DateTime<Utc>,
    /// When the cause is a `lead.status_changed`: the status it set (so a status change to
    /// `converted` is a conversion by `seller_id` at `computed_at`). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_change: Option<LeadStatus>,
}

/// Response-time statistics of one seller over one window (contract §3.6). Percentiles use the
/// nearest-rank method: the p-th percentile of `n` sorted samples is the `ceil(p/100 · n)`-th.
/// Empty windows have `count = 0` and no statistics.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ResponseTimeStats {
    pub count: u32,
    pub mean_seconds: Option<f64>,
    pub p50_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
}

/// How busy a seller was in the last hour (messages handled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivityLevel {
    Low,
    Medium,
    High,
}

impl ActivityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityLevel::Low => "low",
            ActivityLevel::Medium => "medium",
            ActivityLevel::High => "high",
        }
    }
}

/// A snapshot of one seller's metrics and rank within the tenant at `snapshot_at` (event time).
/// Snapshots are facts, not updates in place: the current metrics of a seller are those of its
/// latest snapshot (`argMax(…, snapshot_at)` in ClickHouse).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SellerMetrics {
    /// Derived from (tenant, seller, snapshot_at).
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub seller_id: UserId,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub snapshot_at: DateTime<Utc>,
    /// The tenant's time zone (IANA) and the local date of `snapshot_at` in it: what "today" means.
    pub time_zone: String,
    pub day: NaiveDate,
    /// Conversations whose seller this is (assigned, else last replier).
    pub conversations_total: u32,
    /// … not closed since their last message.
    pub conversations_active: u32,
    /// … with a message today.
    pub conversations_today: u32,
    /// … whose customer is waiting past the unanswered deadline (live gauge).
    pub conversations_unanswered: u32,
    pub response_1h: ResponseTimeStats,
    pub response_today: ResponseTimeStats,
    pub response_7d: ResponseTimeStats,
    /// Sum over the seller's conversations of (last message − first message).
    pub total_chat_seconds: f64,
    /// Waits (customer messages awaiting a reply) over the last 7 days that ended or are overdue.
    pub waits_received: u32,
    /// … of which a seller's reply ended.
    pub waits_answered: u32,
    /// `waits_answered / waits_received`; none without waits.
    pub engagement_rate: Option<f64>,
    pub leads_generated: u32,
    pub leads_converted: u32,
    /// `leads_converted / leads_generated`; none without leads.
    pub conversion_rate: Option<f64>,
    /// Leads created today (tenant time) and, of all leads, those converted today.
    #[serde(default)]
    pub leads_generated_today: u32,
    #[serde(default)]
    pub leads_converted_today: u32,
    /// The seller's leads that are hot now: they notified as hot and their score has not fallen
    /// below the re-arm level since, and they are neither converted nor lost.
    #[serde(default)]
    pub hot_leads: u32,
    /// Messages handled in the last hour: customer messages in the seller's conversations plus
    /// the seller's own (non-automated) messages.
    pub messages_last_hour: u32,
    pub activity_level: ActivityLevel,
    /// 0–10, see the processors' `engine::sellers` documentation for the formula.
    pub productivity_score: f64,
    /// 1 = best productivity score in the tenant; ties by seller id.
    pub rank: u32,
    /// Sellers ranked in the tenant at `snapshot_at`.
    pub sellers_ranked: u32,
    /// The whole team's response times at `snapshot_at`: every ranked seller's samples taken
    /// together (a team percentile cannot be rebuilt from per-seller ones). The same in every
    /// snapshot of the tenant at one instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamResponseTimes>,
}

/// A tenant's response-time statistics over all its ranked sellers, per window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TeamResponseTimes {
    pub response_1h: ResponseTimeStats,
    pub response_today: ResponseTimeStats,
    pub response_7d: ResponseTimeStats,
}

/// A record that a stage could not process, kept with its origin so nothing is silently lost.
/// Bounded whatever the record held (see [`crate::record`]): build one with
/// [`DeadLetter::of_record`] or [`DeadLetter::of_output`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub stage: String,
    /// Where the refused record was read; for a refused output, where it was going.
    pub topic: String,
    /// For a refused output: the consumed position that caused it.
    pub partition: i32,
    pub offset: i64,
    /// Why, in words (at most [`crate::DEAD_LETTER_ERROR_BYTES`]).
    pub error: String,
    /// The refused payload as text (lossy if it was not UTF-8), its first
    /// [`crate::DEAD_LETTER_PAYLOAD_BYTES`] only.
    pub payload: String,
    /// Why, as a label. Absent in dead letters written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<crate::DeadLetterReason>,
    /// The refused record's tenant, when its payload or key names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    /// Length in bytes of the whole refused payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<u64>,
    /// SHA-1 (hex) of the whole refused payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha1: Option<String>,
    /// `payload` is only the beginning of the refused payload.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
    /// The dead letter's own id, for a refused output (which has no offset of its own); absent
    /// for a consumed record, whose origin identifies it (see [`DeadLetter::row_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// The refused record's own Kafka timestamp. It is the dead letter's time in ClickHouse:
    /// a stage that re-reads the record after a crash writes the same dead letter again, and
    /// only a time taken from the origin (not the wall clock) lets the sink recognise it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_timestamp: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notification_json_matches_the_spec_shape() {
        let n = Notification {
            id: Uuid::nil(),
            tenant_id: 42,
            kind: NotificationType::UnansweredConversation,
            priority: Priority::High,
            audience: Audience::User { user_id: 123 },
            title: "t".into(),
            message: "m".into(),
            data: json!({}),
            actions: vec![],
            created_at: "2026-02-27T15:00:00Z".parse().unwrap(),
            withdraws: None,
        };
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["type"], "unanswered_conversation");
        assert_eq!(v["audience"], json!({"user_id": 123}));
        assert!(v.get("withdraws").is_none());
        let role: Audience = serde_json::from_value(json!({"role": "ceo"})).unwrap();
        assert_eq!(role, Audience::Role { role: Role::Ceo });
        let back: Notification = serde_json::from_value(v).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn priorities_are_ordered() {
        assert!(Priority::Low < Priority::Medium && Priority::High < Priority::Urgent);
    }
}
