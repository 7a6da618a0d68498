//! [`SortedVecMap`]: a map kept as one `Vec` of pairs in key order, for the few events a
//! conversation remembers (its recent customer messages, replies and closes).
//!
//! A `BTreeMap`'s first node holds 11 entries whether the map has one or five: with a 2-byte
//! value a conversation's customer messages took ~350 bytes, its replies ~500; on the 1-hour
//! bench stream (127k conversations, ~4 customer messages, ~2 replies and 0.3 closes each) that
//! was most of the conversations' memory, read at random by every event. Here the entries sit
//! side by side, a look-up is a binary search over a handful of keys, and an insert lands at
//! the end but for a late event. Only what the conversations use of `BTreeMap`'s interface is
//! here, with the same meaning (tested against `BTreeMap` below); the snapshot writes it as
//! the same list of pairs.

use std::ops::{Bound, Index, RangeBounds};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone)]
pub(crate) struct SortedVecMap<K, V> {
    /// Strictly increasing keys.
    entries: Vec<(K, V)>,
}

impl<K, V> Default for SortedVecMap<K, V> {
    fn default() -> Self {
        SortedVecMap {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord, V> SortedVecMap<K, V> {
    fn search(&self, key: &K) -> Result<usize, usize> {
        // Most inserts are of the newest key: check the end before bisecting.
        match self.entries.last() {
            None => Err(0),
            Some((last, _)) if last < key => Err(self.entries.len()),
            _ => self.entries.binary_search_by(|(k, _)| k.cmp(key)),
        }
    }

    /// Like `BTreeMap::insert`: the old value if the key was there.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.search(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.search(key).ok().map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.search(key).ok().map(|i| &mut self.entries[i].1)
    }

    /// The entries with keys in `range`, in key order (both ends).
    pub fn range<R: RangeBounds<K>>(
        &self,
        range: R,
    ) -> impl DoubleEndedIterator<Item = (&K, &V)> + '_ {
        let start = match range.start_bound() {
            Bound::Included(s) => self.entries.partition_point(|(k, _)| k < s),
            Bound::Excluded(s) => self.entries.partition_point(|(k, _)| k <= s),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => self.entries.partition_point(|(k, _)| k <= e),
            Bound::Excluded(e) => self.entries.partition_point(|(k, _)| k < e),
            Bound::Unbounded => self.entries.len(),
        };
        // An empty range (start past its end) yields nothing, where `BTreeMap` panics.
        self.entries[start..end.max(start)]
            .iter()
            .map(|(k, v)| (k, v))
    }

    /// Forgets the entries with keys before `bound` (`*map = map.split_off(bound)` of a
    /// `BTreeMap`), keeping the memory of those left.
    pub fn forget_before(&mut self, bound: &K) {
        let keep_from = self.entries.partition_point(|(k, _)| k < bound);
        self.entries.drain(..keep_from);
        // A conversation gone quiet keeps nothing: give the whole block back.
        if self.entries.is_empty() {
            self.entries = Vec::new();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

impl<K: Ord, V> Index<&K> for SortedVecMap<K, V> {
    type Output = V;

    fn index(&self, key: &K) -> &V {
        self.get(key).expect("no entry for the key")
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SortedVecMap<K, V> {
    /// Like `BTreeMap`'s: for a repeated key the last value wins.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries: Vec<(K, V)> = iter.into_iter().collect();
        // Stable: equal keys keep their order, and the last of them is kept below.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept: Vec<(K, V)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match kept.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => kept.push((k, v)),
            }
        }
        SortedVecMap { entries: kept }
    }
}

/// A list of `[key, value]` pairs in key order: what `snapshot::pairs` writes for a `BTreeMap`,
/// so snapshots written before this type restore into it.
impl<K: Serialize, V: Serialize> Serialize for SortedVecMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.entries.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for SortedVecMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A small deterministic generator (no crate needed for a test's stream of numbers).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn bound(kind: u64, k: u32) -> Bound<u32> {
        match kind {
            0 => Bound::Included(k),
            1 => Bound::Excluded(k),
            _ => Bound::Unbounded,
        }
    }

    /// Every operation the conversations use, on random keys (mostly increasing, some late,
    /// some repeated), gives what `BTreeMap` gives.
    #[test]
    fn behaves_as_a_btreemap() {
        for seed in 0..200 {
            let mut rng = Lcg(seed);
            let mut ours = SortedVecMap::default();
            let mut theirs = BTreeMap::new();
            let mut clock = 0u32;
            for step in 0..300u32 {
                clock += rng.next(3) as u32;
                let key = if rng.next(5) == 0 {
                    clock.saturating_sub(rng.next(20) as u32)
                } else {
                    clock
                };
                match rng.next(10) {
                    0..=4 => assert_eq!(ours.insert(key, step), theirs.insert(key, step)),
                    5 => {
                        if let (Some(a), Some(b)) = (ours.get_mut(&key), theirs.get_mut(&key)) {
                            *a += 1000;
                            *b += 1000;
                        }
                    }
                    6 => {
                        let bound_key = clock.saturating_sub(rng.next(30) as u32);
                        ours.forget_before(&bound_key);
                        theirs = theirs.split_off(&bound_key);
                    }
                    _ => {
                        let (a, b) = (key.saturating_sub(rng.next(10) as u32), key);
                        let range = (bound(rng.next(3), a), bound(rng.next(3), b));
                        let start_after_end = matches!(
                            range,
                            (Bound::Excluded(a), Bound::Excluded(b)) if a == b
                        );
                        if !start_after_end {
                            assert!(ours.range(range).eq(theirs.range(range)), "seed {seed}");
                            assert!(ours.range(range).rev().eq(theirs.range(range).rev()));
                        }
                    }
                }
                assert_eq!(ours.get(&key), theirs.get(&key));
                assert_eq!(ours.len(), theirs.len());
            }
            assert!(ours.range(..).eq(theirs.iter()), "seed {seed}");
        }
    }

    #[test]
    fn snapshot_form_is_btreemaps_pairs_and_the_last_repeated_key_wins() {
        let mut map = SortedVecMap::default();
        map.insert(3u32, "c");
        map.insert(1, "a");
        assert_eq!(serde_json::to_string(&map).unwrap(), r#"[[1,"a"],[3,"c"]]"#);
        let back: SortedVecMap<u32, &str> =
            serde_json::from_str(r#"[[3,"c"],[1,"x"],[1,"a"]]"#).unwrap();
        assert!(back.range(..).eq(map.range(..)));
        assert_eq!(back[&1], "a");
        let from_btree: SortedVecMap<u32, String> = serde_json::from_str(
            &serde_json::to_string(
                &BTreeMap::from([(2u32, "b".to_string()), (1, "a".to_string())])
                    .into_iter()
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(from_btree.len(), 2);
        assert_eq!(from_btree[&1], "a");
    }

    #[test]
    fn forgetting_everything_gives_the_memory_back() {
        let mut map: SortedVecMap<u32, u32> = (0..100).map(|k| (k, k)).collect();
        map.forget_before(&50);
        assert_eq!(map.range(..).next(), Some((&50, &50)));
        map.forget_before(&1000);
        assert_eq!(map.len(), 0);
        assert_eq!(map.entries.capacity(), 0);
    }
}
