//! The autoscaler's decision for one role (no I/O): the replicas that hold the
//! role's signal at its target, as Kubernetes' HorizontalPodAutoscaler computes them
//! (the load the Ready pods carry, divided by the target per pod, with a 10%
//! tolerance), stabilised the same way (a scale-up takes the lowest recommendation of
//! its window, a scale-down the highest of its own, so it goes up fast and down
//! slowly), within [min, max], and never past pods the cluster cannot schedule.

use std::collections::{BTreeMap, VecDeque};

use llmd_api::Signal;

use crate::epp_metrics::{
    INTER_TOKEN_LATENCY, KV_CACHE_USAGE, RUNNING, TTFT, WAITING, per_endpoint,
};
use crate::histogram::{Histogram, parse_family};

/// A change smaller than this share of the target is not worth a pod.
pub const TOLERANCE: f64 = 0.1;

/// The role's autoscaling settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub min: i32,
    pub max: i32,
    pub target: Signal,
    /// Seconds.
    pub up_window: f64,
    /// Seconds.
    pub down_window: f64,
}

/// What the scheduler saw of the role this round.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// Seconds on a monotonic clock.
    pub now: f64,
    /// Pods the role is set to have (the decision in force).
    pub current: i32,
    /// Pods that are Ready (the ones the signal was measured on).
    pub ready: i32,
    /// Pods the scheduler cannot place (no node has the GPUs).
    pub pending: i32,
    /// The signal's value, or why there is none.
    pub signal: Result<f64, String>,
}

/// How a round ended: a change, or why the count stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ScaledUp,
    ScaledDown,
    /// The signal is at its target (within the tolerance).
    AtTarget,
    /// A scale-down waits for its stabilisation window.
    Stabilising,
    /// More pods are wanted but some cannot be scheduled.
    Unschedulable,
    /// No signal (or no Ready pod to read it from): nothing is decided.
    NoMetrics,
    /// Already at a bound.
    AtBound,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub replicas: i32,
    pub kind: Kind,
    /// Why, in numbers.
    pub reason: String,
    /// The measured signal against its target.
    pub observed: Option<String>,
}

/// "1 pod", "3 pods".
fn pods(n: i32) -> String {
    if n == 1 {
        "1 pod".into()
    } else {
        format!("{n} pods")
    }
}

/// One role's recommendations over the longer of its windows.
#[derive(Clone, Debug, Default)]
pub struct Autoscaler {
    recommendations: VecDeque<(f64, i32)>,
}

impl Autoscaler {
    pub fn decide(&mut self, policy: &Policy, seen: &Observation) -> Decision {
        let bound = |n: i32| n.clamp(policy.min, policy.max.max(policy.min));
        let current = bound(seen.current);
        let target = policy.target.value();
        let value = match (&seen.signal, seen.ready) {
            (Err(why), _) => {
                return Decision {
                    replicas: current,
                    kind: Kind::NoMetrics,
                    reason: format!("holding {}: no metrics ({why})", pods(current)),
                    observed: None,
                };
            }
            (Ok(_), 0) => {
                return Decision {
                    replicas: current,
                    kind: Kind::NoMetrics,
                    reason: format!("holding {}: none is Ready to measure", pods(current)),
                    observed: None,
                };
            }
            (Ok(v), _) => *v,
        };
        let observed = format!(
            "{} on {} Ready (target {})",
            policy.target.with(value).describe(),
            pods(seen.ready),
            policy.target.describe()
        );
        let ratio = value / target;
        let raw = if (ratio - 1.0).abs() <= TOLERANCE {
            current
        } else {
            (f64::from(seen.ready) * ratio).ceil() as i32
        };
        let recommended = bound(raw);
        self.recommendations.push_back((seen.now, recommended));
        let keep = policy.up_window.max(policy.down_window);
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| seen.now - t > keep)
        {
            self.recommendations.pop_front();
        }
        let within = |window: f64| {
            self.recommendations
                .iter()
                .filter(move |(t, _)| seen.now - t <= window)
                .map(|(_, r)| *r)
        };
        let up = within(policy.up_window).min().unwrap_or(recommended);
        let down = within(policy.down_window).max().unwrap_or(recommended);
        let decision = |replicas, kind, reason: String| Decision {
            replicas,
            kind,
            reason,
            observed: Some(observed.clone()),
        };
        if up > current {
            if seen.pending > 0 {
                return decision(
                    current,
                    Kind::Unschedulable,
                    format!(
                        "holding {}, {up} wanted: {} pending (no node can schedule them)",
                        pods(current),
                        seen.pending
                    ),
                );
            }
            return decision(
                up,
                Kind::ScaledUp,
                format!("scaled up from {current} to {}: {observed}", pods(up)),
            );
        }
        if down < current {
            return decision(
                down,
                Kind::ScaledDown,
                format!("scaled down from {current} to {}: {observed}", pods(down)),
            );
        }
        if recommended < current {
            return decision(
                current,
                Kind::Stabilising,
                format!(
                    "holding {}: {recommended} would do, but the last {:.0} s wanted {down}",
                    pods(current),
                    policy.down_window
                ),
            );
        }
        if recommended > current {
            return decision(
                current,
                Kind::Stabilising,
                format!(
                    "holding {}: {recommended} wanted, but the last {:.0} s wanted as few as {up}",
                    pods(current),
                    policy.up_window
                ),
            );
        }
        if raw != recommended {
            let edge = if raw > recommended {
                "maxReplicas"
            } else {
                "minReplicas"
            };
            return decision(
                current,
                Kind::AtBound,
                format!("holding {} ({edge}): {observed}", pods(current)),
            );
        }
        decision(
            current,
            Kind::AtTarget,
            format!("holding {}: {observed}", pods(current)),
        )
    }
}

