//! Decoded blocks kept in memory, so that a reader polling the same recent window every interval
//! (the profiler, the forecaster) copies instead of decompressing. Blocks never change once
//! sealed and their (segment, offset) is never reused, so entries need no invalidation; the
//! oldest entries go first when the byte budget is reached.

use crate::block::Values;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// One decoded block.
#[derive(Debug)]
pub struct Decoded {
    pub ts: Vec<i64>,
    pub values: Values,
}

impl Decoded {
    fn bytes(&self) -> usize {
        self.ts.len() * 16
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<(u32, u64), Arc<Decoded>>,
    order: VecDeque<(u32, u64)>,
    bytes: usize,
}

#[derive(Debug)]
pub struct BlockCache {
    budget: usize,
    inner: Mutex<Inner>,
}

impl BlockCache {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn get(&self, key: (u32, u64)) -> Option<Arc<Decoded>> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .get(&key)
            .cloned()
    }

    pub fn insert(&self, key: (u32, u64), block: Arc<Decoded>) {
        let size = block.bytes();
        if size > self.budget {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.entries.insert(key, block).is_none() {
            inner.order.push_back(key);
            inner.bytes += size;
        }
        while inner.bytes > self.budget {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.entries.remove(&old) {
                inner.bytes -= gone.bytes();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: usize) -> Arc<Decoded> {
        Arc::new(Decoded {
            ts: (0..n as i64).collect(),
            values: Values::U64(vec![0; n]),
        })
    }

    #[test]
    fn keeps_within_its_budget_dropping_the_oldest() {
        let cache = BlockCache::new(16 * 250);
        cache.insert((1, 0), block(100));
        cache.insert((1, 100), block(100));
        assert!(cache.get((1, 0)).is_some());
        cache.insert((1, 200), block(100));
        assert!(cache.get((1, 0)).is_none(), "the oldest went");
        assert!(cache.get((1, 200)).is_some());
        cache.insert((9, 0), block(1000));
        assert!(
            cache.get((9, 0)).is_none(),
            "a block over the whole budget is not kept"
        );
    }
}
