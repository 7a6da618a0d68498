//! One connection's unread count, kept rather than recomputed per notification: the decisions
//! only (when to ask the inbox, what to send), no I/O, so they are unit-tested with a fake clock.
//!
//! A count from the inbox comes with the newest sequence of the tenant it covers
//! ([`crate::inbox::Inbox::unread_count_through`]; commit order is sequence order, so it covers
//! every sequence up to that one). Every notification pushed live afterwards with a higher
//! sequence adds to it, each sequence once whatever order the pushes come in. A broadcast to
//! 10,000 connections therefore costs no inbox query; only what a connection cannot see coming
//! (a mark-read elsewhere, a withdrawal of a notification that may or may not be unread) sends
//! it back to the inbox, at most once per [`RECOUNT_EVERY`].

use std::time::Duration;

use tokio::time::Instant;

use crate::inbox::StoredNotification;

/// The unread count is one query over the user's visible notifications; for a CEO that is the
/// whole tenant's inbox. Under a stream of events that invalidate the count (reads elsewhere,
/// withdrawals) recounting after each would let the queries fall behind until the connection's
/// queue overflowed, so a connection recounts at most this often; the last count of a burst is
/// always sent.
pub(crate) const RECOUNT_EVERY: Duration = Duration::from_millis(250);

/// How many live notifications a kept count absorbs before it is recounted from the inbox (the
/// memory of what it added stays small; one query per this many notifications is nothing).
const MEMORY: usize = 256;

/// What a live notification does to its recipient's unread count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CountEffect {
    /// One more unread (or none, if it arrives read or withdrawn), known without asking.
    Adds { unread: bool },
    /// Unknown without the inbox: it withdraws another notification, read or not.
    Unknown,
}

impl CountEffect {
    pub(crate) fn of(stored: &StoredNotification) -> CountEffect {
        if stored.notification.withdraws.is_some() {
            CountEffect::Unknown
        } else {
            CountEffect::Adds {
                unread: !stored.read && !stored.withdrawn,
            }
        }
    }
}

/// The count as counted by the inbox when its newest sequence was `through`, plus the
/// notifications pushed since.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kept {
    unread: u64,
    through: i64,
    added: Vec<i64>,
}

impl Kept {
    /// Takes a live notification into account; true if the count changed.
    fn add(&mut self, sequence: i64, unread: bool) -> bool {
        if sequence <= self.through || self.added.contains(&sequence) {
            return false;
        }
        self.added.push(sequence);
        if unread {
            self.unread += 1;
        }
        unread
    }
}

/// A count being computed: the live notifications accepted meanwhile (the count may or may not
/// include them), or `Spoiled` if something happened meanwhile it cannot be corrected for.
#[derive(Debug)]
enum Meanwhile {
    Noted(Vec<(i64, bool)>),
    Spoiled,
}

/// One connection's unread count.
#[derive(Debug, Default)]
pub(crate) struct UnreadCounter {
    kept: Option<Kept>,
    /// The kept count changed since it was last sent.
    unsent: bool,
    /// The count must be asked from the inbox again.
    stale: bool,
    /// When the inbox was last asked: recounts are spaced by [`RECOUNT_EVERY`].
    last_asked: Option<Instant>,
    counting: Option<Meanwhile>,
}

impl UnreadCounter {
    /// The inbox answered `count` as of sequence `through`, asked at `now` by the connection
    /// itself (not through [`UnreadCounter::start`]): kept from here on.
    pub(crate) fn counted(&mut self, count: u64, through: i64, now: Instant) {
        self.kept = Some(Kept {
            unread: count,
            through,
            added: Vec::new(),
        });
        self.unsent = false;
        self.stale = false;
        self.last_asked = Some(now);
    }

    /// A count is being asked from the inbox in the background (started at `now`).
    pub(crate) fn start(&mut self, now: Instant) {
        self.kept = None;
        self.unsent = false;
        self.stale = false;
        self.last_asked = Some(now);
        self.counting = Some(Meanwhile::Noted(Vec::new()));
    }

    /// The count started by [`UnreadCounter::start`] arrived: the count to send, corrected for
    /// what was pushed meanwhile and kept from here on, unless something happened meanwhile it
    /// cannot be corrected for (then it is sent as it is and recounted once due).
    pub(crate) fn arrived(&mut self, count: u64, through: i64) -> u64 {
        match self.counting.take() {
            Some(Meanwhile::Noted(noted)) => {
                let mut kept = Kept {
                    unread: count,
                    through,
                    added: Vec::new(),
                };
                for (sequence, unread) in noted {
                    kept.add(sequence, unread);
                }
                let unread = kept.unread;
                self.kept = Some(kept);
                self.unsent = false;
                unread
            }
            Some(Meanwhile::Spoiled) | None => {
                self.stale = true;
                count
            }
        }
    }

    /// A live notification reached the connection (shown or muted).
    pub(crate) fn note(&mut self, sequence: i64, effect: CountEffect) {
        let CountEffect::Adds { unread } = effect else {
            self.forget();
            return;
        };
        if let Some(Meanwhile::Noted(noted)) = self.counting.as_mut() {
            noted.push((sequence, unread));
        }
        match self.kept.as_mut() {
            Some(kept) if kept.added.len() < MEMORY => {
                if kept.add(sequence, unread) {
                    self.unsent = true;
                }
            }
            Some(_) => self.forget(),
            // The count in flight takes it into account when it arrives.
            None if self.counting.is_some() => {}
            None => self.stale = true,
        }
    }

