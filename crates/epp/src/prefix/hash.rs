//! Hash chains over prompt blocks: the keys of the approximate prefix index.
//!
//! Tokens are approximated the way llm-d-inference-sim's offline tokenizer counts
//! them (a run of letters/digits, or one punctuation mark, is one token), so block
//! boundaries line up with what the engine caches. Block `i`'s hash covers blocks
//! `0..=i`, so equal hashes mean equal prefixes.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Approximate token count of `text`.
pub fn approx_tokens(text: &str) -> usize {
    tokens(text).count()
}

/// Byte length of the token starting at `rest[0]` (which is not whitespace).
#[inline]
fn token_len(rest: &str) -> usize {
    let bytes = rest.as_bytes();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    match bytes[0] {
        b if b.is_ascii_alphanumeric() || b == b'_' => {
            // Fast ASCII scan; fall back to chars at the first non-ASCII byte.
            let mut i = 1;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            if i < bytes.len() && !bytes[i].is_ascii() {
                i + rest[i..].find(|c: char| !word(c)).unwrap_or(rest.len() - i)
            } else {
                i
            }
        }
        b if b.is_ascii() => 1,
        _ => {
            let first = rest.chars().next().map_or(1, char::len_utf8);
            if rest.chars().next().is_some_and(word) {
                first
                    + rest[first..]
                        .find(|c: char| !word(c))
                        .unwrap_or(rest.len() - first)
            } else {
                first
            }
        }
    }
}

/// The approximate tokens of `text` as `(start, end)` byte offsets.
fn token_spans(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let bytes = text.as_bytes();
    let mut pos = 0;
    std::iter::from_fn(move || {
        loop {
            let b = *bytes.get(pos)?;
            if b.is_ascii_whitespace() {
                pos += 1;
            } else if b.is_ascii() {
                break;
            } else {
                let c = text[pos..].chars().next()?;
                if c.is_whitespace() {
                    pos += c.len_utf8();
                } else {
                    break;
                }
            }
        }
        let start = pos;
        pos += token_len(&text[pos..]);
        Some((start, pos))
    })
}

/// The approximate tokens of `text`, as slices of it.
pub fn tokens(text: &str) -> impl Iterator<Item = &str> {
    token_spans(text).map(move |(a, b)| &text[a..b])
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
/// is not hashed (engines only cache full blocks). Each block's hash covers its
/// text span (tokens and the separators between them) seeded with the previous
/// block's hash.
pub fn hash_prompt(
    model: &str,
    prompt: &str,
    block_size: usize,
    max_blocks: usize,
) -> PromptBlocks {
    let block_size = block_size.max(1);
    let mut hashes = Vec::new();
    let mut parent = xxh3_64(model.as_bytes());
    let mut in_block = 0;
    let mut block_start = None;
    let mut total = 0;
    for (start, end) in token_spans(prompt) {
        total += 1;
        if hashes.len() >= max_blocks {
            continue;
        }
        let from = *block_start.get_or_insert(start);
        in_block += 1;
        if in_block == block_size {
            parent = xxh3_64_with_seed(&prompt.as_bytes()[from..end], parent);
            hashes.push(parent);
            in_block = 0;
            block_start = None;
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
    fn non_ascii_text_tokenizes_by_characters_class() {
        let t: Vec<&str> = tokens("héllo wörld — ok").collect();
        assert_eq!(t, ["héllo", "wörld", "—", "ok"]);
        let t: Vec<&str> = tokens("naïve\u{3000}日本語!").collect();
        assert_eq!(t, ["naïve", "日本語", "!"]);
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
