//! Token ids as the engine computes them, for the precise prefix index.
//!
//! The precise index matches a request's prompt against the token ids an engine
//! reports in its KV events, so the EPP must tokenize exactly as the engine does.
//! What is implemented is llm-d-inference-sim's built-in tokenizer (the one it uses
//! with `--force-dummy-tokenizer` or a model it has no tokenizer for): every match of
//! a word-or-punctuation pattern, trailing whitespace included, is one token whose id
//! is the 32-bit FNV-1a hash of its text. Characters the pattern does not know are
//! dropped, as the engine drops them. Chat messages are rendered into one text the
//! way the simulator renders them before tokenizing (`frontend::request`).

use std::sync::LazyLock;

use regex::Regex;

/// The engine's pattern: one of its punctuation marks or an ASCII word, then any
/// ASCII whitespace (Go's `\s`, which has no vertical tab). Alternation is
/// leftmost-first in both engines, so `_x` is `_` then `x` as in the simulator.
static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?-u)(\{|\}|:|,|-|\.|\?|!|;|@|#|\$|%|\^|&|\*|\(|\)|\+|_|~|/|\\|>|<|\[|\]|=|"|'|\w+)[\t\n\f\r ]*"#)
        .unwrap_or_else(|e| unreachable!("the token pattern is a constant: {e}"))
});

/// 32-bit FNV-1a, the simulator's token id.
fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The token ids the simulator gives `text`.
pub fn sim_token_ids(text: &str) -> Vec<u32> {
    TOKEN
        .find_iter(text)
        .map(|m| fnv1a_32(m.as_str().as_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn tokens_keep_their_trailing_whitespace() {
        let ids = sim_token_ids("Hello, world!  ok");
        let expected: Vec<u32> = ["Hello", ", ", "world", "!  ", "ok"]
            .iter()
            .map(|t| fnv1a_32(t.as_bytes()))
            .collect();
        assert_eq!(ids, expected);
        // "world" followed by a space is another token than "world" at the end.
        assert_ne!(sim_token_ids("world ")[0], sim_token_ids("world")[0]);
    }

    #[test]
    fn unknown_characters_are_dropped_and_words_are_ascii() {
        // `é` is not an ASCII word character: "h" and "llo" are two tokens.
        let ids = sim_token_ids("héllo |");
        let expected: Vec<u32> = ["h", "llo "]
            .iter()
            .map(|t| fnv1a_32(t.as_bytes()))
            .collect();
        assert_eq!(ids, expected);
        assert!(sim_token_ids("  \u{3000} ").is_empty());
    }

    #[test]
    fn underscore_first_is_its_own_token_but_inside_a_word_it_is_not() {
        let ids = sim_token_ids("_x a_b");
        let expected: Vec<u32> = ["_", "x ", "a_b"]
            .iter()
            .map(|t| fnv1a_32(t.as_bytes()))
            .collect();
        assert_eq!(ids, expected);
    }
}
