//! The rules, as pure event-time logic: [`PartitionEngine`] holds the state of every tenant of one
//! Kafka partition and turns events and watermark advances into [`Output`]s. No I/O, no wall
//! clock: time enters only as `occurred_at` and as the watermark passed to
//! [`PartitionEngine::advance_watermark`], so tests drive it with made-up times.
//!
//! # Time
//!
//! Each tenant has an *event-time watermark*: its newest `occurred_at` seen minus
//! [`Config::watermark_delay`]. It is a function of the log alone, so replaying a partition
//! reproduces it exactly. The runner adds a partition-wide *clock watermark* through
//! `advance_watermark` (from the records' Kafka timestamps, and from the wall clock once caught
//! up), so that deadlines fire on an idle stream. Event time is per tenant so that one tenant's
//! clock errors cannot fire or refuse another's.
//!
//! - A deadline fires when either watermark reaches it (`deadline <= watermark`). Deadlines due by
//!   event time fire inside [`PartitionEngine::on_event`], before the event is applied (they are
//!   earlier than the event); deadlines due by the clock fire in `advance_watermark`, and a
//!   deadline an event schedules in the clock's past fires right after that event. On replay the
//!   runner's clock is the records' Kafka timestamps (see [`crate::runner`]), so outputs are a
//!   function of the log; live, the wall clock can be a few milliseconds ahead of the newest
//!   record, which matters only for a deadline that falls in those milliseconds.
//! - **Too late**: an event more than the tenant's `allowed_lateness` older than the tenant's
//!   newest event time is not applied and comes back as [`Output::TooLate`] (the runner sends it
//!   to the dead-letter topic). Measured against event time, not the clock watermark, for the
//!   same replay reason: "late" means late relative to the tenant's own stream. Events within
//!   the allowed lateness are applied normally.
//! - **Duplicates**: an `event_id` already applied is ignored. Ids are remembered while their
//!   `occurred_at` is within `allowed_lateness + 1 h` of the tenant's newest event time: older
//!   ones would be refused as too late anyway, so forgetting them cannot let a duplicate be
//!   applied; the extra hour only keeps such late duplicates counted as duplicates rather than
//!   dead-lettered as too late.
//!
//! # Bounded state
//!
//! Each tenant keeps at most a configured number of conversations, leads, sessions and sellers,
//! and forgets each one once it can no longer matter: no pending deadline, and its last event
//! older than `max(allowed_lateness, 7 days)` behind the tenant's event time — one rule,
//! [`retention::forgettable`], applied at the once-a-minute pruning. An event that would add an
//! entity beyond its tenant's limit is not applied and comes back as [`Output::OverLimit`] (the
//! runner dead-letters it). Both depend on event time only, so replays stay byte-identical; see
//! [`retention`] for what an event of a forgotten entity does.
//!
//! # Rules
//!
//! One module per family, sharing the tenant's state: [`conversations`] (response time and
//! unanswered conversations), [`leads`] (hot-lead score and follow-up reminders), [`sessions`]
//! (call-center session timeout), [`sellers`] (seller metrics and rank, performance alerts). A
//! new rule adds a module, its `DeadlineKey` variant if it has
//! deadlines, and a line in `TenantState::apply` / `TenantState::fire`.
//!
//! The whole state serializes ([`snapshot`]): a snapshot restored into a new engine continues
//! exactly as the engine it was taken of, for checkpoints.
//!
//! Every output's id is derived from its cause ([`vigia_schemas::derive_id`]) and every timestamp
//! in it is event time, so the same events give the same outputs byte for byte.

pub mod conversations;
mod entities;
mod figures;
pub mod leads;
pub mod report;
pub mod retention;
pub mod sellers;
pub mod sessions;
pub mod snapshot;
mod sorted_vec_map;
mod timeline;
mod windows;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use vigia_schemas::{
    EntityId, Event, LeadScore, Notification, Payload, ResponseTimeSample, SellerMetrics, TenantId,
    UserId,
};

use crate::config::{Config, Rules, Thresholds};
pub use retention::{EntityCounts, EntityKind, OverLimit};

