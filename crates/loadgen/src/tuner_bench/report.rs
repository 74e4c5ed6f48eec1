//! Medians over repeats, the JSON result, the side-by-side table with ratios to the
//! tuned run, and the verdict on the targets.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::run::{Change, Measured, RunResult};
use super::workload::Workload;

/// Mean and P90 TTFT of a set of requests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Latency {
    pub mean: f64,
    pub p90: f64,
    pub requests: usize,
}

impl Latency {
    fn of(mut ttft: Vec<f64>) -> Latency {
        if ttft.is_empty() {
            return Latency::default();
        }
        ttft.sort_by(f64::total_cmp);
        let rank = ((0.9 * ttft.len() as f64).ceil() as usize).clamp(1, ttft.len());
        Latency {
            mean: ttft.iter().sum::<f64>() / ttft.len() as f64,
            p90: ttft[rank - 1],
            requests: ttft.len(),
        }
    }
}

/// Where a phase's prompts found their context: the share of prompt tokens the
/// engines found in their KV cache, and over how many pods the hottest tenants were
/// spread.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Locality {
    pub cache_hit: f64,
    /// The effective number of pods (inverse Simpson index of the pods' shares) that
    /// served each of the [`HOT_TENANTS`] busiest tenants, averaged; NaN in a phase
    /// whose prompts share no context.
    pub hot_tenant_pods: f64,
}

/// How many of a phase's busiest tenants [`Locality::hot_tenant_pods`] follows.
pub const HOT_TENANTS: usize = 3;

impl Locality {
    fn of(requests: &[&Measured], shared_context: bool) -> Locality {
        let (prompt, cached) = requests
            .iter()
            .filter_map(|m| m.sample.usage)
            .fold((0u64, 0u64), |(p, c), u| {
                (p + u.prompt_tokens, c + u.cached_tokens)
            });
        let served: Vec<(usize, &str)> = requests
            .iter()
            .filter_map(|m| Some((m.tenant, m.sample.endpoint.as_deref()?)))
            .collect();
        Locality {
            cache_hit: if prompt == 0 {
                f64::NAN
            } else {
                cached as f64 / prompt as f64
            },
            hot_tenant_pods: if shared_context {
                pods_per_hot_tenant(&served, HOT_TENANTS)
            } else {
                f64::NAN
            },
        }
    }
}

/// Over how many pods the `top` busiest tenants of `served` (tenant, pod) were
/// spread: per tenant the inverse Simpson index of its pods' shares (1 when one pod
/// served it all, k when k pods served it equally), averaged over those tenants.
pub fn pods_per_hot_tenant(served: &[(usize, &str)], top: usize) -> f64 {
    let mut per_tenant: BTreeMap<usize, BTreeMap<&str, f64>> = BTreeMap::new();
    for (tenant, pod) in served {
        *per_tenant
            .entry(*tenant)
            .or_default()
            .entry(pod)
            .or_default() += 1.0;
    }
    let mut tenants: Vec<&BTreeMap<&str, f64>> = per_tenant.values().collect();
    tenants.sort_by(|a, b| b.values().sum::<f64>().total_cmp(&a.values().sum::<f64>()));
    tenants.truncate(top);
    if tenants.is_empty() {
        return f64::NAN;
    }
    let effective = |pods: &BTreeMap<&str, f64>| {
        let n: f64 = pods.values().sum();
        1.0 / pods.values().map(|c| (c / n).powi(2)).sum::<f64>()
    };
    tenants.iter().map(|t| effective(t)).sum::<f64>() / tenants.len() as f64
}

/// One run, summarised.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunStats {
    pub whole: Latency,
    pub phases: Vec<Latency>,
    pub failed: usize,
    pub locality: Locality,
    pub phase_locality: Vec<Locality>,
}

