//! One row type per table, and the pure mapping from the records on Kafka to rows.
//!
//! Times are sent as `u32` seconds (ClickHouse `DateTime`; 18.16 has no `DateTime64`), clamped to
//! what `DateTime` can hold, with the milliseconds in a separate `*_ms` column. Absent optional
//! values become `0` / `""` so analysts compare against plain values (except `withdraws`, where
//! NULL reads clearly as "withdraws nothing").

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;
use vigia_schemas::{
    Audience, DeadLetter, Event, LeadScore, Notification, Payload, ResponseTimeSample,
    SellerMetrics,
};

/// Where a record was read from: kept on every row as lineage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KafkaOrigin {
    pub partition: i32,
    pub offset: i64,
}

/// A row of one of the sink's tables: what exactly-once needs to know about it.
pub trait SinkRow:
    clickhouse::Row + clickhouse::RowOwned + Serialize + Clone + Send + Sync
{
    /// Table name (inside the configured database).
    const TABLE: &'static str;
    /// Column holding [`SinkRow::id`].
    const ID_COLUMN: &'static str;
    /// The event-time column: part of the sorting key, and the same for every copy of a row,
    /// which lets the existence check read only the time range of a batch.
    const TIME_COLUMN: &'static str;
    /// Deterministic id: two deliveries of the same record have the same id.
    fn id(&self) -> Uuid;
    fn tenant_id(&self) -> u64;
    /// Value of [`SinkRow::TIME_COLUMN`], in seconds since the epoch.
    fn time_secs(&self) -> u32;
}

/// Seconds since the epoch as ClickHouse `DateTime` holds them (1970 to 2106).
pub fn datetime_secs(t: &DateTime<Utc>) -> u32 {
    t.timestamp().clamp(0, u32::MAX as i64) as u32
}

/// Milliseconds since the epoch, 0 before 1970.
pub fn datetime_millis(t: &DateTime<Utc>) -> u64 {
    t.timestamp_millis().max(0) as u64
}

/// `events`: one CRM event.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize)]
pub struct EventRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    pub tenant_id: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: u32,
    pub occurred_at_ms: u64,
    pub conversation_id: String,
    pub lead_id: String,
    pub seller_id: u64,
    pub payload: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

impl EventRow {
    pub fn new(event: &Event, origin: KafkaOrigin) -> EventRow {
        let (conversation_id, lead_id, seller_id) = match &event.payload {
            Payload::MessageReceived(p) => (Some(&p.conversation_id), None, p.seller_id),
            Payload::MessageSent(p) => (Some(&p.conversation_id), None, Some(p.seller_id)),
            Payload::ConversationAssigned(p) => (Some(&p.conversation_id), None, Some(p.seller_id)),
            Payload::ConversationClosed(p) => (Some(&p.conversation_id), None, None),
            Payload::LeadCreated(p) => (p.conversation_id.as_ref(), Some(&p.lead_id), p.seller_id),
            Payload::LeadStatusChanged(p) => (None, Some(&p.lead_id), None),
            Payload::LeadFollowUpScheduled(p) => (None, Some(&p.lead_id), Some(p.seller_id)),
            // The user may be a CEO or a secretary: `seller_id` would mislead, `payload` has it.
            Payload::UserUpserted(_) => (None, None, None),
            Payload::SessionStarted(p) | Payload::SessionHeartbeat(p) => {
                (None, None, Some(p.agent_id))
            }
            Payload::SessionEnded(p) => (None, None, Some(p.agent_id)),
        };
        EventRow {
            event_id: event.event_id,
            tenant_id: event.tenant_id,
            kind: event.kind().as_str().to_string(),
            occurred_at: datetime_secs(&event.occurred_at),
            occurred_at_ms: datetime_millis(&event.occurred_at),
            conversation_id: conversation_id.map(|c| c.0.to_string()).unwrap_or_default(),
            lead_id: lead_id.map(|l| l.0.to_string()).unwrap_or_default(),
            seller_id: seller_id.unwrap_or(0),
            payload: event.to_json(),
            kafka_partition: origin.partition,
            kafka_offset: origin.offset,
        }
    }
}

