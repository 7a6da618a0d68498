//! Response time and unanswered conversations (contract §3.2).
//!
//! A **wait** starts with the first customer message (`message.received`) after the last seller
//! reply (or close, or ever); later customer messages do not restart it. It ends at the first
//! *reply* — a `message.sent` that is not `automated` — with `occurred_at >= ` its start, which
//! yields a [`ResponseTimeSample`] (seller = the replier), or at a `conversation.closed`, which
//! yields none. Automated replies are ignored entirely.
//!
//! **Unanswered**: a wait starting at `T` has a deadline `D = T + unanswered_after`. A reply or
//! close with `occurred_at <= D` answers it in time (a reply exactly at the deadline counts as in
//! time), whenever it arrives before the notification fired. Otherwise the notification fires when
//! a watermark reaches `D`: type `unanswered_conversation`, to the conversation's seller (the
//! latest by event time of `conversation.assigned` and `message.received.seller_id`, read when it
//! fires — so a reassignment during the wait moves it to the new seller) or, with no seller, to
//! the role `secretary`; `created_at = D`. A reply or close after that fires a *withdrawal*: a new
//! notification (id derived from the original's) with `withdraws` = the original id,
//! `data.state` = `resolved` | `closed`, to the same audience. A reply processed before the
//! notification fired but with `occurred_at > D` proves the deadline passed: the notification and
//! its withdrawal are emitted together, so the outputs do not depend on when the watermark moved.
//! A reassignment after the notification fired does not re-send it.
//!
//! **Out of order** (within the allowed lateness; events are applied in log order). Recent customer
//! messages, replies and closes are remembered by event time, so that:
//! - a customer message arriving after the reply (or close) that ended it — the first one at or
//!   after its `occurred_at` — still gets its response-time sample from that reply, and its
//!   unanswered notification plus withdrawal if that reply came after its deadline: the same
//!   outputs as in order;
//! - a customer message earlier than the open wait's start (and after the previous reply) moves
//!   the start (new ids, earlier deadline), if the wait has not fired yet;
//! - a reply or close earlier than customer messages that arrived before it ends the wait there,
//!   and the first customer message after it starts a new wait;
//! - a reply ends at most one wait.
//!
//! **Corrections.** When a late event changes a wait that already produced outputs, they are
//! corrected, so that the results equal those of processing in event-time order:
//! - an earlier customer message of a wait that a reply already ended (it started the wait), or
//!   a late reply or close between a wait's start and the end that took it (it ended the wait),
//!   *retracts* the sample sent ([`ResponseTimeSample::retraction`]: same fields, `retracts` =
//!   its id) and sends the right one (a sample's id derives from both its customer message and
//!   its reply, so the new one has its own id); the end that lost its wait ends the wait of the
//!   first customer message after the late end, if any;
//! - an unanswered notification that turns out wrong — its wait started earlier, or was
//!   answered or closed by its deadline — gets a withdrawal with `state` = `corrected`, dated
//!   like the notification; the right notification, if any, follows (at once if its deadline
//!   has passed). Analysts count an alert only if no `corrected` withdrawal names it. If a
//!   later event makes the corrected alert's wait start a wait again, its alert gets a new id
//!   (derived from the corrected one's);
//! - the seller metrics forget the wait as first counted and count it as corrected.
//!
//! Withdrawals already sent for a resolved wait are not re-sent when only the time or kind of
//! its end changes (the alert itself stands). Net of retractions and corrections, samples and
//! alerts do not depend on arrival order within the allowed lateness (tested by shuffling).
//!
//! History is kept for the allowed lateness plus `hot_lead_no_contact`, long enough for every
//! event still accepted.

use std::collections::BTreeSet;
use std::ops::Bound;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;
use vigia_schemas::rfc3339::Timestamp;
use vigia_schemas::{
    derive_id, Action, Audience, Channel, ConversationAssigned, ConversationClosed, EntityId,
    Event, MessageReceived, MessageSent, Notification, NotificationType, Priority,
    ResponseTimeSample, Role, UserId,
};

use super::entities::EntityMap;
use super::figures::ConvEntry;
use super::sorted_vec_map::SortedVecMap;
use super::timeline::Timeline;
use super::{chrono_duration, Ctx, DeadlineKey, Output};
use crate::scoring;
use crate::texts::{self, Resolution};

