//! The sellers' conversation and lead figures — conversations total, active, today, unanswered,
//! total chat time; leads generated, converted, generated and converted today, hot — kept up to
//! date as conversations and leads change and as the evaluation instant moves, so that
//! evaluating a tenant's sellers every minute costs O(sellers), not a visit of every
//! conversation and lead of the tenant.
//!
//! What each conversation and lead counts for is recorded with it ([`ConvEntry`], [`LeadEntry`]:
//! a field of the conversation or lead, not serialized). After every applied event the
//! conversation it names is looked at again, and the leads note their own changes where the
//! lead rules change them ([`Leads::take_figure_changes`]); a conversation whose assigned seller
//! changed has its leads looked at again (the seller of a lead without one of its own). A
//! changed entry takes its old contribution back and adds its new one; retention forgetting an
//! entity takes its recorded contribution back.
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

use std::collections::BTreeMap;

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
    /// Its assigned seller (the seller of its leads without one of their own).
    pub assigned: Option<UserId>,
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
            assigned: c.seller(),
            open: c.is_open(),
            last_message_at: c.last_message_at,
            deadline: c.wait_deadline(),
            chat_seconds: c.chat_seconds(),
        })
    }

    /// Equal, chat time bit for bit.
    fn same(&self, o: &ConvEntry) -> bool {
        self.seller == o.seller
            && self.assigned == o.assigned
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
#[derive(Debug, Default, Clone)]
pub(crate) struct Figures {
    /// `None` until the first evaluation and after a restore: then nothing is recorded (and
    /// the entries recorded in conversations and leads are not read).
    instant: Option<Instant>,
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

/// A chat time that counts (see the module doc), as (seller, bits).
fn chat_of(e: &ConvEntry) -> Option<(UserId, u64)> {
    let s = e.chat_seconds;
    (!(s == 0.0 && s.is_sign_positive())).then_some((e.seller, s.to_bits()))
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
        convs: &mut Conversations,
        leads: &mut Leads,
    ) {
        let new = Instant { at, today };
        match self.instant {
            None => self.build(new, convs, leads),
            Some(old) if old.today == today && old.at <= at => self.count_reached(new),
            Some(_) => self.recount(new, convs, leads),
        }
        for chat in self.chat.values_mut() {
            if chat.sum.is_none() {
                chat.sum = Some(chat.sum_in_order());
            }
        }
    }

    /// An applied event changed `conversation` (the one it names) and the leads it noted
    /// ([`Leads::take_figure_changes`]): they count for what they do now. A conversation whose
    /// assigned seller changed gives its leads without a seller of their own a new one.
    pub fn changed(
        &mut self,
        conversation: Option<&EntityId>,
        convs: &mut Conversations,
        leads: &mut Leads,
    ) {
        if self.instant.is_none() {
            leads.take_figure_changes();
            return;
        }
        // First: the conversation's leads below are looked at from what these recorded.
        for (old, new) in leads.take_figure_changes() {
            self.lead_changed(old, new);
        }
        let Some(id) = conversation else {
            return;
        };
        let mut reassigned = false;
        if let Some(conv) = convs.get_mut(id) {
            let new = ConvEntry::of(conv);
            let old = std::mem::replace(&mut conv.figures, new);
            reassigned = old.and_then(|e| e.assigned) != new.and_then(|e| e.assigned)
                && !conv.leads.is_empty();
            self.conv_changed(id, old, new);
        }
        if let Some(conv) = reassigned.then(|| convs.get(id)).flatten() {
            for l in &conv.leads {
                if let Some((old, new)) = leads.refresh_figures(l, convs) {
                    self.lead_changed(old, new);
                }
            }
        }
    }

    /// Conversation `id`, which counted for `counted` (its recorded entry), was forgotten.
    pub fn conversation_forgotten(&mut self, id: &EntityId, counted: Option<ConvEntry>) {
        if self.instant.is_some() {
            self.conv_changed(id, counted, None);
        }
    }

    /// A lead that counted for `counted` (its recorded entry) was forgotten.
    pub fn lead_forgotten(&mut self, counted: Option<LeadEntry>) {
        if self.instant.is_some() {
            self.lead_changed(counted, None);
        }
    }

    /// Records every conversation's and lead's entry and counts them at `instant`.
    fn build(&mut self, instant: Instant, convs: &mut Conversations, leads: &mut Leads) {
        *self = Figures {
            instant: Some(instant),
            ..Figures::default()
        };
        for (id, c) in convs.entries_mut() {
            c.figures = ConvEntry::of(c);
            if let Some(e) = &c.figures {
                self.conv_counts(e, true);
                self.chat_time(id, None, Some(e));
            }
        }
        for e in leads.record_figures(convs) {
            self.lead_counts(&e, true);
        }
    }

    /// The counts at `instant` from the recorded entries (chat time does not depend on it).
    fn recount(&mut self, instant: Instant, convs: &Conversations, leads: &Leads) {
        self.instant = Some(instant);
        self.counts.clear();
        self.overdue_later.clear();
        self.today_later.clear();
        for e in convs.iter().filter_map(|c| c.figures.as_ref()) {
            self.conv_counts(e, true);
        }
        for e in leads.recorded_figures() {
            self.lead_counts(e, true);
        }
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

    fn conv_changed(&mut self, id: &EntityId, old: Option<ConvEntry>, new: Option<ConvEntry>) {
        match (&old, &new) {
            (None, None) => return,
            (Some(a), Some(b)) if a.same(b) => return,
            (Some(a), Some(b)) if a.seller == b.seller => self.conv_moved(a, b),
            _ => {
                if let Some(e) = &old {
                    self.conv_counts(e, false);
                }
                if let Some(e) = &new {
                    self.conv_counts(e, true);
                }
            }
        }
        self.chat_time(id, old.as_ref(), new.as_ref());
    }

    /// A conversation's entry changed from `a` to `b`, for the same seller: one look-up.
    fn conv_moved(&mut self, a: &ConvEntry, b: &ConvEntry) {
        let Some(now) = self.instant else {
            return;
        };
        let Some(c) = self.counts.get_mut(&a.seller) else {
            debug_assert!(false, "a counted conversation's seller has counts");
            return;
        };
        let today = |e: &ConvEntry| e.last_message_at.is_some_and(|m| m >= now.today);
        if a.open != b.open {
            bump(&mut c.active, b.open, true);
        }
        if today(a) != today(b) {
            bump(&mut c.today, today(b), true);
        }
        if a.deadline == b.deadline {
            return;
        }
        for (deadline, add) in [(a.deadline, false), (b.deadline, true)] {
            match deadline {
                Some(d) if d <= now.at => bump(&mut c.unanswered, add, true),
                Some(d) => bump_queue(&mut self.overdue_later, (d, a.seller), add),
                None => {}
            }
        }
    }

    fn lead_changed(&mut self, old: Option<LeadEntry>, new: Option<LeadEntry>) {
        if old == new {
            return;
        }
        if let Some(e) = &old {
            self.lead_counts(e, false);
        }
        if let Some(e) = &new {
            self.lead_counts(e, true);
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
        let (old, new) = (old.and_then(chat_of), new.and_then(chat_of));
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

    /// Whether the figures are exactly those counted afresh from `convs` and `leads` at their
    /// instant: recorded entries, counts, queues, and chat times bit for bit in order, sums
    /// fresh or absent.
    #[cfg(test)]
    pub fn check(&self, convs: &Conversations, leads: &Leads) -> Result<(), String> {
        let Some(instant) = self.instant else {
            return Ok(());
        };
        let mut fresh = Figures {
            instant: Some(instant),
            ..Figures::default()
        };
        for (id, c) in convs.entries() {
            let e = ConvEntry::of(c);
            let recorded = c.figures;
            if e.is_some() != recorded.is_some()
                || e.zip(recorded).is_some_and(|(a, b)| !a.same(&b))
            {
                return Err(format!(
                    "conversation {id:?}: recorded {recorded:?} != {e:?}"
                ));
            }
            if let Some(e) = &e {
                fresh.conv_counts(e, true);
                fresh.chat_time(id, None, Some(e));
            }
        }
        let recorded: Vec<LeadEntry> = leads.recorded_figures().copied().collect();
        let entries = leads.figure_entries(convs);
        if recorded != entries {
            return Err(format!(
                "lead entries: recorded {recorded:?} != {entries:?}"
            ));
        }
        for e in &entries {
            fresh.lead_counts(e, true);
        }
        if self.counts != fresh.counts {
            return Err(format!(
                "counts {:?} != counted afresh {:?}",
                self.counts, fresh.counts
            ));
        }
        if self.overdue_later != fresh.overdue_later || self.today_later != fresh.today_later {
            return Err(format!(
                "queues {:?} {:?} != counted afresh {:?} {:?}",
                self.overdue_later, self.today_later, fresh.overdue_later, fresh.today_later
            ));
        }
        let bits = |c: &ChatTime| {
            c.seconds
                .iter()
                .map(|(id, s)| (id.clone(), s.to_bits()))
                .collect::<Vec<_>>()
        };
        if self.chat.len() != fresh.chat.len() {
            return Err("chat times of other sellers than those counted afresh".into());
        }
        for (seller, chat) in &self.chat {
            let Some(want) = fresh.chat.get(seller) else {
                return Err(format!("seller {seller}: chat times not counted afresh"));
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
