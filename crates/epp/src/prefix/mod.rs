//! Prefix-cache locality: prompts hashed block by block; the approximate index of
//! which endpoint probably holds which blocks; and the precise index of the blocks
//! each engine reports in its KV events.

pub mod engine_tokenizer;
pub mod engine_tokens;
pub mod hash;
pub mod index;
pub mod kv_events;
pub mod kv_subscriber;
pub mod precise;
