//! The sellers' response-time windows (1 h, today, 7 d) and 7-day wait counts, kept up to date
//! as samples arrive, are taken back and leave the windows — so that evaluating a tenant's
//! sellers every minute does not collect and sort a week of samples each time.
//!
//! Derived state: rebuilt from the sellers' time-ordered logs (the checkpointed truth) on the
//! first evaluation after a restore, never serialized.
//!
//! Exactness: [`stats_sorted`] sums the values in ascending [`f64::total_cmp`] order, as
//! sorting a window and summing it does — a running sum in arrival order would round
//! differently. So a window keeps its values sorted, and its sum is recomputed (one pass over a
//! contiguous slice, no sort, no allocation) only when the values changed since it last was.

use std::collections::BTreeMap;
use std::ops::Bound;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;
use vigia_schemas::ResponseTimeStats;

/// A log key: (event time, id).
pub(crate) type Key = (DateTime<Utc>, Uuid);

/// The three windows, as indexes into per-window arrays.
pub(crate) const HOUR: usize = 0;
pub(crate) const TODAY: usize = 1;
pub(crate) const WEEK: usize = 2;
pub(crate) const KINDS: [usize; 3] = [HOUR, TODAY, WEEK];

/// The keys of each window at one evaluation time: `lo <= key <= hi` (empty when `lo > hi`).
/// `1h` = `(at − 1 h, at]`, `today` = `[start of today, at]`, `7d` = `(at − 7 d, at]`: an exclusive
/// time bound `t` is the key `(t, Uuid::max())`, the first key after every ordinary key at `t`,
/// as the scans of the logs have always taken it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub at: DateTime<Utc>,
    pub ranges: [(Key, Key); 3],
}

impl Bounds {
    pub fn new(at: DateTime<Utc>, today: DateTime<Utc>) -> Self {
        let hi = (at, Uuid::max());
        Bounds {
            at,
            ranges: [
                ((at - Duration::hours(1), Uuid::max()), hi),
                ((today, Uuid::nil()), hi),
                ((at - Duration::days(7), Uuid::max()), hi),
            ],
        }
    }

    pub fn contains(&self, kind: usize, key: &Key) -> bool {
        let (lo, hi) = &self.ranges[kind];
        lo <= key && key <= hi
    }
}

/// How one window moves from `old` to `new` keys.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shift {
    /// Forward, overlapping: keys in `[old.lo, new.lo)` leave, keys in `(old.hi, new.hi]` enter.
    Slide {
        leave: (Key, Key),
        enter: (Key, Key),
    },
    /// Anything else (a new day, the first evaluation, a jump over the whole window): refill.
    Refill,
}

pub(crate) fn shift(old: Option<&Bounds>, new: &Bounds, kind: usize) -> Shift {
    let Some(old) = old else {
        return Shift::Refill;
    };
    let ((olo, ohi), (nlo, nhi)) = (old.ranges[kind], new.ranges[kind]);
    if olo <= ohi && nlo <= nhi && olo <= nlo && ohi <= nhi && nlo <= ohi {
        Shift::Slide {
            leave: (olo, nlo),
            enter: (ohi, nhi),
        }
    } else {
        Shift::Refill
    }
}

/// Entries of `map` leaving in a slide: `leave.0 <= key < leave.1`.
pub(crate) fn leaving<V>(
    map: &BTreeMap<Key, V>,
    leave: (Key, Key),
) -> impl Iterator<Item = (&Key, &V)> {
    map.range((Bound::Included(leave.0), Bound::Excluded(leave.1)))
}

/// Entries of `map` entering in a slide: `enter.0 < key <= enter.1`.
pub(crate) fn entering<V>(
    map: &BTreeMap<Key, V>,
    enter: (Key, Key),
) -> impl Iterator<Item = (&Key, &V)> {
    map.range((Bound::Excluded(enter.0), Bound::Included(enter.1)))
}

/// Entries of `map` inside a window: `lo <= key <= hi`.
pub(crate) fn inside<V>(map: &BTreeMap<Key, V>, range: (Key, Key)) -> impl Iterator<Item = &V> {
    let (lo, hi) = range;
    // `BTreeMap::range` panics on an inverted range; an empty window has none.
    let range = if lo <= hi {
        Some(map.range(lo..=hi))
    } else {
        None
    };
    range.into_iter().flatten().map(|(_, v)| v)
}

/// The values of a window in ascending [`f64::total_cmp`] order, with their statistics cached
/// until they change.
///
/// Kept as sorted chunks of at most [`CHUNK_MAX`] values: an insert or a removal shifts one
/// chunk. A single sorted `Vec` shifted half of itself each time, and a team's windows hold every
/// sample of the tenant's hour, day and week: on the 1-hour benchmark stream that `memmove` was
/// several percent of the processors' time, and it grows with the tenant.
#[derive(Debug, Default, Clone)]
pub(crate) struct SortedSamples {
    /// Non-empty, each sorted, each chunk's values ≤ the next chunk's.
    chunks: Vec<Vec<f64>>,
    /// The last (largest) value of each chunk, side by side: the search for a value's chunk
    /// reads this one array instead of following a pointer into every chunk it steps on.
    maxima: Vec<f64>,
    len: usize,
    cached: Option<ResponseTimeStats>,
}

