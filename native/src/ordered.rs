//! A bounded insertion-ordered map: Python's `OrderedDict` as the reference core uses it
//! (assigning an existing key keeps its position unless moved to the end; eviction pops
//! the oldest).  A hash map plus a queue of (sequence, key) with lazy deletion: O(1)
//! amortised per operation, the queue compacted when stale entries dominate.

use std::collections::VecDeque;
use std::hash::Hash;

use hashbrown::{Equivalent, HashMap};

pub struct OrderedMap<K, V> {
    map: HashMap<K, (V, u64)>,
    order: VecDeque<(u64, K)>,
    next_seq: u64,
}

impl<K: Hash + Eq + Clone, V> Default for OrderedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone, V> OrderedMap<K, V> {
    pub fn new() -> Self {
        OrderedMap {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    pub fn contains_key<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> bool {
        self.map.contains_key(key)
    }

    pub fn remove<Q: Hash + Equivalent<K> + ?Sized>(&mut self, key: &Q) -> Option<V> {
        let v = self.map.remove(key).map(|(v, _)| v);
        self.compact();
        v
    }

    /// `d[key] = value`: an existing key keeps its place in the order.
    pub fn insert(&mut self, key: K, value: V) {
        if let Some(slot) = self.map.get_mut(&key) {
            slot.0 = value;
            return;
        }
        self.push_new(key, value);
    }

    /// `d[key] = value; d.move_to_end(key)`.
    pub fn insert_last(&mut self, key: K, value: V) {
        self.map.remove(&key);
        self.push_new(key, value);
    }

    fn push_new(&mut self, key: K, value: V) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.order.push_back((seq, key.clone()));
        self.map.insert(key, (value, seq));
        self.compact();
    }

    /// The oldest live entry, without removing it.
    pub fn front(&mut self) -> Option<(&K, &V)> {
        self.skip_stale();
        let (_, k) = self.order.front()?;
        self.map.get_key_value(k).map(|(k, (v, _))| (k, v))
    }

    /// `d.popitem(last=False)`.
    pub fn pop_front(&mut self) -> Option<(K, V)> {
        self.skip_stale();
        let (_, k) = self.order.pop_front()?;
        let (v, _) = self.map.remove(&k)?;
        Some((k, v))
    }

    fn skip_stale(&mut self) {
        while let Some((seq, k)) = self.order.front() {
            match self.map.get(k) {
                Some((_, s)) if s == seq => break,
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(seq, k)| matches!(map.get(k), Some((_, s)) if s == seq));
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::OrderedMap;

    #[test]
    fn behaves_like_python_ordered_dict() {
        let mut m: OrderedMap<u32, u32> = OrderedMap::new();
        for i in 0..5 {
            m.insert(i, i);
        }
        m.insert(0, 10); // keeps its place
        assert_eq!(m.pop_front(), Some((0, 10)));
        m.insert_last(1, 11); // moves to the end
        assert_eq!(m.pop_front(), Some((2, 2)));
        assert_eq!(m.remove(&3), Some(3));
        assert_eq!(m.pop_front(), Some((4, 4)));
        assert_eq!(m.pop_front(), Some((1, 11)));
        assert_eq!(m.pop_front(), None);
        for i in 0..1000 {
            m.insert_last(i % 3, i);
        }
        assert_eq!(m.len(), 3);
        assert!(m.order.len() <= 2 * 3 + 65);
    }
}