/// What the engine emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Notification(Notification),
    ResponseTime(ResponseTimeSample),
    LeadScore(LeadScore),
    /// A seller's metrics snapshot (see [`sellers`]).
    SellerMetrics(Box<SellerMetrics>),
    /// An event older than its tenant's allowed lateness: not applied (dead-letter it).
    TooLate(TooLate),
    /// An event that would add an entity beyond its tenant's limit: not applied (dead-letter it;
    /// see [`retention`]).
    OverLimit(OverLimit),
}

impl Output {
    /// A short name for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Output::Notification(_) => "notification",
            Output::ResponseTime(_) => "response_time",
            Output::LeadScore(_) => "lead_score",
            Output::SellerMetrics(_) => "seller_metrics",
            Output::TooLate(_) => "too_late",
            Output::OverLimit(_) => "over_limit",
        }
    }

    /// The deterministic id of the output (`None` for a refused event).
    pub fn id(&self) -> Option<Uuid> {
        match self {
            Output::Notification(n) => Some(n.id),
            Output::ResponseTime(r) => Some(r.id),
            Output::LeadScore(l) => Some(l.id),
            Output::SellerMetrics(m) => Some(m.id),
            Output::TooLate(_) | Output::OverLimit(_) => None,
        }
    }

    pub fn tenant_id(&self) -> TenantId {
        match self {
            Output::Notification(n) => n.tenant_id,
            Output::ResponseTime(r) => r.tenant_id,
            Output::LeadScore(l) => l.tenant_id,
            Output::SellerMetrics(m) => m.tenant_id,
            Output::TooLate(t) => t.tenant_id,
            Output::OverLimit(o) => o.tenant_id,
        }
    }

    /// The record written to the output's topic: its compact JSON. `None` for a refused event,
    /// which becomes a dead letter of its record instead.
    ///
    /// Written by sonic-rs, whose serializer finds the bytes to escape with SIMD where
    /// serde_json looks at each byte of every key and string (a fifth of the cost of encoding,
    /// by callgrind). The bytes are serde_json's (same compact form, same shortest float
    /// digits; `outputs_encode_to_serde_json_bytes` in the engine's tests), since reprocessing
    /// must write byte-identical records and the sinks and the inbox read them with serde_json.
    pub fn to_json(&self) -> Option<Vec<u8>> {
        fn encode<T: serde::Serialize>(v: &T) -> Option<Vec<u8>> {
            Some(sonic_rs::to_vec(v).expect("outputs serialize"))
        }
        match self {
            Output::Notification(n) => encode(n),
            Output::ResponseTime(r) => encode(r),
            Output::LeadScore(l) => encode(l),
            Output::SellerMetrics(m) => encode(m),
            Output::TooLate(_) | Output::OverLimit(_) => None,
        }
    }
}

/// An event that came too late to be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TooLate {
    pub event_id: Uuid,
    pub tenant_id: TenantId,
    pub occurred_at: DateTime<Utc>,
    /// Events before this were too late when it arrived.
    pub cutoff: DateTime<Utc>,
}

impl std::fmt::Display for TooLate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event {} of tenant {} occurred at {} but events before {} are too late (older than \
             the tenant's allowed_lateness behind its newest event); it was not applied",
            self.event_id,
            self.tenant_id,
            self.occurred_at.to_rfc3339(),
            self.cutoff.to_rfc3339()
        )
    }
}

/// Counters of what the engine did with the events it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineStats {
    pub applied: u64,
    pub duplicates: u64,
    pub too_late: u64,
    /// Refused: they would have added an entity beyond its tenant's limit.
    pub over_limit: u64,
}

/// The state and rules of every tenant of one Kafka partition. Feed it that partition's events in
/// log order; see the module documentation for the semantics.
#[derive(Debug, Clone)]
pub struct PartitionEngine {
    config: Arc<Config>,
    tenants: BTreeMap<TenantId, TenantState>,
    clock_watermark: Option<DateTime<Utc>>,
    stats: EngineStats,
    /// No tenant has a deadline before this (`None`: not known). A lower bound, lowered by
    /// every event and made exact by every clock advance that visits the tenants: most
    /// advances reach no deadline, and then return without visiting each tenant's deadlines.
    due_from: Option<DateTime<Utc>>,
}