pub fn stats(workload: &Workload, run: &RunResult) -> RunStats {
    let of_phase = |phase: Option<usize>| {
        run.samples
            .iter()
            .filter(|m| phase.is_none_or(|want| m.phase == want))
            .collect::<Vec<_>>()
    };
    let ttft = |requests: &[&Measured]| {
        requests
            .iter()
            .filter(|m| m.sample.ok)
            .map(|m| m.sample.ttft)
            .collect::<Vec<_>>()
    };
    let all = of_phase(None);
    RunStats {
        whole: Latency::of(ttft(&all)),
        phases: (0..workload.phases.len())
            .map(|p| Latency::of(ttft(&of_phase(Some(p)))))
            .collect(),
        failed: all.iter().filter(|m| !m.sample.ok).count(),
        locality: Locality::of(&all, false),
        phase_locality: workload
            .phases
            .iter()
            .enumerate()
            .map(|(p, phase)| Locality::of(&of_phase(Some(p)), phase.shared_prefix_tokens > 0))
            .collect(),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The per-field median of several runs (failures: the largest).
pub fn median_of(runs: &[RunStats]) -> RunStats {
    let phases = runs.first().map_or(0, |r| r.phases.len());
    let lat = |f: &dyn Fn(&RunStats) -> &Latency| Latency {
        mean: median(runs.iter().map(|r| f(r).mean).collect()),
        p90: median(runs.iter().map(|r| f(r).p90).collect()),
        requests: runs.first().map_or(0, |r| f(r).requests),
    };
    let loc = |f: &dyn Fn(&RunStats) -> Locality| Locality {
        cache_hit: median(runs.iter().map(|r| f(r).cache_hit).collect()),
        hot_tenant_pods: median(runs.iter().map(|r| f(r).hot_tenant_pods).collect()),
    };
    RunStats {
        whole: lat(&|r| &r.whole),
        phases: (0..phases).map(|p| lat(&|r| &r.phases[p])).collect(),
        failed: runs.iter().map(|r| r.failed).max().unwrap_or(0),
        locality: loc(&|r| r.locality),
        phase_locality: (0..phases)
            .map(|p| loc(&|r| r.phase_locality.get(p).copied().unwrap_or_default()))
            .collect(),
    }
}

/// Every configuration's median, in the order run.
pub struct Results<'a> {
    pub workload: &'a Workload,
    pub configs: Vec<(String, Vec<RunStats>, RunStats, Vec<Change>)>,
}

impl Results<'_> {
    /// The fixed weighting with the lowest median mean TTFT.
    pub fn best_fixed_label(&self) -> Option<&str> {
        self.configs
            .iter()
            .filter(|c| c.0.starts_with("fixed:"))
            .min_by(|a, b| a.2.whole.mean.total_cmp(&b.2.whole.mean))
            .map(|c| c.0.as_str())
    }

    fn find(&self, label: &str) -> Option<&RunStats> {
        self.configs.iter().find(|c| c.0 == label).map(|c| &c.2)
    }

    fn fixed(&self) -> impl Iterator<Item = &RunStats> {
        self.configs
            .iter()
            .filter(|c| c.0.starts_with("fixed:"))
            .map(|c| &c.2)
    }

    /// The whole-run mean a router would get that used the best fixed weighting of
    /// each phase.
    pub fn per_phase_best(&self) -> f64 {
        let Some(first) = self.fixed().next() else {
            return f64::NAN;
        };
        let total: usize = first.phases.iter().map(|p| p.requests).sum();
        (0..first.phases.len())
            .map(|p| {
                let best = self
                    .fixed()
                    .map(|r| r.phases[p].mean)
                    .fold(f64::INFINITY, f64::min);
                best * first.phases[p].requests as f64
            })
            .sum::<f64>()
            / total.max(1) as f64
    }

    /// Each target: (description, met).
    pub fn targets(&self) -> Vec<(String, bool)> {
        let (Some(tuned), Some(default)) = (self.find("tuned"), self.find("fixed:3/2/2")) else {
            return Vec::new();
        };
        let best = self
            .fixed()
            .map(|r| r.whole.mean)
            .fold(f64::INFINITY, f64::min);
        let oracle = self.per_phase_best();
        let worst_phase = tuned
            .phases
            .iter()
            .zip(&default.phases)
            .map(|(t, d)| t.mean / d.mean)
            .fold(0.0, f64::max);
        vec![
            (
                format!(
                    "tuned mean TTFT {:.3} s <= best fixed {:.3} s x 1.03",
                    tuned.whole.mean, best
                ),
                tuned.whole.mean <= best * 1.03,
            ),
            (
                format!(
                    "tuned mean TTFT {:.3} s within 10% of the per-phase best {:.3} s",
                    tuned.whole.mean, oracle
                ),
                tuned.whole.mean <= oracle * 1.10,
            ),
            (
                format!(
                    "no phase worse than the default by more than 25% (worst: {worst_phase:.2}x)"
                ),
                worst_phase <= 1.25,
            ),
            (
                format!("no failed requests (tuned: {})", tuned.failed),
                tuned.failed == 0,
            ),
        ]
    }

    pub fn to_json(&self) -> Value {
        let lat = |l: &Latency| json!({"mean_ttft_s": l.mean, "p90_ttft_s": l.p90});
        let configs: serde_json::Map<String, Value> = self
            .configs
            .iter()
            .map(|(label, runs, m, changes)| {
                let phases: Vec<Value> = self
                    .workload
                    .phases
                    .iter()
                    .zip(&m.phases)
                    .zip(&m.phase_locality)
                    .map(|((p, l), loc)| {
                        json!({"name": p.name, "mean_ttft_s": l.mean, "p90_ttft_s": l.p90, "requests": l.requests,
                               "engine_cache_hit": number(loc.cache_hit),
                               "hot_tenant_pods": number(loc.hot_tenant_pods)})
                    })
                    .collect();
                let mut v = json!({
                    "mean_ttft_s": m.whole.mean, "p90_ttft_s": m.whole.p90, "failed": m.failed,
                    "engine_cache_hit": number(m.locality.cache_hit),
                    "phases": phases,
                    "runs": runs.iter().map(|r| lat(&r.whole)).collect::<Vec<_>>(),
                });
                if !changes.is_empty() {
                    v["changes"] = changes
                        .iter()
                        .map(|c| json!({"at_s": c.at_secs, "weights": c.weights.by_plugin(), "reason": c.reason}))
                        .collect();
                }
                (label.clone(), v)
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|(what, met)| json!({"target": what, "met": met}))
            .collect();
        json!({"configs": configs, "per_phase_best_mean_ttft_s": self.per_phase_best(), "targets": targets})
    }

    /// A table's header: the config, `columns`, then one column per phase.
    fn header(&self, columns: &[&str], per_phase: impl Fn(&str) -> String) -> String {
        let names: Vec<String> = std::iter::once("config".to_string())
            .chain(columns.iter().map(|c| c.to_string()))
            .chain(self.workload.phases.iter().map(|p| per_phase(&p.name)))
            .collect();
        format!(
            "| {} |\n|{}\n",
            names.join(" | "),
            "---|".repeat(names.len())
        )
    }

    /// Where the prompts found their context, per configuration: the engines' cache
    /// hit over the run, and per phase over how many pods the busiest tenants were
    /// spread.
    pub fn locality_table(&self) -> String {
        let mut out = self.header(&["engine cache hit"], |phase| {
            format!("{phase}: pods per hot tenant")
        });
        let cell =
            |x: f64, f: &dyn Fn(f64) -> String| if x.is_nan() { "-".to_string() } else { f(x) };
        for (label, _, m, _) in &self.configs {
            out.push_str(&format!(
                "| {label} | {} | {} |\n",
                cell(m.locality.cache_hit, &|x| format!("{:.0}%", 100.0 * x)),
                m.phase_locality
                    .iter()
                    .map(|l| cell(l.hot_tenant_pods, &|x| format!("{x:.2}")))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
        out
    }

    /// The table: whole-run and per-phase mean TTFT, P90, failures, ratios to tuned.
    pub fn table(&self) -> String {
        let tuned = self.find("tuned").map_or(f64::NAN, |t| t.whole.mean);
        let mut out = self.header(&["mean TTFT", "vs tuned", "P90 TTFT", "failed"], |phase| {
            format!("{phase} mean")
        });
        for (label, _, m, _) in &self.configs {
            out.push_str(&format!(
                "| {label} | {:.3} s | {:.2}x | {:.3} s | {} | {} |\n",
                m.whole.mean,
                m.whole.mean / tuned,
                m.whole.p90,
                m.failed,
                m.phases
                    .iter()
                    .map(|p| format!("{:.3} s", p.mean))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
        out.push_str(&format!(
            "| per-phase best (fixed) | {:.3} s | {:.2}x | | | |\n",
            self.per_phase_best(),
            self.per_phase_best() / tuned
        ));
        out
    }
}

/// A JSON number, or null for NaN (not measured).
fn number(x: f64) -> Value {
    if x.is_nan() { Value::Null } else { json!(x) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(means: &[f64]) -> RunStats {
        RunStats {
            whole: Latency {
                mean: means.iter().sum::<f64>() / means.len() as f64,
                p90: 1.0,
                requests: 20,
            },
            phases: means
                .iter()
                .map(|m| Latency {
                    mean: *m,
                    p90: *m,
                    requests: 10,
                })
                .collect(),
            failed: 0,
            ..RunStats::default()
        }
    }

    #[test]
    fn the_per_phase_best_and_the_targets() {
        let workload = Workload::parse(
            "phases:\n- {name: a, seconds: 1, rate: 1, questionTokens: 1, outputTokens: 1}\n- {name: b, seconds: 1, rate: 1, questionTokens: 1, outputTokens: 1}\n",
        )
        .expect("valid");
        let results = Results {
            workload: &workload,
            configs: vec![
                ("tuned".into(), vec![], run(&[0.2, 0.2]), vec![]),
                ("fixed:3/2/2".into(), vec![], run(&[0.2, 0.4]), vec![]),
                ("fixed:queue-only".into(), vec![], run(&[0.4, 0.2]), vec![]),
            ],
        };
        assert!((results.per_phase_best() - 0.2).abs() < 1e-12);
        assert!(
            results.targets().iter().all(|(_, met)| *met),
            "{:?}",
            results.targets()
        );
        assert!(
            results
                .table()
                .contains("| fixed:3/2/2 | 0.300 s | 1.50x |")
        );
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn pods_per_hot_tenant_follows_the_busiest_tenants_spread() {
        // Tenant 0 (4 requests) on one pod, tenant 1 (4) on two pods equally,
        // tenant 2 (1 request) is not among the two busiest.
        let served = [
            (0, "a"),
            (0, "a"),
            (0, "a"),
            (0, "a"),
            (1, "a"),
            (1, "b"),
            (1, "a"),
            (1, "b"),
            (2, "c"),
        ];
        assert!((pods_per_hot_tenant(&served, 2) - 1.5).abs() < 1e-12);
        assert!((pods_per_hot_tenant(&served[..4], 3) - 1.0).abs() < 1e-12);
        assert!(pods_per_hot_tenant(&[], 3).is_nan());
    }
}
