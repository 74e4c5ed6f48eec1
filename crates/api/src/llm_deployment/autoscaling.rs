//! Built-in autoscaling of a role: the operator's embedded scheduler decides its
//! replicas from the EndpointPicker's metrics, within [minReplicas, maxReplicas].

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Autoscaling of one role (prefill or decode). The decision is recorded in
/// `status.autoscaling` and drives the role's StatefulSet; `spec.<role>.replicas` is
/// only where it starts (GitOps tools keep owning the spec).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas").field_path(".minReplicas"))]
#[x_kube(validation = kube::core::Rule::new("[has(self.target.ttftMs), has(self.target.interTokenLatencyMs), has(self.target.kvCacheUtilization), has(self.target.waitingPerPod)].filter(x, x).size() == 1").message("autoscaling.target must set exactly one of ttftMs, interTokenLatencyMs, kvCacheUtilization or waitingPerPod").field_path(".target"))]
pub struct AutoscalingSpec {
    /// Fewest pods of the role.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 512))]
    pub min_replicas: i32,

    /// Most pods of the role; also bounded by the GPUs the cluster can schedule
    /// (Pending pods stop further scale-up).
    #[schemars(range(min = 1, max = 512))]
    pub max_replicas: i32,

    /// The signal the role is scaled on, and its target value.
    pub target: ScalingTarget,

    /// How often the scheduler decides, in seconds.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 5, max = 600))]
    pub interval_seconds: i32,

    /// A scale-up takes the lowest recommendation of this window (0: at once).
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_up_stabilization_seconds: i32,

    /// A scale-down takes the highest recommendation of this window, so a short lull
    /// does not remove pods that the next burst needs.
    #[serde(default = "default_scale_down_window")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: i32,
}

/// The signal to hold at a target, as the EndpointPicker measures it. Exactly one.
/// Prefill scales on ttftMs; decode on interTokenLatencyMs, kvCacheUtilization or
/// waitingPerPod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScalingTarget {
    /// Time to first token, in milliseconds: the mean over the last interval,
    /// stretched by the role's queue (a request arriving behind W waiting requests on
    /// a pod running R waits about W/R service times more), so that a surge counts
    /// before its queued requests report their own TTFT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub ttft_ms: Option<i64>,

    /// Mean time between streamed tokens over the last interval, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60_000))]
    pub inter_token_latency_ms: Option<i64>,

    /// Mean KV-cache use of the role's pods, 0.05 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.05, max = 1.0))]
    pub kv_cache_utilization: Option<f64>,

    /// Mean requests waiting in each pod's engine queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.1, max = 10_000.0))]
    pub waiting_per_pod: Option<f64>,
}

fn one() -> i32 {
    1
}

fn default_interval() -> i32 {
    15
}

fn default_scale_down_window() -> i32 {
    300
}

/// A target's signal, in the unit the scheduler computes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// Seconds.
    Ttft(f64),
    /// Seconds.
    InterTokenLatency(f64),
    /// Fraction 0..1.
    KvCacheUtilization(f64),
    /// Requests.
    WaitingPerPod(f64),
}

impl ScalingTarget {
    /// The target as a signal value (the first set, in field order; admission allows
    /// exactly one).
    pub fn signal(&self) -> Option<Signal> {
        let ms = |v: i64| v as f64 / 1000.0;
        self.ttft_ms
            .map(|v| Signal::Ttft(ms(v)))
            .or(self
                .inter_token_latency_ms
                .map(|v| Signal::InterTokenLatency(ms(v))))
            .or(self.kv_cache_utilization.map(Signal::KvCacheUtilization))
            .or(self.waiting_per_pod.map(Signal::WaitingPerPod))
    }
}

impl Signal {
    pub fn value(self) -> f64 {
        match self {
            Signal::Ttft(v)
            | Signal::InterTokenLatency(v)
            | Signal::KvCacheUtilization(v)
            | Signal::WaitingPerPod(v) => v,
        }
    }

    /// The same kind of signal with another value.
    pub fn with(self, value: f64) -> Signal {
        match self {
            Signal::Ttft(_) => Signal::Ttft(value),
            Signal::InterTokenLatency(_) => Signal::InterTokenLatency(value),
            Signal::KvCacheUtilization(_) => Signal::KvCacheUtilization(value),
            Signal::WaitingPerPod(_) => Signal::WaitingPerPod(value),
        }
    }

    /// How a value of this signal reads in a reason.
    pub fn describe(self) -> String {
        match self {
            Signal::Ttft(v) => format!("TTFT {:.0} ms", v * 1000.0),
            Signal::InterTokenLatency(v) => {
                format!("mean inter-token latency {:.1} ms", v * 1000.0)
            }
            Signal::KvCacheUtilization(v) => format!("KV-cache use {:.0}%", v * 100.0),
            Signal::WaitingPerPod(v) => format!("{v:.1} waiting requests per pod"),
        }
    }
}

impl AutoscalingSpec {
    /// `replicas` within [minReplicas, maxReplicas].
    pub fn clamp(&self, replicas: i32) -> i32 {
        replicas.clamp(self.min_replicas, self.max_replicas.max(self.min_replicas))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_reads_in_seconds_and_fractions() {
        let t = ScalingTarget {
            ttft_ms: Some(250),
            ..Default::default()
        };
        assert_eq!(t.signal(), Some(Signal::Ttft(0.25)));
        let t = ScalingTarget {
            waiting_per_pod: Some(2.0),
            ..Default::default()
        };
        assert_eq!(t.signal(), Some(Signal::WaitingPerPod(2.0)));
        assert_eq!(ScalingTarget::default().signal(), None);
        assert_eq!(
            Signal::KvCacheUtilization(0.5).with(0.75).describe(),
            "KV-cache use 75%"
        );
    }

    #[test]
    fn replicas_stay_within_the_bounds() {
        let a: AutoscalingSpec = serde_json::from_value(serde_json::json!({
            "minReplicas": 2, "maxReplicas": 4, "target": {"waitingPerPod": 2}
        }))
        .expect("parses");
        assert_eq!(a.interval_seconds, 15);
        assert_eq!(a.scale_up_stabilization_seconds, 0);
        assert_eq!(a.scale_down_stabilization_seconds, 300);
        assert_eq!((a.clamp(1), a.clamp(3), a.clamp(9)), (2, 3, 4));
    }
}
