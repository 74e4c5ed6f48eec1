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

/// The engine's pattern, `(P|\w+)[\t\n\f\r ]*` over bytes, where `P` is one of
/// these punctuation marks, `\w` an ASCII word character and the whitespace Go's
/// `\s` (no vertical tab). Alternation is leftmost-first, so a leading `_` is a
/// token of its own while `a_b` is one word. Scanned by hand on the request path
/// (the regex, kept in the tests, is 5-10x slower).
const PUNCTUATION: &[u8] = b"{}:,-.?!;@#$%^&*()+_~/\\><[]=\"'";

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

/// 32-bit FNV-1a, the simulator's token id.
fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The token ids the simulator gives `text`.
pub fn sim_token_ids(text: &str) -> Vec<u32> {
    let bytes = text.as_bytes();
    let mut ids = Vec::with_capacity(bytes.len() / 4);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        if PUNCTUATION.contains(&b) {
            i += 1;
        } else if is_word(b) {
            while i < bytes.len() && is_word(bytes[i]) {
                i += 1;
            }
        } else {
            // Not where a token starts (whitespace, other marks, non-ASCII): dropped.
            i += 1;
            continue;
        }
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        ids.push(fnv1a_32(&bytes[start..i]));
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulator's own pattern, the reference the scanner must agree with.
    fn reference_ids(text: &str) -> Vec<u32> {
        static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(r#"(?-u)(\{|\}|:|,|-|\.|\?|!|;|@|#|\$|%|\^|&|\*|\(|\)|\+|_|~|/|\\|>|<|\[|\]|=|"|'|\w+)[\t\n\f\r ]*"#)
            .unwrap_or_else(|e| panic!("{e}"))
        });
        RE.find_iter(text)
            .map(|m| fnv1a_32(m.as_str().as_bytes()))
            .collect()
    }

    #[test]
    fn the_scanner_agrees_with_the_simulators_pattern() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> =
            "aZ09_ \t\n\r\x0b\x0c{}:,-.?!;@#$%^&*()+~/\\><[]=\"'|`é日\u{3000}"
                .chars()
                .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..5_000 {
            let len = rng.random_range(0..40);
            let text: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            assert_eq!(sim_token_ids(&text), reference_ids(&text), "{text:?}");
        }
    }

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
