//! The precise prefix index: for each pod, the blocks its engine reports holding,
//! built from its KV events (`kv_events`), not guessed from what this EPP routed.
//!
//! Engines hash blocks their own way (vLLM: sha256 or xxhash over CBOR, seeded per
//! process), which the EPP cannot and need not reproduce: a `BlockStored` event
//! carries its blocks' token ids, so the index computes its own chained key per block
//! (the parent's key and the block's token ids) and remembers which engine hash stands
//! for which key, for the `BlockRemoved` events that name only engine hashes. A
//! request's prompt, tokenized as the engine does (`engine_tokens`), is keyed the same
//! way and matched block by block.
//!
//! Between routing a prompt to a pod and that pod's engine reporting its blocks lies
//! a prefill, during which the next request of the same tenant would find nothing:
//! the blocks of a routed prompt are held speculatively for the pod for
//! [`SPECULATION_TTL`], until the engine's events take over (llm-d's speculative
//! indexing).
//!
//! Memory is bounded per pod: at most `capacity` entries, fewer when the engine
//! reports how many blocks it has, the least recently stored going first; as many
//! speculative entries again at most.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::kv_events::KvEvent;

/// The key of the empty prefix: base model blocks chain from `root_key(None)`, a
/// LoRA adapter's from `root_key(Some(name))` (an adapter's KV differs from the base
/// model's for the same tokens). The base model is not named because a pod serves
/// one, and the name in its topic need not be the name clients use.
pub fn root_key(lora: Option<&str>) -> u64 {
    match lora {
        None => xxh3_64(b"llmd:base"),
        Some(name) => xxh3_64_with_seed(name.as_bytes(), xxh3_64(b"llmd:lora")),
    }
}

/// Chained keys of the full blocks of `tokens`, at most `max_blocks`.
pub fn block_keys(root: u64, tokens: &[u32], block_size: usize, max_blocks: usize) -> Vec<u64> {
    let mut parent = root;
    let mut bytes = Vec::with_capacity(block_size * 4);
    tokens
        .chunks_exact(block_size.max(1))
        .take(max_blocks)
        .map(|block| {
            bytes.clear();
            bytes.extend(block.iter().flat_map(|t| t.to_le_bytes()));
            parent = xxh3_64_with_seed(&bytes, parent);
            parent
        })
        .collect()
}

/// What one batch of events did to a pod's entries, for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub stored: usize,
    pub removed: usize,
    pub cleared: bool,
    /// Stored blocks whose parent the index does not know (an event missed or
    /// evicted here), not indexed: their keys cannot be computed.
    pub unknown_parent: usize,
    /// Stored blocks of another block size than the index's.
    pub other_block_size: usize,
    /// The sequence number did not follow the previous one: events were lost.
    pub gap: bool,
    /// The sequence went back: the publisher restarted, so its engine did too and
    /// the pod's entries were dropped.
    pub restarted: bool,
}

/// How long the blocks of a prompt just routed to a pod count as held there before
/// the engine reports them: a queue wait and a prefill, with room to spare.
pub const SPECULATION_TTL: Duration = Duration::from_secs(2);

struct PodBlocks {
    /// `(medium, engine hash)` to the block's key, least recently stored first out.
    by_engine: LruCache<(u8, u64), u64>,
    /// Keys of prompts routed here that the engine has not reported yet, with the
    /// time they stop counting.
    speculative: HashMap<u64, Instant>,
    /// Key to the number of `by_engine` entries holding it.
    held: HashMap<u64, u32>,
    /// Medium names, indexed by the `u8` in `by_engine`.
    mediums: Vec<String>,
    last_seq: Option<u64>,
}

/// Media past this many per pod share the last slot (engines have a GPU tier and
/// perhaps one or two offload tiers).
const MAX_MEDIUMS: usize = 8;

impl PodBlocks {
    fn new(capacity: usize) -> Self {
        PodBlocks {
            by_engine: LruCache::new(nonzero(capacity)),
            speculative: HashMap::new(),
            held: HashMap::new(),
            mediums: Vec::new(),
            last_seq: None,
        }
    }

    fn medium(&mut self, name: Option<&str>) -> u8 {
        let name = name.unwrap_or("");
        let i = match self.mediums.iter().position(|m| m == name) {
            Some(i) => i,
            None if self.mediums.len() < MAX_MEDIUMS => {
                self.mediums.push(name.to_string());
                self.mediums.len() - 1
            }
            None => MAX_MEDIUMS - 1,
        };
        u8::try_from(i).unwrap_or(u8::MAX)
    }