impl SinkRow for EventRow {
    const TABLE: &'static str = "events";
    const ID_COLUMN: &'static str = "event_id";
    const TIME_COLUMN: &'static str = "occurred_at";
    fn id(&self) -> Uuid {
        self.event_id
    }
    fn tenant_id(&self) -> u64 {
        self.tenant_id
    }
    fn time_secs(&self) -> u32 {
        self.occurred_at
    }
}

/// `response_times`: one answered wait.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize)]
pub struct ResponseTimeRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub id: Uuid,
    pub tenant_id: u64,
    pub conversation_id: String,
    pub seller_id: u64,
    #[serde(with = "clickhouse::serde::uuid")]
    pub customer_event_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub reply_event_id: Uuid,
    pub waiting_since: u32,
    pub replied_at: u32,
    pub replied_at_ms: u64,
    pub response_seconds: f64,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    /// 1 for a sample, -1 for a retraction.
    pub sign: i8,
    #[serde(with = "clickhouse::serde::uuid")]
    pub retracts: Uuid,
}

impl ResponseTimeRow {
    pub fn new(s: &ResponseTimeSample, origin: KafkaOrigin) -> ResponseTimeRow {
        ResponseTimeRow {
            id: s.id,
            tenant_id: s.tenant_id,
            conversation_id: s.conversation_id.0.to_string(),
            seller_id: s.seller_id,
            customer_event_id: s.customer_event_id,
            reply_event_id: s.reply_event_id,
            waiting_since: datetime_secs(&s.waiting_since),
            replied_at: datetime_secs(&s.replied_at),
            replied_at_ms: datetime_millis(&s.replied_at),
            response_seconds: s.response_seconds,
            kafka_partition: origin.partition,
            kafka_offset: origin.offset,
            sign: if s.retracts.is_some() { -1 } else { 1 },
            retracts: s.retracts.unwrap_or(Uuid::nil()),
        }
    }
}

impl SinkRow for ResponseTimeRow {
    const TABLE: &'static str = "response_times";
    const ID_COLUMN: &'static str = "id";
    const TIME_COLUMN: &'static str = "replied_at";
    fn id(&self) -> Uuid {
        self.id
    }
    fn tenant_id(&self) -> u64 {
        self.tenant_id
    }
    fn time_secs(&self) -> u32 {
        self.replied_at
    }
}

/// `notifications`: one notification (or withdrawal).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize)]
pub struct NotificationRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub id: Uuid,
    pub tenant_id: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub priority: String,
    pub audience_user_id: u64,
    pub audience_role: String,
    pub title: String,
    pub message: String,
    pub data: String,
    pub actions: String,
    pub created_at: u32,
    pub created_at_ms: u64,
    #[serde(with = "clickhouse::serde::uuid::option")]
    pub withdraws: Option<Uuid>,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

/// The JSON name of a unit enum variant (`Priority::High` -> "high"), as the schemas spell it.
fn json_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

impl NotificationRow {
    pub fn new(n: &Notification, origin: KafkaOrigin) -> NotificationRow {
        let (audience_user_id, audience_role) = match &n.audience {
            Audience::User { user_id } => (*user_id, String::new()),
            Audience::Role { role } => (0, json_name(role)),
        };
        NotificationRow {
            id: n.id,
            tenant_id: n.tenant_id,
            kind: n.kind.as_str().to_string(),
            priority: json_name(&n.priority),
            audience_user_id,
            audience_role,
            title: n.title.clone(),
            message: n.message.clone(),
            data: n.data.to_string(),
            actions: serde_json::to_string(&n.actions).unwrap_or_else(|_| "[]".into()),
            created_at: datetime_secs(&n.created_at),
            created_at_ms: datetime_millis(&n.created_at),
            withdraws: n.withdraws,
            kafka_partition: origin.partition,
            kafka_offset: origin.offset,
        }
    }
}

impl SinkRow for NotificationRow {
    const TABLE: &'static str = "notifications";
    const ID_COLUMN: &'static str = "id";
    const TIME_COLUMN: &'static str = "created_at";
    fn id(&self) -> Uuid {
        self.id
    }
    fn tenant_id(&self) -> u64 {
        self.tenant_id
    }
    fn time_secs(&self) -> u32 {
        self.created_at
    }
}

