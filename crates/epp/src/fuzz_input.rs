//! The fuzz target's body, in the library so that `cargo test` runs it over the
//! committed corpus (`fuzz/corpus/request_parsing`) without cargo-fuzz.

use crate::frontend::request::{ApiKind, InferenceRequest};
use crate::prefix::hash::hash_prompt;

/// Feeds arbitrary bytes through request parsing, prefix hashing and the other
/// parsers that read outside input; panics if an invariant breaks.
pub fn request_parsing(data: &[u8]) {
    let block = 1 + data.first().copied().unwrap_or(0) as usize % 64;
    for kind in [ApiKind::Completions, ApiKind::ChatCompletions] {
        if let Ok(req) = InferenceRequest::parse(kind, data) {
            assert!(!req.model.is_empty());
            check_hashing(&req.model, &req.prompt, block);
        }
    }
    let text = String::from_utf8_lossy(data);
    check_hashing("m", &text, block);
    let m = llmd_api::engine_metrics::parse(&text);
    assert!((0.0..=1.0).contains(&m.kv_usage));
    let _ = crate::pool::static_endpoints::parse(&text);
    let _ = llmd_api::endpoint_picker_config::SchedulerConfig::from_yaml(&text);
}

fn check_hashing(model: &str, prompt: &str, block: usize) {
    let max_blocks = 8;
    let b = hash_prompt(model, prompt, block, max_blocks);
    assert!(b.hashes.len() <= max_blocks);
    assert!(b.hashes.len() * block <= b.total_tokens);
    let again = hash_prompt(model, prompt, block, max_blocks);
    assert_eq!(b, again, "hashing is deterministic");
}