/// A remembered event: (event time, event id).
type Key = (DateTime<Utc>, Uuid);

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Conversations {
    map: EntityMap<Conversation>,
    /// (event time, conversation) of every remembered message and close, for forgetting them.
    history: Timeline<(DateTime<Utc>, EntityId)>,
}

/// One conversation's state.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Conversation {
    /// The assigned seller and the event time of the assignment.
    seller: Option<(UserId, DateTime<Utc>)>,
    wait: Option<Wait>,
    /// Recent customer messages.
    customers: SortedVecMap<Key, Customer>,
    /// Recent replies (non-automated).
    replies: SortedVecMap<Key, Reply>,
    /// Recent closes, with what each ended.
    closes: SortedVecMap<Key, Option<Box<Ended>>>,
    /// Features for the lead rules.
    pub customer_messages: u32,
    pub last_customer_message_at: Option<DateTime<Utc>>,
    #[serde(with = "super::snapshot::signal_set")]
    pub intent_signals: BTreeSet<&'static str>,
    /// Leads whose `lead.created` named this conversation.
    pub leads: BTreeSet<EntityId>,
    /// For seller metrics: event times of the first and last message (any, automated included)
    /// and of the last close, and the last non-automated replier with the time of the reply.
    pub first_message_at: Option<DateTime<Utc>>,
    pub last_message_at: Option<DateTime<Utc>>,
    pub last_closed_at: Option<DateTime<Utc>>,
    last_replier: Option<(UserId, DateTime<Utc>)>,
    /// What it counts for in the seller figures, as last recorded ([`super::figures`]).
    #[serde(skip)]
    pub figures: Option<ConvEntry>,
}