/// A chunk that grows past this splits in two. Small enough that an insert shifts at most 1 KiB
/// (a week's team window of a busy tenant is tens of thousands of samples); the chunks' maxima
/// are searched without touching the chunks.
const CHUNK_MAX: usize = 128;

impl SortedSamples {
    /// The chunk `v` belongs in: the first whose last value is not below it (else the last).
    fn chunk_of(&self, v: f64) -> usize {
        let i = self.maxima.partition_point(|x| x.total_cmp(&v).is_lt());
        i.min(self.chunks.len().saturating_sub(1))
    }

    pub fn insert(&mut self, v: f64) {
        self.cached = None;
        self.len += 1;
        if self.chunks.is_empty() {
            self.chunks.push(vec![v]);
            self.maxima.push(v);
            return;
        }
        let c = self.chunk_of(v);
        let chunk = &mut self.chunks[c];
        let i = chunk.partition_point(|x| x.total_cmp(&v).is_lt());
        chunk.insert(i, v);
        if chunk.len() > CHUNK_MAX {
            let right = chunk.split_off(chunk.len() / 2);
            let (left_max, right_max) = (chunk[chunk.len() - 1], right[right.len() - 1]);
            self.chunks.insert(c + 1, right);
            self.maxima[c] = left_max;
            self.maxima.insert(c + 1, right_max);
        } else if i + 1 == chunk.len() {
            self.maxima[c] = v;
        }
    }

    /// Removes one value equal to `v` (equal under `total_cmp` means the same bits). The first
    /// chunk whose last value is not below `v` holds it if anything does.
    pub fn remove(&mut self, v: f64) {
        if self.chunks.is_empty() {
            debug_assert!(false, "a window lost track of the sample {v}");
            return;
        }
        let c = self.chunk_of(v);
        let chunk = &mut self.chunks[c];
        let i = chunk.partition_point(|x| x.total_cmp(&v).is_lt());
        if chunk.get(i).is_some_and(|x| x.total_cmp(&v).is_eq()) {
            chunk.remove(i);
            match chunk.last() {
                None => {
                    self.chunks.remove(c);
                    self.maxima.remove(c);
                }
                Some(&last) => self.maxima[c] = last,
            }
            self.len -= 1;
            self.cached = None;
        } else {
            debug_assert!(false, "a window lost track of the sample {v}");
        }
    }

    /// Replaces the values (in any order).
    pub fn set(&mut self, mut values: Vec<f64>) {
        values.sort_by(f64::total_cmp);
        self.len = values.len();
        self.chunks = values.chunks(CHUNK_MAX / 2).map(<[f64]>::to_vec).collect();
        self.maxima = self.chunks.iter().map(|c| c[c.len() - 1]).collect();
        self.cached = None;
    }

    /// Every value, in ascending order.
    pub fn values(&self) -> impl Iterator<Item = &f64> {
        self.chunks.iter().flatten()
    }

    /// The value of 0-based rank `k` (`k < len`).
    fn nth(&self, mut k: usize) -> f64 {
        for c in &self.chunks {
            if k < c.len() {
                return c[k];
            }
            k -= c.len();
        }
        unreachable!("rank {k} past the {} values", self.len)
    }

    /// Computes the statistics if the values changed since they last were.
    pub fn refresh(&mut self) {
        if self.cached.is_none() {
            self.cached = Some(self.compute());
        }
    }

    pub fn stats(&self) -> ResponseTimeStats {
        self.cached.clone().unwrap_or_else(|| self.compute())
    }

    /// What [`stats_sorted`] gives for the values as one slice (same ranks, same summing order).
    fn compute(&self) -> ResponseTimeStats {
        stats_by_rank(self.len, self.values().copied(), |k| self.nth(k))
    }
}

/// One seller's windows: response-time samples per window, and the 7-day ended waits as
/// (ended, answered) counts.
#[derive(Debug, Default, Clone)]
pub(crate) struct SellerWindows {
    pub samples: [SortedSamples; 3],
    pub waits: (u32, u32),
}

/// Count, mean, nearest-rank p50 and p90, max of values sorted by `total_cmp`.
pub(crate) fn stats_sorted(values: &[f64]) -> ResponseTimeStats {
    stats_by_rank(values.len(), values.iter().copied(), |k| values[k])
}

