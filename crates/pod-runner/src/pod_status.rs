//! The status a pod gets from what its containers are doing: phase, conditions
//! and container statuses, computed as the kubelet does, as a pure function so
//! every rule has a test. The runner writes the result as a strategic merge patch
//! of the status subresource; `PodScheduled` (the scheduler's) is left alone.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed` (exit 0), `Error`, or why the runner stopped it.
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub container_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Terminated),
}

/// What the runner knows about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// The local program standing in for the image.
    pub image_id: String,
    /// `llmd://<pid>` while a process exists.
    pub container_id: Option<String>,
    pub state: State,
    pub last_terminated: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    /// Startup probe passed (or none) while running.
    pub started: bool,
}

impl ContainerView {
    pub fn waiting(name: &str, image: &str, reason: &str, restart_count: i32) -> Self {
        Self {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            container_id: None,
            state: State::Waiting {
                reason: reason.to_string(),
                message: None,
            },
            last_terminated: None,
            restart_count,
            ready: false,
            started: false,
        }
    }
}

/// Everything the status is computed from.
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: Ipv4Addr,
    /// The pod's network exists (PodReadyToStartContainers).
    pub sandbox_ready: bool,
    pub start_time: Timestamp,
    pub containers: &'a [ContainerView],
    pub now: Timestamp,
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// The pod phase (kubelet `getPhase`): a container still waiting for its first
/// start keeps the pod Pending; once all have stopped, restartPolicy decides
/// between Running (they restart), Succeeded and Failed.
pub fn phase(containers: &[ContainerView], policy: &str) -> &'static str {
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } => {
                if c.last_terminated.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if containers.is_empty() || waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    // Every container has stopped (and some may restart).
    match policy {
        "Always" => "Running",
        _ if stopped == succeeded => "Succeeded",
        "Never" => "Failed",
        _ => "Running",
    }
}

/// A pod that will not run again.
pub fn is_terminal(phase: &str) -> bool {
    matches!(phase, "Succeeded" | "Failed")
}

fn condition(
    pod: &Pod,
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status = if status { "True" } else { "False" };
    let existing = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let since = existing
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(since),
        ..PodCondition::default()
    }
}

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(Time),
        finished_at: Some(Time(t.finished_at)),
        container_id: t.container_id.clone(),
    }
}