impl PartitionEngine {
    pub fn new(config: Arc<Config>) -> Self {
        PartitionEngine {
            config,
            tenants: BTreeMap::new(),
            clock_watermark: None,
            stats: EngineStats::default(),
            due_from: None,
        }
    }

    /// Applies one event; returns what it caused, including the deadlines it proves past.
    pub fn on_event(&mut self, event: &Event) -> Vec<Output> {
        let delay = chrono_duration(self.config.watermark_delay);
        let config = &self.config;
        let tenant = self.tenants.entry(event.tenant_id).or_insert_with(|| {
            TenantState::new(event.tenant_id, config.thresholds(event.tenant_id))
        });
        if tenant.seen.contains(&event.event_id) {
            self.stats.duplicates += 1;
            return Vec::new();
        }
        if let Some(max) = tenant.max_event_time {
            let cutoff = max - chrono_duration(tenant.th.allowed_lateness);
            if event.occurred_at < cutoff {
                self.stats.too_late += 1;
                return vec![Output::TooLate(TooLate {
                    event_id: event.event_id,
                    tenant_id: event.tenant_id,
                    occurred_at: event.occurred_at,
                    cutoff,
                })];
            }
        }
        if let Some(refused) = tenant.over_limit(event) {
            self.stats.over_limit += 1;
            return vec![Output::OverLimit(refused)];
        }
        tenant.seen.insert(event.event_id, event.occurred_at);
        let max = match tenant.max_event_time {
            Some(m) if m >= event.occurred_at => m,
            _ => event.occurred_at,
        };
        tenant.max_event_time = Some(max);
        let event_watermark = max - delay;

        let mut out = Vec::new();
        tenant.fire_due(event_watermark, &mut out);
        let rules = config.rules;
        if rules == Rules::All {
            let mark = out.len();
            tenant.sellers.on_watermark(
                tenant.id,
                &tenant.th,
                event_watermark,
                &mut tenant.conversations,
                &mut tenant.leads,
                &mut out,
            );
            tenant.reports.count_alerts(&out[mark..]);
            tenant.apply(event, &mut out);
        } else {
            tenant.apply_conversations(event, &mut out);
        }
        // What the event scheduled and the clock has already passed fires now, right after it:
        // waiting for the next clock advance would let the next record (possibly written in the
        // same instant, so not advancing the clock on replay) cancel it on a replay but not live.
        let clock = self.clock_watermark.unwrap_or(event_watermark);
        tenant.fire_due(event_watermark.max(clock), &mut out);
        tenant.prune_if_due();
        if let (Some(due_from), Some(first)) = (self.due_from, tenant.deadlines.first()) {
            self.due_from = Some(due_from.min(first));
        }
        self.stats.applied += 1;
        out
    }

    /// Moves the clock watermark forward (never back) and fires every deadline it reaches, for
    /// every tenant, in (tenant, deadline) order.
    pub fn advance_watermark(&mut self, watermark: DateTime<Utc>) -> Vec<Output> {
        if self.clock_watermark.is_some_and(|w| w >= watermark) {
            return Vec::new();
        }
        self.clock_watermark = Some(watermark);
        let mut out = Vec::new();
        if self.due_from.is_some_and(|due_from| watermark < due_from) {
            return out;
        }
        let mut due_from = DateTime::<Utc>::MAX_UTC;
        for tenant in self.tenants.values_mut() {
            tenant.fire_due(watermark, &mut out);
            if let Some(first) = tenant.deadlines.first() {
                due_from = due_from.min(first);
            }
        }
        self.due_from = Some(due_from);
        out
    }

    /// The clock watermark last passed to [`Self::advance_watermark`].
    pub fn clock_watermark(&self) -> Option<DateTime<Utc>> {
        self.clock_watermark
    }

    /// The newest event time seen, over all tenants of the partition.
    pub fn max_event_time(&self) -> Option<DateTime<Utc>> {
        self.tenants.values().filter_map(|t| t.max_event_time).max()
    }

