//! Per-request latency objectives from the request's headers: llm-d's
//! `x-llm-d-slo-ttft-ms` / `x-llm-d-slo-tpot-ms`, or the older `x-slo-*` names.
//! A value that is not a positive number of milliseconds is ignored and reported,
//! never refused: an objective is a preference, not a condition of service.

use llmd_api::endpoint_picker::header;
use llmd_api::endpoint_picker_config::DefaultSlo;

/// The headers of each objective (its metric label), llm-d's name first.
pub const TTFT_HEADERS: [&str; 2] = [header::SLO_TTFT_MS, header::LEGACY_SLO_TTFT_MS];
pub const TPOT_HEADERS: [&str; 2] = [header::SLO_TPOT_MS, header::LEGACY_SLO_TPOT_MS];
pub const OBJECTIVES: [(&str, [&str; 2]); 2] = [("ttft", TTFT_HEADERS), ("tpot", TPOT_HEADERS)];

/// Longest objective taken as meant (one hour).
const MAX_MS: f64 = 3_600_000.0;

/// Objectives in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Objectives {
    pub ttft: Option<f64>,
    pub tpot: Option<f64>,
}

impl Objectives {
    pub fn any(&self) -> bool {
        self.ttft.is_some() || self.tpot.is_some()
    }

    /// These objectives, each missing one taken from `defaults` (milliseconds).
    pub fn or(self, defaults: DefaultSlo) -> Objectives {
        let seconds = |ms: Option<u64>| ms.map(|ms| ms as f64 / 1000.0);
        Objectives {
            ttft: self.ttft.or(seconds(defaults.ttft_ms)),
            tpot: self.tpot.or(seconds(defaults.tpot_ms)),
        }
    }
}

/// The objectives a request carries, and the names of headers whose value was not
/// a usable number of milliseconds.
pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> (Objectives, Vec<&'static str>) {
    let mut invalid = Vec::new();
    let mut read = |names: [&'static str; 2]| {
        let (name, value) = names.into_iter().find_map(|n| get(n).map(|v| (n, v)))?;
        match value.trim().parse::<f64>() {
            Ok(ms) if ms.is_finite() && ms > 0.0 && ms <= MAX_MS => Some(ms / 1000.0),
            _ => {
                invalid.push(name);
                None
            }
        }
    };
    let objectives = Objectives {
        ttft: read(TTFT_HEADERS),
        tpot: read(TPOT_HEADERS),
    };
    (objectives, invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> (Objectives, Vec<&'static str>) {
        let h: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_headers(|n| h.get(n).map(String::as_str))
    }

    #[test]
    fn llm_d_and_older_names_are_read_in_milliseconds() {
        let (o, bad) = parse(&[("x-llm-d-slo-ttft-ms", "250"), ("x-slo-tpot-ms", " 40.5 ")]);
        assert_eq!(o.ttft, Some(0.25));
        assert_eq!(o.tpot, Some(0.0405));
        assert!(bad.is_empty());
        let (o, _) = parse(&[("x-llm-d-slo-ttft-ms", "100"), ("x-slo-ttft-ms", "900")]);
        assert_eq!(o.ttft, Some(0.1), "llm-d's name wins");
    }

    #[test]
    fn values_that_are_not_positive_milliseconds_are_ignored_and_named() {
        for v in ["fast", "", "-5", "0", "NaN", "inf", "1e12"] {
            let (o, bad) = parse(&[("x-llm-d-slo-ttft-ms", v)]);
            assert_eq!(o, Objectives::default(), "{v:?}");
            assert_eq!(bad, ["x-llm-d-slo-ttft-ms"], "{v:?}");
        }
        let (o, bad) = parse(&[]);
        assert!(!o.any() && bad.is_empty());
    }

    #[test]
    fn the_deployments_defaults_fill_only_what_the_request_left_out() {
        let defaults = DefaultSlo {
            ttft_ms: Some(500),
            tpot_ms: Some(50),
        };
        let (own, _) = parse(&[("x-llm-d-slo-ttft-ms", "100")]);
        assert_eq!(
            own.or(defaults),
            Objectives {
                ttft: Some(0.1),
                tpot: Some(0.05)
            }
        );
        assert_eq!(
            Objectives::default().or(DefaultSlo::default()),
            Objectives::default()
        );
    }
}
