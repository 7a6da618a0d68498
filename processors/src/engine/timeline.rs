//! [`Timeline`]: a sorted set of keys that mostly arrive in order, for the time-ordered logs
//! (`(event time, …)` keys) that only grow at the end and are forgotten from the front.
//!
//! Why: a `BTreeSet` insert compares the new key with ~20 others on its way down the tree, each
//! a several-field `DateTime` comparison; events arrive nearly in event-time order, so here an
//! insert compares with the last key and appends. A key that arrives a little out of order (a
//! few hundred keys from the end, an event seconds late) is put in place by a search from the
//! end (`search_from_back`) and a shift of the keys after it. One that lands further back goes
//! to a `BTreeSet` beside the run instead: shifting the run there cost a megabyte of `memmove`
//! per event delivered two minutes late into a tenant's hour of event ids (a tenth of the
//! processors' time on the 1-hour benchmark stream). A key is in one of the two, never both.
//! Set semantics, order and serialization (a sequence in key order) are the `BTreeSet`'s.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How many keys from the end of the run a late key may be shifted in place; further back it
/// goes to the side set.
const SHIFT_AT_MOST: usize = 256;

#[derive(Debug, Clone)]
pub(crate) struct Timeline<T> {
    /// Sorted; every key but those in `late`.
    keys: VecDeque<T>,
    /// Keys that arrived too far behind the end of `keys` to be shifted in.
    late: BTreeSet<T>,
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Timeline {
            keys: VecDeque::new(),
            late: BTreeSet::new(),
        }
    }
}

impl<T: Ord> Timeline<T> {
    /// Adds `key`; false if it was there.
    pub fn insert(&mut self, key: T) -> bool {
        match self.keys.back() {
            None => {}
            Some(last) if *last < key => {}
            Some(_) => {
                return match self.search_from_back(&key) {
                    Ok(_) => false,
                    Err(at) if self.keys.len() - at <= SHIFT_AT_MOST => {
                        if self.late.contains(&key) {
                            return false;
                        }
                        self.keys.insert(at, key);
                        true
                    }
                    Err(_) => self.late.insert(key),
                };
            }
        }
        self.keys.push_back(key);
        true
    }

    /// `binary_search` over the run, found from its end: a late key lands near the end, so
    /// the search steps back 1, 2, 4, … keys until it passes it, then bisects the last step.
    /// It reads the end of the run (in cache) instead of halving the whole of it: an hour of
    /// a tenant's event ids is ~20 bisection steps, most of them cache misses.
    fn search_from_back(&self, key: &T) -> Result<usize, usize> {
        let len = self.keys.len();
        // Every key at `hi` or after is at least `key`; every key before `lo` is below it.
        let (mut lo, mut hi) = (0, len);
        let mut step = 1;
        while step <= len {
            let probe = len - step;
            if self.keys[probe] < *key {
                lo = probe + 1;
                break;
            }
            hi = probe;
            step *= 2;
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.keys[mid] < *key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        match self.keys.get(lo) {
            Some(k) if k == key => Ok(lo),
            _ => Err(lo),
        }
    }

    pub fn first(&self) -> Option<&T> {
        match (self.keys.front(), self.late.first()) {
            (Some(k), Some(l)) => Some(k.min(l)),
            (k, l) => k.or(l),
        }
    }

    pub fn pop_first(&mut self) -> Option<T> {
        match (self.keys.front(), self.late.first()) {
            (Some(k), Some(l)) if l < k => self.late.pop_first(),
            (None, Some(_)) => self.late.pop_first(),
            _ => self.keys.pop_front(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.late.is_empty()
    }

    /// Drops every key before `bound`.
    pub fn forget_before(&mut self, bound: &T) {
        let n = self.keys.partition_point(|k| k < bound);
        self.keys.drain(..n);
        while self.late.first().is_some_and(|l| l < bound) {
            self.late.pop_first();
        }
    }

    /// How many keys are in `from..=to`.
    pub fn count_between(&self, from: &T, to: &T) -> usize {
        let lo = self.keys.partition_point(|k| k < from);
        let hi = self.keys.partition_point(|k| k <= to);
        let late = if from <= to {
            self.late.range(from..=to).count()
        } else {
            0
        };
        hi.saturating_sub(lo) + late
    }

    /// Every key, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        let mut keys = self.keys.iter().peekable();
        let mut late = self.late.iter().peekable();
        std::iter::from_fn(move || match (keys.peek(), late.peek()) {
            (Some(k), Some(l)) if l < k => late.next(),
            (Some(_), _) => keys.next(),
            (None, _) => late.next(),
        })
    }
}

impl<T: Serialize + Ord> Serialize for Timeline<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de, T: Deserialize<'de> + Ord> Deserialize<'de> for Timeline<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut t = Timeline::default();
        for k in Vec::<T>::deserialize(d)? {
            t.insert(k);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A deterministic stream of keys, mostly increasing, some repeated; one in ten is up to
    /// `lateness` behind.
    fn keys(lateness: u64) -> Vec<(u32, u8)> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut t = 0u32;
        (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                t += (x % 3) as u32;
                let late = if x.is_multiple_of(10) {
                    (x % lateness) as u32
                } else {
                    0
                };
                (t.saturating_sub(late), (x >> 20) as u8 % 4)
            })
            .collect()
    }

