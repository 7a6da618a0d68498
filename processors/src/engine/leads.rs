//! Hot leads and follow-up reminders (contract §3.3, §3.4).
//!
//! **Hot lead.** A lead's score ([`crate::scoring`]) is recomputed, and emitted as a
//! [`LeadScore`], on its `lead.created`, on each `lead.status_changed`, and on each customer
//! message in the conversation its `lead.created` named; the evaluation time is the causing
//! event's `occurred_at`. Inputs: the lead's source and location, and its conversation's customer
//! message count, last customer message time and buying signals. Events for a lead whose
//! `lead.created` was never seen update its state but emit no score (its source is unknown).
//!
//! A lead notifies its seller (`hot_lead`, urgent) when a recomputation finds all of: score >=
//! `hot_lead_threshold`; the lead *armed* (never notified, or its score fell below
//! `hot_lead_rearm` since it last notified); status `new` or `contacted`; and no seller reply in
//! its conversation within `hot_lead_no_contact` before the evaluation time. Notifying disarms it.
//! So a lead that is already above the threshold while its seller is talking to it notifies once
//! the conditions hold, and each "hot episode" notifies once. The seller is the lead's
//! (`lead.created.seller_id`), else the conversation's; with neither, the role `manager`.
//!
//! **Follow-up reminder.** `lead.follow_up_scheduled` sets the lead's follow-up (the one with the
//! latest `occurred_at` wins; an earlier one is cancelled). Reminders fire `follow_up_before`
//! before `due_at` (only if that is after the scheduling itself) and at `due_at`, to the
//! scheduling seller, if the lead's status is then `interested` or `negotiation` — or unknown
//! (its events are older than the replayed log): no evidence that it moved on.
//!
//! Status changes apply by event time: an older `lead.status_changed` arriving late does not
//! override a newer one.
//!
//! **Conversions.** The score emitted for a `lead.status_changed` names the status it set
//! ([`LeadScore::status_change`]), so each status change to `converted` is a conversion by the
//! lead's seller in the hour of its `occurred_at` (ClickHouse's `seller_hourly.conversions` sums
//! them). Counted per status change, in event time, whatever order they arrive in: one that
//! arrives before its lead's `lead.created` (late `lead.created`) is held, and scored when the
//! `lead.created` arrives — with the inputs known then, at the status change's time, without
//! evaluating the hot-lead rule for it (its status is not the lead's status now). Held changes
//! are forgotten once older than the allowed lateness (their `lead.created` would be refused).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;
use vigia_schemas::rfc3339::Timestamp;
use vigia_schemas::{
    derive_id, Action, Audience, EntityId, Event, LeadCreated, LeadFollowUpScheduled, LeadScore,
    LeadSource, LeadStatus, LeadStatusChanged, Notification, NotificationType, Priority, Role,
    UserId,
};

use super::conversations::{open_chat, Conversation, Conversations};
use super::entities::EntityMap;
use super::figures::LeadEntry;
use super::{chrono_duration, Ctx, DeadlineKey, Output};
use crate::scoring::{self, ScoreInputs};
use crate::texts;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Leads {
    map: EntityMap<Lead>,
    /// Status changes of leads whose `lead.created` is not seen yet, not scored yet:
    /// (time, event id, status). Apart from `map` so that pruning touches only these.
    unscored: BTreeMap<EntityId, Vec<(DateTime<Utc>, Uuid, LeadStatus)>>,
    /// What leads counted for in the seller figures and count for now, for each lead an event
    /// changed ([`super::figures`] takes them after each event): noted where a lead changes,
    /// so that no lead has to be looked up again.
    #[serde(skip)]
    figure_changes: Vec<FigureChange>,
}

/// A lead counted for the first and counts for the second ([`Leads::take_figure_changes`]).
pub(crate) type FigureChange = (Option<LeadEntry>, Option<LeadEntry>);

