//! Signals for the tuning rule, from two consecutive scrapes of every model server.

use std::collections::BTreeMap;

use llmd_api::engine_metrics::EngineMetrics;

use super::rule::Signals;

/// Signals over the interval between `previous` and `now` (pod name -> metrics).
/// Counter deltas only count for pods present in both scrapes; a restarted engine
/// (counter went down) counts from zero.
pub fn from_scrapes(
    previous: &BTreeMap<String, EngineMetrics>,
    now: &BTreeMap<String, EngineMetrics>,
) -> Signals {
    let waiting: Vec<f64> = now.values().map(|m| m.waiting).collect();
    let (min, max, sum) = waiting
        .iter()
        .fold((f64::MAX, 0.0_f64, 0.0), |(lo, hi, s), &w| {
            (lo.min(w), hi.max(w), s + w)
        });
    let queue_imbalance = if waiting.is_empty() {
        0.0
    } else {
        (max - min) / (sum / waiting.len() as f64 + 1.0)
    };
    let max_kv_usage = now.values().map(|m| m.kv_usage).fold(0.0, f64::max);
    let delta = |now: f64, before: f64| if now >= before { now - before } else { now };
    let (hits, queries) = now
        .iter()
        .filter_map(|(pod, m)| Some((m, previous.get(pod)?)))
        .fold((0.0, 0.0), |(h, q), (m, p)| {
            (
                h + delta(m.prefix_cache_hits, p.prefix_cache_hits),
                q + delta(m.prefix_cache_queries, p.prefix_cache_queries),
            )
        });
    Signals {
        endpoints: now.len(),
        queue_imbalance,
        max_kv_usage,
        prefix_hit_ratio: (queries > 0.0).then(|| hits / queries),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(waiting: f64, kv: f64, hits: f64, queries: f64) -> EngineMetrics {
        EngineMetrics {
            waiting,
            kv_usage: kv,
            prefix_cache_hits: hits,
            prefix_cache_queries: queries,
            ..EngineMetrics::default()
        }
    }

    #[test]
    fn imbalance_kv_and_hit_ratio_over_the_interval() {
        let before = BTreeMap::from([
            ("a".to_string(), m(0.0, 0.1, 100.0, 200.0)),
            ("b".to_string(), m(0.0, 0.1, 0.0, 0.0)),
        ]);
        let now = BTreeMap::from([
            ("a".to_string(), m(6.0, 0.9, 160.0, 300.0)),
            ("b".to_string(), m(0.0, 0.2, 20.0, 100.0)),
        ]);
        let s = from_scrapes(&before, &now);
        assert_eq!(s.endpoints, 2);
        assert_eq!(s.queue_imbalance, 6.0 / 4.0);
        assert_eq!(s.max_kv_usage, 0.9);
        assert_eq!(s.prefix_hit_ratio, Some(80.0 / 200.0));
    }

    #[test]
    fn restarted_engine_and_new_pod() {
        let before = BTreeMap::from([("a".to_string(), m(0.0, 0.0, 500.0, 1000.0))]);
        let now = BTreeMap::from([
            ("a".to_string(), m(1.0, 0.0, 10.0, 40.0)),
            ("c".to_string(), m(1.0, 0.0, 99.0, 99.0)),
        ]);
        let s = from_scrapes(&before, &now);
        assert_eq!(s.prefix_hit_ratio, Some(10.0 / 40.0));
        assert_eq!(s.queue_imbalance, 0.0);
        assert_eq!(
            from_scrapes(&BTreeMap::new(), &BTreeMap::new()).prefix_hit_ratio,
            None
        );
    }
}