    #[test]
    fn behaves_as_a_btreeset_with_keys_a_little_late() {
        assert_eq!(behaves_as_a_btreeset(40, 50), 0, "all shifted into the run");
    }

    /// Late keys far behind the end of the run go to the side set (and back out of it).
    #[test]
    fn behaves_as_a_btreeset_with_keys_far_behind_the_end() {
        assert!(
            behaves_as_a_btreeset(3000, 4000) > 20,
            "the side set was used"
        );
    }

    #[test]
    fn search_from_back_is_binary_search() {
        for len in 0..70u32 {
            let timeline = Timeline {
                keys: (0..len).map(|k| 2 * k + 1).collect(),
                late: BTreeSet::new(),
            };
            for key in 0..=2 * len + 2 {
                assert_eq!(
                    timeline.search_from_back(&key),
                    timeline.keys.binary_search(&key),
                    "key {key} in 1, 3, …, {}",
                    2 * len
                );
            }
        }
    }

    /// Checks every operation against a `BTreeSet`; returns the most keys the side set held.
    fn behaves_as_a_btreeset(lateness: u64, kept: u32) -> usize {
        let mut most_late = 0;
        let mut timeline = Timeline::default();
        let mut reference = BTreeSet::new();
        for (i, k) in keys(lateness).into_iter().enumerate() {
            assert_eq!(timeline.insert(k), reference.insert(k), "insert {k:?}");
            if i.is_multiple_of(97) {
                let bound = (k.0.saturating_sub(kept), 0);
                timeline.forget_before(&bound);
                reference = reference.split_off(&bound);
            }
            if i.is_multiple_of(13) {
                let (from, to) = ((k.0.saturating_sub(kept / 2), 2), (k.0, 1));
                assert_eq!(
                    timeline.count_between(&from, &to),
                    reference
                        .iter()
                        .filter(|x| **x >= from && **x <= to)
                        .count()
                );
            }
            if i.is_multiple_of(31) {
                assert_eq!(timeline.pop_first(), reference.pop_first());
            }
            assert_eq!(timeline.first(), reference.first());
            assert_eq!(timeline.is_empty(), reference.is_empty());
            most_late = most_late.max(timeline.late.len());
        }
        assert!(timeline.iter().eq(reference.iter()));
        let json = serde_json::to_string(&timeline).unwrap();
        assert_eq!(json, serde_json::to_string(&reference).unwrap());
        let back: Timeline<(u32, u8)> = serde_json::from_str(&json).unwrap();
        assert!(back.iter().eq(reference.iter()));
        most_late
    }
}