/// `lead_scores`: one recomputation of a lead's score.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize)]
pub struct LeadScoreRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub id: Uuid,
    pub tenant_id: u64,
    pub lead_id: String,
    pub seller_id: u64,
    pub score: f64,
    pub source_score: f64,
    pub engagement_score: f64,
    pub recency_score: f64,
    pub intent_score: f64,
    pub location_score: f64,
    #[serde(with = "clickhouse::serde::uuid")]
    pub cause_event_id: Uuid,
    pub computed_at: u32,
    pub computed_at_ms: u64,
    /// The status a `lead.status_changed` cause set (`converted`: a conversion); `''` otherwise.
    pub status_change: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

impl LeadScoreRow {
    pub fn new(s: &LeadScore, origin: KafkaOrigin) -> LeadScoreRow {
        LeadScoreRow {
            id: s.id,
            tenant_id: s.tenant_id,
            lead_id: s.lead_id.0.to_string(),
            seller_id: s.seller_id.unwrap_or(0),
            score: s.score,
            source_score: s.source_score,
            engagement_score: s.engagement_score,
            recency_score: s.recency_score,
            intent_score: s.intent_score,
            location_score: s.location_score,
            cause_event_id: s.cause_event_id,
            computed_at: datetime_secs(&s.computed_at),
            computed_at_ms: datetime_millis(&s.computed_at),
            status_change: s
                .status_change
                .map_or_else(String::new, |st| st.as_str().to_string()),
            kafka_partition: origin.partition,
            kafka_offset: origin.offset,
        }
    }
}

/// `seller_metrics`: one snapshot of a seller's metrics and rank.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize)]
pub struct SellerMetricsRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub id: Uuid,
    pub tenant_id: u64,
    pub seller_id: u64,
    pub snapshot_at: u32,
    pub snapshot_at_ms: u64,
    pub time_zone: String,
    /// ClickHouse `Date`: days since 1970-01-01.
    pub day: u16,
    pub conversations_total: u32,
    pub conversations_active: u32,
    pub conversations_today: u32,
    pub conversations_unanswered: u32,
    pub response_1h_count: u32,
    pub response_1h_mean: Option<f64>,
    pub response_1h_p50: Option<f64>,
    pub response_1h_p90: Option<f64>,
    pub response_1h_max: Option<f64>,
    pub response_today_count: u32,
    pub response_today_mean: Option<f64>,
    pub response_today_p50: Option<f64>,
    pub response_today_p90: Option<f64>,
    pub response_today_max: Option<f64>,
    pub response_7d_count: u32,
    pub response_7d_mean: Option<f64>,
    pub response_7d_p50: Option<f64>,
    pub response_7d_p90: Option<f64>,
    pub response_7d_max: Option<f64>,
    pub total_chat_seconds: f64,
    pub waits_received: u32,
    pub waits_answered: u32,
    pub engagement_rate: Option<f64>,
    pub leads_generated: u32,
    pub leads_converted: u32,
    pub conversion_rate: Option<f64>,
    pub messages_last_hour: u32,
    pub activity_level: String,
    pub productivity_score: f64,
    pub rank: u32,
    pub sellers_ranked: u32,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

impl SellerMetricsRow {
    pub fn new(m: &SellerMetrics, origin: KafkaOrigin) -> SellerMetricsRow {
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
        SellerMetricsRow {
            id: m.id,
            tenant_id: m.tenant_id,
            seller_id: m.seller_id,
            snapshot_at: datetime_secs(&m.snapshot_at),
            snapshot_at_ms: datetime_millis(&m.snapshot_at),
            time_zone: m.time_zone.clone(),
            day: (m.day - epoch).num_days().clamp(0, u16::MAX as i64) as u16,
            conversations_total: m.conversations_total,
            conversations_active: m.conversations_active,
            conversations_today: m.conversations_today,
            conversations_unanswered: m.conversations_unanswered,
            response_1h_count: m.response_1h.count,
            response_1h_mean: m.response_1h.mean_seconds,
            response_1h_p50: m.response_1h.p50_seconds,
            response_1h_p90: m.response_1h.p90_seconds,
            response_1h_max: m.response_1h.max_seconds,
            response_today_count: m.response_today.count,
            response_today_mean: m.response_today.mean_seconds,
            response_today_p50: m.response_today.p50_seconds,
            response_today_p90: m.response_today.p90_seconds,
            response_today_max: m.response_today.max_seconds,
            response_7d_count: m.response_7d.count,
            response_7d_mean: m.response_7d.mean_seconds,
            response_7d_p50: m.response_7d.p50_seconds,
            response_7d_p90: m.response_7d.p90_seconds,
            response_7d_max: m.response_7d.max_seconds,
            total_chat_seconds: m.total_chat_seconds,
            waits_received: m.waits_received,
            waits_answered: m.waits_answered,
            engagement_rate: m.engagement_rate,
            leads_generated: m.leads_generated,
            leads_converted: m.leads_converted,
            conversion_rate: m.conversion_rate,
            messages_last_hour: m.messages_last_hour,
            activity_level: m.activity_level.as_str().to_string(),
            productivity_score: m.productivity_score,
            rank: m.rank,
            sellers_ranked: m.sellers_ranked,
            kafka_partition: origin.partition,
            kafka_offset: origin.offset,
        }
    }
}

