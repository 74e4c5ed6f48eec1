//! Summaries and the side-by-side table.

use crate::driver::Sample;
use llmd_tuner::histogram::{Histogram, parse_family};

#[derive(Clone, Debug)]
pub struct Summary {
    pub label: String,
    pub ttft_mean: f64,
    pub ttft_p50: f64,
    pub ttft_p90: f64,
    pub ttft_p99: f64,
    pub e2e_mean: f64,
    pub throughput: f64,
    pub ok: usize,
    pub total: usize,
    pub note: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Share of the prompt tokens the engines found in their KV caches, over the
/// requests whose usage they reported (`None`: none did).
pub fn engine_cache_hit(samples: &[Sample]) -> Option<f64> {
    let (prompt, cached) = samples
        .iter()
        .filter_map(|s| s.usage)
        .fold((0u64, 0u64), |(p, c), u| {
            (p + u.prompt_tokens, c + u.cached_tokens)
        });
    (prompt > 0).then(|| cached as f64 / prompt as f64)
}

/// A run's summary; `note` gains the engines' cache hit where they reported it.
pub fn summarize(label: String, samples: &[Sample], wall_secs: f64, note: String) -> Summary {
    let note = match engine_cache_hit(samples) {
        Some(hit) if note.is_empty() => format!("engine cache hit {:.0}%", 100.0 * hit),
        Some(hit) => format!("{note}, engine cache hit {:.0}%", 100.0 * hit),
        None => note,
    };
    let mut ttft: Vec<f64> = samples.iter().map(|s| s.ttft).collect();
    ttft.sort_by(f64::total_cmp);
    let ok = samples.iter().filter(|s| s.ok).count();
    let e2e_mean = samples.iter().map(|s| s.e2e).sum::<f64>() / samples.len().max(1) as f64;
    let ttft_mean = ttft.iter().sum::<f64>() / ttft.len().max(1) as f64;
    Summary {
        label,
        ttft_mean,
        ttft_p50: percentile(&ttft, 50.0),
        ttft_p90: percentile(&ttft, 90.0),
        ttft_p99: percentile(&ttft, 99.0),
        e2e_mean,
        throughput: ok as f64 / wall_secs.max(1e-9),
        ok,
        total: samples.len(),
        note,
    }
}

fn ms(s: f64) -> String {
    format!("{:.1}", s * 1000.0)
}

/// A markdown table; ratios are to the first row (round-robin). For latency a ratio
/// below 1 is better, for throughput above 1.
pub fn table(title: &str, rows: &[Summary]) -> String {
    let mut out = format!(
        "\n### {title}\n\n| router | TTFT mean ms | TTFT p50 ms | TTFT p90 ms | TTFT p99 ms | mean e2e ms | req/s | ok | mean TTFT vs RR | p90 TTFT vs RR | mean e2e vs RR | req/s vs RR |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let base = rows.first().cloned();
    for r in rows {
        let (m, a, b, c) = match &base {
            Some(b) => (
                format!("{:.2}x", r.ttft_mean / b.ttft_mean),
                format!("{:.2}x", r.ttft_p90 / b.ttft_p90),
                format!("{:.2}x", r.e2e_mean / b.e2e_mean),
                format!("{:.2}x", r.throughput / b.throughput),
            ),
            None => Default::default(),
        };
        out.push_str(&format!(
            "| {}{} | {} | {} | {} | {} | {} | {:.1} | {}/{} | {m} | {a} | {b} | {c} |\n",
            r.label,
            if r.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.note)
            },
            ms(r.ttft_mean),
            ms(r.ttft_p50),
            ms(r.ttft_p90),
            ms(r.ttft_p99),
            ms(r.e2e_mean),
            r.throughput,
            r.ok,
            r.total,
        ));
    }
    out
}

/// How row `label`'s mean TTFT compares with every other row's: `2.10x lower than
/// round-robin` (the other's mean over this one's), `1.04x higher than ...` below 1.
pub fn versus(rows: &[Summary], label: &str) -> String {
    let Some(this) = rows.iter().find(|r| r.label == label) else {
        return format!("{label}: no result");
    };
    let parts: Vec<String> = rows
        .iter()
        .filter(|r| r.label != label)
        .map(|r| {
            let ratio = r.ttft_mean / this.ttft_mean;
            if ratio >= 1.0 {
                format!("{ratio:.2}x lower than {}", r.label)
            } else {
                format!("{:.2}x higher than {}", 1.0 / ratio, r.label)
            }
        })
        .collect();
    format!(
        "{label}: mean TTFT {} ms, {}",
        ms(this.ttft_mean),
        parts.join(", ")
    )
}

