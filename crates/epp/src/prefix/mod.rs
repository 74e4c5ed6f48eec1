//! Prefix-cache locality: prompts hashed block by block, and the approximate index of
//! which endpoint probably holds which blocks.

pub mod hash;
pub mod index;