/// A wait that ended (by a reply or a close), for the seller metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct EndedWait {
    /// A correction: the metrics must forget this wait (ended as described), counted earlier.
    pub retracted: bool,
    /// The replier; for a close, the conversation's seller (see [`Conversation::metrics_seller`]).
    pub seller: Option<UserId>,
    /// The customer message that started it.
    pub starter: Uuid,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// Ended by a reply (not a close).
    pub answered: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Customer {
    channel: Channel,
    /// Whether this message is (or was) the start of a wait.
    started_wait: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Reply {
    seller: UserId,
    /// The wait this reply ended, if any (it ends at most one).
    ended: Option<Box<Ended>>,
}

/// What a reply or close ended and what was emitted for it, kept so that a late event can
/// correct it.
///
/// Kept boxed (`Option<Box<Ended>>`): inline, its 256 bytes sat in every remembered reply and
/// close whether or not it ended a wait, and in the `BTreeMap` nodes these were kept in before
/// ([`SortedVecMap`]) every 11 slots took ~3 KB — with both, the 1-hour bench stream's state
/// went from 889 to 489 MB (`state_heap_bytes` of `vigia bench processors`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Ended {
    /// The customer message that started the wait.
    starter: Key,
    deadline: DateTime<Utc>,
    channel: Channel,
    /// The response-time sample sent (for a reply).
    sample: Option<ResponseTimeSample>,
    /// The unanswered notification sent (withdrawn by the end).
    fired: Option<Fired>,
    /// The seller the metrics counted the wait for.
    metrics_seller: Option<UserId>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Wait {
    /// The customer message that started it.
    starter: Uuid,
    started_at: DateTime<Utc>,
    deadline: DateTime<Utc>,
    channel: Channel,
    fired: Option<Fired>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Fired {
    notification_id: Uuid,
    audience: Audience,
    seller: Option<UserId>,
}

/// What ends a wait.
#[derive(Debug, Clone, Copy)]
enum End {
    Reply(Key),
    Close(Key),
}

impl End {
    fn at(self) -> DateTime<Utc> {
        match self {
            End::Reply((t, _)) | End::Close((t, _)) => t,
        }
    }
}

fn after(t: DateTime<Utc>) -> (Bound<Key>, Bound<Key>) {
    (Bound::Excluded((t, Uuid::max())), Bound::Unbounded)
}

fn after_key(k: Key) -> (Bound<Key>, Bound<Key>) {
    (Bound::Excluded(k), Bound::Unbounded)
}

impl Conversation {
    pub fn seller(&self) -> Option<UserId> {
        self.seller.map(|(s, _)| s)
    }

    /// Whether a seller replied (non-automated) with `from <= occurred_at <= to`.
    pub fn replied_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        from <= to
            && self
                .replies
                .range((from, Uuid::nil())..=(to, Uuid::max()))
                .next()
                .is_some()
    }

    /// The seller the conversation counts for in seller metrics: the assigned one, else the last
    /// (non-automated) replier.
    pub fn metrics_seller(&self) -> Option<UserId> {
        self.seller().or(self.last_replier.map(|(s, _)| s))
    }

    /// Not closed since its last message (a message after a close reopens it).
    pub fn is_open(&self) -> bool {
        self.last_closed_at
            .is_none_or(|closed| self.last_message_at.is_some_and(|m| m > closed))
    }

    /// Its customer has been waiting past the unanswered deadline at `at`: an open wait with
    /// `deadline <= at` (whether or not the notification fired yet).
    pub fn overdue_at(&self, at: DateTime<Utc>) -> bool {
        self.wait_deadline().is_some_and(|d| d <= at)
    }

    /// The unanswered deadline of its open wait, if any.
    pub fn wait_deadline(&self) -> Option<DateTime<Utc>> {
        self.wait.as_ref().map(|w| w.deadline)
    }

    /// Last message − first message, in seconds (0 with fewer than two messages).
    pub fn chat_seconds(&self) -> f64 {
        match (self.first_message_at, self.last_message_at) {
            (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
            _ => 0.0,
        }
    }

    fn saw_message(&mut self, at: DateTime<Utc>) {
        if self.first_message_at.is_none_or(|f| at < f) {
            self.first_message_at = Some(at);
        }
        if self.last_message_at.is_none_or(|l| at > l) {
            self.last_message_at = Some(at);
        }
    }

    fn assign(&mut self, seller: UserId, at: DateTime<Utc>) {
        if self.seller.is_none_or(|(_, since)| at >= since) {
            self.seller = Some((seller, at));
        }
    }

    /// The first reply or close at or after `t` (a reply first when both are at one instant).
    fn first_end_from(&self, t: DateTime<Utc>) -> Option<End> {
        let reply = self
            .replies
            .range((t, Uuid::nil())..)
            .next()
            .map(|(k, _)| *k);
        let close = self
            .closes
            .range((t, Uuid::nil())..)
            .next()
            .map(|(k, _)| *k);
        match (reply, close) {
            (Some(r), Some(c)) if c.0 < r.0 => Some(End::Close(c)),
            (Some(r), _) => Some(End::Reply(r)),
            (None, Some(c)) => Some(End::Close(c)),
            (None, None) => None,
        }
    }

    /// The time of the last reply or close strictly before `t`.
    fn last_end_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let reply = self
            .replies
            .range(..(t, Uuid::nil()))
            .next_back()
            .map(|(k, _)| k.0);
        let close = self
            .closes
            .range(..(t, Uuid::nil()))
            .next_back()
            .map(|(k, _)| k.0);
        reply.max(close)
    }

    /// The earliest customer message after the last end before `t`, up to `t`, that never
    /// started a wait: a message that only this end (at `t`) answers.
    fn unanswered_until(&self, t: DateTime<Utc>) -> Option<Key> {
        let lower = match self.last_end_before(t) {
            Some(prev) => Bound::Excluded((prev, Uuid::max())),
            None => Bound::Unbounded,
        };
        self.customers
            .range((lower, Bound::Included((t, Uuid::max()))))
            .find(|(_, c)| !c.started_wait)
            .map(|(k, _)| *k)
    }

    /// A wait starting at customer message `key`, marked as started.
    fn start_wait(&mut self, key: Key, unanswered_after: chrono::Duration) -> Wait {
        let customer = self.customers.get_mut(&key).expect("a remembered message");
        customer.started_wait = true;
        Wait {
            starter: key.1,
            started_at: key.0,
            deadline: key.0 + unanswered_after,
            channel: customer.channel,
            fired: None,
        }
    }

    /// What `end` ended, if anything.
    fn ended_by(&self, end: End) -> Option<&Ended> {
        match end {
            End::Reply(k) => self.replies.get(&k).and_then(|r| r.ended.as_deref()),
            End::Close(k) => self.closes.get(&k).and_then(|c| c.as_deref()),
        }
    }

    /// Where the record of what `end` ended is kept.
    fn slot(&mut self, end: End) -> &mut Option<Box<Ended>> {
        match end {
            End::Reply(k) => &mut self.replies.get_mut(&k).expect("remembered").ended,
            End::Close(k) => self.closes.get_mut(&k).expect("remembered"),
        }
    }

    /// The first reply or close after `end`, in the order of [`Self::first_end_from`]: by
    /// time, a reply before a close at one instant, then by event id.
    fn next_end_after(&self, end: End) -> Option<End> {
        let (reply, close) = match end {
            End::Reply(k) => (
                self.replies.range(after_key(k)).next(),
                self.closes.range((k.0, Uuid::nil())..).next(),
            ),
            End::Close(k) => (
                self.replies.range(after(k.0)).next(),
                self.closes.range(after_key(k)).next(),
            ),
        };
        match (reply.map(|(k, _)| *k), close.map(|(k, _)| *k)) {
            (Some(r), Some(c)) if c.0 < r.0 => Some(End::Close(c)),
            (Some(r), _) => Some(End::Reply(r)),
            (None, Some(c)) => Some(End::Close(c)),
            (None, None) => None,
        }
    }

    /// Takes back what `end` ended: retracts its sample, tells the metrics, frees its starter.
    /// Its notification, if any, is the caller's to keep or correct.
    fn undo(&mut self, ctx: &mut Ctx<'_>, end: End) -> Option<Box<Ended>> {
        let rec = self.slot(end).take()?;
        if let Some(c) = self.customers.get_mut(&rec.starter) {
            c.started_wait = false;
        }
        if let Some(s) = &rec.sample {
            ctx.out.push(Output::ResponseTime(s.retraction()));
        }
        ctx.ended.push(EndedWait {
            retracted: true,
            seller: rec.metrics_seller,
            starter: rec.starter.1,
            started_at: rec.starter.0,
            ended_at: end.at(),
            answered: rec.sample.is_some(),
        });
        Some(rec)
    }
}

impl Conversations {
    pub fn get(&self, id: &EntityId) -> Option<&Conversation> {
        self.map.get(id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The deadline of `id`'s open wait, if any, and whether it is still pending (not fired).
    pub fn deadline(
        &self,
        id: &EntityId,
        deadlines: &super::Deadlines,
    ) -> (bool, Option<DateTime<Utc>>) {
        let Some(wait) = self.map.get(id).and_then(|c| c.wait.as_ref()) else {
            return (false, None);
        };
        let key = DeadlineKey::Unanswered(id.clone());
        (deadlines.contains(wait.deadline, &key), Some(wait.deadline))
    }

    /// Every (conversation, seller) the conversations name: their assigned seller and their
    /// last replier.
    pub fn sellers(&self) -> impl Iterator<Item = (&EntityId, UserId)> {
        self.map.iter().flat_map(|(id, c)| {
            [c.seller(), c.last_replier.map(|(s, _)| s)]
                .into_iter()
                .flatten()
                .map(move |s| (id, s))
        })
    }

    /// Forgets a conversation (see [`super::retention`]); its remembered history goes with it.
    pub fn forget(&mut self, id: &EntityId) -> Option<Conversation> {
        self.map.remove(id)
    }

    /// `lead` (forgotten) no longer names conversation `id`.
    pub fn unlink_lead(&mut self, id: &EntityId, lead: &EntityId) {
        if let Some(c) = self.map.get_mut(id) {
            c.leads.remove(lead);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Conversation> {
        self.map.values()
    }

    /// Every conversation with its id, in id order.
    #[cfg(test)]
    pub fn entries(&self) -> impl Iterator<Item = (&EntityId, &Conversation)> {
        self.map.iter()
    }

    pub fn entries_mut(&mut self) -> impl Iterator<Item = (&EntityId, &mut Conversation)> {
        self.map.iter_mut()
    }

    pub fn get_mut(&mut self, id: &EntityId) -> Option<&mut Conversation> {
        self.map.get_mut(id)
    }

    pub fn get_or_create(&mut self, id: &EntityId) -> &mut Conversation {
        self.map.get_or_default(id)
    }

    pub fn on_message_received(&mut self, ctx: &mut Ctx<'_>, event: &Event, m: &MessageReceived) {
        let t = event.occurred_at;
        let key = (t, event.event_id);
        self.history.insert((t, m.conversation_id.clone()));
        let conv = self.get_or_create(&m.conversation_id);
        conv.saw_message(t);
        conv.customer_messages += 1;
        if conv.last_customer_message_at.is_none_or(|last| t > last) {
            conv.last_customer_message_at = Some(t);
        }
        if let Some(text) = &m.text {
            let signals = scoring::intent_signal_mask(text);
            if signals != 0 {
                conv.intent_signals.extend(scoring::signals_in(signals));
            }
        }
        if let Some(seller) = m.seller_id {
            conv.assign(seller, t);
        }
        conv.customers.insert(
            key,
            Customer {
                channel: m.channel,
                started_wait: false,
            },
        );
        let unanswered_after = chrono_duration(ctx.th.unanswered_after);

        let id = &m.conversation_id;
        if let Some(end) = conv.first_end_from(t) {
            // It arrived after what ended its wait.
            match conv.ended_by(end).map(|r| r.starter) {
                // That end has not ended a wait yet: this message started one that it ended.
                None => {
                    let wait = conv.start_wait(key, unanswered_after);
                    let rec = finish(ctx, id, conv, wait, end, None);
                    *conv.slot(end) = Some(rec);
                }
                // An earlier message of the wait that end ended: the wait started here.
                // Correct what was sent for the later start.
                Some(starter) if key < starter => {
                    let old = conv.undo(ctx, end).expect("a recorded end");
                    let wait = conv.start_wait(key, unanswered_after);
                    let rec = finish(ctx, id, conv, wait, end, None);
                    if let Some(fired) = &old.fired {
                        correct(ctx, id, fired, &old);
                    }
                    *conv.slot(end) = Some(rec);
                }
                Some(_) => {}
            }
            return;
        }
        match &mut conv.wait {
            Some(w) if t < w.started_at => {
                // An earlier customer message of the same wait: it starts the wait. If the
                // later start's deadline already fired, that notification is corrected.
                let dkey = DeadlineKey::Unanswered(id.clone());
                let old = conv.wait.take().expect("matched");
                let displaced = (old.started_at, old.starter);
                if let Some(c) = conv.customers.get_mut(&displaced) {
                    c.started_wait = false;
                }
                match &old.fired {
                    None => {
                        ctx.deadlines.remove(old.deadline, &dkey);
                    }
                    Some(fired) => {
                        let rec = Ended {
                            starter: displaced,
                            deadline: old.deadline,
                            channel: old.channel,
                            sample: None,
                            fired: None,
                            metrics_seller: None,
                        };
                        correct(ctx, id, fired, &rec);
                    }
                }
                let wait = conv.start_wait(key, unanswered_after);
                ctx.deadlines.insert(wait.deadline, dkey);
                conv.wait = Some(wait);
            }
            Some(_) => {}
            None => {
                let wait = conv.start_wait(key, unanswered_after);
                ctx.deadlines.insert(
                    wait.deadline,
                    DeadlineKey::Unanswered(m.conversation_id.clone()),
                );
                conv.wait = Some(wait);
            }
        }
    }

    pub fn on_message_sent(&mut self, ctx: &mut Ctx<'_>, event: &Event, m: &MessageSent) {
        let key = (event.occurred_at, event.event_id);
        // One look-up: `history` is borrowed apart from the map.
        let conv = self.map.get_or_default(&m.conversation_id);
        conv.saw_message(key.0);
        if m.automated {
            return;
        }
        if conv.last_replier.is_none_or(|(_, at)| key.0 >= at) {
            conv.last_replier = Some((m.seller_id, key.0));
        }
        self.history.insert((key.0, m.conversation_id.clone()));
        conv.replies.insert(
            key,
            Reply {
                seller: m.seller_id,
                ended: None,
            },
        );
        self.on_end(ctx, &m.conversation_id, End::Reply(key));
    }

    pub fn on_closed(&mut self, ctx: &mut Ctx<'_>, event: &Event, c: &ConversationClosed) {
        let key = (event.occurred_at, event.event_id);
        self.history.insert((key.0, c.conversation_id.clone()));
        let conv = self.get_or_create(&c.conversation_id);
        conv.closes.insert(key, None);
        if conv.last_closed_at.is_none_or(|at| key.0 > at) {
            conv.last_closed_at = Some(key.0);
        }
        self.on_end(ctx, &c.conversation_id, End::Close(key));
    }

    /// A reply or close (just remembered) ends the open wait, or a wait of customer messages that
    /// arrived before it but never started one, if any.
    fn on_end(&mut self, ctx: &mut Ctx<'_>, id: &EntityId, end: End) {
        let at = end.at();
        let unanswered_after = chrono_duration(ctx.th.unanswered_after);
        let conv = self.map.get_mut(id).expect("created by the caller");
        let ends_open_wait = conv.wait.as_ref().is_some_and(|w| w.started_at <= at);
        let wait = if ends_open_wait {
            conv.wait.take()
        } else if Self::take_over(ctx, id, conv, end) {
            return;
        } else {
            conv.unanswered_until(at)
                .map(|k| conv.start_wait(k, unanswered_after))
        };
        let Some(wait) = wait else {
            return;
        };
        let rec = finish(ctx, id, conv, wait, end, None);
        *conv.slot(end) = Some(rec);
        if ends_open_wait {
            // Customer messages after this end (they arrived before it) start the next wait:
            // no other end after it is remembered, or it would have ended the open wait first.
            let next = conv.customers.range(after(at)).next().map(|(k, _)| *k);
            if let Some(k) = next {
                let wait = conv.start_wait(k, unanswered_after);
                ctx.deadlines
                    .insert(wait.deadline, DeadlineKey::Unanswered(id.clone()));
                conv.wait = Some(wait);
            }
        }
    }

    /// A late `end` that does not end the open wait: if the next end ended a wait that started
    /// at or before `end`, that wait ended here instead (even when customer messages after that
    /// start, never a wait's start, also precede `end`: they belong to the same wait). The next end's sample is retracted,
    /// this end's sent, and the next end ends the wait of the first customer message after
    /// this one, if any.
    /// Returns whether it did (else the end's own customer messages, if any, are its wait).
    fn take_over(ctx: &mut Ctx<'_>, id: &EntityId, conv: &mut Conversation, end: End) -> bool {
        let Some(next) = conv.next_end_after(end) else {
            return false;
        };
        let Some(starter) = conv.ended_by(next).map(|r| r.starter) else {
            return false;
        };
        if starter.0 > end.at() {
            return false;
        }
        let old = conv.undo(ctx, next).expect("a recorded end");
        // The starter may be forgotten already (`forget_history_before`: a wait can outlast the
        // history kept) while the end's record still names it; the record is all the take-over
        // needs, and a forgotten message starts no other wait.
        if let Some(customer) = conv.customers.get_mut(&starter) {
            customer.started_wait = true;
        }
        let wait = Wait {
            starter: starter.1,
            started_at: starter.0,
            deadline: old.deadline,
            channel: old.channel,
            fired: None,
        };
        let rec = finish(ctx, id, conv, wait, end, old.fired.clone());
        *conv.slot(end) = Some(rec);
        let unanswered_after = chrono_duration(ctx.th.unanswered_after);
        if let Some(k) = conv.unanswered_until(next.at()) {
            let wait = conv.start_wait(k, unanswered_after);
            let rec = finish(ctx, id, conv, wait, next, None);
            *conv.slot(next) = Some(rec);
        }
        true
    }

    pub fn on_assigned(&mut self, event: &Event, a: &ConversationAssigned) {
        self.get_or_create(&a.conversation_id)
            .assign(a.seller_id, event.occurred_at);
    }

    /// The unanswered deadline of `id`'s open wait is reached.
    pub fn fire(&mut self, ctx: &mut Ctx<'_>, id: &EntityId, at: DateTime<Utc>) {
        let Some(conv) = self.map.get_mut(id) else {
            return;
        };
        let seller = conv.seller();
        let Some(wait) = conv.wait.as_mut() else {
            return;
        };
        if wait.fired.is_some() || wait.deadline != at {
            return;
        }
        let fired = notify_unanswered(ctx, id, seller, wait);
        wait.fired = Some(fired);
    }

    /// Forgets customer messages, replies and closes before `cutoff`.
    pub fn forget_history_before(&mut self, cutoff: DateTime<Utc>) {
        let bound = (cutoff, Uuid::nil());
        while let Some((at, id)) = self.history.first().cloned() {
            if at >= cutoff {
                break;
            }
            self.history.pop_first();
            if let Some(conv) = self.map.get_mut(&id) {
                conv.customers.forget_before(&bound);
                conv.replies.forget_before(&bound);
                conv.closes.forget_before(&bound);
            }
        }
    }
}

/// `wait` ended at `end`: the response-time sample (for a reply), and the unanswered
/// notification's cancellation, or its withdrawal. `prior`: the wait's notification, already
/// sent and withdrawn when a later end was taken for its end (see `take_over`): kept if `end`
/// is past the deadline too, corrected if not.
fn finish(
    ctx: &mut Ctx<'_>,
    id: &EntityId,
    conv: &Conversation,
    wait: Wait,
    end: End,
    prior: Option<Fired>,
) -> Box<Ended> {
    let seller = conv.seller();
    let metrics_seller = match end {
        End::Reply(key) => Some(conv.replies[&key].seller),
        End::Close(_) => conv.metrics_seller(),
    };
    ctx.ended.push(EndedWait {
        retracted: false,
        seller: metrics_seller,
        starter: wait.starter,
        started_at: wait.started_at,
        ended_at: end.at(),
        answered: matches!(end, End::Reply(_)),
    });
    let mut rec = Ended {
        starter: (wait.started_at, wait.starter),
        deadline: wait.deadline,
        channel: wait.channel,
        sample: None,
        fired: None,
        metrics_seller,
    };
    let (at, why, replier) = match end {
        End::Reply(key) => {
            let replier = conv.replies[&key].seller;
            let s = sample(ctx.tenant, id, wait.starter, wait.started_at, key, replier);
            ctx.out.push(Output::ResponseTime(s.clone()));
            rec.sample = Some(s);
            (key.0, Resolution::Resolved, Some(replier))
        }
        End::Close((at, _)) => (at, Resolution::Closed, None),
    };
    rec.fired = match prior {
        Some(fired) if at > wait.deadline => Some(fired),
        Some(fired) => {
            correct(ctx, id, &fired, &rec);
            None
        }
        None => end_wait(ctx, id, seller, wait, at, why, replier),
    };
    Box::new(rec)
}

/// A notification sent for the wait of `rec` turned out wrong (a late event moved the wait's
/// start or answered it in time): a withdrawal with state `corrected`, dated like the original.
fn correct(ctx: &mut Ctx<'_>, id: &EntityId, fired: &Fired, rec: &Ended) {
    let wait = Wait {
        starter: rec.starter.1,
        started_at: rec.starter.0,
        deadline: rec.deadline,
        channel: rec.channel,
        fired: Some(fired.clone()),
    };
    withdraw(ctx, id, &wait, rec.deadline, Resolution::Corrected, None);
}

fn sample(
    tenant: u64,
    conversation: &EntityId,
    customer_event: Uuid,
    waiting_since: DateTime<Utc>,
    reply: (DateTime<Utc>, Uuid),
    seller: UserId,
) -> ResponseTimeSample {
    let (replied_at, reply_event_id) = reply;
    ResponseTimeSample {
        // From both ends of the wait: a correction that moves either gives a new sample.
        id: derive_id(
            "response_time",
            &[
                super::leads::decimal(tenant, &mut [0; 20]),
                conversation.as_str(),
                customer_event
                    .hyphenated()
                    .encode_lower(&mut Uuid::encode_buffer()),
                reply_event_id
                    .hyphenated()
                    .encode_lower(&mut Uuid::encode_buffer()),
            ],
        ),
        tenant_id: tenant,
        conversation_id: conversation.clone(),
        seller_id: seller,
        customer_event_id: customer_event,
        reply_event_id,
        waiting_since,
        replied_at,
        response_seconds: (replied_at - waiting_since).num_milliseconds() as f64 / 1000.0,
        retracts: None,
    }
}

/// A wait ends at `at` (a reply or a close): cancel its deadline, or withdraw its notification.
/// Returns the notification sent for the wait, if any.
fn end_wait(
    ctx: &mut Ctx<'_>,
    id: &EntityId,
    seller: Option<UserId>,
    mut wait: Wait,
    at: DateTime<Utc>,
    why: Resolution,
    replier: Option<UserId>,
) -> Option<Fired> {
    if wait.fired.is_none() {
        ctx.deadlines
            .remove(wait.deadline, &DeadlineKey::Unanswered(id.clone()));
        if at <= wait.deadline {
            return None; // answered in time
        }
        // The deadline passed in event time before this ended it: it was unanswered then.
        wait.fired = Some(notify_unanswered(ctx, id, seller, &wait));
    } else if at <= wait.deadline {
        // Answered in time, but that reached us after the notification fired: it was wrong.
        withdraw(ctx, id, &wait, at, Resolution::Corrected, None);
        return None;
    }
    withdraw(ctx, id, &wait, at, why, replier);
    wait.fired
}

/// The withdrawal of `wait`'s notification (which must have fired).
fn withdraw(
    ctx: &mut Ctx<'_>,
    id: &EntityId,
    wait: &Wait,
    at: DateTime<Utc>,
    why: Resolution,
    replier: Option<UserId>,
) {
    let fired = wait.fired.as_ref().expect("a fired notification");
    if matches!(why, Resolution::Corrected) {
        ctx.corrected_alerts
            .insert(fired.notification_id, wait.deadline);
    }
    let (title, message) = texts::unanswered_withdrawn(ctx.th.language, why);
    ctx.out.push(Output::Notification(Notification {
        id: derive_id(
            "notification/unanswered/withdrawal",
            &[&fired.notification_id.to_string(), why.as_str()],
        ),
        tenant_id: ctx.tenant,
        kind: NotificationType::UnansweredConversation,
        priority: Priority::High,
        audience: fired.audience.clone(),
        title,
        message,
        data: json!({
            "conversation_id": id,
            "seller_id": fired.seller,
            "waiting_since": Timestamp(wait.started_at),
            "deadline": Timestamp(wait.deadline),
            "channel": wait.channel,
            "customer_event_id": wait.starter,
            "state": why.as_str(),
            "resolved_at": Timestamp(at),
            "resolved_by": replier,
        }),
        actions: vec![open_chat(ctx, id)],
        // Never before what it withdraws, even when a late reply predates the deadline.
        created_at: at.max(wait.deadline),
        withdraws: Some(fired.notification_id),
    }));
}

fn notify_unanswered(
    ctx: &mut Ctx<'_>,
    id: &EntityId,
    seller: Option<UserId>,
    wait: &Wait,
) -> Fired {
    let audience = match seller {
        Some(user_id) => Audience::User { user_id },
        None => Audience::Role {
            role: Role::Secretary,
        },
    };
    let mut notification_id = derive_id(
        "notification/unanswered",
        &[
            &ctx.tenant.to_string(),
            id.as_str(),
            &wait.starter.to_string(),
        ],
    );
    // The same wait start alerted again after its alert was corrected (a late event moved the
    // start away and another brought it back): a new id, or downstream stores that keep one
    // record per id would keep the corrected one.
    while ctx.corrected_alerts.contains_key(&notification_id) {
        notification_id = derive_id(
            "notification/unanswered/again",
            &[&notification_id.to_string()],
        );
    }
    let (title, message) = texts::unanswered(ctx.th.language, ctx.th.unanswered_after);
    ctx.out.push(Output::Notification(Notification {
        id: notification_id,
        tenant_id: ctx.tenant,
        kind: NotificationType::UnansweredConversation,
        priority: Priority::High,
        audience: audience.clone(),
        title,
        message,
        data: json!({
            "conversation_id": id,
            "seller_id": seller,
            "waiting_since": Timestamp(wait.started_at),
            "deadline": Timestamp(wait.deadline),
            "channel": wait.channel,
            "customer_event_id": wait.starter,
        }),
        actions: vec![open_chat(ctx, id)],
        created_at: wait.deadline,
        withdraws: None,
    }));
    Fired {
        notification_id,
        audience,
        seller,
    }
}

pub(crate) fn open_chat(ctx: &Ctx<'_>, id: &EntityId) -> Action {
    Action {
        label: texts::open_chat(ctx.th.language),
        action: "open_chat".into(),
        params: json!({ "conversation_id": id }),
    }
}