fn container_status(c: &ContainerView) -> ContainerStatus {
    let state = match &c.state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..ContainerState::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(terminated(t)),
            ..ContainerState::default()
        },
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.clone(),
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        state: Some(state),
        last_state: Some(ContainerState {
            terminated: c.last_terminated.as_ref().map(terminated),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

/// The status patch (strategic merge) for the pod.
pub fn status_patch(view: &PodView<'_>) -> Value {
    let pod = view.pod;
    let phase = phase(view.containers, restart_policy(pod));
    let terminal = is_terminal(phase);
    let unready: Vec<&str> = view
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let containers_ready = !terminal && unready.is_empty() && !view.containers.is_empty();
    let gates_open = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .into_iter()
        .flatten()
        .all(|g| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == g.condition_type && c.status == "True")
        });
    let not_ready = |ok: bool, gate_reason: bool| -> (Option<&str>, Option<String>) {
        if ok {
            (None, None)
        } else if terminal {
            (Some("PodCompleted"), None)
        } else if gate_reason {
            (Some("ReadinessGatesNotReady"), None)
        } else {
            (
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        }
    };
    let now = view.now;
    let (cr_reason, cr_msg) = not_ready(containers_ready, false);
    let ready = containers_ready && gates_open;
    let (r_reason, r_msg) = not_ready(ready, containers_ready && !gates_open);
    let conditions = vec![
        condition(
            pod,
            "PodReadyToStartContainers",
            view.sandbox_ready,
            None,
            None,
            now,
        ),
        condition(pod, "Initialized", true, None, None, now),
        condition(
            pod,
            "ContainersReady",
            containers_ready,
            cr_reason,
            cr_msg.clone(),
            now,
        ),
        condition(pod, "Ready", ready, r_reason, r_msg, now),
    ];
    // Conditions are merged by type: a reason or message that no longer applies
    // must be removed explicitly (null), or the old one stays.
    let conditions: Vec<Value> = conditions
        .into_iter()
        .map(|c| {
            let mut v = json!(c);
            for key in ["reason", "message"] {
                if v.get(key).is_none() {
                    v[key] = Value::Null;
                }
            }
            v
        })
        .collect();
    let statuses: Vec<ContainerStatus> = view.containers.iter().map(container_status).collect();
    let mut status = json!({
        "phase": phase,
        "hostIP": view.host_ip.to_string(),
        "hostIPs": [{"ip": view.host_ip.to_string()}],
        "startTime": Time(view.start_time),
        "conditions": conditions,
        "containerStatuses": statuses,
    });
    if let Some(ip) = view.pod_ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodReadinessGate, PodSpec, PodStatus};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    fn running(name: &str, ready: bool, restarts: i32) -> ContainerView {
        ContainerView {
            state: State::Running { started_at: t(0) },
            ready,
            started: true,
            ..ContainerView::waiting(name, "img", "", restarts)
        }
    }

    fn exited(name: &str, code: i32) -> ContainerView {
        ContainerView {
            state: State::Terminated(Terminated {
                exit_code: code,
                signal: None,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: None,
                started_at: Some(t(0)),
                finished_at: t(5),
                container_id: None,
            }),
            ..ContainerView::waiting(name, "img", "", 0)
        }
    }

    fn pod(policy: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn patch(pod: &Pod, containers: &[ContainerView]) -> Value {
        status_patch(&PodView {
            pod,
            pod_ip: Some(Ipv4Addr::new(10, 213, 0, 2)),
            host_ip: Ipv4Addr::new(10, 213, 0, 1),
            sandbox_ready: true,
            start_time: t(0),
            containers,
            now: t(10),
        })
    }

    fn cond<'a>(p: &'a Value, type_: &str) -> &'a Value {
        p["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .expect("condition")
    }

    #[test]
    fn all_containers_ready_makes_the_pod_ready() {
        let p = pod("Always");
        let s = patch(&p, &[running("a", true, 0), running("b", true, 0)]);
        assert_eq!(s["status"]["phase"], "Running");
        assert_eq!(cond(&s, "Ready")["status"], "True");
        // Clears the reason a not-ready Ready condition had.
        assert_eq!(cond(&s, "Ready")["reason"], Value::Null);
        assert!(
            cond(&s, "Ready")
                .as_object()
                .is_some_and(|o| o.contains_key("message"))
        );
        assert_eq!(s["status"]["podIP"], "10.213.0.2");
        assert_eq!(s["status"]["podIPs"][0]["ip"], "10.213.0.2");
        assert_eq!(s["status"]["hostIP"], "10.213.0.1");
        assert_eq!(
            s["status"]["containerStatuses"][0]["state"]["running"]["startedAt"],
            "2027-01-15T08:00:00Z"
        );
    }

    #[test]
    fn one_unready_container_makes_the_pod_not_ready() {
        let p = pod("Always");
        let s = patch(&p, &[running("a", true, 0), running("b", false, 0)]);
        let ready = cond(&s, "Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "ContainersNotReady");
        assert_eq!(ready["message"], "containers with unready status: [b]");
    }

    #[test]
    fn a_waiting_container_keeps_the_pod_pending_until_it_first_ran() {
        let p = pod("Always");
        let waiting = ContainerView::waiting("a", "img", "CreateContainerConfigError", 0);
        let s = patch(&p, std::slice::from_ref(&waiting));
        assert_eq!(s["status"]["phase"], "Pending");
        assert_eq!(
            s["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
            "CreateContainerConfigError"
        );
        // Crashed and waiting to restart: counted as stopped, the pod stays Running.
        let backoff = ContainerView {
            state: State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: None,
            },
            last_terminated: Some(Terminated {
                exit_code: 137,
                signal: Some(9),
                reason: "Error".into(),
                message: None,
                started_at: Some(t(0)),
                finished_at: t(1),
                container_id: Some("llmd://42".into()),
            }),
            restart_count: 1,
            ..waiting
        };
        let s = patch(&p, &[backoff]);
        assert_eq!(s["status"]["phase"], "Running");
        assert_eq!(s["status"]["containerStatuses"][0]["restartCount"], 1);
        assert_eq!(
            s["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
            137
        );
        assert_eq!(cond(&s, "Ready")["status"], "False");
    }

    #[test]
    fn restart_policy_decides_the_terminal_phase() {
        assert_eq!(phase(&[exited("a", 0)], "Never"), "Succeeded");
        assert_eq!(phase(&[exited("a", 1)], "Never"), "Failed");
        assert_eq!(phase(&[exited("a", 0)], "OnFailure"), "Succeeded");
        assert_eq!(phase(&[exited("a", 1)], "OnFailure"), "Running");
        assert_eq!(phase(&[exited("a", 0)], "Always"), "Running");
        assert_eq!(
            phase(&[exited("a", 0), running("b", true, 0)], "Never"),
            "Running"
        );
        assert_eq!(phase(&[exited("a", 0), exited("b", 2)], "Never"), "Failed");
        assert_eq!(phase(&[], "Always"), "Pending");
        let p = pod("Never");
        let s = patch(&p, &[exited("a", 0)]);
        assert_eq!(cond(&s, "Ready")["reason"], "PodCompleted");
    }

    #[test]
    fn transition_time_is_kept_while_the_status_does_not_change() {
        let mut p = pod("Always");
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(t(3))),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        let s = patch(&p, &[running("a", true, 0)]);
        assert_eq!(cond(&s, "Ready")["lastTransitionTime"], json!(Time(t(3))));
        let s = patch(&p, &[running("a", false, 0)]);
        assert_eq!(cond(&s, "Ready")["lastTransitionTime"], json!(Time(t(10))));
    }

    #[test]
    fn readiness_gates_hold_ready_back() {
        let mut p = pod("Always");
        if let Some(spec) = p.spec.as_mut() {
            spec.readiness_gates = Some(vec![PodReadinessGate {
                condition_type: "example.com/lb".into(),
            }]);
        }
        let s = patch(&p, &[running("a", true, 0)]);
        assert_eq!(cond(&s, "ContainersReady")["status"], "True");
        assert_eq!(cond(&s, "Ready")["reason"], "ReadinessGatesNotReady");
    }
}