/// EndpointPicker `/metrics` pages by replica pod name.
pub type Pages = BTreeMap<String, String>;

/// The role's signal, from the EndpointPicker replicas' pages now and one interval
/// ago (`before`): per-pod gauges (queue, KV-cache use) averaged over the role's
/// Ready pods (`pod_ips`), latencies as the mean over the interval (0 without
/// requests: nothing to serve). TTFT is stretched by the role's queue: a request
/// arriving behind W waiting requests per pod, R running, waits about W/R more
/// service times, so a surge counts before its queued requests report their own.
pub fn measure(
    target: Signal,
    now: &Pages,
    before: Option<&Pages>,
    pod_ips: &[String],
) -> Result<f64, String> {
    let per_pod = |name: &str, what: &str| {
        // Per pod: its endpoints' values summed (one per data-parallel rank), the
        // highest any replica reports (they scrape the same engines).
        let mut pods: BTreeMap<&str, f64> = BTreeMap::new();
        for page in now.values() {
            let mut here: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
            for (endpoint, v) in per_endpoint(page, name) {
                let ip = endpoint
                    .rsplit_once(':')
                    .map_or(endpoint.as_str(), |(ip, _)| ip);
                if let Some(pod) = pod_ips.iter().find(|p| p.as_str() == ip) {
                    let e = here.entry(pod.as_str()).or_default();
                    *e = (e.0 + v, e.1 + 1.0);
                }
            }
            for (pod, (sum, n)) in here {
                let v = if name == KV_CACHE_USAGE { sum / n } else { sum };
                let e = pods.entry(pod).or_insert(v);
                *e = e.max(v);
            }
        }
        if pods.is_empty() {
            return Err(format!(
                "the EndpointPicker reports no {what} for the role's {} Ready pods",
                pod_ips.len()
            ));
        }
        Ok(pods.values().sum::<f64>() / pods.len() as f64)
    };
    let mean = |family: &str| {
        let before = before.ok_or("a first scrape: the next interval has a window")?;
        let mut window = Histogram::default();
        let mut replicas = 0;
        for (pod, page) in now {
            let Some(earlier) = before.get(pod) else {
                continue;
            };
            replicas += 1;
            if let (Some(a), Some(b)) = (parse_family(page, family), parse_family(earlier, family))
            {
                window.add(&a.since(&b));
            }
        }
        if replicas == 0 {
            // New EndpointPicker replicas: no window yet (not "no requests").
            return Err(
                "the EndpointPicker replicas changed: the next interval has a window".into(),
            );
        }
        Ok(window.mean().unwrap_or(0.0))
    };
    match target {
        Signal::WaitingPerPod(_) => per_pod(WAITING, "queue"),
        Signal::KvCacheUtilization(_) => per_pod(KV_CACHE_USAGE, "KV-cache use"),
        Signal::Ttft(_) => {
            let served = mean(TTFT)?;
            match (
                per_pod(WAITING, "queue"),
                per_pod(RUNNING, "running requests"),
            ) {
                (Ok(waiting), Ok(running)) => Ok(served * (1.0 + waiting / running.max(1.0))),
                _ => Ok(served),
            }
        }
        Signal::InterTokenLatency(_) => mean(INTER_TOKEN_LATENCY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 4,
            target: Signal::WaitingPerPod(2.0),
            up_window: 0.0,
            down_window: 60.0,
        }
    }

    fn seen(now: f64, current: i32, ready: i32, value: f64) -> Observation {
        Observation {
            now,
            current,
            ready,
            pending: 0,
            signal: Ok(value),
        }
    }

    #[test]
    fn the_ready_pods_load_over_the_target_is_the_pod_count() {
        let mut a = Autoscaler::default();
        let d = a.decide(&policy(), &seen(0.0, 1, 1, 5.0));
        assert_eq!((d.replicas, d.kind), (3, Kind::ScaledUp), "{d:?}");
        assert!(
            d.reason.contains(
                "from 1 to 3 pods: 5.0 waiting requests per pod on 1 pod Ready (target 2.0 waiting"
            ),
            "{}",
            d.reason
        );
        // Capped at max, and said so once there.
        let d = a.decide(&policy(), &seen(10.0, 3, 3, 8.0));
        assert_eq!((d.replicas, d.kind), (4, Kind::ScaledUp));
        let d = a.decide(&policy(), &seen(20.0, 4, 4, 8.0));
        assert_eq!((d.replicas, d.kind), (4, Kind::AtBound));
        assert!(d.reason.contains("(maxReplicas)"), "{}", d.reason);
    }

    #[test]
    fn within_the_tolerance_nothing_moves() {
        let mut a = Autoscaler::default();
        let d = a.decide(&policy(), &seen(0.0, 2, 2, 2.15));
        assert_eq!((d.replicas, d.kind), (2, Kind::AtTarget));
    }

    #[test]
    fn down_waits_for_its_window_and_up_does_not() {
        let mut a = Autoscaler::default();
        let p = policy();
        assert_eq!(a.decide(&p, &seen(0.0, 1, 1, 7.0)).replicas, 4);
        // The burst ends: the window still remembers 4.
        let d = a.decide(&p, &seen(15.0, 4, 4, 0.0));
        assert_eq!((d.replicas, d.kind), (4, Kind::Stabilising), "{d:?}");
        assert!(d.reason.contains("1 would do"), "{}", d.reason);
        // A new burst inside the window goes straight up again.
        let d = a.decide(&p, &seen(30.0, 4, 4, 0.0));
        assert_eq!(d.kind, Kind::Stabilising);
        // Once the high recommendations age out, down to what the last minute wanted.
        let d = a.decide(&p, &seen(61.0, 4, 4, 0.0));
        assert_eq!((d.replicas, d.kind), (1, Kind::ScaledDown), "{d:?}");
    }

    #[test]
    fn an_up_window_takes_the_lowest_recommendation() {
        let mut a = Autoscaler::default();
        let p = Policy {
            up_window: 30.0,
            ..policy()
        };
        assert_eq!(a.decide(&p, &seen(0.0, 1, 1, 2.0)).kind, Kind::AtTarget);
        // One spike is not enough while the window holds a calmer recommendation.
        let d = a.decide(&p, &seen(10.0, 1, 1, 8.0));
        assert_eq!((d.replicas, d.kind), (1, Kind::Stabilising));
        assert!(d.reason.contains("4 wanted"), "{}", d.reason);
        let d = a.decide(&p, &seen(41.0, 1, 1, 8.0));
        assert_eq!((d.replicas, d.kind), (4, Kind::ScaledUp));
    }

    #[test]
    fn pending_pods_stop_a_scale_up_and_missing_metrics_hold() {
        let mut a = Autoscaler::default();
        let mut s = seen(0.0, 2, 1, 9.0);
        s.pending = 1;
        let d = a.decide(&policy(), &s);
        assert_eq!((d.replicas, d.kind), (2, Kind::Unschedulable));
        assert!(d.reason.contains("1 pending"), "{}", d.reason);
        let d = a.decide(
            &policy(),
            &Observation {
                signal: Err("no Ready EndpointPicker replica".into()),
                ..seen(5.0, 3, 3, 0.0)
            },
        );
        assert_eq!((d.replicas, d.kind), (3, Kind::NoMetrics));
        assert!(d.reason.contains("no Ready EndpointPicker"), "{}", d.reason);
        let d = a.decide(&policy(), &seen(6.0, 3, 0, 9.0));
        assert_eq!((d.replicas, d.kind), (3, Kind::NoMetrics));
    }

    #[test]
    fn a_current_count_outside_the_bounds_is_brought_inside() {
        let mut a = Autoscaler::default();
        let p = Policy { min: 2, ..policy() };
        let d = a.decide(&p, &seen(0.0, 1, 1, 2.0));
        assert_eq!(d.replicas, 2, "{d:?}");
    }

    fn pages(text: &str) -> Pages {
        BTreeMap::from([("epp-0".to_string(), text.to_string())])
    }

    #[test]
    fn per_pod_signals_average_the_roles_ready_pods() {
        let page = format!(
            "{WAITING}{{endpoint=\"10.0.0.1:8000\"}} 6\n\
             {WAITING}{{endpoint=\"10.0.0.2:8000\"}} 2\n\
             {WAITING}{{endpoint=\"10.0.0.9:8000\"}} 50\n\
             {KV_CACHE_USAGE}{{endpoint=\"10.0.0.1:8000\"}} 0.5\n\
             {KV_CACHE_USAGE}{{endpoint=\"10.0.0.1:8001\"}} 0.7\n"
        );
        let ips = ["10.0.0.1".to_string(), "10.0.0.2".to_string()];
        let now = pages(&page);
        assert_eq!(
            measure(Signal::WaitingPerPod(2.0), &now, None, &ips),
            Ok(4.0)
        );
        // Data-parallel ranks of one pod: their KV use is averaged.
        let kv = measure(Signal::KvCacheUtilization(0.8), &now, None, &ips[..1]);
        assert!((kv.expect("kv") - 0.6).abs() < 1e-9);
        let none = measure(Signal::WaitingPerPod(2.0), &now, None, &["10.9.9.9".into()]);
        assert!(none.expect_err("no pod").contains("no queue"));
    }

    #[test]
    fn latency_signals_are_the_mean_over_the_interval() {
        let page = |count: u32, sum: f64| {
            pages(&format!(
                "{TTFT}_bucket{{le=\"+Inf\"}} {count}\n{TTFT}_sum {sum}\n{TTFT}_count {count}\n"
            ))
        };
        let (before, now) = (page(10, 1.0), page(30, 7.0));
        assert_eq!(
            measure(Signal::Ttft(0.5), &now, Some(&before), &[]),
            Ok(0.3)
        );
        // Six waiting behind two running on the role's pod: about four service times.
        let mut queued = now.clone();
        if let Some(p) = queued.get_mut("epp-0") {
            p.push_str(&format!(
                "{WAITING}{{endpoint=\"10.0.0.1:8000\"}} 6\n{RUNNING}{{endpoint=\"10.0.0.1:8000\"}} 2\n"
            ));
        }
        let ips = ["10.0.0.1".to_string()];
        let stretched = measure(Signal::Ttft(0.5), &queued, Some(&before), &ips);
        assert!((stretched.expect("ttft") - 1.2).abs() < 1e-9);
        assert_eq!(measure(Signal::Ttft(0.5), &now, Some(&now), &[]), Ok(0.0));
        assert!(measure(Signal::Ttft(0.5), &now, None, &[]).is_err());
        // A restarted EndpointPicker (another pod name) has no window yet.
        let restarted = BTreeMap::from([("epp-1".to_string(), now["epp-0"].clone())]);
        assert!(measure(Signal::Ttft(0.5), &restarted, Some(&before), &[]).is_err());
    }
}