/// The oracle's TTFT and every row's mean as a multiple of the oracle's:
/// `oracle (exact pending work): mean TTFT 50.0 ms, p50 ..., p90 ...; llmd-epp is
/// 1.23x the oracle, ...`.
pub fn versus_oracle(rows: &[Summary], oracle: &Summary) -> String {
    let parts: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} is {:.2}x the oracle",
                r.label,
                r.ttft_mean / oracle.ttft_mean
            )
        })
        .collect();
    let note = if oracle.note.is_empty() {
        String::new()
    } else {
        format!(" ({})", oracle.note)
    };
    format!(
        "{}{note}: mean TTFT {} ms, p50 {} ms, p90 {} ms; {}",
        oracle.label,
        ms(oracle.ttft_mean),
        ms(oracle.ttft_p50),
        ms(oracle.ttft_p90),
        parts.join(", ")
    )
}

/// Of several runs of one router, the run with the median mean TTFT (the lower of
/// the middle two), its note extended with the range of the runs' mean TTFTs.
/// `None` for no runs.
pub fn median_run(mut runs: Vec<Summary>) -> Option<Summary> {
    runs.sort_by(|a, b| a.ttft_mean.total_cmp(&b.ttft_mean));
    let n = runs.len();
    let (low, high) = (runs.first()?.ttft_mean, runs.last()?.ttft_mean);
    let mut median = runs.swap_remove((n - 1) / 2);
    if n > 1 {
        let spread = format!(
            "median of {n} runs, mean TTFT {:.1}-{:.1} ms",
            low * 1e3,
            high * 1e3
        );
        median.note = if median.note.is_empty() {
            spread
        } else {
            format!("{}, {spread}", median.note)
        };
    }
    Some(median)
}

/// The median of a Prometheus histogram summed over `pages` (one per replica),
/// interpolated linearly within its bucket; `None` without observations.
pub fn histogram_median(pages: &[String], family: &str) -> Option<f64> {
    let mut total = Histogram::default();
    for h in pages.iter().filter_map(|p| parse_family(p, family)) {
        total.add(&h);
    }
    total.quantile(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 5.0);
        assert_eq!(percentile(&v, 90.0), 9.0);
        assert_eq!(percentile(&v, 99.0), 10.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    fn row(label: &str, mean: f64) -> Summary {
        Summary {
            label: label.to_string(),
            ttft_mean: mean,
            ttft_p50: mean,
            ttft_p90: mean,
            ttft_p99: mean,
            e2e_mean: mean,
            throughput: 1.0,
            ok: 1,
            total: 1,
            note: String::new(),
        }
    }

    #[test]
    fn versus_reads_as_times_lower_or_higher() {
        let rows = [row("round-robin", 0.3), row("a", 0.1), row("b", 0.095)];
        assert_eq!(
            versus(&rows, "a"),
            "a: mean TTFT 100.0 ms, 3.00x lower than round-robin, 1.05x higher than b"
        );
        assert_eq!(versus(&rows, "c"), "c: no result");
    }

    #[test]
    fn versus_oracle_gives_each_row_as_a_multiple_of_the_oracle() {
        let rows = [row("round-robin", 0.3), row("a", 0.123)];
        assert_eq!(
            versus_oracle(&rows, &row("oracle", 0.1)),
            "oracle: mean TTFT 100.0 ms, p50 100.0 ms, p90 100.0 ms; round-robin is 3.00x the oracle, a is 1.23x the oracle"
        );
    }

    #[test]
    fn the_histogram_median_interpolates_within_its_bucket_over_replicas() {
        let page = |a: u32, b: u32, c: u32| {
            format!(
                "x_bucket{{le=\"0.1\"}} {a}\nx_bucket{{le=\"0.2\"}} {b}\nx_bucket{{le=\"+Inf\"}} {c}\nx_count {c}\n"
            )
        };
        let pages = [page(1, 3, 4), page(1, 3, 4)];
        // 8 observations: 2 up to 0.1, 6 up to 0.2; the 4th is halfway into (0.1, 0.2].
        let m = histogram_median(&pages, "x").expect("observations");
        assert!((m - 0.15).abs() < 1e-9, "{m}");
        assert_eq!(histogram_median(&[page(0, 0, 0)], "x"), None);
        assert_eq!(histogram_median(&[], "x"), None);
    }

    #[test]
    fn the_median_run_is_reported_with_the_spread() {
        let run = |mean: f64| Summary {
            note: "prefix match 50%".into(),
            ..row("r", mean)
        };
        let m = median_run(vec![run(0.3), run(0.1), run(0.2)]).expect("runs");
        assert_eq!(m.ttft_mean, 0.2);
        assert_eq!(
            m.note,
            "prefix match 50%, median of 3 runs, mean TTFT 100.0-300.0 ms"
        );
        assert_eq!(
            median_run(vec![run(0.4), run(0.2)]).map(|m| m.ttft_mean),
            Some(0.2)
        );
        assert_eq!(
            median_run(vec![run(0.4)]).map(|m| m.note),
            Some("prefix match 50%".into())
        );
        assert!(median_run(Vec::new()).is_none());
    }
}
