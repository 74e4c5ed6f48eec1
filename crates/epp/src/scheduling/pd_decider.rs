//! prefix-based-pd-decider: split a request into prefill + decode when the part of
//! its prompt the chosen decode endpoint does not hold is long enough to be worth a
//! KV transfer.

/// What the decider weighs, kept with the decision so it can be explained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PdInputs {
    /// Prompt tokens the chosen decode endpoint does not hold.
    pub uncached_tokens: usize,
    /// `nonCachedTokens`; 0 disables disaggregation.
    pub threshold: usize,
}

impl PdInputs {
    pub fn new(prompt_tokens: usize, cached_tokens: usize, threshold: usize) -> PdInputs {
        PdInputs {
            uncached_tokens: prompt_tokens.saturating_sub(cached_tokens),
            threshold,
        }
    }

    /// Disaggregate at or above the threshold.
    pub fn disaggregate(&self) -> bool {
        self.threshold > 0 && self.uncached_tokens >= self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disaggregates_at_or_above_the_threshold() {
        assert!(PdInputs::new(100, 0, 16).disaggregate());
        assert!(PdInputs::new(100, 84, 16).disaggregate());
        assert!(!PdInputs::new(100, 85, 16).disaggregate());
    }

    #[test]
    fn zero_threshold_disables() {
        assert!(!PdInputs::new(10_000, 0, 0).disaggregate());
    }

    #[test]
    fn cached_beyond_the_prompt_never_underflows() {
        assert_eq!(PdInputs::new(10, 64, 1).uncached_tokens, 0);
        assert!(!PdInputs::new(10, 64, 1).disaggregate());
    }
}
