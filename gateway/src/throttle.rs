//! At most one metrics push per tenant per interval; what comes in between is coalesced (the
//! latest values win) and sent when the interval is over. And at most one replay of missed
//! notifications per connection per [`REPLAY_EVERY`] ([`Replays`]). Pure: the caller passes
//! the time.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use vigia_schemas::TenantId;

/// What to do with metrics just offered.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision<T> {
    /// Send these now.
    Send(T),
    /// Kept; call [`Throttle::take_due`] at `at` (only the first deferral of a window asks).
    Schedule { at: Instant },
    /// Kept, replacing what was waiting; a flush is already scheduled.
    Coalesced,
}

struct TenantState<T> {
    last_sent: Instant,
    pending: Option<T>,
}

pub(crate) struct Throttle<T> {
    interval: Duration,
    tenants: HashMap<TenantId, TenantState<T>>,
}

impl<T> Throttle<T> {
    pub(crate) fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            tenants: HashMap::new(),
        }
    }

    pub(crate) fn offer(&mut self, tenant_id: TenantId, value: T, now: Instant) -> Decision<T> {
        // Tenants idle for a while are forgotten, so the map does not grow forever.
        let interval = self.interval;
        self.tenants
            .retain(|_, s| s.pending.is_some() || now.duration_since(s.last_sent) < 10 * interval);
        match self.tenants.get_mut(&tenant_id) {
            Some(state) if now.duration_since(state.last_sent) < interval => {
                let first = state.pending.replace(value).is_none();
                if first {
                    Decision::Schedule {
                        at: state.last_sent + interval,
                    }
                } else {
                    Decision::Coalesced
                }
            }
            Some(state) if state.pending.is_some() => {
                // A flush is due but has not run yet: it will send these.
                state.pending = Some(value);
                Decision::Coalesced
            }
            _ => {
                self.tenants.insert(
                    tenant_id,
                    TenantState {
                        last_sent: now,
                        pending: None,
                    },
                );
                Decision::Send(value)
            }
        }
    }

    /// The coalesced value of `tenant_id`, if any, now that its window is over.
    pub(crate) fn take_due(&mut self, tenant_id: TenantId, now: Instant) -> Option<T> {
        let state = self.tenants.get_mut(&tenant_id)?;
        let value = state.pending.take()?;
        state.last_sent = now;
        Some(value)
    }
}

/// A connection replays missed notifications at most this often; requests in between are
/// coalesced into one replay, from the earliest sequence asked for, when the interval is over.
pub(crate) const REPLAY_EVERY: Duration = Duration::from_secs(5);

/// The replays one connection asked for (`subscribe_notifications {since}`). A replay reads
/// the inbox from `since` on, so a client asking in a loop would keep the database busy.
pub(crate) struct Replays {
    every: Duration,
    last: Option<Instant>,
    /// The earliest `since` asked for while one was not allowed.
    pending: Option<i64>,
}

impl Replays {
    pub(crate) fn new(every: Duration) -> Self {
        Replays {
            every,
            last: None,
            pending: None,
        }
    }

    /// A replay after `since` is asked for: `Some(since)` to replay now, or `None` when it is
    /// kept for [`Replays::due_at`].
    pub(crate) fn request(&mut self, since: i64, now: Instant) -> Option<i64> {
        let allowed = self.last.is_none_or(|last| now >= last + self.every);
        if allowed && self.pending.is_none() {
            self.last = Some(now);
            return Some(since);
        }
        self.pending = Some(self.pending.map_or(since, |p| p.min(since)));
        None
    }

    /// When the coalesced replay is due, if one is kept.
    pub(crate) fn due_at(&self) -> Option<Instant> {
        self.pending?;
        Some(
            self.last
                .map_or_else(Instant::now, |last| last + self.every),
        )
    }

    /// The coalesced replay, if one is kept and due at `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<i64> {
        if now < self.due_at()? {
            return None;
        }
        self.last = Some(now);
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn at_most_one_send_per_second_per_tenant_latest_wins() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut throttle = Throttle::new(SECOND);
        assert_eq!(throttle.offer(1, "a", ms(0)), Decision::Send("a"));
        // Another tenant is not held back.
        assert_eq!(throttle.offer(2, "x", ms(10)), Decision::Send("x"));
        assert_eq!(
            throttle.offer(1, "b", ms(100)),
            Decision::Schedule { at: ms(1000) }
        );
        assert_eq!(throttle.offer(1, "c", ms(500)), Decision::Coalesced);
        assert_eq!(throttle.take_due(1, ms(1000)), Some("c"));
        assert_eq!(throttle.take_due(1, ms(1001)), None, "sent once");
        // The flush started a new window.
        assert_eq!(
            throttle.offer(1, "d", ms(1500)),
            Decision::Schedule { at: ms(2000) }
        );
        assert_eq!(throttle.take_due(1, ms(2003)), Some("d"));
        // Quiet for a second: sent at once again.
        assert_eq!(throttle.offer(1, "e", ms(3100)), Decision::Send("e"));
    }

    #[test]
    fn a_late_flush_still_sends_the_latest() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut throttle = Throttle::new(SECOND);
        assert_eq!(throttle.offer(1, 1, ms(0)), Decision::Send(1));
        assert!(matches!(
            throttle.offer(1, 2, ms(900)),
            Decision::Schedule { .. }
        ));
        // The flush task is late; a newer value arrives after the window.
        assert_eq!(throttle.offer(1, 3, ms(1200)), Decision::Coalesced);
        assert_eq!(throttle.take_due(1, ms(1250)), Some(3));
    }

    #[test]
    fn replays_in_a_burst_are_coalesced_into_one_from_the_earliest_sequence() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut replays = Replays::new(Duration::from_secs(5));
        assert_eq!(replays.due_at(), None);
        assert_eq!(replays.request(40, s(0)), Some(40), "the first at once");
        for since in [30, 10, 20] {
            assert_eq!(replays.request(since, s(1)), None);
        }
        assert_eq!(replays.due_at(), Some(s(5)));
        assert_eq!(replays.take_due(s(4)), None, "not yet");
        assert_eq!(replays.take_due(s(5)), Some(10), "one, from the earliest");
        assert_eq!(replays.take_due(s(6)), None);
        // The coalesced replay started a new interval.
        assert_eq!(replays.request(50, s(7)), None);
        assert_eq!(replays.take_due(s(10)), Some(50));
        // Quiet for an interval: at once again.
        assert_eq!(replays.request(60, s(16)), Some(60));
    }

    #[test]
    fn idle_tenants_are_forgotten() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(SECOND);
        throttle.offer(1, (), t0);
        throttle.offer(2, (), t0 + Duration::from_secs(60));
        assert_eq!(throttle.tenants.len(), 1);
    }
}