    fn release(&mut self, key: u64) {
        if let Some(n) = self.held.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&key);
            }
        }
    }

    fn store(&mut self, medium: u8, engine: u64, key: u64) {
        if let Some((_, old)) = self.by_engine.push((medium, engine), key) {
            self.release(old);
        }
        *self.held.entry(key).or_insert(0) += 1;
    }

    /// The key for an engine hash on any medium.
    fn key_of(&self, engine: u64) -> Option<u64> {
        (0..self.mediums.len().max(1))
            .filter_map(|m| u8::try_from(m).ok())
            .find_map(|m| self.by_engine.peek(&(m, engine)).copied())
    }

    fn clear(&mut self) {
        self.by_engine.clear();
        self.held.clear();
        self.speculative.clear();
    }

    fn holds(&self, key: u64, now: Instant) -> bool {
        self.held.contains_key(&key) || self.speculative.get(&key).is_some_and(|t| *t > now)
    }
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN)
}

/// Blocks per pod from the engines' own events. Cheap to share; methods lock briefly.
pub struct PreciseIndex {
    block_size: usize,
    capacity: usize,
    pods: Mutex<HashMap<Arc<str>, PodBlocks>>,
}

impl PreciseIndex {
    /// An index of `block_size`-token blocks, at most `capacity` entries per pod.
    pub fn new(block_size: usize, capacity: usize) -> Self {
        PreciseIndex {
            block_size: block_size.max(1),
            capacity: capacity.max(1),
            pods: Mutex::new(HashMap::new()),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, PodBlocks>> {
        // Each event is applied whole under the lock; a panic elsewhere cannot leave a
        // pod's maps half-updated, so keep serving.
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sequence number of the last message of `pod`'s publisher applied.
    pub fn last_seq(&self, pod: &str) -> Option<u64> {
        self.lock().get(pod).and_then(|b| b.last_seq)
    }

    /// Applies message `seq` of `pod`'s publisher.
    pub fn apply(&self, pod: &Arc<str>, seq: u64, events: &[KvEvent]) -> Applied {
        let mut pods = self.lock();
        let capacity = self.capacity;
        let blocks = pods
            .entry(pod.clone())
            .or_insert_with(|| PodBlocks::new(capacity));
        let mut out = Applied::default();
        match blocks.last_seq {
            Some(last) if seq <= last => {
                out.restarted = true;
                blocks.clear();
            }
            Some(last) if seq != last.saturating_add(1) => out.gap = true,
            _ => {}
        }
        blocks.last_seq = Some(seq);
        for event in events {
            self.apply_event(blocks, event, &mut out);
        }
        out
    }

    fn apply_event(&self, blocks: &mut PodBlocks, event: &KvEvent, out: &mut Applied) {
        match event {
            KvEvent::BlockStored {
                block_hashes,
                parent,
                token_ids,
                block_size,
                lora_name,
                medium,
            } => {
                if *block_size != self.block_size {
                    out.other_block_size += block_hashes.len();
                    return;
                }
                let root = match parent {
                    None => Some(root_key(lora_name.as_deref())),
                    Some(p) => blocks.key_of(*p),
                };
                let Some(root) = root else {
                    out.unknown_parent += block_hashes.len();
                    return;
                };
                let keys = block_keys(root, token_ids, self.block_size, block_hashes.len());
                let m = blocks.medium(medium.as_deref());
                for (engine, key) in block_hashes.iter().zip(keys) {
                    blocks.store(m, *engine, key);
                    blocks.speculative.remove(&key);
                    out.stored += 1;
                }
            }
            KvEvent::BlockRemoved {
                block_hashes,
                medium,
            } => {
                let m = blocks.medium(medium.as_deref());
                for engine in block_hashes {
                    if let Some(key) = blocks.by_engine.pop(&(m, *engine)) {
                        blocks.release(key);
                        out.removed += 1;
                    }
                }
            }
            KvEvent::AllBlocksCleared => {
                blocks.clear();
                out.cleared = true;
            }
        }
    }

    /// Number of leading `keys` each pod holds (0 for a pod never heard from).
    pub fn matched_blocks<'a>(
        &self,
        pods: impl IntoIterator<Item = &'a str>,
        keys: &[u64],
    ) -> Vec<usize> {
        let all = self.lock();
        pods.into_iter()
            .map(|p| match all.get(p) {
                Some(b) => keys.iter().take_while(|k| b.held.contains_key(k)).count(),
                None => 0,
            })
            .collect()
    }

    /// Like [`PreciseIndex::matched_blocks`], counting the blocks of prompts routed to
    /// each pod in the last [`SPECULATION_TTL`] as held.
    pub fn matched_blocks_at<'a>(
        &self,
        pods: impl IntoIterator<Item = &'a str>,
        keys: &[u64],
        now: Instant,
    ) -> Vec<usize> {
        let all = self.lock();
        pods.into_iter()
            .map(|p| match all.get(p) {
                Some(b) => keys.iter().take_while(|k| b.holds(**k, now)).count(),
                None => 0,
            })
            .collect()
    }

    /// `keys` were just routed to `pod`: they count as held there until `now` +
    /// [`SPECULATION_TTL`] (the engine's events confirm or forget them meanwhile).
    pub fn speculate(&self, pod: &Arc<str>, keys: &[u64], now: Instant) {
        let capacity = self.capacity;
        let mut pods = self.lock();
        let b = pods
            .entry(pod.clone())
            .or_insert_with(|| PodBlocks::new(capacity));
        let bound = b.by_engine.cap().get();
        if b.speculative.len() + keys.len() > bound {
            b.speculative.retain(|_, until| *until > now);
        }
        let until = now + SPECULATION_TTL;
        for key in keys.iter().take(bound.saturating_sub(b.speculative.len())) {
            b.speculative.insert(*key, until);
        }
    }

    /// Lowers (or raises) a pod's bound to the blocks its engine reports.
    pub fn set_engine_capacity(&self, pod: &Arc<str>, blocks: usize) {
        let capacity = self.capacity;
        let mut pods = self.lock();
        let b = pods
            .entry(pod.clone())
            .or_insert_with(|| PodBlocks::new(capacity));
        let target = nonzero(blocks.min(capacity));
        if b.by_engine.cap() != target {
            while b.by_engine.len() > target.get() {
                if let Some((_, key)) = b.by_engine.pop_lru() {
                    b.release(key);
                }
            }
            b.by_engine.resize(target);
        }
    }

    /// Forgets pods that left the pool.
    pub fn retain(&self, mut live: impl FnMut(&str) -> bool) {
        self.lock().retain(|p, _| live(p));
    }

    /// Blocks held for `pod` (entries across media).
    pub fn len_of(&self, pod: &str) -> usize {
        self.lock().get(pod).map_or(0, |b| b.by_engine.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: usize = 2;

    fn pod(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn stored(hashes: &[u64], parent: Option<u64>, tokens: &[u32]) -> KvEvent {
        KvEvent::BlockStored {
            block_hashes: hashes.to_vec(),
            parent,
            token_ids: tokens.to_vec(),
            block_size: BS,
            lora_name: None,
            medium: Some("GPU".into()),
        }
    }

    fn removed(hashes: &[u64]) -> KvEvent {
        KvEvent::BlockRemoved {
            block_hashes: hashes.to_vec(),
            medium: Some("GPU".into()),
        }
    }

    fn keys(tokens: &[u32]) -> Vec<u64> {
        block_keys(root_key(None), tokens, BS, 100)
    }

    #[test]
    fn a_prompt_matches_the_blocks_its_engine_stored_across_events() {
        let idx = PreciseIndex::new(BS, 100);
        // The engine stores [1 2][3 4] for one request, then [5 6] chained after 20.
        idx.apply(&pod("a"), 1, &[stored(&[10, 20], None, &[1, 2, 3, 4])]);
        let out = idx.apply(&pod("a"), 2, &[stored(&[30], Some(20), &[5, 6])]);
        assert_eq!((out.stored, out.gap), (1, false));
        let m = idx.matched_blocks(["a", "b"], &keys(&[1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(m, vec![3, 0]);
        // Same tokens behind another prefix are another block.
        assert_eq!(idx.matched_blocks(["a"], &keys(&[9, 9, 5, 6])), vec![0]);
    }

    #[test]
    fn removed_blocks_stop_matching_from_the_first_one_missing() {
        let idx = PreciseIndex::new(BS, 100);
        idx.apply(
            &pod("a"),
            1,
            &[stored(&[10, 20, 30], None, &[1, 2, 3, 4, 5, 6])],
        );
        let out = idx.apply(&pod("a"), 2, &[removed(&[20, 99])]);
        assert_eq!(out.removed, 1);
        assert_eq!(
            idx.matched_blocks(["a"], &keys(&[1, 2, 3, 4, 5, 6])),
            vec![1]
        );
        idx.apply(&pod("a"), 3, &[KvEvent::AllBlocksCleared]);
        assert_eq!(idx.len_of("a"), 0);
    }

    #[test]
    fn a_block_on_two_media_stays_until_both_drop_it() {
        let idx = PreciseIndex::new(BS, 100);
        let mut cpu = stored(&[10], None, &[1, 2]);
        if let KvEvent::BlockStored { medium, .. } = &mut cpu {
            *medium = Some("CPU".into());
        }
        idx.apply(&pod("a"), 1, &[stored(&[10], None, &[1, 2]), cpu]);
        idx.apply(&pod("a"), 2, &[removed(&[10])]);
        assert_eq!(idx.matched_blocks(["a"], &keys(&[1, 2])), vec![1]);
        idx.apply(
            &pod("a"),
            3,
            &[KvEvent::BlockRemoved {
                block_hashes: vec![10],
                medium: Some("CPU".into()),
            }],
        );
        assert_eq!(idx.matched_blocks(["a"], &keys(&[1, 2])), vec![0]);
    }

    #[test]
    fn an_unknown_parent_or_block_size_is_counted_not_guessed() {
        let idx = PreciseIndex::new(BS, 100);
        let out = idx.apply(&pod("a"), 1, &[stored(&[30], Some(20), &[5, 6])]);
        assert_eq!((out.stored, out.unknown_parent), (0, 1));
        let other = KvEvent::BlockStored {
            block_hashes: vec![1],
            parent: None,
            token_ids: vec![1, 2, 3],
            block_size: 3,
            lora_name: None,
            medium: None,
        };
        assert_eq!(idx.apply(&pod("a"), 2, &[other]).other_block_size, 1);
        assert_eq!(idx.len_of("a"), 0);
    }

    #[test]
    fn lora_blocks_chain_from_the_adapter_not_the_base_model() {
        let idx = PreciseIndex::new(BS, 100);
        let lora = KvEvent::BlockStored {
            block_hashes: vec![10],
            parent: None,
            token_ids: vec![1, 2],
            block_size: BS,
            lora_name: Some("sql".into()),
            medium: None,
        };
        idx.apply(&pod("a"), 1, &[lora]);
        assert_eq!(idx.matched_blocks(["a"], &keys(&[1, 2])), vec![0]);
        let sql = block_keys(root_key(Some("sql")), &[1, 2], BS, 10);
        assert_eq!(idx.matched_blocks(["a"], &sql), vec![1]);
    }

    #[test]
    fn sequence_gaps_are_reported_and_a_restart_drops_the_pods_entries() {
        let idx = PreciseIndex::new(BS, 100);
        assert!(!idx.apply(&pod("a"), 5, &[stored(&[10], None, &[1, 2])]).gap);
        assert!(idx.apply(&pod("a"), 7, &[]).gap);
        assert_eq!(idx.len_of("a"), 1);
        let out = idx.apply(&pod("a"), 0, &[]);
        assert!(out.restarted);
        assert_eq!(idx.len_of("a"), 0);
        assert!(!idx.apply(&pod("a"), 1, &[]).gap);
    }

    #[test]
    fn memory_is_bounded_per_pod_and_by_the_engines_capacity() {
        let idx = PreciseIndex::new(BS, 4);
        let tokens: Vec<u32> = (0..12).collect();
        idx.apply(&pod("a"), 1, &[stored(&[1, 2, 3, 4, 5, 6], None, &tokens)]);
        assert_eq!(idx.len_of("a"), 4);
        idx.set_engine_capacity(&pod("a"), 2);
        assert_eq!(idx.len_of("a"), 2);
        // The most recently stored blocks stay; the prefix before them is gone, so
        // a prompt from the start matches nothing.
        assert_eq!(idx.matched_blocks(["a"], &keys(&tokens)), vec![0]);
        idx.retain(|p| p != "a");
        assert_eq!(idx.len_of("a"), 0);
    }

    #[test]
    fn a_routed_prompt_counts_as_held_until_the_engine_reports_or_the_ttl_ends() {
        let idx = PreciseIndex::new(BS, 100);
        let now = Instant::now();
        let prompt = keys(&[1, 2, 3, 4, 5, 6]);
        idx.speculate(&pod("a"), &prompt[..2], now);
        assert_eq!(idx.matched_blocks_at(["a", "b"], &prompt, now), vec![2, 0]);
        assert_eq!(idx.matched_blocks(["a"], &prompt), vec![0], "not confirmed");
        let later = now + SPECULATION_TTL;
        assert_eq!(idx.matched_blocks_at(["a"], &prompt, later), vec![0]);
        // The engine reports the blocks: they stay after the TTL.
        idx.speculate(&pod("a"), &prompt[..2], now);
        idx.apply(&pod("a"), 1, &[stored(&[10, 11], None, &[1, 2, 3, 4])]);
        assert_eq!(idx.matched_blocks_at(["a"], &prompt, later), vec![2]);
    }

    #[test]
    fn speculation_is_bounded_like_the_pods_blocks() {
        let idx = PreciseIndex::new(BS, 4);
        let now = Instant::now();
        let many = keys(&(0..20).collect::<Vec<u32>>());
        idx.speculate(&pod("a"), &many, now);
        assert_eq!(idx.matched_blocks_at(["a"], &many, now), vec![4]);
        idx.speculate(&pod("a"), &many[4..], now + SPECULATION_TTL);
        assert_eq!(
            idx.matched_blocks_at(["a"], &many[4..], now + SPECULATION_TTL),
            vec![4],
            "expired entries made room"
        );
    }
}
