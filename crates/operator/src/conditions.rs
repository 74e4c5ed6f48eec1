//! Status conditions computed from what the reconcile observed. Pure: values in,
//! values out, so every rule has a unit test.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use llmd_api::conditions::{self as types, reason};

use crate::fabric_probe::Probe;
use crate::observe::{KvFabric, Observed, Workload};

/// A condition before timestamps: type, status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Why the reconcile could not bring the children to the spec, if it could not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

fn workload_verdict(type_: &'static str, what: &str, w: &Workload) -> Verdict {
    if let Some(message) = &w.unschedulable {
        return Verdict::new(
            type_,
            w.ready >= w.desired,
            reason::UNSCHEDULABLE,
            format!(
                "{}/{} {what} pods ready; a pod cannot be scheduled: {message}",
                w.ready, w.desired
            ),
        );
    }
    if w.ready >= w.desired && w.desired > 0 {
        Verdict::new(
            type_,
            true,
            reason::PODS_READY,
            format!("{}/{} {what} pods ready", w.ready, w.desired),
        )
    } else if !w.exists {
        Verdict::new(
            type_,
            false,
            reason::PODS_NOT_READY,
            format!("{what} workload not created yet"),
        )
    } else {
        Verdict::new(
            type_,
            false,
            reason::PODS_NOT_READY,
            format!("{}/{} {what} pods ready", w.ready, w.desired),
        )
    }
}

fn kv_verdict(observed: &Observed) -> Verdict {
    match &observed.kv_fabric {
        KvFabric::NotRequired => Verdict::new(
            types::KV_TRANSFER_READY,
            true,
            reason::AGGREGATED,
            "no prefill pods: decode pods serve whole requests, no KV transfer needed",
        ),
        KvFabric::Nixl {
            transports,
            side_channel_port,
            config_present,
        } => {
            let fabric =
                format!("side channel port {side_channel_port}, UCX transports {transports}");
            let verdict = |status, reason, message: String| {
                Verdict::new(types::KV_TRANSFER_READY, status, reason, message)
            };
            if !config_present {
                verdict(
                    false,
                    reason::KV_PEERS_NOT_READY,
                    "kv-transfer ConfigMap not created yet".into(),
                )
            } else if !observed.kv_peers_ready() {
                let p = observed.kv_peers();
                verdict(
                    false,
                    reason::KV_PEERS_NOT_READY,
                    format!(
                        "NIXL needs ready prefill and decode pods running the current fabric config (prefill ready: {}, decode ready: {}, rolled out: {})",
                        p.prefill_ready, p.decode_ready, p.rolled_out
                    ),
                )
            } else {
                match &observed.kv_probe {
                    Probe::Done(s) if s.proven => verdict(
                        true,
                        reason::KV_TRANSFER_PROVEN,
                        format!(
                            "{}; NixlConnector on prefill and decode pods, {fabric}",
                            s.message
                        ),
                    ),
                    Probe::Done(s) => verdict(
                        false,
                        reason::KV_TRANSFER_PROBE_FAILED,
                        format!(
                            "{}; the EndpointPicker serves whole requests (fix the fabric, or give the annotation {} a new value to probe again); {fabric}",
                            s.message,
                            llmd_api::labels::REPROBE_FABRIC
                        ),
                    ),
                    Probe::Probing(what) => verdict(
                        false,
                        reason::KV_TRANSFER_PROBING,
                        format!(
                            "probing the KV fabric with a real NIXL transfer ({what}); the EndpointPicker serves whole requests until one succeeds"
                        ),
                    ),
                    Probe::NotRequired => verdict(
                        true,
                        reason::NIXL_CONFIGURED,
                        format!("NixlConnector on prefill and decode pods; {fabric}"),
                    ),
                }
            }
        }
    }
}