    /// The count can no longer be kept (read state changed elsewhere): ask the inbox.
    pub(crate) fn forget(&mut self) {
        self.kept = None;
        self.unsent = false;
        self.stale = true;
        if self.counting.is_some() {
            self.counting = Some(Meanwhile::Spoiled);
        }
    }

    /// The client asked for its count: answered as a stale one is, once due, so that a client
    /// asking in a loop costs one query per [`RECOUNT_EVERY`].
    pub(crate) fn request(&mut self) {
        self.stale = true;
    }

    /// A kept count that changed since it was last sent, to send now (no query).
    pub(crate) fn take_unsent(&mut self) -> Option<u64> {
        if !std::mem::take(&mut self.unsent) {
            return None;
        }
        self.kept.as_ref().map(|k| k.unread)
    }

    /// Whether the inbox must be asked again (once due).
    pub(crate) fn is_stale(&self) -> bool {
        self.stale
    }

    /// When the inbox may be asked again: now if it was not asked within [`RECOUNT_EVERY`].
    pub(crate) fn recount_at(&self, now: Instant) -> Instant {
        match self.last_asked {
            Some(at) => at + RECOUNT_EVERY,
            None => now,
        }
    }

    /// Whether a recount should start at `now` (stale, due, none in flight).
    pub(crate) fn recount_due(&self, now: Instant) -> bool {
        self.stale && self.counting.is_none() && now >= self.recount_at(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDS: CountEffect = CountEffect::Adds { unread: true };

    fn kept_count(c: &UnreadCounter) -> Option<u64> {
        c.kept.as_ref().map(|k| k.unread)
    }

    #[test]
    fn live_notifications_after_the_count_add_to_it_without_asking() {
        let now = Instant::now();
        let mut c = UnreadCounter::default();
        c.counted(3, 10, now);
        assert_eq!(c.take_unsent(), None, "the count was just sent");
        c.note(9, ADDS); // already counted
        c.note(10, ADDS); // already counted
        assert_eq!(c.take_unsent(), None);
        c.note(12, ADDS);
        c.note(11, ADDS); // out of order: still once each
        c.note(12, ADDS); // twice: once
        c.note(13, CountEffect::Adds { unread: false });
        assert_eq!(c.take_unsent(), Some(5));
        assert_eq!(c.take_unsent(), None, "sent once");
        assert!(!c.is_stale());
        assert!(!c.recount_due(now + RECOUNT_EVERY * 10));
    }

    #[test]
    fn a_withdrawal_or_a_read_elsewhere_asks_the_inbox_once_due() {
        let t0 = Instant::now();
        let mut c = UnreadCounter::default();
        c.counted(3, 10, t0);
        c.note(11, ADDS);
        c.note(12, CountEffect::Unknown);
        assert_eq!(c.take_unsent(), None, "no guess is sent");
        assert!(c.is_stale());
        assert!(!c.recount_due(t0), "spaced by RECOUNT_EVERY");
        assert!(c.recount_due(t0 + RECOUNT_EVERY));
        c.start(t0 + RECOUNT_EVERY);
        assert!(!c.recount_due(t0 + RECOUNT_EVERY * 5), "one in flight");
        assert_eq!(c.arrived(4, 12), 4);
        c.note(13, ADDS);
        assert_eq!(c.take_unsent(), Some(5));

        c.forget();
        assert_eq!(kept_count(&c), None);
        assert!(c.is_stale());
    }

    #[test]
    fn pushes_during_a_count_are_added_only_if_the_count_missed_them() {
        let t0 = Instant::now();
        let mut c = UnreadCounter::default();
        c.request();
        assert!(c.recount_due(t0), "never asked: due now");
        c.start(t0);
        c.note(20, ADDS); // the count's snapshot has it (through 21)
        c.note(22, ADDS); // stored after the snapshot
        c.note(23, ADDS);
        assert_eq!(
            c.take_unsent(),
            None,
            "nothing to send until the count arrives"
        );
        assert!(!c.is_stale());
        assert_eq!(c.arrived(7, 21), 9);
        assert_eq!(
            c.take_unsent(),
            None,
            "the arrived count is sent by the caller"
        );
        c.note(23, ADDS);
        c.note(24, ADDS);
        assert_eq!(c.take_unsent(), Some(10));
    }

    #[test]
    fn a_read_elsewhere_during_a_count_spoils_it() {
        let t0 = Instant::now();
        let mut c = UnreadCounter::default();
        c.start(t0);
        c.note(5, ADDS);
        c.forget();
        c.note(6, ADDS);
        assert_eq!(c.arrived(2, 4), 2, "sent as counted");
        assert_eq!(kept_count(&c), None, "not kept");
        assert!(c.is_stale());
        assert!(c.recount_due(t0 + RECOUNT_EVERY));
        c.note(7, ADDS);
        assert_eq!(c.take_unsent(), None);
    }

    #[test]
    fn without_a_count_a_notification_marks_it_stale() {
        let t0 = Instant::now();
        let mut c = UnreadCounter::default();
        assert!(!c.is_stale());
        c.note(1, ADDS);
        assert!(c.is_stale());
        assert_eq!(c.take_unsent(), None);
        assert!(c.recount_due(t0));
    }

    #[test]
    fn a_kept_count_is_recounted_after_absorbing_its_memory() {
        let t0 = Instant::now();
        let mut c = UnreadCounter::default();
        c.counted(0, 0, t0);
        for seq in 1..=MEMORY as i64 {
            c.note(seq, ADDS);
        }
        assert_eq!(kept_count(&c), Some(MEMORY as u64));
        assert!(!c.is_stale());
        c.note(MEMORY as i64 + 1, ADDS);
        assert_eq!(kept_count(&c), None);
        assert!(c.is_stale());
    }
}
