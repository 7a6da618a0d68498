//! Bounded state per tenant: what the engine keeps, for how long, and up to how many.
//!
//! # The rule
//!
//! An entity — a conversation, a lead, a call-center session, a seller — is **forgettable** when
//! both hold ([`forgettable`]):
//! - it has **no pending deadline** (an open wait's unanswered deadline, a follow-up reminder due
//!   in 30 days, a session's timeout): a deadline must find its entity when it fires;
//! - its **last event is older than the horizon** behind the tenant's event time (its newest
//!   `occurred_at`): `last < newest − horizon`, with `horizon = max(allowed_lateness, windows)`
//!   ([`horizon`]). `windows` is how far back the tenant's figures read the entity:
//!   [`SELLER_WINDOWS`] (7 days: the seller metrics' 7-day response times and engagement, the
//!   conversations counted per seller) for conversations, leads and sellers; nothing for
//!   sessions, which no figure reads, so a session is forgotten once it ended or timed out more
//!   than the allowed lateness ago.
//!
//! An entity that a kept entity refers to is kept with it: a lead keeps the conversation its
//! `lead.created` named (its score reads the conversation), and a kept conversation or lead keeps
//! its seller (the seller's figures and `user.upserted` role read through them).
//!
//! What an entity's "last event" is: any applied event naming it — for a conversation its
//! messages (automated ones too), assignments, closes and the `lead.created` naming it; for a
//! lead its `lead.*` events and the customer messages of its conversation (they rescore it); for
//! a seller every event naming them as seller (messages they sent, assignments to them,
//! `message.received.seller_id`, `lead.created.seller_id`) and their `user.upserted`.
//!
//! The same rule bounds what a checkpoint of the engine holds (the bounded-recovery work):
//! checkpoint size follows live entities plus the 7 days of samples the seller windows need.
//!
//! # Determinism
//!
//! Forgetting depends on event time only — the tenant's newest `occurred_at` and the deadlines
//! still pending — never on the wall clock, and happens at the engine's once-a-minute (of event
//! time) pruning, whose schedule is itself a function of the events. So a replay of the same log
//! forgets the same entities at the same events and gives byte-identical outputs.
//!
//! An event that arrives for a forgotten entity is one of two things:
//! - older than the allowed lateness behind the tenant's event time — refused as too late, as
//!   before (the horizon is at least the allowed lateness, so every event the forgotten state
//!   could have mattered to is in this case);
//! - or newer: it starts a **new** entity. After more than the horizon of silence a conversation
//!   starts afresh (its assignment is forgotten: its next unanswered alert goes to the secretaries
//!   until it is assigned again, as it would after a replay from a log whose retention no longer
//!   holds its assignment); a lead event for a forgotten lead is that of a lead whose
//!   `lead.created` is unknown (no score, follow-ups still remind); a seller's `user.upserted` is
//!   forgotten, so a non-seller user silent for the horizon who then replies counts as a seller
//!   until the CRM sends their `user.upserted` again.
//!
//! # Limits
//!
//! Each tenant keeps at most `max_conversations`, `max_leads`, `max_sessions` and `max_sellers`
//! entities ([`crate::Thresholds`], per tenant). An event that would add an entity beyond its
//! limit is **not applied at all** — no state, no outputs, not remembered as seen — and comes back
//! as [`OverLimit`] (the runner dead-letters it and counts it by [`EntityKind::as_str`]); events
//! of entities already kept are applied as usual, and other tenants are unaffected. The limit
//! counts entities not yet forgotten: the pruning runs once per minute of the tenant's event
//! time, so an entity that became forgettable still counts until then.

use std::collections::BTreeSet;
use std::hash::Hash;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;
use vigia_schemas::TenantId;

use super::entities::EntityMap;

/// How far back the seller metrics read conversations, leads and sellers (their 7-day windows).
pub const SELLER_WINDOWS: Duration = Duration::days(7);

/// How far behind the tenant's newest event time an entity's last event may be and the entity
/// still kept: the allowed lateness (an event that old may still be applied to it) or the
/// windows that read it, whichever is longer.
pub fn horizon(allowed_lateness: Duration, windows: Duration) -> Duration {
    allowed_lateness.max(windows)
}

