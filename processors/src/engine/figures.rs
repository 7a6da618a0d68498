//! The sellers' conversation and lead figures — conversations total, active, today, unanswered,
//! total chat time; leads generated, converted, generated and converted today, hot — kept up to
//! date as conversations and leads change and as the evaluation instant moves, so that
//! evaluating a tenant's sellers every minute costs O(sellers), not a visit of every
//! conversation and lead of the tenant.
//!
//! What each conversation and lead counts for is recorded ([`ConvEntry`], [`LeadEntry`]): after
//! every applied event the entities it names (and the leads of its conversation, whose seller
//! may be the conversation's) are looked at again, and a changed entry takes its old
//! contribution back and adds its new one. Retention's forgetting is such a change.
//!
//! Time: the figures are those of one instant ([`Instant`]: the evaluation time `at` and the
//! start of its local day). Two kinds of figure move with it: a wait becomes overdue when `at`
//! reaches its deadline, and a lead created (or converted) later today counts as of today once
//! `at` passes its time. Those not reached yet wait in time-ordered queues and are counted as
//! `at` moves forward. A new day (or `at` going back) recounts from the entries; the first
//! evaluation, and the first after a restore, builds the entries from the conversations and
//! leads (the checkpointed truth): derived state, never serialized.
//!
//! Exactness: a seller's chat time is an `f64` sum over their conversations in conversation id
//! order (the order of the scan it replaces), so each seller keeps their conversations' chat
//! times in that order and re-sums them when one changed — a running total would round
//! differently. Conversations with no chat time (+0.0) are left out: adding +0.0 changes no sum.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use vigia_schemas::{EntityId, UserId};

use super::conversations::{Conversation, Conversations};
use super::leads::Leads;

/// The instant the figures are those of: the evaluation time and the start of its local day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Instant {
    pub at: DateTime<Utc>,
    pub today: DateTime<Utc>,
}

impl Instant {
    /// Leads count as of today in `[today, at + 1 ms)` (the scan's bounds).
    fn today_until(&self) -> DateTime<Utc> {
        self.at + Duration::milliseconds(1)
    }
}

/// A seller's counts (all but chat time).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Conversations counted for the seller (see [`Conversation::metrics_seller`]).
    pub total: u32,
    pub active: u32,
    /// With a message at or after the start of today.
    pub today: u32,
    /// With an open wait whose deadline is `<= at`.
    pub unanswered: u32,
    /// Leads whose seller (their own, else their conversation's) is the seller.
    pub generated: u32,
    pub converted: u32,
    /// Leads created / converted in `[today, at]`, sellerless ones under seller 0.
    pub generated_today: u32,
    pub converted_today: u32,
    /// Open leads that notified and have not cooled since, sellerless ones under seller 0.
    pub hot: u32,
}

impl Counts {
    /// Whether the seller is named by a conversation or a lead: one of the sellers evaluated.
    pub fn names_seller(&self) -> bool {
        self.total > 0 || self.generated > 0
    }
}

/// What a conversation counts for: its seller's figures. Only conversations with a seller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ConvEntry {
    pub seller: UserId,
    pub open: bool,
    pub last_message_at: Option<DateTime<Utc>>,
    /// The deadline of its open wait.
    pub deadline: Option<DateTime<Utc>>,
    pub chat_seconds: f64,
}

impl ConvEntry {
    pub fn of(c: &Conversation) -> Option<ConvEntry> {
        Some(ConvEntry {
            seller: c.metrics_seller()?,
            open: c.is_open(),
            last_message_at: c.last_message_at,
            deadline: c.wait_deadline(),
            chat_seconds: c.chat_seconds(),
        })
    }

    /// Equal, chat time bit for bit.
    fn same(&self, o: &ConvEntry) -> bool {
        self.seller == o.seller
            && self.open == o.open
            && self.last_message_at == o.last_message_at
            && self.deadline == o.deadline
            && self.chat_seconds.to_bits() == o.chat_seconds.to_bits()
    }
}

/// What a lead counts for. Only leads whose `lead.created` was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeadEntry {
    /// Its own seller, else its conversation's.
    pub seller: Option<UserId>,
    pub created_at: DateTime<Utc>,
    /// The time of its status, if that is `converted`.
    pub converted_at: Option<DateTime<Utc>>,
    /// Notified and not cooled since, and still open.
    pub hot: bool,
}

