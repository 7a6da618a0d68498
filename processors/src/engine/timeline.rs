//! [`Timeline`]: a sorted set of keys that mostly arrive in order, for the time-ordered logs
//! (`(event time, …)` keys) that only grow at the end and are forgotten from the front.
//!
//! Why: a `BTreeSet` insert compares the new key with ~20 others on its way down the tree, each
//! a several-field `DateTime` comparison; events arrive nearly in event-time order, so here an
//! insert compares with the last key and appends. A key that arrives out of order is put in place
//! by a binary search and a shift of the keys after it (a few, for an event seconds late).
//! Set semantics, order and serialization (a sequence in key order) are the `BTreeSet`'s.

use std::collections::VecDeque;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone)]
pub(crate) struct Timeline<T> {
    keys: VecDeque<T>,
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Timeline {
            keys: VecDeque::new(),
        }
    }
}

impl<T: Ord> Timeline<T> {
    /// Adds `key`; false if it was there.
    pub fn insert(&mut self, key: T) -> bool {
        match self.keys.back() {
            None => {}
            Some(last) if *last < key => {}
            Some(_) => match self.keys.binary_search(&key) {
                Ok(_) => return false,
                Err(at) => {
                    self.keys.insert(at, key);
                    return true;
                }
            },
        }
        self.keys.push_back(key);
        true
    }

    pub fn first(&self) -> Option<&T> {
        self.keys.front()
    }

    pub fn pop_first(&mut self) -> Option<T> {
        self.keys.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Forgets every key before `bound` (`BTreeSet::split_off`, keeping the upper part).
    pub fn forget_before(&mut self, bound: &T) {
        let n = self.keys.partition_point(|k| k < bound);
        self.keys.drain(..n);
    }

    /// How many keys `from <= key <= to` (`BTreeSet::range(from..=to)`).
    pub fn count_between(&self, from: &T, to: &T) -> usize {
        let lo = self.keys.partition_point(|k| k < from);
        let hi = self.keys.partition_point(|k| k <= to);
        hi.saturating_sub(lo)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.keys.iter()
    }
}

impl<T: Serialize> Serialize for Timeline<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.keys.iter())
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

    /// A deterministic stream of keys, mostly increasing, some late, some repeated.
    fn keys() -> Vec<(u32, u8)> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut t = 0u32;
        (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                t += (x % 3) as u32;
                let late = if x.is_multiple_of(10) {
                    (x % 40) as u32
                } else {
                    0
                };
                (t.saturating_sub(late), (x >> 20) as u8 % 4)
            })
            .collect()
    }

    #[test]
    fn behaves_as_a_btreeset() {
        let mut timeline = Timeline::default();
        let mut reference = BTreeSet::new();
        for (i, k) in keys().into_iter().enumerate() {
            assert_eq!(timeline.insert(k), reference.insert(k), "insert {k:?}");
            if i.is_multiple_of(97) {
                let bound = (k.0.saturating_sub(50), 0);
                timeline.forget_before(&bound);
                reference = reference.split_off(&bound);
            }
            if i.is_multiple_of(13) {
                let (from, to) = ((k.0.saturating_sub(20), 2), (k.0, 1));
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
        }
        assert!(timeline.iter().eq(reference.iter()));
        let json = serde_json::to_string(&timeline).unwrap();
        assert_eq!(json, serde_json::to_string(&reference).unwrap());
        let back: Timeline<(u32, u8)> = serde_json::from_str(&json).unwrap();
        assert!(back.iter().eq(reference.iter()));
    }
}