/// The rule of the module documentation: an entity whose last event is at `last_event_at`, with
/// or without a pending deadline, can be forgotten when its tenant's newest event time is
/// `tenant_time`.
pub fn forgettable(
    last_event_at: DateTime<Utc>,
    pending_deadline: bool,
    tenant_time: DateTime<Utc>,
    horizon: Duration,
) -> bool {
    !pending_deadline && last_event_at < tenant_time - horizon
}

/// The kinds of entity kept per tenant, each with its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityKind {
    Conversation,
    Lead,
    Session,
    Seller,
}

impl EntityKind {
    pub const ALL: [EntityKind; 4] = [
        EntityKind::Conversation,
        EntityKind::Lead,
        EntityKind::Session,
        EntityKind::Seller,
    ];

    /// The metric label and the word in dead letters.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Conversation => "conversation",
            EntityKind::Lead => "lead",
            EntityKind::Session => "session",
            EntityKind::Seller => "seller",
        }
    }

    /// The configuration key of its limit.
    pub fn limit_key(self) -> &'static str {
        match self {
            EntityKind::Conversation => "max_conversations",
            EntityKind::Lead => "max_leads",
            EntityKind::Session => "max_sessions",
            EntityKind::Seller => "max_sellers",
        }
    }
}

/// How many entities of each kind a tenant (or a partition) keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntityCounts {
    pub conversations: usize,
    pub leads: usize,
    pub sessions: usize,
    pub sellers: usize,
}

impl EntityCounts {
    pub fn get(&self, kind: EntityKind) -> usize {
        match kind {
            EntityKind::Conversation => self.conversations,
            EntityKind::Lead => self.leads,
            EntityKind::Session => self.sessions,
            EntityKind::Seller => self.sellers,
        }
    }

    pub fn total(&self) -> usize {
        self.conversations + self.leads + self.sessions + self.sellers
    }
}

impl std::ops::Add for EntityCounts {
    type Output = EntityCounts;

    fn add(self, o: EntityCounts) -> EntityCounts {
        EntityCounts {
            conversations: self.conversations + o.conversations,
            leads: self.leads + o.leads,
            sessions: self.sessions + o.sessions,
            sellers: self.sellers + o.sellers,
        }
    }
}

/// An event refused because it would add an entity beyond its tenant's limit: not applied.
#[derive(Debug, Clone, PartialEq)]
pub struct OverLimit {
    pub event_id: Uuid,
    pub tenant_id: TenantId,
    pub occurred_at: DateTime<Utc>,
    pub entity: EntityKind,
    /// The new entity's id (a user id for a seller), cut to [`MAX_ID_IN_MESSAGE`] characters.
    pub entity_id: String,
    /// The tenant's limit for that kind.
    pub limit: usize,
}

/// Ids longer than this are cut in [`OverLimit`] (the dead letter carries the whole event).
pub const MAX_ID_IN_MESSAGE: usize = 64;

impl OverLimit {
    pub(crate) fn new(
        event: &vigia_schemas::Event,
        entity: EntityKind,
        entity_id: &str,
        limit: usize,
    ) -> Self {
        OverLimit {
            event_id: event.event_id,
            tenant_id: event.tenant_id,
            occurred_at: event.occurred_at,
            entity,
            entity_id: entity_id.chars().take(MAX_ID_IN_MESSAGE).collect(),
            limit,
        }
    }
}

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event {} of tenant {} would add {} {:?} but the tenant already keeps its limit of {} \
             (processors.tenants.{}.{} or processors.defaults.{}); it was not applied — raise the \
             limit if the tenant really has that many, or find who sends made-up ids",
            self.event_id,
            self.tenant_id,
            self.entity.as_str(),
            self.entity_id,
            self.limit,
            self.tenant_id,
            self.entity.limit_key(),
            self.entity.limit_key(),
        )
    }
}

/// The last event time of every entity of one kind, and a queue to find the forgettable ones
/// without scanning them all.
///
/// Each entity has exactly one queue entry `(key, id)`, meaning "look at it again once the cutoff
/// (newest event time − horizon) is past `key`". A touch does not move the entry (that would cost
/// a removal per event); when an entry comes due, an entity touched since goes back at its last
/// event time, one still held (a pending deadline, a reference) at the time to look again.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "K: serde::Serialize",
    deserialize = "K: serde::de::DeserializeOwned"
))]
pub(crate) struct Activity<K: Ord + Hash + Clone> {
    /// Last event time and queue key of each entity.
    entities: EntityMap<(DateTime<Utc>, DateTime<Utc>), K>,
    queue: BTreeSet<(DateTime<Utc>, K)>,
}

