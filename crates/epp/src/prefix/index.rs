//! The approximate prefix index: for each endpoint, the block hashes of prompts this
//! EPP sent there, in a bounded LRU.
//!
//! The bound is `lruCapacityPerServer` blocks, lowered to what the engine can really
//! hold when it reports `vllm:cache_config_info` (blocks x block size), so the index
//! does not keep believing in prefixes the engine has long evicted.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

struct ServerBlocks {
    blocks: LruCache<u64, ()>,
    /// Blocks the engine itself can hold, in index blocks.
    engine_capacity: Option<usize>,
}

struct Inner {
    servers: HashMap<Arc<str>, ServerBlocks>,
    capacity: usize,
}

/// Block hashes per endpoint. Cheap to share; all methods lock briefly.
pub struct PrefixIndex {
    inner: Mutex<Inner>,
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN)
}

impl PrefixIndex {
    pub fn new(capacity_per_server: usize) -> Self {
        PrefixIndex {
            inner: Mutex::new(Inner {
                servers: HashMap::new(),
                capacity: capacity_per_server.max(1),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the LRU inconsistent in a way
        // that matters for an approximate index, so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of leading blocks of `hashes` each address holds.
    pub fn matched_blocks<'a>(
        &self,
        addresses: impl IntoIterator<Item = &'a str>,
        hashes: &[u64],
    ) -> Vec<usize> {
        let inner = self.lock();
        addresses
            .into_iter()
            .map(|a| match inner.servers.get(a) {
                Some(s) => hashes.iter().take_while(|h| s.blocks.contains(h)).count(),
                None => 0,
            })
            .collect()
    }

    /// Records that the prompt with `hashes` was sent to `address`.
    pub fn record(&self, address: &Arc<str>, hashes: &[u64]) {
        if hashes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let cap = inner.capacity;
        let server = inner
            .servers
            .entry(address.clone())
            .or_insert_with(|| ServerBlocks {
                blocks: LruCache::new(nonzero(cap)),
                engine_capacity: None,
            });
        for h in hashes {
            server.blocks.put(*h, ());
        }
    }

    /// Applies a new `lruCapacityPerServer`, keeping the most recent blocks.
    pub fn set_capacity(&self, capacity_per_server: usize) {
        let mut inner = self.lock();
        inner.capacity = capacity_per_server.max(1);
        let cap = inner.capacity;
        for s in inner.servers.values_mut() {
            let effective = s.engine_capacity.map_or(cap, |e| e.min(cap));
            s.blocks.resize(nonzero(effective));
        }
    }

    /// Lowers one server's bound to what its engine holds (in index blocks).
    pub fn set_engine_capacity(&self, address: &Arc<str>, blocks: usize) {
        let mut inner = self.lock();
        let cap = inner.capacity;
        let server = inner
            .servers
            .entry(address.clone())
            .or_insert_with(|| ServerBlocks {
                blocks: LruCache::new(nonzero(cap)),
                engine_capacity: None,
            });
        if server.engine_capacity != Some(blocks) {
            server.engine_capacity = Some(blocks);
            server.blocks.resize(nonzero(blocks.min(cap)));
        }
    }

    /// Forgets endpoints that left the pool.
    pub fn retain(&self, mut live: impl FnMut(&str) -> bool) {
        self.lock().servers.retain(|a, _| live(a));
    }

    /// Blocks held for `address` (for tests and metrics).
    pub fn len_of(&self, address: &str) -> usize {
        self.lock()
            .servers
            .get(address)
            .map_or(0, |s| s.blocks.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn counts_leading_matched_blocks_per_endpoint() {
        let idx = PrefixIndex::new(100);
        idx.record(&addr("a"), &[1, 2, 3]);
        idx.record(&addr("b"), &[1, 9]);
        let m = idx.matched_blocks(["a", "b", "c"], &[1, 2, 4]);
        assert_eq!(m, vec![2, 1, 0]);
    }

    #[test]
    fn memory_is_bounded_per_server() {
        let idx = PrefixIndex::new(4);
        idx.record(&addr("a"), &[1, 2, 3, 4, 5, 6]);
        assert_eq!(idx.len_of("a"), 4);
        assert_eq!(idx.matched_blocks(["a"], &[1]), vec![0]);
        assert_eq!(idx.matched_blocks(["a"], &[3, 4, 5, 6]), vec![4]);
    }

    #[test]
    fn engine_capacity_lowers_the_bound_and_config_change_keeps_blocks() {
        let idx = PrefixIndex::new(10);
        idx.record(&addr("a"), &[1, 2, 3, 4]);
        idx.set_engine_capacity(&addr("a"), 2);
        assert_eq!(idx.len_of("a"), 2);
        idx.set_capacity(1000);
        assert_eq!(idx.len_of("a"), 2);
        assert_eq!(idx.matched_blocks(["a"], &[3, 4]), vec![2]);
    }

    #[test]
    fn retain_forgets_departed_endpoints() {
        let idx = PrefixIndex::new(10);
        idx.record(&addr("a"), &[1]);
        idx.record(&addr("b"), &[1]);
        idx.retain(|a| a == "b");
        assert_eq!(idx.matched_blocks(["a", "b"], &[1]), vec![0, 1]);
    }
}