    /// The earliest pending deadline, over all tenants: advancing the watermark to it or beyond
    /// will produce outputs.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.tenants
            .values()
            .filter_map(|t| t.deadlines.first())
            .min()
    }

    /// The earliest pending deadline of one tenant (`None` for a tenant not seen or with none):
    /// what an event of that tenant may have scheduled, without visiting every tenant, so that
    /// a runner can time the next clock advance after each event.
    pub fn next_deadline_of(&self, tenant: TenantId) -> Option<DateTime<Utc>> {
        self.tenants.get(&tenant)?.deadlines.first()
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The entities `tenant` keeps now (zero for a tenant not seen).
    pub fn entity_counts(&self, tenant: TenantId) -> EntityCounts {
        self.tenants
            .get(&tenant)
            .map(TenantState::entity_counts)
            .unwrap_or_default()
    }

    /// The entities kept for every tenant of the partition together.
    pub fn total_entity_counts(&self) -> EntityCounts {
        self.tenants
            .values()
            .map(TenantState::entity_counts)
            .fold(EntityCounts::default(), |a, b| a + b)
    }

    /// The metrics and rank of every seller of `tenant` now — at the tenant's watermark (event
    /// or clock, whichever is later) — best rank first; empty for a tenant not seen. For a live
    /// API: unlike the emitted snapshots, this depends on the wall clock.
    pub fn seller_metrics(&self, tenant: TenantId) -> Vec<SellerMetrics> {
        let Some(t) = self.tenants.get(&tenant) else {
            return Vec::new();
        };
        let Some(event_watermark) = t
            .max_event_time
            .map(|m| m - chrono_duration(self.config.watermark_delay))
        else {
            return Vec::new();
        };
        let at = self
            .clock_watermark
            .map_or(event_watermark, |c| c.max(event_watermark));
        t.sellers
            .evaluate(t.id, &t.th, at, &t.conversations, &t.leads)
    }
}

/// Converts a configured duration; [`Config::validate`] keeps them far below chrono's limits.
pub(crate) fn chrono_duration(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// What a pending deadline is for. Ordered, so that deadlines at the same instant fire in a
/// deterministic order.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub(crate) enum DeadlineKey {
    Unanswered(EntityId),
    FollowUp(EntityId, leads::FollowUpStage),
    SessionTimeout(EntityId),
    /// The 08:00 report of this local day (about the day before).
    DailyReport(chrono::NaiveDate),
}

/// A tenant's pending deadlines, earliest first.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Deadlines {
    set: BTreeSet<(DateTime<Utc>, DeadlineKey)>,
}

impl Deadlines {
    pub fn insert(&mut self, at: DateTime<Utc>, key: DeadlineKey) {
        self.set.insert((at, key));
    }

    pub fn remove(&mut self, at: DateTime<Utc>, key: &DeadlineKey) -> bool {
        self.set.remove(&(at, key.clone()))
    }

    pub fn first(&self) -> Option<DateTime<Utc>> {
        self.set.first().map(|(at, _)| *at)
    }

    pub fn contains(&self, at: DateTime<Utc>, key: &DeadlineKey) -> bool {
        self.set.contains(&(at, key.clone()))
    }

    fn pop_due(&mut self, upto: DateTime<Utc>) -> Option<(DateTime<Utc>, DeadlineKey)> {
        if self.first()? <= upto {
            self.set.pop_first()
        } else {
            None
        }
    }
}

/// What a rule needs besides its own state.
pub(crate) struct Ctx<'a> {
    pub tenant: TenantId,
    pub th: &'a Thresholds,
    pub deadlines: &'a mut Deadlines,
    pub out: &'a mut Vec<Output>,
    /// Waits that ended, for the seller metrics.
    pub ended: &'a mut Vec<conversations::EndedWait>,
    /// Unanswered alerts withdrawn as `corrected`, with their deadlines: an alert for the same
    /// wait start sent again later needs another id (see [`conversations`]).
    pub corrected_alerts: &'a mut BTreeMap<Uuid, DateTime<Utc>>,
}

/// Event ids already applied, forgettable by event time. A snapshot holds the time-ordered list
/// only (the map is rebuilt from it), so it does not depend on hash order.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(
    from = "Vec<(DateTime<Utc>, Uuid)>",
    into = "Vec<(DateTime<Utc>, Uuid)>"
)]
struct Dedup {
    /// A set, not a map to the time: the time is in `by_time`, and a 16-byte entry instead of
    /// 28 makes the hour's largest table (an id per event) smaller to touch at random.
    ids: foldhash::HashSet<Uuid>,
    by_time: timeline::Timeline<(DateTime<Utc>, Uuid)>,
}