impl<K: Ord + Hash + Clone> Default for Activity<K> {
    fn default() -> Self {
        Activity {
            entities: EntityMap::default(),
            queue: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Hash + Clone> Activity<K> {
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn contains(&self, id: &K) -> bool {
        self.entities.contains_key(id)
    }

    /// Records an event of `id` at `at` (the entity is added if new).
    pub fn touch(&mut self, id: &K, at: DateTime<Utc>) {
        match self.entities.get_mut(id) {
            Some((last, _)) => *last = (*last).max(at),
            None => {
                self.entities.insert(id.clone(), (at, at));
                self.queue.insert((at, id.clone()));
            }
        }
    }

    /// Records an event of `id` at `at` if the entity is kept (not added if not).
    pub fn touch_known(&mut self, id: &K, at: DateTime<Utc>) {
        if let Some((last, _)) = self.entities.get_mut(id) {
            *last = (*last).max(at);
        }
    }

    /// When `id` is looked at again.
    pub fn key(&self, id: &K) -> Option<DateTime<Utc>> {
        self.entities.get(id).map(|(_, key)| *key)
    }

    /// The next entity whose queue key is before `cutoff`, with its last event time, taken off
    /// the queue: the caller forgets it ([`Self::remove`]) or puts it back ([`Self::requeue`]).
    pub fn pop_due(&mut self, cutoff: DateTime<Utc>) -> Option<(K, DateTime<Utc>)> {
        let (key, _) = self.queue.first()?;
        if *key >= cutoff {
            return None;
        }
        let (_, id) = self.queue.pop_first()?;
        let last = self.entities.get(&id).map(|(last, _)| *last)?;
        Some((id, last))
    }

    /// Puts a popped entity back, to be looked at once the cutoff is past `key`.
    pub fn requeue(&mut self, id: K, key: DateTime<Utc>) {
        if let Some((_, k)) = self.entities.get_mut(&id) {
            *k = key;
            self.queue.insert((key, id));
        }
    }

    /// Forgets a popped entity.
    pub fn remove(&mut self, id: &K) {
        self.entities.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_horizon_is_the_lateness_or_the_windows_whichever_is_longer() {
        assert_eq!(
            horizon(Duration::hours(1), SELLER_WINDOWS),
            Duration::days(7)
        );
        assert_eq!(
            horizon(Duration::days(10), SELLER_WINDOWS),
            Duration::days(10)
        );
        assert_eq!(
            horizon(Duration::hours(1), Duration::zero()),
            Duration::hours(1)
        );
    }

    #[test]
    fn forgettable_needs_no_pending_deadline_and_a_last_event_beyond_the_horizon() {
        let now = at("2026-03-10T12:00:00Z");
        let h = Duration::days(7);
        let old = at("2026-03-03T11:59:59Z");
        let edge = at("2026-03-03T12:00:00Z");
        assert!(forgettable(old, false, now, h));
        assert!(
            !forgettable(old, true, now, h),
            "a pending deadline keeps it"
        );
        assert!(
            !forgettable(edge, false, now, h),
            "exactly the horizon old is kept"
        );
    }

    #[test]
    fn activity_finds_due_entities_in_order_and_requeues_touched_ones() {
        let mut a: Activity<u32> = Activity::default();
        a.touch(&1, at("2026-03-01T00:00:00Z"));
        a.touch(&2, at("2026-03-02T00:00:00Z"));
        a.touch(&1, at("2026-03-05T00:00:00Z"));
        assert_eq!(a.len(), 2);
        let cutoff = at("2026-03-03T00:00:00Z");
        // Entity 1 comes due by its first event, but was touched since.
        let (id, last) = a.pop_due(cutoff).unwrap();
        assert_eq!((id, last), (1, at("2026-03-05T00:00:00Z")));
        a.requeue(id, last);
        let (id, _) = a.pop_due(cutoff).unwrap();
        assert_eq!(id, 2);
        a.remove(&id);
        assert_eq!(a.pop_due(cutoff), None);
        assert_eq!(a.len(), 1);
        assert_eq!(a.key(&1), Some(at("2026-03-05T00:00:00Z")));
    }
}