/// The seven conditions, in the order of `llmd_api::conditions::ALL`.
pub fn compute(observed: &Observed, failure: Option<&Failure>) -> Vec<Verdict> {
    let prefill = match &observed.prefill {
        Some(w) => workload_verdict(types::PREFILL_READY, "prefill", w),
        None => Verdict::new(
            types::PREFILL_READY,
            true,
            reason::AGGREGATED,
            "no prefill role: aggregated serving",
        ),
    };
    let decode = workload_verdict(types::DECODE_READY, "decode", &observed.decode);
    let kv = kv_verdict(observed);
    let mut epp = workload_verdict(
        types::ENDPOINT_PICKER_READY,
        "EndpointPicker",
        &observed.endpoint_picker,
    );
    if let Some(seen) = &observed.kv_events {
        epp.message = format!("{}; {}", epp.message, seen.message());
    }

    let components = [&prefill, &decode, &kv, &epp];
    let not_ready: Vec<&str> = components
        .iter()
        .filter(|c| !c.status)
        .map(|c| c.type_)
        .collect();
    let ready = match failure {
        Some(f) if f.reason == reason::INVALID_SPEC => {
            Verdict::new(types::READY, false, reason::INVALID_SPEC, f.message.clone())
        }
        _ if not_ready.is_empty() => Verdict::new(
            types::READY,
            true,
            reason::ALL_READY,
            "prefill, decode, KV transfer and EndpointPicker are ready",
        ),
        _ => Verdict::new(
            types::READY,
            false,
            reason::COMPONENTS_NOT_READY,
            format!("not ready: {}", not_ready.join(", ")),
        ),
    };

    let workloads = observed
        .prefill
        .iter()
        .chain([&observed.decode, &observed.endpoint_picker]);
    let rolling: Vec<String> = workloads
        .filter(|w| !w.settled())
        .map(|w| w.name.clone())
        .collect();
    let progressing = if failure.is_some() {
        Verdict::new(
            types::PROGRESSING,
            false,
            failure.map_or(reason::RECONCILED, |f| f.reason),
            "the reconcile cannot make progress until the cause under Degraded is fixed",
        )
    } else if rolling.is_empty() {
        Verdict::new(
            types::PROGRESSING,
            false,
            reason::RECONCILED,
            "all children match the spec",
        )
    } else {
        Verdict::new(
            types::PROGRESSING,
            true,
            reason::ROLLING_OUT,
            format!("rolling out: {}", rolling.join(", ")),
        )
    };

    let unschedulable = [&prefill, &decode, &epp]
        .into_iter()
        .find(|v| v.reason == reason::UNSCHEDULABLE);
    let degraded = match (failure, unschedulable) {
        (Some(f), _) => Verdict::new(types::DEGRADED, true, f.reason, f.message.clone()),
        (None, Some(v)) => Verdict::new(
            types::DEGRADED,
            true,
            reason::UNSCHEDULABLE,
            v.message.clone(),
        ),
        (None, None) => Verdict::new(
            types::DEGRADED,
            false,
            reason::AS_EXPECTED,
            "no problems found",
        ),
    };

    vec![ready, prefill, decode, kv, epp, progressing, degraded]
}