impl From<Vec<(DateTime<Utc>, Uuid)>> for Dedup {
    fn from(seen: Vec<(DateTime<Utc>, Uuid)>) -> Self {
        let mut d = Dedup::default();
        for (at, id) in seen {
            d.insert(id, at);
        }
        d
    }
}

impl From<Dedup> for Vec<(DateTime<Utc>, Uuid)> {
    fn from(d: Dedup) -> Self {
        d.by_time.iter().copied().collect()
    }
}

impl Dedup {
    fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: Uuid, at: DateTime<Utc>) {
        self.ids.insert(id);
        self.by_time.insert((at, id));
    }

    fn forget_before(&mut self, cutoff: DateTime<Utc>) {
        while let Some((at, id)) = self.by_time.first().copied() {
            if at >= cutoff {
                break;
            }
            self.by_time.pop_first();
            self.ids.remove(&id);
        }
    }
}

/// How much longer than `allowed_lateness` applied event ids are remembered (see module doc).
const DEDUP_MARGIN_SECONDS: i64 = 3600;
/// Event-time interval between two prunings of a tenant's remembered history.
const PRUNE_EVERY_SECONDS: i64 = 60;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TenantState {
    id: TenantId,
    th: Thresholds,
    max_event_time: Option<DateTime<Utc>>,
    seen: Dedup,
    deadlines: Deadlines,
    conversations: conversations::Conversations,
    leads: leads::Leads,
    sessions: sessions::Sessions,
    sellers: sellers::Sellers,
    reports: report::Reports,
    ended_waits: Vec<conversations::EndedWait>,
    corrected_alerts: BTreeMap<Uuid, DateTime<Utc>>,
    next_prune: Option<DateTime<Utc>>,
    /// Last events of the conversations, leads and sellers kept (see [`retention`]).
    conversation_activity: retention::Activity<EntityId>,
    lead_activity: retention::Activity<EntityId>,
    seller_activity: retention::Activity<UserId>,
}

/// The entities an event names (and would add if new).
struct Named<'a> {
    conversation: Option<&'a EntityId>,
    lead: Option<&'a EntityId>,
    session: Option<&'a EntityId>,
    /// A user the seller metrics will know: the seller of a message, an assignment or a lead,
    /// or a `user.upserted`. (Follow-up and session users are only an audience or a field of
    /// their lead or session.)
    seller: Option<UserId>,
}

impl<'a> Named<'a> {
    fn of(event: &'a Event) -> Self {
        let mut n = Named {
            conversation: None,
            lead: None,
            session: None,
            seller: None,
        };
        match &event.payload {
            Payload::MessageReceived(m) => {
                n.conversation = Some(&m.conversation_id);
                n.seller = m.seller_id;
            }
            Payload::MessageSent(m) => {
                n.conversation = Some(&m.conversation_id);
                n.seller = (!m.automated).then_some(m.seller_id);
            }
            Payload::ConversationAssigned(a) => {
                n.conversation = Some(&a.conversation_id);
                n.seller = Some(a.seller_id);
            }
            Payload::ConversationClosed(c) => n.conversation = Some(&c.conversation_id),
            Payload::LeadCreated(l) => {
                n.lead = Some(&l.lead_id);
                n.conversation = l.conversation_id.as_ref();
                n.seller = l.seller_id;
            }
            Payload::LeadStatusChanged(l) => n.lead = Some(&l.lead_id),
            Payload::LeadFollowUpScheduled(f) => n.lead = Some(&f.lead_id),
            Payload::UserUpserted(u) => n.seller = Some(u.user_id),
            Payload::SessionStarted(s) | Payload::SessionHeartbeat(s) => {
                n.session = Some(&s.session_id)
            }
            Payload::SessionEnded(s) => n.session = Some(&s.session_id),
        }
        n
    }
}