/// Which today-figure of a lead a queued time is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum LeadTime {
    Created,
    Converted,
}

/// A seller's conversations' chat times in conversation id order, and their sum.
#[derive(Debug, Default, Clone)]
struct ChatTime {
    seconds: BTreeMap<EntityId, f64>,
    sum: Option<f64>,
}

impl ChatTime {
    fn sum_in_order(&self) -> f64 {
        // A left fold from +0.0, as the scan adds them.
        self.seconds.values().fold(0.0, |sum, s| sum + s)
    }

    fn sum(&self) -> f64 {
        self.sum.unwrap_or_else(|| self.sum_in_order())
    }
}

/// The index of the module doc.
#[derive(Debug, Default)]
pub(crate) struct Figures {
    /// `None` until the first evaluation and after a restore: then nothing is recorded.
    instant: Option<Instant>,
    convs: HashMap<EntityId, ConvEntry>,
    leads: HashMap<EntityId, LeadEntry>,
    /// Zero counts are not kept.
    counts: BTreeMap<UserId, Counts>,
    chat: BTreeMap<UserId, ChatTime>,
    /// Deadlines of open waits after `at`, by seller: how many at each.
    overdue_later: BTreeMap<(DateTime<Utc>, UserId), u32>,
    /// Lead creations and conversions of today from `at + 1 ms` on, by seller (0: sellerless).
    today_later: BTreeMap<(DateTime<Utc>, UserId, LeadTime), u32>,
}

fn bump(n: &mut u32, add: bool, by: bool) {
    if by {
        if add {
            *n += 1;
        } else {
            *n -= 1;
        }
    }
}

fn bump_queue<K: Ord>(queue: &mut BTreeMap<K, u32>, key: K, add: bool) {
    if add {
        *queue.entry(key).or_default() += 1;
        return;
    }
    match queue.get_mut(&key) {
        Some(n) if *n > 1 => *n -= 1,
        Some(_) => {
            queue.remove(&key);
        }
        None => debug_assert!(false, "a queued figure went missing"),
    }
}

impl Figures {
    /// Whether the figures are those of `at` (with `today` the start of its day).
    pub fn is_at(&self, at: DateTime<Utc>, today: DateTime<Utc>) -> bool {
        self.instant == Some(Instant { at, today })
    }

