//! Hash chains over prompt blocks: the keys of the approximate prefix index.
//!
//! Tokens are approximated the way llm-d-inference-sim's offline tokenizer counts
//! them (a run of letters/digits, or one punctuation mark, is one token), so block
//! boundaries line up with what the engine caches. Block `i`'s hash covers blocks
//! `0..=i`, so equal hashes mean equal prefixes.

use xxhash_rust::xxh3::Xxh3;

/// Approximate token count of `text`.
pub fn approx_tokens(text: &str) -> usize {
    tokens(text).count()
}

/// The approximate tokens of `text`, as slices of it.
pub fn tokens(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        rest = rest.trim_start();
        let first = rest.chars().next()?;
        let len = if first.is_alphanumeric() || first == '_' {
            rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())
        } else {
            first.len_utf8()
        };
        let (token, tail) = rest.split_at(len);
        rest = tail;
        Some(token)
    })
}

/// The prompt split into full blocks of `block_size` tokens, at most `max_blocks`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptBlocks {
    /// Chained hash per full block.
    pub hashes: Vec<u64>,
    /// Approximate tokens in the whole prompt.
    pub total_tokens: usize,
    pub block_size: usize,
}

/// Hashes `prompt` for `model` into chained block hashes. A trailing partial block
/// is not hashed (engines only cache full blocks).
pub fn hash_prompt(
    model: &str,
    prompt: &str,
    block_size: usize,
    max_blocks: usize,
) -> PromptBlocks {
    let block_size = block_size.max(1);
    let mut hashes = Vec::new();
    let mut parent = xxhash_rust::xxh3::xxh3_64(model.as_bytes());
    let mut hasher = Xxh3::with_seed(parent);
    let mut in_block = 0;
    let mut total = 0;
    for token in tokens(prompt) {
        total += 1;
        if hashes.len() >= max_blocks {
            continue;
        }
        hasher.update(token.as_bytes());
        hasher.update(&[0xff]);
        in_block += 1;
        if in_block == block_size {
            parent = hasher.digest();
            hashes.push(parent);
            hasher = Xxh3::with_seed(parent);
            in_block = 0;
        }
    }
    PromptBlocks {
        hashes,
        total_tokens: total,
        block_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_words_and_punctuation() {
        let t: Vec<&str> = tokens("Hello, world! it's 42").collect();
        assert_eq!(t, ["Hello", ",", "world", "!", "it", "'", "s", "42"]);
        assert_eq!(approx_tokens("  "), 0);
    }

    #[test]
    fn only_full_blocks_are_hashed() {
        let b = hash_prompt("m", "a b c d e f g", 3, 100);
        assert_eq!(b.hashes.len(), 2);
        assert_eq!(b.total_tokens, 7);
    }

    #[test]
    fn shared_prefix_gives_shared_leading_hashes() {
        let a = hash_prompt("m", "one two three four five six", 2, 100);
        let b = hash_prompt("m", "one two three four seven eight", 2, 100);
        assert_eq!(a.hashes[..2], b.hashes[..2]);
        assert_ne!(a.hashes[2], b.hashes[2]);
    }

    #[test]
    fn hashes_are_chained_not_per_block() {
        let a = hash_prompt("m", "x y same same", 2, 100);
        let b = hash_prompt("m", "z w same same", 2, 100);
        assert_ne!(a.hashes[1], b.hashes[1]);
    }

    #[test]
    fn model_and_cap_matter() {
        let a = hash_prompt("m1", "a b c d", 2, 100);
        let b = hash_prompt("m2", "a b c d", 2, 100);
        assert_ne!(a.hashes[0], b.hashes[0]);
        assert_eq!(hash_prompt("m", "a b c d e f", 2, 1).hashes.len(), 1);
    }
}
