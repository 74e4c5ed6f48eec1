//! The tuner's settings for one deployment, from its `spec.router.autoTune`.

use std::time::Duration;

use llmd_api::{AutoTuneSpec, TuningMetric};
use llmd_tuner::{Metric, Objective, Settings};

/// Parse "30s", "2m", "1h" (the CRD's pattern), at least 5 s.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds.max(5)))
}

/// The slice length of a spec (30 s when the interval does not parse).
pub fn slice(spec: &AutoTuneSpec) -> Duration {
    parse_interval(&spec.interval).unwrap_or(Duration::from_secs(30))
}

/// The experiment settings of a spec.
pub fn of(spec: &AutoTuneSpec) -> Settings {
    Settings {
        objective: Objective {
            metric: match spec.objective.metric {
                TuningMetric::MeanTtft => Metric::MeanTtft,
                TuningMetric::P90Ttft => Metric::P90Ttft,
            },
            target: spec.objective.target_ms.map(|ms| ms as f64 / 1000.0),
        },
        min_weight: spec.min_weight,
        max_weight: spec.max_weight,
        frozen: spec.frozen,
        ..Settings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_with_a_floor_of_five_seconds() {
        assert_eq!(parse_interval("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_interval("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_interval("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_interval("1s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_interval("fast"), None);
        assert_eq!(parse_interval("10d"), None);
    }

    #[test]
    fn the_spec_sets_objective_bounds_and_frozen() {
        let mut spec = AutoTuneSpec::default();
        spec.objective.metric = TuningMetric::P90Ttft;
        spec.objective.target_ms = Some(250);
        spec.frozen = true;
        spec.max_weight = 6.0;
        let s = of(&spec);
        assert_eq!(s.objective.metric, Metric::P90Ttft);
        assert_eq!(s.objective.target, Some(0.25));
        assert!(s.frozen);
        assert_eq!((s.min_weight, s.max_weight), (0.1, 6.0));
    }
}