    /// The sellers a conversation or lead names, in id order.
    pub fn sellers(&self) -> impl Iterator<Item = UserId> + '_ {
        self.counts
            .iter()
            .filter(|(_, c)| c.names_seller())
            .map(|(s, _)| *s)
    }

    /// `seller`'s counts and chat time (zero for a seller without).
    pub fn of(&self, seller: UserId) -> (Counts, f64) {
        (
            self.counts.get(&seller).copied().unwrap_or_default(),
            self.chat.get(&seller).map_or(0.0, ChatTime::sum),
        )
    }

    /// Moves the figures to `at` (see the module doc), building them if there are none.
    pub fn advance(
        &mut self,
        at: DateTime<Utc>,
        today: DateTime<Utc>,
        convs: &Conversations,
        leads: &Leads,
    ) {
        let new = Instant { at, today };
        match self.instant {
            None => self.build(new, convs, leads),
            Some(old) if old.today == today && old.at <= at => self.count_reached(new),
            Some(_) => self.recount(new),
        }
        for chat in self.chat.values_mut() {
            if chat.sum.is_none() {
                chat.sum = Some(chat.sum_in_order());
            }
        }
    }

    /// The entities `event` changed (see the module doc) are looked at again: `conversation`,
    /// the leads it lists, and `lead`.
    pub fn changed(
        &mut self,
        conversation: Option<&EntityId>,
        lead: Option<&EntityId>,
        convs: &Conversations,
        leads: &Leads,
    ) {
        if self.instant.is_none() {
            return;
        }
        if let Some(id) = conversation {
            let conv = convs.get(id);
            self.set_conv(id, conv.and_then(ConvEntry::of));
            for l in conv.into_iter().flat_map(|c| c.leads.iter()) {
                self.set_lead(l, leads.figure_entry(l, convs));
            }
        }
        if let Some(id) = lead {
            self.set_lead(id, leads.figure_entry(id, convs));
        }
    }

    fn build(&mut self, instant: Instant, convs: &Conversations, leads: &Leads) {
        *self = Figures {
            instant: Some(instant),
            ..Figures::default()
        };
        for (id, c) in convs.entries() {
            if let Some(e) = ConvEntry::of(c) {
                self.conv_counts(&e, true);
                self.chat_time(id, None, Some(&e));
                self.convs.insert(id.clone(), e);
            }
        }
        for (id, e) in leads.figure_entries(convs) {
            self.lead_counts(&e, true);
            self.leads.insert(id.clone(), e);
        }
    }

    /// The counts at `instant` from the entries (chat time does not depend on it).
    fn recount(&mut self, instant: Instant) {
        self.instant = Some(instant);
        self.counts.clear();
        self.overdue_later.clear();
        self.today_later.clear();
        let convs = std::mem::take(&mut self.convs);
        for e in convs.values() {
            self.conv_counts(e, true);
        }
        self.convs = convs;
        let leads = std::mem::take(&mut self.leads);
        for e in leads.values() {
            self.lead_counts(e, true);
        }
        self.leads = leads;
    }

    /// Later in the same day: the queued deadlines and lead times `new.at` reached count.
    fn count_reached(&mut self, new: Instant) {
        self.instant = Some(new);
        while let Some(entry) = self.overdue_later.first_entry() {
            let (deadline, seller) = *entry.key();
            if deadline > new.at {
                break;
            }
            let n = entry.remove();
            self.counts.entry(seller).or_default().unanswered += n;
        }
        let until = new.today_until();
        while let Some(entry) = self.today_later.first_entry() {
            let (t, seller, kind) = *entry.key();
            if t >= until {
                break;
            }
            let n = entry.remove();
            let c = self.counts.entry(seller).or_default();
            match kind {
                LeadTime::Created => c.generated_today += n,
                LeadTime::Converted => c.converted_today += n,
            }
        }
    }

    fn set_conv(&mut self, id: &EntityId, new: Option<ConvEntry>) {
        let old = self.convs.get(id).copied();
        match (&old, &new) {
            (None, None) => return,
            (Some(a), Some(b)) if a.same(b) => return,
            _ => {}
        }
        if let Some(e) = &old {
            self.conv_counts(e, false);
        }
        self.chat_time(id, old.as_ref(), new.as_ref());
        match new {
            Some(e) => {
                self.conv_counts(&e, true);
                match self.convs.get_mut(id) {
                    Some(slot) => *slot = e,
                    None => {
                        self.convs.insert(id.clone(), e);
                    }
                }
            }
            None => {
                self.convs.remove(id);
            }
        }
    }

    fn set_lead(&mut self, id: &EntityId, new: Option<LeadEntry>) {
        let old = self.leads.get(id).copied();
        if old == new {
            return;
        }
        if let Some(e) = &old {
            self.lead_counts(e, false);
        }
        match new {
            Some(e) => {
                self.lead_counts(&e, true);
                match self.leads.get_mut(id) {
                    Some(slot) => *slot = e,
                    None => {
                        self.leads.insert(id.clone(), e);
                    }
                }
            }
            None => {
                self.leads.remove(id);
            }
        }
    }

    fn counts_mut(&mut self, seller: UserId) -> &mut Counts {
        self.counts.entry(seller).or_default()
    }

    fn drop_if_zero(&mut self, seller: UserId) {
        if self
            .counts
            .get(&seller)
            .is_some_and(|c| *c == Counts::default())
        {
            self.counts.remove(&seller);
        }
    }

    /// Adds (or takes back) what `e` counts at the current instant.
    fn conv_counts(&mut self, e: &ConvEntry, add: bool) {
        let Some(now) = self.instant else {
            return;
        };
        let c = self.counts_mut(e.seller);
        bump(&mut c.total, add, true);
        bump(&mut c.active, add, e.open);
        bump(
            &mut c.today,
            add,
            e.last_message_at.is_some_and(|m| m >= now.today),
        );
        match e.deadline {
            Some(d) if d <= now.at => bump(&mut c.unanswered, add, true),
            Some(d) => bump_queue(&mut self.overdue_later, (d, e.seller), add),
            None => {}
        }
        if !add {
            self.drop_if_zero(e.seller);
        }
    }

    /// Conversation `id`'s chat time moves from `old`'s seller and value to `new`'s.
    fn chat_time(&mut self, id: &EntityId, old: Option<&ConvEntry>, new: Option<&ConvEntry>) {
        let counted = |e: &ConvEntry| {
            let s = e.chat_seconds;
            (!(s == 0.0 && s.is_sign_positive())).then_some((e.seller, s.to_bits()))
        };
        let (old, new) = (old.and_then(counted), new.and_then(counted));
        if old == new {
            return;
        }
        if let Some((seller, _)) = old.filter(|(s, _)| new.is_none_or(|(n, _)| n != *s)) {
            if let Some(chat) = self.chat.get_mut(&seller) {
                chat.seconds.remove(id);
                chat.sum = None;
                if chat.seconds.is_empty() {
                    self.chat.remove(&seller);
                }
            }
        }
        if let Some((seller, bits)) = new {
            let chat = self.chat.entry(seller).or_default();
            let s = f64::from_bits(bits);
            match chat.seconds.get_mut(id) {
                Some(v) => *v = s,
                None => {
                    chat.seconds.insert(id.clone(), s);
                }
            }
            chat.sum = None;
        }
    }

    fn lead_counts(&mut self, e: &LeadEntry, add: bool) {
        let Some(now) = self.instant else {
            return;
        };
        if let Some(s) = e.seller {
            let c = self.counts_mut(s);
            bump(&mut c.generated, add, true);
            bump(&mut c.converted, add, e.converted_at.is_some());
        }
        let seller = e.seller.unwrap_or(0);
        let until = now.today_until();
        let times = [
            (Some(e.created_at), LeadTime::Created),
            (e.converted_at, LeadTime::Converted),
        ];
        for (t, kind) in times {
            let Some(t) = t.filter(|t| *t >= now.today) else {
                continue;
            };
            if t >= until {
                bump_queue(&mut self.today_later, (t, seller, kind), add);
                continue;
            }
            let c = self.counts_mut(seller);
            match kind {
                LeadTime::Created => bump(&mut c.generated_today, add, true),
                LeadTime::Converted => bump(&mut c.converted_today, add, true),
            }
        }
        if e.hot {
            bump(&mut self.counts_mut(seller).hot, add, true);
        }
        if !add {
            self.drop_if_zero(seller);
            if let Some(s) = e.seller {
                self.drop_if_zero(s);
            }
        }
    }

    /// Whether the figures are exactly those built afresh from `convs` and `leads` at their
    /// instant: entries, counts, queues, and chat times bit for bit in order, sums fresh or
    /// absent.
    #[cfg(test)]
    pub fn check(&self, convs: &Conversations, leads: &Leads) -> Result<(), String> {
        let Some(instant) = self.instant else {
            return Ok(());
        };
        let mut fresh = Figures::default();
        fresh.build(instant, convs, leads);
        if self.counts != fresh.counts {
            return Err(format!(
                "counts {:?} != built {:?}",
                self.counts, fresh.counts
            ));
        }
        if self.overdue_later != fresh.overdue_later || self.today_later != fresh.today_later {
            return Err(format!(
                "queues {:?} {:?} != built {:?} {:?}",
                self.overdue_later, self.today_later, fresh.overdue_later, fresh.today_later
            ));
        }
        if self.leads != fresh.leads {
            return Err("lead entries differ from those built".into());
        }
        if self.convs.len() != fresh.convs.len()
            || self
                .convs
                .iter()
                .any(|(id, e)| fresh.convs.get(id).is_none_or(|f| !f.same(e)))
        {
            return Err("conversation entries differ from those built".into());
        }
        let bits = |c: &ChatTime| {
            c.seconds
                .iter()
                .map(|(id, s)| (id.clone(), s.to_bits()))
                .collect::<Vec<_>>()
        };
        if self.chat.len() != fresh.chat.len() {
            return Err("chat times of other sellers than those built".into());
        }
        for (seller, chat) in &self.chat {
            let Some(want) = fresh.chat.get(seller) else {
                return Err(format!("seller {seller}: chat times not built"));
            };
            if bits(chat) != bits(want) {
                return Err(format!("seller {seller}: chat times {chat:?} != {want:?}"));
            }
            if chat
                .sum
                .is_some_and(|s| s.to_bits() != want.sum_in_order().to_bits())
            {
                return Err(format!("seller {seller}: stale chat time sum"));
            }
        }
        Ok(())
    }
}