/// Turn verdicts into conditions, keeping `lastTransitionTime` from `previous` unless
/// the status flipped.
pub fn merge(
    previous: &[Condition],
    verdicts: Vec<Verdict>,
    generation: i64,
    now: &Time,
) -> Vec<Condition> {
    verdicts
        .into_iter()
        .map(|v| {
            let status = if v.status { "True" } else { "False" }.to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == v.type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: v.type_.to_string(),
                status,
                reason: v.reason.to_string(),
                message: v.message,
                observed_generation: Some(generation),
                last_transition_time,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn workload(name: &str, desired: i32, ready: i32) -> Workload {
        Workload {
            name: name.into(),
            exists: true,
            desired,
            replicas: desired,
            ready,
            updated: desired,
            generation_observed: true,
            unschedulable: None,
        }
    }

    fn pd(prefill_ready: i32, decode_ready: i32) -> Observed {
        Observed {
            prefill: Some(workload("x-prefill", 2, prefill_ready)),
            decode: workload("x-decode", 2, decode_ready),
            endpoint_picker: workload("x-epp", 1, 1),
            kv_fabric: KvFabric::Nixl {
                transports: "tcp".into(),
                side_channel_port: 5600,
                config_present: true,
            },
            kv_events: None,
            kv_probe: Probe::NotRequired,
        }
    }

    fn find<'a>(verdicts: &'a [Verdict], type_: &str) -> &'a Verdict {
        verdicts
            .iter()
            .find(|v| v.type_ == type_)
            .expect("condition present")
    }

    #[test]
    fn all_ready_makes_ready_true() {
        let v = compute(&pd(2, 2), None);
        assert_eq!(v.len(), types::ALL.len());
        for (verdict, expected_type) in v.iter().zip(types::ALL) {
            assert_eq!(verdict.type_, expected_type);
        }
        assert!(find(&v, types::READY).status);
        assert_eq!(
            find(&v, types::KV_TRANSFER_READY).reason,
            reason::NIXL_CONFIGURED
        );
        assert!(!find(&v, types::PROGRESSING).status);
        assert!(!find(&v, types::DEGRADED).status);
    }

    #[test]
    fn the_fabric_probe_decides_kv_transfer_ready() {
        let proven = llmd_api::KvTransferStatus {
            probed: "k".into(),
            proven: true,
            message: "NIXL wrote 64 MiB from node a to node b in 14.3 ms (4.71 GB/s)".into(),
            gb_per_second: Some(4.71),
            probed_at: None,
        };
        let mut observed = pd(2, 2);
        observed.kv_probe = Probe::Probing("transferring".into());
        let v = compute(&observed, None);
        let kv = find(&v, types::KV_TRANSFER_READY);
        assert!(!kv.status);
        assert_eq!(kv.reason, reason::KV_TRANSFER_PROBING);
        assert!(
            kv.message.contains("serves whole requests"),
            "{}",
            kv.message
        );
        assert!(!find(&v, types::READY).status);

        observed.kv_probe = Probe::Done(proven.clone());
        let v = compute(&observed, None);
        let kv = find(&v, types::KV_TRANSFER_READY);
        assert!(kv.status);
        assert_eq!(kv.reason, reason::KV_TRANSFER_PROVEN);
        assert!(kv.message.starts_with("NIXL wrote 64 MiB") && kv.message.contains("4.71 GB/s"));
        assert!(find(&v, types::READY).status);

        observed.kv_probe = Probe::Done(llmd_api::KvTransferStatus {
            proven: false,
            message: "probe NIXL handshake refused (sender): ...".into(),
            gb_per_second: None,
            ..proven
        });
        let v = compute(&observed, None);
        let kv = find(&v, types::KV_TRANSFER_READY);
        assert!(!kv.status);
        assert_eq!(kv.reason, reason::KV_TRANSFER_PROBE_FAILED);
        assert!(
            kv.message.contains("handshake refused")
                && kv.message.contains("llmd.dev/reprobe-fabric")
        );
        // Peers not ready: that is the reason, whatever the probe says.
        let mut waiting = pd(0, 2);
        waiting.kv_probe = Probe::Probing("waiting".into());
        assert_eq!(
            find(&compute(&waiting, None), types::KV_TRANSFER_READY).reason,
            reason::KV_PEERS_NOT_READY
        );
    }

    #[test]
    fn precise_mode_says_whose_kv_events_reach_the_endpoint_picker_without_failing_it() {
        use crate::kv_events_seen::{KvEventsSeen, Seen};
        let mut observed = pd(2, 2);
        observed.kv_events = Some(KvEventsSeen::Read(
            [(
                "x-epp-a".to_string(),
                Seen {
                    flowing: 1,
                    pods: 4,
                },
            )]
            .into(),
        ));
        let v = compute(&observed, None);
        let epp = find(&v, types::ENDPOINT_PICKER_READY);
        assert!(epp.status, "approximate matching stands in meanwhile");
        assert!(
            epp.message.starts_with(
                "1/1 EndpointPicker pods ready; precise prefix routing: KV events flowing \
                 from 1 of 4 model-server pods on every EndpointPicker replica"
            ),
            "{}",
            epp.message
        );
    }

    #[test]
    fn missing_prefill_pods_fail_prefill_kv_and_ready() {
        let v = compute(&pd(0, 2), None);
        assert!(!find(&v, types::PREFILL_READY).status);
        assert!(!find(&v, types::KV_TRANSFER_READY).status);
        let ready = find(&v, types::READY);
        assert!(!ready.status);
        assert_eq!(ready.message, "not ready: PrefillReady, KVTransferReady");
    }

    #[test]
    fn aggregated_serving_needs_no_kv_transfer() {
        let mut observed = pd(0, 2);
        observed.prefill = None;
        observed.kv_fabric = KvFabric::NotRequired;
        let v = compute(&observed, None);
        assert_eq!(find(&v, types::PREFILL_READY).reason, reason::AGGREGATED);
        assert_eq!(
            find(&v, types::KV_TRANSFER_READY).reason,
            reason::AGGREGATED
        );
        assert!(find(&v, types::READY).status);
    }

    #[test]
    fn unschedulable_pod_is_degraded_with_scheduler_message() {
        let mut observed = pd(2, 1);
        observed.decode.unschedulable =
            Some("0/5 nodes are available: 4 Insufficient nvidia.com/gpu.".into());
        let v = compute(&observed, None);
        let decode = find(&v, types::DECODE_READY);
        assert!(!decode.status);
        assert_eq!(decode.reason, reason::UNSCHEDULABLE);
        let degraded = find(&v, types::DEGRADED);
        assert!(degraded.status);
        assert_eq!(degraded.reason, reason::UNSCHEDULABLE);
        assert!(degraded.message.contains("Insufficient nvidia.com/gpu"));
    }

    #[test]
    fn rollout_in_progress_is_progressing() {
        let mut observed = pd(2, 2);
        observed.decode.updated = 1;
        let v = compute(&observed, None);
        let progressing = find(&v, types::PROGRESSING);
        assert!(progressing.status);
        assert_eq!(progressing.message, "rolling out: x-decode");
        assert!(
            !find(&v, types::KV_TRANSFER_READY).status,
            "pods on the old fabric config"
        );
    }

    #[test]
    fn invalid_spec_is_degraded_and_not_ready() {
        let failure = Failure {
            reason: reason::INVALID_SPEC,
            message: "spec.decode.resources ...".into(),
        };
        let v = compute(&pd(2, 2), Some(&failure));
        assert_eq!(find(&v, types::READY).reason, reason::INVALID_SPEC);
        assert!(!find(&v, types::READY).status);
        assert!(find(&v, types::DEGRADED).status);
        assert!(!find(&v, types::PROGRESSING).status);
    }

    #[test]
    fn transition_time_changes_only_when_status_flips() {
        let t0 = Time(Timestamp::from_second(1_000).expect("ts"));
        let t1 = Time(Timestamp::from_second(2_000).expect("ts"));
        let first = merge(&[], compute(&pd(2, 2), None), 1, &t0);
        assert!(first.iter().all(|c| c.last_transition_time == t0));
        // Same statuses, new messages and generation: times kept.
        let mut observed = pd(2, 2);
        observed.decode = workload("x-decode", 3, 3);
        let second = merge(&first, compute(&observed, None), 2, &t1);
        assert!(second.iter().all(|c| c.last_transition_time == t0));
        assert!(second.iter().all(|c| c.observed_generation == Some(2)));
        // Decode flips to not ready: only the flipped conditions move.
        let third = merge(&second, compute(&pd(2, 0), None), 2, &t1);
        let time_of = |t: &str| {
            third
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| c.last_transition_time.clone())
        };
        assert_eq!(time_of(types::DECODE_READY), Some(t1.clone()));
        assert_eq!(time_of(types::READY), Some(t1));
        assert_eq!(time_of(types::PREFILL_READY), Some(t0));
    }
}