impl SinkRow for SellerMetricsRow {
    const TABLE: &'static str = "seller_metrics";
    const ID_COLUMN: &'static str = "id";
    const TIME_COLUMN: &'static str = "snapshot_at";
    fn id(&self) -> Uuid {
        self.id
    }
    fn tenant_id(&self) -> u64 {
        self.tenant_id
    }
    fn time_secs(&self) -> u32 {
        self.snapshot_at
    }
}

impl SinkRow for LeadScoreRow {
    const TABLE: &'static str = "lead_scores";
    const ID_COLUMN: &'static str = "id";
    const TIME_COLUMN: &'static str = "computed_at";
    fn id(&self) -> Uuid {
        self.id
    }
    fn tenant_id(&self) -> u64 {
        self.tenant_id
    }
    fn time_secs(&self) -> u32 {
        self.computed_at
    }
}

/// `dead_letters`: one record a stage refused.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize)]
pub struct DeadLetterRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub id: Uuid,
    pub tenant_id: u64,
    pub stage: String,
    pub origin_topic: String,
    pub origin_partition: i32,
    pub origin_offset: i64,
    pub error: String,
    pub payload: String,
    pub failed_at: u32,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    /// [`vigia_schemas::DeadLetterReason`] as text; `''` for dead letters written before it.
    pub reason: String,
    /// Length of the whole refused payload (`payload` may be its beginning only); 0 if unknown.
    pub payload_bytes: u64,
    /// SHA-1 (hex) of the whole refused payload; `''` if unknown.
    pub payload_sha1: String,
}

impl DeadLetterRow {
    /// The row's time is the refused record's own Kafka timestamp (`origin_timestamp`), the
    /// same however often a stage re-reads it and writes the dead letter again, so the copy is
    /// recognised as already stored. `record_timestamp_ms`, the dead-letter record's timestamp,
    /// stands in for dead letters written before `origin_timestamp` existed.
    pub fn new(d: &DeadLetter, record_timestamp_ms: i64, origin: KafkaOrigin) -> DeadLetterRow {
        let at_ms = d
            .origin_timestamp
            .map(|t| t.timestamp_millis())
            .unwrap_or(record_timestamp_ms);
        DeadLetterRow {
            id: d.row_id(),
            tenant_id: d.tenant_id.unwrap_or_else(|| tenant_of(&d.payload)),
            stage: d.stage.clone(),
            origin_topic: d.topic.clone(),
            origin_partition: d.partition,
            origin_offset: d.offset,
            error: d.error.clone(),
            payload: d.payload.clone(),
            failed_at: (at_ms.max(0) / 1000).min(u32::MAX as i64) as u32,
            kafka_partition: origin.partition,
            kafka_offset: origin.offset,
            reason: d
                .reason
                .map_or_else(String::new, |r| r.as_str().to_string()),
            payload_bytes: d.payload_bytes.unwrap_or(0),
            payload_sha1: d.payload_sha1.clone().unwrap_or_default(),
        }
    }
}

/// The `tenant_id` of a refused record from before dead letters named it, when it is a JSON object that has one.
fn tenant_of(payload: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("tenant_id").and_then(|t| t.as_u64()))
        .unwrap_or(0)
}