impl TenantState {
    fn new(id: TenantId, th: Thresholds) -> Self {
        TenantState {
            id,
            sellers: sellers::Sellers::new(&th),
            reports: report::Reports::new(&th),
            ended_waits: Vec::new(),
            corrected_alerts: BTreeMap::new(),
            th,
            max_event_time: None,
            seen: Dedup::default(),
            deadlines: Deadlines::default(),
            conversations: Default::default(),
            leads: Default::default(),
            sessions: Default::default(),
            next_prune: None,
            conversation_activity: Default::default(),
            lead_activity: Default::default(),
            seller_activity: Default::default(),
        }
    }

    /// The refusal of an event that would add an entity beyond its limit (see [`retention`]),
    /// decided before anything of it is applied.
    fn over_limit(&self, event: &Event) -> Option<OverLimit> {
        let named = Named::of(event);
        let th = &self.th;
        if let Some(c) = named.conversation {
            if self.conversations.get(c).is_none()
                && self.conversations.len() >= th.max_conversations
            {
                let kind = EntityKind::Conversation;
                return Some(OverLimit::new(
                    event,
                    kind,
                    c.as_str(),
                    th.max_conversations,
                ));
            }
        }
        if let Some(l) = named.lead {
            if !self.leads.contains(l) && self.leads.len() >= th.max_leads {
                return Some(OverLimit::new(
                    event,
                    EntityKind::Lead,
                    l.as_str(),
                    th.max_leads,
                ));
            }
        }
        if let Some(s) = named.session {
            if !self.sessions.contains(s) && self.sessions.len() >= th.max_sessions {
                let kind = EntityKind::Session;
                return Some(OverLimit::new(event, kind, s.as_str(), th.max_sessions));
            }
        }
        if let Some(u) = named.seller {
            if !self.seller_activity.contains(&u) && self.seller_activity.len() >= th.max_sellers {
                let kind = EntityKind::Seller;
                return Some(OverLimit::new(event, kind, &u.to_string(), th.max_sellers));
            }
        }
        None
    }

    /// Records the applied `event` as the last event of the entities it names.
    fn touch(&mut self, event: &Event) {
        let at = event.occurred_at;
        let named = Named::of(event);
        if let Some(c) = named.conversation {
            self.conversation_activity.touch(c, at);
        }
        if let Some(l) = named.lead {
            self.lead_activity.touch(l, at);
        }
        if let Some(u) = named.seller {
            self.seller_activity.touch(&u, at);
        }
        // A customer message rescores the leads of its conversation: an event of theirs too.
        if let (Payload::MessageReceived(_), Some(c)) = (&event.payload, named.conversation) {
            if let Some(conv) = self.conversations.get(c) {
                for lead in &conv.leads {
                    self.lead_activity.touch_known(lead, at);
                }
            }
        }
    }

    fn apply(&mut self, event: &Event, out: &mut Vec<Output>) {
        if let Some((at, day)) = self.reports.first_schedule(event.occurred_at) {
            self.deadlines.insert(at, DeadlineKey::DailyReport(day));
        }
        let mark = out.len();
        let mut ctx = Ctx {
            tenant: self.id,
            th: &self.th,
            deadlines: &mut self.deadlines,
            out,
            ended: &mut self.ended_waits,
            corrected_alerts: &mut self.corrected_alerts,
        };
        let convs = &mut self.conversations;
        let leads = &mut self.leads;
        match &event.payload {
            Payload::MessageReceived(m) => {
                convs.on_message_received(&mut ctx, event, m);
                // The lead rules read the conversation's updated features.
                leads.on_customer_message(&mut ctx, convs, event, &m.conversation_id);
            }
            Payload::MessageSent(m) => convs.on_message_sent(&mut ctx, event, m),
            Payload::ConversationAssigned(a) => convs.on_assigned(event, a),
            Payload::ConversationClosed(c) => convs.on_closed(&mut ctx, event, c),
            Payload::LeadCreated(l) => leads.on_created(&mut ctx, convs, event, l),
            Payload::LeadStatusChanged(s) => leads.on_status_changed(&mut ctx, convs, event, s),
            Payload::LeadFollowUpScheduled(f) => leads.on_follow_up_scheduled(&mut ctx, event, f),
            Payload::SessionStarted(s) | Payload::SessionHeartbeat(s) => {
                self.sessions.on_heartbeat(&mut ctx, event, s)
            }
            Payload::SessionEnded(s) => self.sessions.on_ended(&mut ctx, event, s),
            // Users matter to the seller metrics only.
            Payload::UserUpserted(_) => {}
        }
        self.sellers
            .observe(event, &self.conversations, &mut self.ended_waits);
        let named = Named::of(event);
        self.sellers.figures().changed(
            named.conversation,
            &mut self.conversations,
            &mut self.leads,
        );
        self.reports.observe(event);
        self.reports.count_alerts(&out[mark..]);
        self.touch(event);
    }

