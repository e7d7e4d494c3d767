//! A small least-recently-used store: the features of a collection's images held in memory
//! while pairs are matched, at most `capacity` of them (the rest are read again from the cache
//! when a pair needs them).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// At most `capacity` values by key, the least recently used dropped first.
pub struct Lru<K, V> {
    capacity: usize,
    values: BTreeMap<K, Arc<V>>,
    /// Keys, least recently used first.
    order: VecDeque<K>,
}

impl<K: Ord + Clone, V> Lru<K, V> {
    /// An empty store for `capacity` values (at least one).
    pub fn new(capacity: usize) -> Self {
        Lru {
            capacity: capacity.max(1),
            values: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The most values kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Values held now.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// `true` when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn touch(&mut self, key: &K) {
        if let Some(at) = self.order.iter().position(|k| k == key) {
            self.order.remove(at);
        }
        self.order.push_back(key.clone());
    }

    /// The value of `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<Arc<V>> {
        let value = self.values.get(key).cloned()?;
        self.touch(key);
        Some(value)
    }

    /// Holds `value` as `key`'s, the most recently used, dropping the least recently used
    /// values beyond the capacity.
    pub fn put(&mut self, key: K, value: Arc<V>) {
        self.values.insert(key.clone(), value);
        self.touch(&key);
        while self.values.len() > self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.values.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut lru = Lru::new(2);
        lru.put(1, Arc::new("a"));
        lru.put(2, Arc::new("b"));
        assert_eq!(lru.get(&1).as_deref(), Some(&"a")); // 2 is now the oldest
        lru.put(3, Arc::new("c"));
        assert!(lru.get(&2).is_none());
        assert_eq!((lru.len(), lru.capacity()), (2, 2));
        assert!(lru.get(&1).is_some() && lru.get(&3).is_some());
        assert_eq!(Lru::<u8, u8>::new(0).capacity(), 1);
    }
}