/// The statistics of `n` values given in ascending order (`ascending`, summed in that order so
/// the mean has the same bits however they are stored) and by 0-based rank (`nth`).
fn stats_by_rank(
    n: usize,
    ascending: impl Iterator<Item = f64>,
    nth: impl Fn(usize) -> f64,
) -> ResponseTimeStats {
    if n == 0 {
        return ResponseTimeStats::default();
    }
    let rank = |p: usize| nth((p * n).div_ceil(100).max(1) - 1);
    ResponseTimeStats {
        count: n as u32,
        mean_seconds: Some(ascending.sum::<f64>() / n as f64),
        p50_seconds: Some(rank(50)),
        p90_seconds: Some(rank(90)),
        max_seconds: Some(nth(n - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn window_edges_are_those_of_the_scans() {
        let now = at("2026-03-10T12:00:00Z");
        let b = Bounds::new(now, at("2026-03-10T00:00:00Z"));
        let key = |t: DateTime<Utc>, id: Uuid| (t, id);
        // `(at − 1 h, at]`.
        assert!(!b.contains(HOUR, &key(now - Duration::hours(1), Uuid::from_u128(5))));
        assert!(b.contains(HOUR, &key(now - Duration::minutes(59), Uuid::nil())));
        assert!(b.contains(HOUR, &key(now, Uuid::max())));
        assert!(!b.contains(HOUR, &key(now + Duration::milliseconds(1), Uuid::nil())));
        // `[start of today, at]`.
        assert!(b.contains(TODAY, &key(at("2026-03-10T00:00:00Z"), Uuid::nil())));
        assert!(!b.contains(TODAY, &key(at("2026-03-09T23:59:59.999Z"), Uuid::max())));
        // `(at − 7 d, at]`.
        assert!(!b.contains(WEEK, &key(now - Duration::days(7), Uuid::from_u128(5))));
        assert!(b.contains(
            WEEK,
            &key(
                now - Duration::days(7) + Duration::milliseconds(1),
                Uuid::nil()
            )
        ));
    }

    #[test]
    fn windows_slide_forward_and_refill_on_a_jump() {
        let now = at("2026-03-10T12:00:00Z");
        let day = at("2026-03-10T00:00:00Z");
        let a = Bounds::new(now, day);
        let b = Bounds::new(now + Duration::minutes(1), day);
        assert!(matches!(shift(Some(&a), &b, WEEK), Shift::Slide { .. }));
        assert!(matches!(shift(Some(&a), &b, TODAY), Shift::Slide { .. }));
        assert!(matches!(shift(None, &b, WEEK), Shift::Refill));
        // A new day, an hour-long gap, and time going back all refill.
        let next_day = Bounds::new(at("2026-03-11T00:01:00Z"), at("2026-03-11T00:00:00Z"));
        assert!(matches!(shift(Some(&a), &next_day, TODAY), Shift::Refill));
        assert!(matches!(shift(Some(&a), &next_day, HOUR), Shift::Refill));
        assert!(matches!(
            shift(Some(&a), &next_day, WEEK),
            Shift::Slide { .. }
        ));
        assert!(matches!(shift(Some(&b), &a, WEEK), Shift::Refill));
    }

    #[test]
    fn sorted_samples_give_the_statistics_of_a_sort_and_remove_one_equal_value() {
        let mut s = SortedSamples::default();
        let values = [0.3, 0.1, 0.2, 0.1, 7.25, 0.30000000000000004];
        for v in values {
            s.insert(v);
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        assert!(s.values().eq(sorted.iter()));
        s.refresh();
        let sum_in_order: f64 = sorted.iter().sum();
        assert_eq!(s.stats().mean_seconds, Some(sum_in_order / 6.0));
        assert_eq!(s.stats().p50_seconds, Some(0.2));
        s.remove(0.1);
        assert!(s
            .values()
            .eq([0.1, 0.2, 0.3, 0.30000000000000004, 7.25].iter()));
        // The cached statistics went with the change.
        assert_eq!(s.stats().count, 5);
        assert_eq!(s.stats().p90_seconds, Some(7.25));
    }

    /// Many values, inserted and removed in a scrambled order across many chunks: the values,
    /// and every statistic to the bit, are those of one sorted `Vec`.
    #[test]
    fn sorted_samples_in_chunks_match_one_sorted_vec() {
        let mut s = SortedSamples::default();
        let mut reference: Vec<f64> = Vec::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..20_000 {
            let r = next();
            if r % 4 == 0 && !reference.is_empty() {
                let v = reference[(r / 4) as usize % reference.len()];
                s.remove(v);
                let i = reference
                    .iter()
                    .position(|y| y.total_cmp(&v).is_eq())
                    .unwrap();
                reference.remove(i);
            } else {
                // Few distinct values, so equal values span chunk edges.
                let v = (r % 700) as f64 * 0.37;
                s.insert(v);
                reference.push(v);
                reference.sort_by(f64::total_cmp);
            }
            if step % 997 == 0 {
                s.refresh();
            }
            if step % 250 == 0 {
                assert!(s.values().eq(reference.iter()), "step {step}");
                let lasts: Vec<f64> = s.chunks.iter().map(|c| c[c.len() - 1]).collect();
                assert_eq!(s.maxima, lasts, "step {step}");
                let (got, want) = (s.stats(), stats_sorted(&reference));
                assert_eq!(format!("{got:?}"), format!("{want:?}"), "step {step}");
            }
        }
        assert!(s.chunks.len() > 10, "{} chunks", s.chunks.len());
        s.set(reference.iter().rev().copied().collect());
        assert!(s.values().eq(reference.iter()));
        assert_eq!(
            format!("{:?}", s.stats()),
            format!("{:?}", stats_sorted(&reference))
        );
    }
}
