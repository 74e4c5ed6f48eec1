//! Latency histograms as Prometheus exposes them (cumulative buckets, sum, count):
//! read from the EndpointPicker's `/metrics`, summed across label sets and replicas,
//! and differenced between two scrapes to get one window's latencies.

/// A cumulative histogram: `buckets[i]` is (upper bound in seconds, observations at
/// or below it), ascending, the last bound infinite.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// Adds `other`'s observations (same bucket bounds; another replica or label set).
    /// Bounds only one of them has are kept with the counts known for them.
    pub fn add(&mut self, other: &Histogram) {
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
        } else if self.buckets.len() == other.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&other.buckets)
                .all(|(a, b)| a.0 == b.0)
        {
            for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
                mine.1 += theirs.1;
            }
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// The observations since `earlier` (a scrape of the same series). A counter that
    /// went down (a restarted EPP) counts from zero.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        if self.count < earlier.count || self.buckets.len() != earlier.buckets.len() {
            return self.clone();
        }
        Histogram {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(now, then)| (now.0, (now.1 - then.1).max(0.0)))
                .collect(),
            sum: (self.sum - earlier.sum).max(0.0),
            count: self.count - earlier.count,
        }
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The `q` quantile, interpolated linearly inside its bucket (as PromQL's
    /// `histogram_quantile` does).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count;
        let mut lower = (0.0, 0.0);
        for &(bound, cumulative) in &self.buckets {
            if cumulative >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = cumulative - lower.1;
                let fraction = if in_bucket > 0.0 {
                    (rank - lower.1) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * fraction);
            }
            lower = (bound, cumulative);
        }
        Some(lower.0)
    }

    /// The standard error of the mean, estimated from bucket midpoints.
    pub fn mean_stderr(&self) -> Option<f64> {
        let mean = self.mean()?;
        if self.count < 2.0 {
            return None;
        }
        let mut lower = (0.0, 0.0);
        let mut squares = 0.0;
        for &(bound, cumulative) in &self.buckets {
            let n = cumulative - lower.1;
            let mid = if bound.is_infinite() {
                lower.0
            } else {
                (lower.0 + bound) / 2.0
            };
            squares += n * (mid - mean).powi(2);
            lower = (bound, cumulative);
        }
        Some((squares / (self.count - 1.0)).sqrt() / self.count.sqrt())
    }
}

/// The histogram `family` (e.g. `llmd_epp_time_to_first_token_seconds`) in a
/// Prometheus text page, summed over its label sets. `None` when absent.
pub fn parse_family(text: &str, family: &str) -> Option<Histogram> {
    let bucket = format!("{family}_bucket");
    let sum_name = format!("{family}_sum");
    let count_name = format!("{family}_count");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let (mut sum, mut count, mut seen) = (0.0, 0.0, false);
    for line in text.lines() {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        if name == bucket {
            let Some(le) = label(labels, "le").and_then(parse_bound) else {
                continue;
            };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some(entry) => entry.1 += value,
                None => buckets.push((le, value)),
            }
            seen = true;
        } else if name == sum_name {
            sum += value;
            seen = true;
        } else if name == count_name {
            count += value;
            seen = true;
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    seen.then_some(Histogram {
        buckets,
        sum,
        count,
    })
}

/// Every sample of gauge or counter `name`, one per label set.
pub fn parse_values(text: &str, name: &str) -> Vec<f64> {
    text.lines()
        .filter_map(sample)
        .filter(|(n, _, _)| *n == name)
        .map(|(_, _, v)| v)
        .collect()
}

fn parse_bound(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

/// `name{labels} value` -> (name, labels, value); finite values only.
pub(crate) fn sample(line: &str) -> Option<(&str, &str, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (&line[..open], &line[open + 1..close], &line[close + 1..])
        }
        None => {
            let space = line.find(char::is_whitespace)?;
            (&line[..space], "", &line[space..])
        }
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    value.is_finite().then_some((name, labels, value))
}

pub(crate) fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"
# HELP llmd_epp_time_to_first_token_seconds TTFT
llmd_epp_time_to_first_token_seconds_bucket{frontend="proxy",le="0.1"} 2
llmd_epp_time_to_first_token_seconds_bucket{frontend="proxy",le="0.2"} 6
llmd_epp_time_to_first_token_seconds_bucket{frontend="proxy",le="+Inf"} 8
llmd_epp_time_to_first_token_seconds_sum{frontend="proxy"} 1.4
llmd_epp_time_to_first_token_seconds_count{frontend="proxy"} 8
llmd_epp_time_to_first_token_seconds_bucket{frontend="ext-proc",le="0.1"} 2
llmd_epp_time_to_first_token_seconds_bucket{frontend="ext-proc",le="0.2"} 2
llmd_epp_time_to_first_token_seconds_bucket{frontend="ext-proc",le="+Inf"} 2
llmd_epp_time_to_first_token_seconds_sum{frontend="ext-proc"} 0.1
llmd_epp_time_to_first_token_seconds_count{frontend="ext-proc"} 2
llmd_epp_endpoint_waiting_requests{endpoint="a"} 3
llmd_epp_endpoint_waiting_requests{endpoint="b"} 0
"#;

    #[test]
    fn a_family_is_summed_over_its_label_sets() {
        let h = parse_family(PAGE, "llmd_epp_time_to_first_token_seconds").expect("present");
        assert_eq!(
            h.buckets,
            vec![(0.1, 4.0), (0.2, 8.0), (f64::INFINITY, 10.0)]
        );
        assert_eq!((h.sum, h.count), (1.5, 10.0));
        assert_eq!(h.mean(), Some(0.15));
        assert!(parse_family(PAGE, "nope").is_none());
        assert_eq!(
            parse_values(PAGE, "llmd_epp_endpoint_waiting_requests"),
            [3.0, 0.0]
        );
    }

    #[test]
    fn a_window_is_the_difference_of_two_scrapes_and_a_reset_counts_from_zero() {
        let before = Histogram {
            buckets: vec![(0.1, 1.0), (f64::INFINITY, 2.0)],
            sum: 0.3,
            count: 2.0,
        };
        let after = Histogram {
            buckets: vec![(0.1, 4.0), (f64::INFINITY, 6.0)],
            sum: 0.9,
            count: 6.0,
        };
        let window = after.since(&before);
        assert_eq!(window.buckets, vec![(0.1, 3.0), (f64::INFINITY, 4.0)]);
        assert_eq!(window.count, 4.0);
        assert!((window.sum - 0.6).abs() < 1e-12);
        assert_eq!(
            before.since(&after),
            before,
            "a restarted EPP counts from zero"
        );
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let h = Histogram {
            buckets: vec![
                (0.1, 50.0),
                (0.2, 90.0),
                (0.4, 100.0),
                (f64::INFINITY, 100.0),
            ],
            sum: 12.0,
            count: 100.0,
        };
        assert!((h.quantile(0.5).unwrap_or(0.0) - 0.1).abs() < 1e-12);
        assert!((h.quantile(0.9).unwrap_or(0.0) - 0.2).abs() < 1e-12);
        assert!((h.quantile(0.95).unwrap_or(0.0) - 0.3).abs() < 1e-12);
        assert_eq!(Histogram::default().quantile(0.9), None);
        assert!(h.mean_stderr().is_some_and(|se| se > 0.0 && se < 0.05));
    }
}
