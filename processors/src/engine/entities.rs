//! Maps and sets keyed by entity ids (conversations, leads, sessions), hashed for the look-ups
//! every event makes, yet ordered wherever their order can show: iteration and serialization go
//! in id order, exactly as the `BTreeMap`s and `BTreeSet`s they replace did.
//!
//! Why: a `BTreeMap<EntityId, _>` look-up compares the id string with ~20 others (a `memcmp`
//! each), and an event looks its conversation up about ten times (the rules, the seller figures,
//! the activity for retention, the reports): the profile of issue 16 put those searches at
//! ~20 % of the processors' instructions. A hash look-up hashes the id once and compares it once.
//!
//! The hasher is foldhash with a per-process random seed (`foldhash::fast::RandomState`, what
//! hashbrown uses by default): entity ids come from the CRMs, so a fixed hash would let a tenant
//! choose colliding ids; a random seed that no output reveals leaves only blind guessing. std's
//! SipHash was ~10 % of the processors' instructions (2.6k per event, issue 16). The random
//! order never shows: nothing iterates the hash order ([`EntityMap::iter`] and the
//! serializations sort by id first), so outputs and snapshots stay byte-identical run to run.
//! Sorting costs O(n log n) where the old maps iterated in O(n); every iteration is on a rare
//! path (the daily report, a restore, the first seller evaluation, the live seller API,
//! retention of a whole tenant's sellers).

use foldhash::{HashMap, HashMapExt, HashSet};
use std::borrow::Borrow;
use std::hash::Hash;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use vigia_schemas::EntityId;

/// A `HashMap<K, V>` whose iteration and serialization are in key order (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct EntityMap<V, K = EntityId> {
    map: HashMap<K, V>,
}

impl<K, V> Default for EntityMap<V, K> {
    fn default() -> Self {
        EntityMap {
            map: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Ord + Clone, V> EntityMap<V, K> {
    pub fn get<Q: Hash + Eq + ?Sized>(&self, id: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.map.get(id)
    }

    pub fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, id: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.map.get_mut(id)
    }

    pub fn contains_key<Q: Hash + Eq + ?Sized>(&self, id: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.map.contains_key(id)
    }

    pub fn insert(&mut self, id: K, value: V) -> Option<V> {
        self.map.insert(id, value)
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, id: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.map.remove(id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The value of `id`, inserted with `V::default()` if absent. One look-up: an id is cheap
    /// to copy (inline up to 23 bytes, else shared), three hash probes are not.
    pub fn get_or_default(&mut self, id: &K) -> &mut V
    where
        V: Default,
    {
        self.map.entry(id.clone()).or_default()
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let mut all: Vec<(&K, &V)> = self.map.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// Every entry, in key order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        let mut all: Vec<(&K, &mut V)> = self.map.iter_mut().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// Every value, in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Every value, in key order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.iter_mut().map(|(_, v)| v)
    }
}

impl<K: Serialize + Hash + Eq + Ord + Clone, V: Serialize> Serialize for EntityMap<V, K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de, K: Deserialize<'de> + Hash + Eq, V: Deserialize<'de>> Deserialize<'de>
    for EntityMap<V, K>
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(EntityMap {
            map: HashMap::deserialize(d)?,
        })
    }
}

/// A `HashSet<EntityId>` serialized in id order, as the `BTreeSet` it replaces.
#[derive(Debug, Clone, Default)]
pub(crate) struct EntitySet {
    set: HashSet<EntityId>,
}

impl EntitySet {
    /// Adds `id`: one look-up (copying an id costs less than a second hash probe).
    pub fn remember(&mut self, id: &EntityId) {
        self.set.insert(id.clone());
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }
}

impl Serialize for EntitySet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut all: Vec<&EntityId> = self.set.iter().collect();
        all.sort_unstable();
        s.collect_seq(all)
    }
}

impl<'de> Deserialize<'de> for EntitySet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(EntitySet {
            set: HashSet::deserialize(d)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn ids() -> Vec<EntityId> {
        ["b", "a", "10", "9", "conv-2", "conv-10", "ü", "A"]
            .iter()
            .map(|s| EntityId::from(*s))
            .collect()
    }

    #[test]
    fn iterates_and_serializes_in_id_order_like_a_btreemap() {
        let mut map = EntityMap::default();
        let mut reference = BTreeMap::new();
        for (i, id) in ids().into_iter().enumerate() {
            map.insert(id.clone(), i);
            reference.insert(id, i);
        }
        map.remove(&EntityId::from("9"));
        reference.remove(&EntityId::from("9"));
        *map.get_or_default(&EntityId::from("new")) += 7;
        *reference.entry(EntityId::from("new")).or_default() += 7;
        let got: Vec<_> = map.iter().collect();
        let want: Vec<_> = reference.iter().collect();
        assert_eq!(got, want);
        assert_eq!(
            map.values().collect::<Vec<_>>(),
            reference.values().collect::<Vec<_>>()
        );
        for v in map.values_mut() {
            *v += 1;
        }
        for v in reference.values_mut() {
            *v += 1;
        }
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json, serde_json::to_string(&reference).unwrap());
        let back: EntityMap<usize> = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        assert_eq!(back.len(), reference.len());
    }

    #[test]
    fn integer_keys_serialize_like_a_btreemap() {
        let mut map: EntityMap<u8, u64> = EntityMap::default();
        let mut reference = BTreeMap::new();
        for k in [30u64, 4, 1000, 7] {
            map.insert(k, 1);
            reference.insert(k, 1);
        }
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json, serde_json::to_string(&reference).unwrap());
        let back: EntityMap<u8, u64> = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    #[test]
    fn a_set_serializes_like_a_btreeset() {
        let mut set = EntitySet::default();
        let mut reference = BTreeSet::new();
        for id in ids().into_iter().chain(ids()) {
            set.remember(&id);
            reference.insert(id);
        }
        assert_eq!(set.len(), reference.len());
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, serde_json::to_string(&reference).unwrap());
        let back: EntitySet = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }
}