    /// [`Self::apply`] with only the conversation rules ([`Rules::Conversations`]): no lead,
    /// session, seller-metric or report state is kept, so none of their outputs or deadlines.
    fn apply_conversations(&mut self, event: &Event, out: &mut Vec<Output>) {
        let mut ctx = Ctx {
            tenant: self.id,
            th: &self.th,
            deadlines: &mut self.deadlines,
            out,
            ended: &mut self.ended_waits,
            corrected_alerts: &mut self.corrected_alerts,
        };
        let convs = &mut self.conversations;
        match &event.payload {
            Payload::MessageReceived(m) => convs.on_message_received(&mut ctx, event, m),
            Payload::MessageSent(m) => convs.on_message_sent(&mut ctx, event, m),
            Payload::ConversationAssigned(a) => convs.on_assigned(event, a),
            Payload::ConversationClosed(c) => convs.on_closed(&mut ctx, event, c),
            _ => {}
        }
        // Ended waits are the seller metrics' input, which is off.
        self.ended_waits.clear();
        self.touch(event);
    }

    fn fire_due(&mut self, upto: DateTime<Utc>, out: &mut Vec<Output>) {
        while let Some((at, key)) = self.deadlines.pop_due(upto) {
            let mark = out.len();
            if let DeadlineKey::DailyReport(day) = key {
                let next = self.reports.fire(
                    self.id,
                    &self.th,
                    day,
                    &self.sellers,
                    &self.conversations,
                    &self.leads,
                    out,
                );
                if let Some((at, day)) = next {
                    self.deadlines.insert(at, DeadlineKey::DailyReport(day));
                }
                continue;
            }
            let mut ctx = Ctx {
                tenant: self.id,
                th: &self.th,
                deadlines: &mut self.deadlines,
                out,
                ended: &mut self.ended_waits,
                corrected_alerts: &mut self.corrected_alerts,
            };
            match key {
                DeadlineKey::Unanswered(c) => self.conversations.fire(&mut ctx, &c, at),
                DeadlineKey::FollowUp(lead, stage) => {
                    self.leads.fire_follow_up(&mut ctx, &lead, stage, at)
                }
                DeadlineKey::SessionTimeout(s) => self.sessions.fire(&mut ctx, &s, at),
                DeadlineKey::DailyReport(_) => unreachable!("handled above"),
            }
            self.reports.count_alerts(&out[mark..]);
        }
    }

    fn entity_counts(&self) -> EntityCounts {
        EntityCounts {
            conversations: self.conversations.len(),
            leads: self.leads.len(),
            sessions: self.sessions.len(),
            sellers: self.seller_activity.len(),
        }
    }

    /// Forgets what can no longer matter: ids and history older than anything still accepted.
    fn prune_if_due(&mut self) {
        let Some(max) = self.max_event_time else {
            return;
        };
        if self.next_prune.is_some_and(|next| max < next) {
            return;
        }
        self.next_prune = Some(max + chrono::Duration::seconds(PRUNE_EVERY_SECONDS));
        let accepted_from = max - chrono_duration(self.th.allowed_lateness);
        self.seen
            .forget_before(accepted_from - chrono::Duration::seconds(DEDUP_MARGIN_SECONDS));
        // Replies are looked back on up to `hot_lead_no_contact` before an accepted event.
        let history_from = accepted_from - chrono_duration(self.th.hot_lead_no_contact);
        self.conversations.forget_history_before(history_from);
        // A wait can start again only at a remembered message: its deadline is later than this.
        self.corrected_alerts
            .retain(|_, deadline| *deadline >= history_from);
        self.leads.forget_unscored_before(accepted_from);
        self.forget_entities(max);
    }