/// A seller's lead figures ([`Leads::seller_figures`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeadFigures {
    /// A lead names the seller (its own or its conversation's): the seller is one of
    /// `per_seller`'s. Entries without it hold only sellerless leads' figures (under 0) or
    /// figures of the other two kinds.
    pub with_seller: bool,
    /// `per_seller`'s.
    pub generated: u32,
    pub converted: u32,
    /// [`Leads::per_seller_between`]'s.
    pub generated_between: u32,
    pub converted_between: u32,
    /// `hot_per_seller`'s.
    pub hot: u32,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Lead {
    /// From `lead.created`; `None` until it is seen.
    created: Option<Created>,
    status: Option<(LeadStatus, DateTime<Utc>)>,
    /// Whether crossing the threshold would notify (see module doc).
    armed: bool,
    follow_up: Option<FollowUp>,
    /// What it counts for in the seller figures, as last recorded ([`super::figures`]).
    #[serde(skip)]
    figures: Option<LeadEntry>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Created {
    at: DateTime<Utc>,
    source: LeadSource,
    seller: Option<UserId>,
    name: Option<String>,
    location: Option<String>,
    conversation: Option<EntityId>,
}

impl Created {
    /// The lead's seller: its own, else its conversation's.
    fn seller_in(&self, convs: &Conversations) -> Option<UserId> {
        self.seller_with(self.conversation_in(convs))
    }

    /// Its conversation, if kept.
    fn conversation_in<'c>(&self, convs: &'c Conversations) -> Option<&'c Conversation> {
        self.conversation.as_ref().and_then(|c| convs.get(c))
    }

    /// [`Self::seller_in`] with its conversation already looked up ([`Self::conversation_in`]).
    fn seller_with(&self, conv: Option<&Conversation>) -> Option<UserId> {
        self.seller.or_else(|| conv.and_then(|c| c.seller()))
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct FollowUp {
    /// The `lead.follow_up_scheduled` event.
    event_id: Uuid,
    scheduled_at: DateTime<Utc>,
    due_at: DateTime<Utc>,
    seller: UserId,
    note: Option<String>,
    /// The reminder before `due_at`, if any.
    before: Option<DateTime<Utc>>,
}

/// Which of a follow-up's two reminders.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub(crate) enum FollowUpStage {
    Before,
    Due,
}

impl FollowUpStage {
    fn as_str(self) -> &'static str {
        match self {
            FollowUpStage::Before => "before",
            FollowUpStage::Due => "due",
        }
    }
}

impl Default for Lead {
    fn default() -> Self {
        Lead {
            created: None,
            status: None,
            armed: true,
            follow_up: None,
            figures: None,
        }
    }
}

impl Lead {
    /// Records what the lead counts for now, noting it in `changes` if that changed.
    fn note_figures(&mut self, convs: &Conversations, changes: &mut Vec<FigureChange>) {
        let conv = self.created.as_ref().and_then(|c| c.conversation_in(convs));
        self.note_figures_with(conv, changes);
    }

    /// [`Self::note_figures`] with the conversation of its `lead.created` already looked up.
    fn note_figures_with(&mut self, conv: Option<&Conversation>, changes: &mut Vec<FigureChange>) {
        let new = self.figure_entry_with(conv);
        if new != self.figures {
            changes.push((std::mem::replace(&mut self.figures, new), new));
        }
    }

    fn figure_entry(&self, convs: &Conversations) -> Option<LeadEntry> {
        let conv = self.created.as_ref().and_then(|c| c.conversation_in(convs));
        self.figure_entry_with(conv)
    }

    fn figure_entry_with(&self, conv: Option<&Conversation>) -> Option<LeadEntry> {
        let created = self.created.as_ref()?;
        let open = !matches!(
            self.status,
            Some((LeadStatus::Converted | LeadStatus::Lost, _))
        );
        Some(LeadEntry {
            seller: created.seller_with(conv),
            created_at: created.at,
            converted_at: match self.status {
                Some((LeadStatus::Converted, at)) => Some(at),
                _ => None,
            },
            hot: !self.armed && open,
        })
    }

    fn set_status(&mut self, status: LeadStatus, at: DateTime<Utc>) {
        if self.status.is_none_or(|(_, since)| at >= since) {
            self.status = Some((status, at));
        }
    }
}

pub(crate) fn source_name(s: LeadSource) -> &'static str {
    match s {
        LeadSource::MetaAds => "META_ADS",
        LeadSource::Website => "WEBSITE",
        LeadSource::Referral => "REFERRAL",
        LeadSource::Whatsapp => "WHATSAPP",
        LeadSource::Other => "OTHER",
    }
}

