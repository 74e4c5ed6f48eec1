//! prefix-based-pd-decider: split a request into prefill + decode when the part of
//! its prompt the chosen decode endpoint does not hold is long enough to be worth a
//! KV transfer.

/// `non_cached_tokens == 0` disables disaggregation.
pub fn should_disaggregate(
    prompt_tokens: usize,
    cached_tokens: usize,
    non_cached_tokens: usize,
) -> bool {
    non_cached_tokens > 0 && prompt_tokens.saturating_sub(cached_tokens) >= non_cached_tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disaggregates_at_or_above_the_threshold() {
        assert!(should_disaggregate(100, 0, 16));
        assert!(should_disaggregate(100, 84, 16));
        assert!(!should_disaggregate(100, 85, 16));
    }

    #[test]
    fn zero_threshold_disables() {
        assert!(!should_disaggregate(10_000, 0, 0));
    }

    #[test]
    fn cached_beyond_the_prompt_never_underflows() {
        assert!(!should_disaggregate(10, 64, 1));
    }
}