impl SinkRow for DeadLetterRow {
    const TABLE: &'static str = "dead_letters";
    const ID_COLUMN: &'static str = "id";
    const TIME_COLUMN: &'static str = "failed_at";
    fn id(&self) -> Uuid {
        self.id
    }
    fn tenant_id(&self) -> u64 {
        self.tenant_id
    }
    fn time_secs(&self) -> u32 {
        self.failed_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vigia_schemas::{derive_id, Action, NotificationType, Priority, Role};

    const ORIGIN: KafkaOrigin = KafkaOrigin {
        partition: 3,
        offset: 77,
    };

    fn event(v: serde_json::Value) -> Event {
        let mut base = json!({"event_id": "0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d", "tenant_id": 42,
            "occurred_at": "2026-02-27T15:00:00.250Z"});
        for (k, val) in v.as_object().unwrap() {
            base[k] = val.clone();
        }
        Event::from_value(base).unwrap()
    }

    #[test]
    fn event_row_keeps_envelope_entities_and_canonical_json() {
        let e = event(json!({"type": "message.received", "conversation_id": 17,
            "channel": "whatsapp", "seller_id": 7, "text": "hola"}));
        let r = EventRow::new(&e, ORIGIN);
        assert_eq!(r.event_id, e.event_id);
        assert_eq!(r.tenant_id, 42);
        assert_eq!(r.kind, "message.received");
        assert_eq!(r.occurred_at, 1_772_204_400);
        assert_eq!(r.occurred_at_ms, 1_772_204_400_250);
        assert_eq!(r.conversation_id, "17");
        assert_eq!(r.lead_id, "");
        assert_eq!(r.seller_id, 7);
        assert_eq!(Event::from_json(&r.payload).unwrap(), e);
        assert_eq!((r.kafka_partition, r.kafka_offset), (3, 77));
    }

    #[test]
    fn seller_metrics_row_flattens_the_windows_and_keeps_empty_statistics_null() {
        let m: SellerMetrics = serde_json::from_value(json!({
            "id": "0b9a3c52-8a4e-4d1f-9b27-3e440c81a95d", "tenant_id": 42, "seller_id": 7,
            "snapshot_at": "2026-03-29T12:01:00Z", "time_zone": "Europe/Madrid",
            "day": "2026-03-29", "conversations_total": 5, "conversations_active": 4,
            "conversations_today": 3, "conversations_unanswered": 1,
            "response_1h": {"count": 0, "mean_seconds": null, "p50_seconds": null,
                            "p90_seconds": null, "max_seconds": null},
            "response_today": {"count": 2, "mean_seconds": 90.0, "p50_seconds": 60.0,
                               "p90_seconds": 120.0, "max_seconds": 120.0},
            "response_7d": {"count": 3, "mean_seconds": 100.0, "p50_seconds": 60.0,
                            "p90_seconds": 140.0, "max_seconds": 140.0},
            "total_chat_seconds": 3600.5, "waits_received": 4, "waits_answered": 3,
            "engagement_rate": 0.75, "leads_generated": 0, "leads_converted": 0,
            "conversion_rate": null, "messages_last_hour": 12, "activity_level": "medium",
            "productivity_score": 7.25, "rank": 2, "sellers_ranked": 9
        }))
        .unwrap();
        let r = SellerMetricsRow::new(&m, ORIGIN);
        assert_eq!(r.id, m.id);
        assert_eq!(r.snapshot_at, 1_774_785_660);
        assert_eq!(r.snapshot_at_ms, 1_774_785_660_000);
        // 2026-03-29 is day 20541 since 1970-01-01.
        assert_eq!(r.day, 20_541);
        assert_eq!((r.response_1h_count, r.response_1h_mean), (0, None));
        assert_eq!(
            (
                r.response_today_count,
                r.response_today_p90,
                r.response_7d_max
            ),
            (2, Some(120.0), Some(140.0))
        );
        assert_eq!((r.engagement_rate, r.conversion_rate), (Some(0.75), None));
        assert_eq!(r.activity_level, "medium");
        assert_eq!((r.rank, r.sellers_ranked), (2, 9));
        assert_eq!(r.time_secs(), r.snapshot_at);
    }

    #[test]
    fn event_row_entities_per_type() {
        let cases = [
            (
                json!({"type": "message.received", "conversation_id": "c", "channel": "web"}),
                ("c", "", 0),
            ),
            (
                json!({"type": "message.sent", "conversation_id": "c", "seller_id": 5}),
                ("c", "", 5),
            ),
            (
                json!({"type": "conversation.assigned", "conversation_id": "c", "seller_id": 6}),
                ("c", "", 6),
            ),
            (
                json!({"type": "conversation.closed", "conversation_id": "c"}),
                ("c", "", 0),
            ),
            (
                json!({"type": "lead.created", "lead_id": "l", "source": "META_ADS",
                "conversation_id": "c", "seller_id": 8}),
                ("c", "l", 8),
            ),
            (
                json!({"type": "lead.status_changed", "lead_id": "l", "status": "converted"}),
                ("", "l", 0),
            ),
            (
                json!({"type": "lead.follow_up_scheduled", "lead_id": "l", "seller_id": 9,
                "due_at": "2026-03-01T10:00:00Z"}),
                ("", "l", 9),
            ),
            (
                json!({"type": "user.upserted", "user_id": 1, "name": "Ana", "role": "ceo"}),
                ("", "", 0),
            ),
            (
                json!({"type": "session.heartbeat", "session_id": "s", "client_id": "k",
                "agent_id": 11}),
                ("", "", 11),
            ),
            (
                json!({"type": "session.ended", "session_id": "s", "client_id": "k",
                "agent_id": 12, "result": "managed"}),
                ("", "", 12),
            ),
        ];
        for (v, (conv, lead, seller)) in cases {
            let t = v["type"].as_str().unwrap().to_string();
            let r = EventRow::new(&event(v), ORIGIN);
            assert_eq!(r.kind, t);
            assert_eq!(
                (r.conversation_id.as_str(), r.lead_id.as_str(), r.seller_id),
                (conv, lead, seller),
                "{t}"
            );
        }
    }

    #[test]
    fn times_outside_datetime_range_are_clamped() {
        let before: DateTime<Utc> = "1960-01-01T00:00:00Z".parse().unwrap();
        assert_eq!((datetime_secs(&before), datetime_millis(&before)), (0, 0));
        let after: DateTime<Utc> = "2200-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(datetime_secs(&after), u32::MAX);
    }

    #[test]
    fn notification_row_flattens_audience_and_json_fields() {
        let n = Notification {
            id: Uuid::from_u128(1),
            tenant_id: 42,
            kind: NotificationType::HotLead,
            priority: Priority::Urgent,
            audience: Audience::Role { role: Role::Ceo },
            title: "t".into(),
            message: "m".into(),
            data: json!({"lead_id": "l1", "score": 0.85}),
            actions: vec![Action {
                label: "Abrir".into(),
                action: "open_lead".into(),
                params: json!({"lead_id": "l1"}),
            }],
            created_at: "2026-02-27T15:00:01.500Z".parse().unwrap(),
            withdraws: Some(Uuid::from_u128(2)),
        };
        let r = NotificationRow::new(&n, ORIGIN);
        assert_eq!(r.kind, "hot_lead");
        assert_eq!(r.priority, "urgent");
        assert_eq!((r.audience_user_id, r.audience_role.as_str()), (0, "ceo"));
        let data: serde_json::Value = serde_json::from_str(&r.data).unwrap();
        assert_eq!(data, n.data);
        let actions: serde_json::Value = serde_json::from_str(&r.actions).unwrap();
        assert_eq!(actions[0]["action"], "open_lead");
        assert_eq!(
            (r.created_at, r.created_at_ms),
            (1_772_204_401, 1_772_204_401_500)
        );
        assert_eq!(r.withdraws, Some(Uuid::from_u128(2)));

        let to_user = Notification {
            audience: Audience::User { user_id: 123 },
            withdraws: None,
            ..n
        };
        let r = NotificationRow::new(&to_user, ORIGIN);
        assert_eq!((r.audience_user_id, r.audience_role.as_str()), (123, ""));
        assert_eq!(r.withdraws, None);
    }

    #[test]
    fn response_time_and_lead_score_rows() {
        let s = ResponseTimeSample {
            id: Uuid::from_u128(5),
            tenant_id: 1,
            conversation_id: "c".into(),
            seller_id: 9,
            customer_event_id: Uuid::from_u128(6),
            reply_event_id: Uuid::from_u128(7),
            waiting_since: "2026-02-27T15:00:00Z".parse().unwrap(),
            replied_at: "2026-02-27T15:02:00.125Z".parse().unwrap(),
            response_seconds: 120.125,
            retracts: None,
        };
        let r = ResponseTimeRow::new(&s, ORIGIN);
        assert_eq!(
            (r.waiting_since, r.replied_at),
            (1_772_204_400, 1_772_204_520)
        );
        assert_eq!(r.replied_at_ms, 1_772_204_520_125);
        assert_eq!(r.response_seconds, 120.125);
        assert_eq!((r.id(), r.time_secs()), (s.id, r.replied_at));

        let l = LeadScore {
            id: Uuid::from_u128(8),
            tenant_id: 1,
            lead_id: "l".into(),
            seller_id: None,
            score: 0.55,
            source_score: 0.3,
            engagement_score: 0.0,
            recency_score: 0.15,
            intent_score: 0.1,
            location_score: 0.0,
            cause_event_id: Uuid::from_u128(9),
            computed_at: "2026-02-27T15:00:00Z".parse().unwrap(),
            status_change: None,
        };
        let r = LeadScoreRow::new(&l, ORIGIN);
        assert_eq!(r.status_change, "");
        let converted = LeadScoreRow::new(
            &LeadScore {
                status_change: Some(vigia_schemas::LeadStatus::Converted),
                ..l.clone()
            },
            ORIGIN,
        );
        assert_eq!(converted.status_change, "converted");
        assert_eq!(r.seller_id, 0);
        assert_eq!(
            (r.score, r.source_score, r.recency_score),
            (0.55, 0.3, 0.15)
        );
        assert_eq!(r.cause_event_id, Uuid::from_u128(9));
    }

    #[test]
    fn dead_letter_row_id_is_deterministic_from_its_origin() {
        // As written before dead letters carried a reason, hash and tenant.
        let d: DeadLetter = serde_json::from_value(json!({
            "stage": "processors", "topic": "vigia.events", "partition": 1, "offset": 10,
            "error": "bad", "payload": r#"{"tenant_id": 42, "type": "x"}"#,
        }))
        .unwrap();
        let a = DeadLetterRow::new(&d, 1_772_204_400_999, ORIGIN);
        let b = DeadLetterRow::new(&d, 1_772_204_400_999, KafkaOrigin::default());
        assert_eq!(a.id, b.id);
        assert_eq!(a.tenant_id, 42);
        assert_eq!(a.failed_at, 1_772_204_400);
        // Written again later (a replay): the origin's time keeps the row identical.
        let first = DeadLetter {
            origin_timestamp: DateTime::from_timestamp_millis(1_772_204_000_500),
            ..d.clone()
        };
        let again = DeadLetterRow::new(&first, 1_772_209_999_000, ORIGIN);
        assert_eq!(again, DeadLetterRow::new(&first, 1_772_204_400_999, ORIGIN));
        assert_eq!(again.failed_at, 1_772_204_000);
        let other = DeadLetter {
            offset: 11,
            ..d.clone()
        };
        assert_ne!(DeadLetterRow::new(&other, 0, ORIGIN).id, a.id);
        let garbage = DeadLetter {
            payload: "\u{fffd}not json".into(),
            ..d
        };
        assert_eq!(DeadLetterRow::new(&garbage, 0, ORIGIN).tenant_id, 0);
    }

    #[test]
    fn a_bounded_dead_letter_keeps_its_tenant_reason_and_hash() {
        let payload = format!(r#"{{"tenant_id": 8, "text": "{}"}}"#, "x".repeat(100_000));
        let origin = vigia_schemas::Origin {
            topic: "vigia.events",
            partition: 1,
            offset: 10,
            timestamp: DateTime::from_timestamp_millis(1_772_204_000_500),
            key: Some(b"8"),
        };
        let d = DeadLetter::of_record(
            "processors",
            &origin,
            vigia_schemas::DeadLetterReason::TooLate,
            &"too late",
            payload.as_bytes(),
        );
        let r = DeadLetterRow::new(&d, 0, ORIGIN);
        assert_eq!(
            r.tenant_id, 8,
            "the truncated payload is no JSON: the letter says"
        );
        assert_eq!(r.reason, "too_late");
        assert_eq!(r.payload_bytes, payload.len() as u64);
        assert_eq!(r.payload_sha1.len(), 40);
        assert_eq!(r.payload.len(), vigia_schemas::DEAD_LETTER_PAYLOAD_BYTES);
        // The id is the origin's, as before the bound.
        assert_eq!(
            r.id,
            derive_id("dead_letter", &["processors", "vigia.events", "1", "10"])
        );
    }
}
