//! A map that is a short vector while small and a hash map once large: most trie nodes have
//! one child and at most a few subscribers, and a hash map's smallest table (several slots
//! of key, value and control bytes) made every level of every filter cost hundreds of
//! bytes. Vectors grow one slot at a time here, so a node with one child holds exactly one.

use std::borrow::Borrow;
use std::hash::Hash;

use hashbrown::HashMap;

/// Entries past which the vector becomes a hash map.
const SPILL: usize = 8;

#[derive(Debug)]
pub(crate) enum SmallMap<K, V> {
    Few(Vec<(K, V)>),
    Many(Box<HashMap<K, V>>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Few(Vec::new())
    }
}

impl<K: Hash + Eq, V> SmallMap<K, V> {
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            SmallMap::Few(v) => v.is_empty(),
            SmallMap::Many(m) => m.is_empty(),
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            SmallMap::Few(v) => v.iter().find(|(k, _)| k.borrow() == key).map(|(_, v)| v),
            SmallMap::Many(m) => m.get(key),
        }
    }

    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            SmallMap::Few(v) => v
                .iter_mut()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, v)| v),
            SmallMap::Many(m) => m.get_mut(key),
        }
    }

    /// Inserts or replaces; returns the previous value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.make_room(&key);
        match self {
            SmallMap::Few(v) => match v.iter_mut().find(|(k, _)| *k == key) {
                Some((_, slot)) => Some(std::mem::replace(slot, value)),
                None => {
                    v.reserve_exact(1);
                    v.push((key, value));
                    None
                }
            },
            SmallMap::Many(m) => m.insert(key, value),
        }
    }

    /// The value for `key`, inserting `make()` if there is none; `make` runs only then.
    pub(crate) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        self.make_room(&key);
        match self {
            SmallMap::Few(v) => {
                let i = match v.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        v.reserve_exact(1);
                        v.push((key, make()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            SmallMap::Many(m) => m.entry(key).or_insert_with(make),
        }
    }

    /// Turns a full vector into a hash map before a new key would pass [`SPILL`].
    fn make_room(&mut self, key: &K) {
        if let SmallMap::Few(v) = self {
            if v.len() >= SPILL && !v.iter().any(|(k, _)| k == key) {
                let map: HashMap<K, V> = std::mem::take(v).into_iter().collect();
                *self = SmallMap::Many(Box::new(map));
            }
        }
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            SmallMap::Few(v) => {
                let i = v.iter().position(|(k, _)| k.borrow() == key)?;
                let (_, value) = v.swap_remove(i);
                v.shrink_to_fit();
                Some(value)
            }
            SmallMap::Many(m) => m.remove(key),
        }
    }

    /// The entries, in no particular order.
    pub(crate) fn entries(&self) -> Vec<(&K, &V)> {
        match self {
            SmallMap::Few(v) => v.iter().map(|(k, v)| (k, v)).collect(),
            SmallMap::Many(m) => m.iter().collect(),
        }
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        match self {
            SmallMap::Few(v) => v.iter().for_each(|(k, v)| f(k, v)),
            SmallMap::Many(m) => m.iter().for_each(|(k, v)| f(k, v)),
        }
    }
}