    /// Forgets the conversations, leads, sessions and sellers that the rule of [`retention`]
    /// lets go at the tenant's event time `now`: leads first, as a kept lead keeps its
    /// conversation, then conversations, as kept conversations and leads keep their sellers.
    fn forget_entities(&mut self, now: DateTime<Utc>) {
        let lateness = chrono_duration(self.th.allowed_lateness);
        // No figure reads a session: it matters only to its own events.
        self.sessions
            .forget_settled(now, retention::horizon(lateness, chrono::Duration::zero()));
        let horizon = retention::horizon(lateness, retention::SELLER_WINDOWS);
        let cutoff = now - horizon;
        // When to look again at an entity held by a deadline: once it may have fired.
        let after_deadline = |d: DateTime<Utc>| d - horizon;

        while let Some((id, last)) = self.lead_activity.pop_due(cutoff) {
            let pending = self.leads.pending_deadline(&id, &self.deadlines);
            if retention::forgettable(last, pending.is_some(), now, horizon) {
                let (conv, counted) = self.leads.forget(&id);
                if let Some(conv) = conv {
                    self.conversations.unlink_lead(&conv, &id);
                }
                self.sellers.figures().lead_forgotten(counted);
                self.lead_activity.remove(&id);
                continue;
            }
            let key = pending.map_or(last, |d| last.max(after_deadline(d)));
            self.lead_activity.requeue(id, key.max(cutoff));
        }

        while let Some((id, last)) = self.conversation_activity.pop_due(cutoff) {
            // A wait's deadline counts as an event of its conversation: a late reply up to it
            // may still withdraw the alert.
            let (pending, deadline) = self.conversations.deadline(&id, &self.deadlines);
            let last = deadline.map_or(last, |d| last.max(d));
            // Kept leads that name it: every lead still due has been looked at above, so their
            // keys are past the cutoff.
            let held_by = self.conversations.get(&id).and_then(|c| {
                c.leads
                    .iter()
                    .filter_map(|l| self.lead_activity.key(l))
                    .max()
            });
            if held_by.is_none() && retention::forgettable(last, pending, now, horizon) {
                let counted = self.conversations.forget(&id).and_then(|c| c.figures);
                self.sellers.figures().conversation_forgotten(&id, counted);
                self.conversation_activity.remove(&id);
                continue;
            }
            let mut key = last;
            if pending {
                key = key.max(deadline.map_or(key, after_deadline));
            }
            let key = held_by.map_or(key, |h| key.max(h));
            self.conversation_activity.requeue(id, key.max(cutoff));
        }

        let mut candidates = BTreeSet::new();
        while let Some((id, last)) = self.seller_activity.pop_due(cutoff) {
            if !retention::forgettable(last, false, now, horizon) {
                self.seller_activity.requeue(id, last);
            } else if self.sellers.has_recent_figures(id) {
                // Figures still in a window (waits of their conversations' closes, say): the
                // windows drop them within the horizon.
                self.seller_activity.requeue(id, cutoff);
            } else {
                candidates.insert(id);
            }
        }
        if candidates.is_empty() {
            return;
        }
        // Who still names them: a kept conversation (its seller, its last replier) or lead. Held
        // until that one is looked at again.
        let mut held: BTreeMap<UserId, DateTime<Utc>> = BTreeMap::new();
        let mut hold = |seller: UserId, until: Option<DateTime<Utc>>| {
            if let (true, Some(until)) = (candidates.contains(&seller), until) {
                let h = held.entry(seller).or_insert(until);
                *h = (*h).max(until);
            }
        };
        for (id, seller) in self.conversations.sellers() {
            hold(seller, self.conversation_activity.key(id));
        }
        for (id, seller) in self.leads.sellers() {
            hold(seller, self.lead_activity.key(id));
        }
        for id in candidates {
            match held.get(&id) {
                Some(until) => self.seller_activity.requeue(id, (*until).max(cutoff)),
                None => {
                    self.sellers.forget(id);
                    self.seller_activity.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