impl Leads {
    pub fn on_created(
        &mut self,
        ctx: &mut Ctx<'_>,
        convs: &mut Conversations,
        event: &Event,
        l: &LeadCreated,
    ) {
        let lead = self.map.get_or_default(&l.lead_id);
        if let Some(c) = &l.conversation_id {
            convs.get_or_create(c).leads.insert(l.lead_id.clone());
        }
        lead.created = Some(Created {
            at: event.occurred_at,
            source: l.source,
            seller: l.seller_id,
            name: l.name.clone(),
            location: l.location.clone(),
            conversation: l.conversation_id.clone(),
        });
        lead.set_status(LeadStatus::New, event.occurred_at);
        let convs: &Conversations = convs;
        let conv = lead.created.as_ref().and_then(|c| c.conversation_in(convs));
        recompute(ctx, conv, &l.lead_id, lead, event, None);
        if let (Some(mut held), Some(created)) = (self.unscored.remove(&l.lead_id), &lead.created) {
            held.sort_by_key(|(at, id, _)| (*at, *id));
            for (at, cause, status) in held {
                score(ctx, conv, &l.lead_id, created, cause, at, Some(status));
            }
        }
        lead.note_figures(convs, &mut self.figure_changes);
    }

    /// The changes to what leads count for since last taken (see [`Self::figure_changes`]).
    pub fn take_figure_changes(&mut self) -> std::vec::Drain<'_, FigureChange> {
        self.figure_changes.drain(..)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn contains(&self, id: &EntityId) -> bool {
        self.map.contains_key(id)
    }

    /// The latest follow-up reminder of `id` still pending, if any.
    pub fn pending_deadline(
        &self,
        id: &EntityId,
        deadlines: &super::Deadlines,
    ) -> Option<DateTime<Utc>> {
        let f = self.map.get(id)?.follow_up.as_ref()?;
        let due = DeadlineKey::FollowUp(id.clone(), FollowUpStage::Due);
        let before = DeadlineKey::FollowUp(id.clone(), FollowUpStage::Before);
        if deadlines.contains(f.due_at, &due) {
            Some(f.due_at)
        } else {
            f.before.filter(|b| deadlines.contains(*b, &before))
        }
    }

    /// Every (lead, seller) of the leads whose `lead.created` named a seller.
    pub fn sellers(&self) -> impl Iterator<Item = (&EntityId, UserId)> {
        self.map
            .iter()
            .filter_map(|(id, l)| Some((id, l.created.as_ref()?.seller?)))
    }

    /// Forgets a lead (see [`super::retention`]); returns the conversation its `lead.created`
    /// named, if any, and what it counted for in the seller figures.
    pub fn forget(&mut self, id: &EntityId) -> (Option<EntityId>, Option<LeadEntry>) {
        let Some(lead) = self.map.remove(id) else {
            return (None, None);
        };
        (lead.created.and_then(|c| c.conversation), lead.figures)
    }

    /// How many status changes are held for a `lead.created` not seen yet.
    #[cfg(test)]
    pub fn unscored_changes(&self) -> usize {
        self.unscored.values().map(Vec::len).sum()
    }

    /// Forgets held status changes older than `cutoff`: a `lead.created` older than them would
    /// be refused as too late, so they could never be scored.
    pub fn forget_unscored_before(&mut self, cutoff: DateTime<Utc>) {
        self.unscored.retain(|_, held| {
            held.retain(|(at, _, _)| *at >= cutoff);
            !held.is_empty()
        });
    }

    /// Per seller: (leads generated, leads converted) — leads whose `lead.created` was seen, by
    /// their seller (the lead's, else its conversation's), converted if their status now is.
    #[cfg(test)]
    pub fn per_seller(&self, convs: &Conversations) -> BTreeMap<UserId, (u32, u32)> {
        let mut out: BTreeMap<UserId, (u32, u32)> = BTreeMap::new();
        for lead in self.map.values() {
            let Some(created) = &lead.created else {
                continue;
            };
            let Some(seller) = created.seller_in(convs) else {
                continue;
            };
            let entry = out.entry(seller).or_default();
            entry.0 += 1;
            if matches!(lead.status, Some((LeadStatus::Converted, _))) {
                entry.1 += 1;
            }
        }
        out
    }

