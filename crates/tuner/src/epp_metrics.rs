//! What the tuner reads: the EndpointPicker's own metrics, one scrape per EPP
//! replica, summed. Two snapshots an interval apart make one [`Slice`].

use std::collections::BTreeMap;

use crate::candidates::Signals;
use crate::histogram::{Histogram, parse_family, parse_values};
use crate::verdict::Slice;

/// Time to first token, per front end, as the EPP measures it.
pub const TTFT: &str = "llmd_epp_time_to_first_token_seconds";
/// Share of prompt blocks the chosen endpoint held.
pub const PREFIX_MATCH: &str = "llmd_epp_prefix_match_ratio";
/// Waiting requests per endpoint, from its last scrape.
pub const WAITING: &str = "llmd_epp_endpoint_waiting_requests";
/// Running requests per endpoint, from its last scrape.
pub const RUNNING: &str = "llmd_epp_endpoint_running_requests";
/// KV-cache use per endpoint (0..1), from its last scrape.
pub const KV_CACHE_USAGE: &str = "llmd_epp_endpoint_kv_cache_usage";
/// Time between streamed chunks, per front end, as the EPP measures it.
pub const INTER_TOKEN_LATENCY: &str = "llmd_epp_inter_token_latency_seconds";

/// Gauge `name`'s value per `endpoint` label (`ip:port`) in a Prometheus page.
pub fn per_endpoint(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(crate::histogram::sample)
        .filter(|(n, _, _)| *n == name)
        .filter_map(|(_, labels, v)| {
            Some((crate::histogram::label(labels, "endpoint")?.to_string(), v))
        })
        .collect()
}

/// One scrape of one or more EPP replicas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub ttft: Histogram,
    pub prefix_match: Histogram,
    /// Waiting requests of each endpoint (per replica; replicas see the same pods).
    pub waiting: Vec<f64>,
}

impl Snapshot {
    /// Reads one EPP's `/metrics` page. Families it does not find stay empty.
    pub fn parse(text: &str) -> Snapshot {
        Snapshot {
            ttft: parse_family(text, TTFT).unwrap_or_default(),
            prefix_match: parse_family(text, PREFIX_MATCH).unwrap_or_default(),
            waiting: parse_values(text, WAITING),
        }
    }

    /// Adds another replica's scrape.
    pub fn add(&mut self, other: &Snapshot) {
        self.ttft.add(&other.ttft);
        self.prefix_match.add(&other.prefix_match);
        self.waiting.extend(other.waiting.iter().copied());
    }

    /// The slice between `earlier` and this snapshot, `seconds` apart.
    pub fn since(&self, earlier: &Snapshot, seconds: f64) -> Slice {
        let prefix = self.prefix_match.since(&earlier.prefix_match);
        Slice {
            seconds,
            ttft: self.ttft.since(&earlier.ttft),
            signals: Signals {
                queue_imbalance: imbalance(&self.waiting),
                prefix_match: prefix.mean(),
            },
        }
    }
}

/// The slice between two scrapes of several replicas (by pod name): replicas in
/// both count, a replica that just appeared starts counting at the next slice.
pub fn window(
    before: &BTreeMap<String, Snapshot>,
    now: &BTreeMap<String, Snapshot>,
    seconds: f64,
) -> Slice {
    let mut ttft = Histogram::default();
    let mut prefix = Histogram::default();
    let mut waiting = Vec::new();
    for (pod, current) in now {
        waiting.extend(current.waiting.iter().copied());
        if let Some(earlier) = before.get(pod) {
            ttft.add(&current.ttft.since(&earlier.ttft));
            prefix.add(&current.prefix_match.since(&earlier.prefix_match));
        }
    }
    Slice {
        seconds,
        ttft,
        signals: Signals {
            queue_imbalance: imbalance(&waiting),
            prefix_match: prefix.mean(),
        },
    }
}

/// (max - min) / (mean + 1) of the endpoints' waiting requests.
fn imbalance(waiting: &[f64]) -> Option<f64> {
    if waiting.len() < 2 {
        return None;
    }
    let max = waiting.iter().copied().fold(f64::MIN, f64::max);
    let min = waiting.iter().copied().fold(f64::MAX, f64::min);
    let mean = waiting.iter().sum::<f64>() / waiting.len() as f64;
    Some((max - min) / (mean + 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(count: u64, sum: f64, waiting: [f64; 2]) -> String {
        format!(
            "{TTFT}_bucket{{frontend=\"proxy\",le=\"0.5\"}} {count}\n\
             {TTFT}_bucket{{frontend=\"proxy\",le=\"+Inf\"}} {count}\n\
             {TTFT}_sum{{frontend=\"proxy\"}} {sum}\n\
             {TTFT}_count{{frontend=\"proxy\"}} {count}\n\
             {WAITING}{{endpoint=\"a\"}} {}\n{WAITING}{{endpoint=\"b\"}} {}\n",
            waiting[0], waiting[1]
        )
    }

    #[test]
    fn a_slice_is_the_ttft_between_two_scrapes_with_the_queue_imbalance() {
        let before = Snapshot::parse(&page(10, 2.0, [0.0, 0.0]));
        let after = Snapshot::parse(&page(40, 8.0, [6.0, 0.0]));
        let slice = after.since(&before, 3.0);
        assert_eq!(slice.ttft.count, 30.0);
        assert_eq!(slice.ttft.mean(), Some(0.2));
        assert_eq!(slice.signals.queue_imbalance, Some(6.0 / 4.0));
        assert_eq!(slice.signals.prefix_match, None);
    }

    #[test]
    fn a_window_over_replicas_counts_those_seen_twice() {
        let before =
            BTreeMap::from([("a".to_string(), Snapshot::parse(&page(10, 2.0, [0.0, 0.0])))]);
        let now = BTreeMap::from([
            ("a".to_string(), Snapshot::parse(&page(30, 6.0, [1.0, 1.0]))),
            (
                "b".to_string(),
                Snapshot::parse(&page(500, 90.0, [1.0, 1.0])),
            ),
        ]);
        let slice = window(&before, &now, 5.0);
        assert_eq!(
            slice.ttft.count, 20.0,
            "the new replica b starts counting next time"
        );
        assert_eq!(slice.signals.queue_imbalance, Some(0.0));
    }

    #[test]
    fn replicas_are_summed() {
        let mut both = Snapshot::parse(&page(10, 2.0, [1.0, 0.0]));
        both.add(&Snapshot::parse(&page(30, 3.0, [1.0, 0.0])));
        assert_eq!(both.ttft.count, 40.0);
        assert_eq!(both.ttft.sum, 5.0);
        assert_eq!(both.waiting.len(), 4);
    }
}