    /// `per_seller`, [`Self::per_seller_between`] and `hot_per_seller` (the test-only
    /// references it is tested against) in one pass over the leads, each lead's seller looked up
    /// once: the sellers' evaluation reads all three every minute.
    pub fn seller_figures(
        &self,
        convs: &Conversations,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BTreeMap<UserId, LeadFigures> {
        let mut out: BTreeMap<UserId, LeadFigures> = BTreeMap::new();
        let within = |t: DateTime<Utc>| from <= t && t < to;
        for lead in self.map.values() {
            let Some(created) = &lead.created else {
                continue;
            };
            let seller = created.seller_in(convs);
            let converted = matches!(lead.status, Some((LeadStatus::Converted, _)));
            if let Some(s) = seller {
                let f = out.entry(s).or_default();
                f.with_seller = true;
                f.generated += 1;
                f.converted += u32::from(converted);
            }
            let seller = seller.unwrap_or(0);
            let converted_between =
                matches!(lead.status, Some((LeadStatus::Converted, at)) if within(at));
            if within(created.at) || converted_between {
                let f = out.entry(seller).or_default();
                f.generated_between += u32::from(within(created.at));
                f.converted_between += u32::from(converted_between);
            }
            let open = !matches!(
                lead.status,
                Some((LeadStatus::Converted | LeadStatus::Lost, _))
            );
            if !lead.armed && open {
                out.entry(seller).or_default().hot += 1;
            }
        }
        out
    }

    /// Records what lead `id` counts for in the seller figures ([`super::figures`]) now;
    /// returns what it counted for before and now, or `None` if it is not kept.
    pub fn refresh_figures(
        &mut self,
        id: &EntityId,
        convs: &Conversations,
    ) -> Option<(Option<LeadEntry>, Option<LeadEntry>)> {
        let lead = self.map.get_mut(id)?;
        let new = lead.figure_entry(convs);
        Some((std::mem::replace(&mut lead.figures, new), new))
    }

    /// Records what every lead counts for; returns those that count.
    pub fn record_figures(&mut self, convs: &Conversations) -> Vec<LeadEntry> {
        let mut out = Vec::new();
        for lead in self.map.values_mut() {
            lead.figures = lead.figure_entry(convs);
            out.extend(lead.figures);
        }
        out
    }

    /// What the leads counted for when last recorded.
    pub fn recorded_figures(&self) -> impl Iterator<Item = &LeadEntry> {
        self.map.values().filter_map(|l| l.figures.as_ref())
    }

    /// What every lead counts for now (the same reading of a lead as [`Self::seller_figures`]).
    #[cfg(test)]
    pub fn figure_entries(&self, convs: &Conversations) -> Vec<LeadEntry> {
        self.map
            .values()
            .filter_map(|l| l.figure_entry(convs))
            .collect()
    }

    /// Per seller, over `from <= time < to`: (leads created, leads converted) — by the time of
    /// their `lead.created` and of their (current) `converted` status; sellers as in
    /// `per_seller`. Sellerless leads count under seller 0.
    pub fn per_seller_between(
        &self,
        convs: &Conversations,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BTreeMap<UserId, (u32, u32)> {
        let mut out: BTreeMap<UserId, (u32, u32)> = BTreeMap::new();
        let within = |t: DateTime<Utc>| from <= t && t < to;
        for lead in self.map.values() {
            let Some(created) = &lead.created else {
                continue;
            };
            let seller = created.seller_in(convs).unwrap_or(0);
            let converted = matches!(lead.status, Some((LeadStatus::Converted, at)) if within(at));
            if within(created.at) || converted {
                let entry = out.entry(seller).or_default();
                entry.0 += u32::from(within(created.at));
                entry.1 += u32::from(converted);
            }
        }
        out
    }

    /// Per seller (as in [`Self::per_seller`]; sellerless under 0): the leads hot now — they
    /// notified and have not cooled below `hot_lead_rearm` since — that are still open.
    #[cfg(test)]
    pub fn hot_per_seller(&self, convs: &Conversations) -> BTreeMap<UserId, u32> {
        let mut out: BTreeMap<UserId, u32> = BTreeMap::new();
        for lead in self.map.values() {
            let Some(created) = &lead.created else {
                continue;
            };
            let open = !matches!(
                lead.status,
                Some((LeadStatus::Converted | LeadStatus::Lost, _))
            );
            if lead.armed || !open {
                continue;
            }
            let seller = created.seller_in(convs).unwrap_or(0);
            *out.entry(seller).or_default() += 1;
        }
        out
    }

    pub fn on_status_changed(
        &mut self,
        ctx: &mut Ctx<'_>,
        convs: &Conversations,
        event: &Event,
        s: &LeadStatusChanged,
    ) {
        let lead = self.map.get_or_default(&s.lead_id);
        lead.set_status(s.status, event.occurred_at);
        if lead.created.is_none() {
            // Nothing to count before its `lead.created`.
            self.unscored.entry(s.lead_id.clone()).or_default().push((
                event.occurred_at,
                event.event_id,
                s.status,
            ));
            return;
        }
        let conv = lead.created.as_ref().and_then(|c| c.conversation_in(convs));
        recompute(ctx, conv, &s.lead_id, lead, event, Some(s.status));
        lead.note_figures_with(conv, &mut self.figure_changes);
    }

    /// A customer wrote in `conversation`: rescore the leads it belongs to.
    pub fn on_customer_message(
        &mut self,
        ctx: &mut Ctx<'_>,
        convs: &Conversations,
        event: &Event,
        conversation: &EntityId,
    ) {
        let Some(conv) = convs.get(conversation) else {
            return;
        };
        for lead_id in &conv.leads {
            if let Some(lead) = self.map.get_mut(lead_id) {
                // Its `lead.created` named this conversation, unless a later one named another.
                let conv = lead.created.as_ref().and_then(|c| c.conversation_in(convs));
                recompute(ctx, conv, lead_id, lead, event, None);
                lead.note_figures_with(conv, &mut self.figure_changes);
            }
        }
    }

    pub fn on_follow_up_scheduled(
        &mut self,
        ctx: &mut Ctx<'_>,
        event: &Event,
        f: &LeadFollowUpScheduled,
    ) {
        let lead = self.map.get_or_default(&f.lead_id);
        let t = event.occurred_at;
        if let Some(old) = &lead.follow_up {
            if (old.scheduled_at, old.event_id) > (t, event.event_id) {
                return; // a newer schedule already replaced this one
            }
            if let Some(before) = old.before {
                ctx.deadlines.remove(
                    before,
                    &DeadlineKey::FollowUp(f.lead_id.clone(), FollowUpStage::Before),
                );
            }
            ctx.deadlines.remove(
                old.due_at,
                &DeadlineKey::FollowUp(f.lead_id.clone(), FollowUpStage::Due),
            );
        }
        let before = Some(f.due_at - chrono_duration(ctx.th.follow_up_before)).filter(|b| *b > t);
        if let Some(b) = before {
            ctx.deadlines.insert(
                b,
                DeadlineKey::FollowUp(f.lead_id.clone(), FollowUpStage::Before),
            );
        }
        ctx.deadlines.insert(
            f.due_at,
            DeadlineKey::FollowUp(f.lead_id.clone(), FollowUpStage::Due),
        );
        lead.follow_up = Some(FollowUp {
            event_id: event.event_id,
            scheduled_at: t,
            due_at: f.due_at,
            seller: f.seller_id,
            note: f.note.clone(),
            before,
        });
    }

    pub fn fire_follow_up(
        &mut self,
        ctx: &mut Ctx<'_>,
        lead_id: &EntityId,
        stage: FollowUpStage,
        at: DateTime<Utc>,
    ) {
        let Some(lead) = self.map.get(lead_id) else {
            return;
        };
        let Some(f) = &lead.follow_up else {
            return;
        };
        let status = lead.status.map(|(s, _)| s);
        if !matches!(
            status,
            None | Some(LeadStatus::Interested | LeadStatus::Negotiation)
        ) {
            return;
        }
        let name = lead.created.as_ref().and_then(|c| c.name.as_deref());
        let due_in = match stage {
            FollowUpStage::Before => Some((f.due_at - at).to_std().unwrap_or_default()),
            FollowUpStage::Due => None,
        };
        let (title, message) = texts::follow_up(ctx.th.language, name, due_in);
        ctx.out.push(Output::Notification(Notification {
            id: derive_id(
                "notification/follow_up",
                &[
                    &ctx.tenant.to_string(),
                    lead_id.as_str(),
                    &f.event_id.to_string(),
                    stage.as_str(),
                ],
            ),
            tenant_id: ctx.tenant,
            kind: NotificationType::FollowUpReminder,
            priority: Priority::Medium,
            audience: Audience::User { user_id: f.seller },
            title,
            message,
            data: json!({
                "lead_id": lead_id,
                "seller_id": f.seller,
                "due_at": Timestamp(f.due_at),
                "note": f.note,
                "stage": stage.as_str(),
                "status": status.map(LeadStatus::as_str),
                "schedule_event_id": f.event_id,
            }),
            actions: vec![open_lead(ctx, lead_id)],
            created_at: at,
            withdraws: None,
        }));
    }
}

fn open_lead(ctx: &Ctx<'_>, id: &EntityId) -> Action {
    Action {
        label: texts::open_lead(ctx.th.language),
        action: "open_lead".into(),
        params: json!({ "lead_id": id }),
    }
}

/// Rescores `lead` because of `cause` (which set its status to `status_change`, if a status
/// change), and notifies its seller if it became hot.
///
/// `conv`: the conversation its `lead.created` named, if kept ([`Created::conversation_in`]),
/// looked up once by the caller.
fn recompute(
    ctx: &mut Ctx<'_>,
    conv: Option<&Conversation>,
    lead_id: &EntityId,
    lead: &mut Lead,
    cause: &Event,
    status_change: Option<LeadStatus>,
) {
    let Some(created) = &lead.created else {
        return;
    };
    let at = cause.occurred_at;
    let (b, seller) = score(
        ctx,
        conv,
        lead_id,
        created,
        cause.event_id,
        at,
        status_change,
    );
    if b.score < ctx.th.hot_lead_rearm {
        lead.armed = true;
        return;
    }
    if b.score < ctx.th.hot_lead_threshold || !lead.armed {
        return;
    }
    let status = lead.status.map(|(s, _)| s);
    if !matches!(status, Some(LeadStatus::New | LeadStatus::Contacted)) {
        return;
    }
    let quiet_since = at - chrono_duration(ctx.th.hot_lead_no_contact);
    if conv.is_some_and(|c| c.replied_between(quiet_since, at)) {
        return;
    }
    lead.armed = false;
    let tenant = ctx.tenant.to_string();
    let cause_id = cause.event_id.to_string();
    let audience = match seller {
        Some(user_id) => Audience::User { user_id },
        None => Audience::Role {
            role: Role::Manager,
        },
    };
    let (title, message) = texts::hot_lead(ctx.th.language, created.name.as_deref(), b.score);
    let mut actions = vec![open_lead(ctx, lead_id)];
    if let Some(c) = &created.conversation {
        actions.push(open_chat(ctx, c));
    }
    ctx.out.push(Output::Notification(Notification {
        id: derive_id(
            "notification/hot_lead",
            &[&tenant, lead_id.as_str(), &cause_id],
        ),
        tenant_id: ctx.tenant,
        kind: NotificationType::HotLead,
        priority: Priority::Urgent,
        audience,
        title,
        message,
        data: json!({
            "lead_id": lead_id,
            "seller_id": seller,
            "conversation_id": created.conversation,
            "score": b.score,
            "components": {
                "source": b.source,
                "engagement": b.engagement,
                "recency": b.recency,
                "intent": b.intent,
                "location": b.location,
            },
            "source": source_name(created.source),
            "status": status.map(LeadStatus::as_str),
            "cause_event_id": cause.event_id,
        }),
        actions,
        created_at: at,
        withdraws: None,
    }));
}

/// Scores `lead_id` as of `at` because of the event `cause` and emits the [`LeadScore`]; returns
/// the score's parts and the lead's seller. `conv`: as in [`recompute`].
fn score(
    ctx: &mut Ctx<'_>,
    conv: Option<&Conversation>,
    lead_id: &EntityId,
    created: &Created,
    cause: Uuid,
    at: DateTime<Utc>,
    status_change: Option<LeadStatus>,
) -> (scoring::ScoreBreakdown, Option<UserId>) {
    let b = scoring::score(&ScoreInputs {
        source: source_name(created.source),
        customer_messages: conv.map_or(0, |c| c.customer_messages),
        last_customer_message_at: conv.and_then(|c| c.last_customer_message_at),
        evaluated_at: at,
        intent_signals: conv.map_or(0, |c| c.intent_signals.len() as u32),
        location: created.location.as_deref(),
        high_value_locations: &ctx.th.high_value_locations,
    });
    let seller = created.seller_with(conv);
    ctx.out.push(Output::LeadScore(LeadScore {
        id: derive_id(
            "lead_score",
            &[
                decimal(ctx.tenant, &mut [0; 20]),
                lead_id.as_str(),
                cause.hyphenated().encode_lower(&mut Uuid::encode_buffer()),
            ],
        ),
        tenant_id: ctx.tenant,
        lead_id: lead_id.clone(),
        seller_id: seller,
        score: b.score,
        source_score: b.source,
        engagement_score: b.engagement,
        recency_score: b.recency,
        intent_score: b.intent,
        location_score: b.location,
        cause_event_id: cause,
        computed_at: at,
        status_change,
    }));
    (b, seller)
}

/// `n` in decimal, written into `buf`: what `n.to_string()` gives, without allocating (a lead
/// score's id is derived from it on every customer message of a lead).
pub(super) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[start..]).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_is_to_string() {
        for n in [0, 7, 10, 42, 1_000_000, u64::MAX - 1, u64::MAX] {
            assert_eq!(super::decimal(n, &mut [0; 20]), n.to_string());
        }
    }
}
