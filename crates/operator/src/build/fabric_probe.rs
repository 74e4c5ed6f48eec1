//! The KV fabric probe's objects: the probe script's ConfigMap and two Jobs on the
//! engine image, a server beside a prefill pod and a sender beside a decode pod,
//! that run a real NIXL transfer (host memory over UCX, no GPU) with the engines'
//! fabric settings and side-channel port. Once per fabric config; the result, read
//! from the pods' termination messages, goes into status and `KVTransferReady`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapEnvSource, ConfigMapVolumeSource, Container, EnvFromSource,
    PodAffinity, PodAffinityTerm, PodSpec, PodTemplateSpec, ResourceRequirements, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use llmd_api::content_hash::content_hash;
use llmd_api::{KvTransferStatus, LLMDeploymentSpec, labels};
use serde_json::Value;

use super::kv_transfer;
use super::meta::{Component, Owner};
use super::model_server::{Role, role_spec};
use super::pod_parts::unprivileged;

/// The probe program (Python, on the engine image with NIXL).
pub const SCRIPT: &str = include_str!("fabric_probe.py");
const SCRIPT_KEY: &str = "fabric_probe.py";
const SCRIPT_DIR: &str = "/etc/llmd-fabric-probe";
/// Where the probe writes its result: the container's termination message.
const RESULT_FILE: &str = "/dev/termination-log";
/// Bytes written: enough to measure, small enough for any node.
const SIZE_MIB: u32 = 64;
/// How long each side waits for the other (handshake, buffer, write).
const WAIT_SECONDS: u32 = 60;
/// The Job's hard limit: a probe never hangs.
const DEADLINE_SECONDS: i64 = 180;

/// Which side of the transfer a Job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Beside a prefill pod: registers a buffer, answers the handshake, checks.
    Server,
    /// Beside a decode pod: writes into the server's buffer and measures.
    Sender,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Sender => "sender",
        }
    }

    fn role(self) -> Role {
        match self {
            Side::Server => Role::Prefill,
            Side::Sender => Role::Decode,
        }
    }
}

/// What identifies one probe: the fabric's hash, plus the value of the
/// `llmd.dev/reprobe-fabric` annotation when a user asks for a new probe.
pub fn probe_key(fabric_hash: &str, reprobe: Option<&str>) -> String {
    match reprobe.filter(|v| !v.is_empty()) {
        Some(v) => format!("{fabric_hash}/{v}"),
        None => fabric_hash.to_string(),
    }
}

/// The fabric hash of a spec (the KV-transfer ConfigMap's), `None` without NIXL.
pub fn fabric_hash(spec: &LLMDeploymentSpec) -> Option<String> {
    (spec.effective_connector() == llmd_api::KvConnector::Nixl)
        .then(|| kv_transfer::hash(&kv_transfer::data(&spec.kv_transfer, spec.nixl_per_role())))
}

pub fn config_map_name(owner: &Owner) -> String {
    owner.child_name("fabric-probe")
}

pub fn job_name(owner: &Owner, side: Side) -> String {
    owner.child_name(&format!("fabric-probe-{}", side.label()))
}

/// The label carrying the probe key's hash on the Jobs and their pods.
pub fn key_label(key: &str) -> String {
    content_hash(key.as_bytes())
}

pub fn config_map(owner: &Owner) -> ConfigMap {
    ConfigMap {
        metadata: owner.object_meta(config_map_name(owner), Component::KvTransfer),
        data: Some(BTreeMap::from([(
            SCRIPT_KEY.to_string(),
            SCRIPT.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

/// Next to a pod of `role` of this deployment: on a node that runs one.
fn beside(owner: &Owner, role: Role) -> Affinity {
    Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([
                        (labels::INSTANCE.to_string(), owner.name.clone()),
                        (labels::ROLE.to_string(), role.label().to_string()),
                    ])),
                    ..LabelSelector::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn args(spec: &LLMDeploymentSpec, side: Side, target: Option<&str>) -> Vec<String> {
    let mut args = vec![
        format!("{SCRIPT_DIR}/{SCRIPT_KEY}"),
        side.label()
            .replace("server", "serve")
            .replace("sender", "send"),
        "--port".into(),
        spec.kv_transfer.side_channel_port.to_string(),
        "--size-mib".into(),
        SIZE_MIB.to_string(),
        "--timeout".into(),
        WAIT_SECONDS.to_string(),
        "--result-file".into(),
        RESULT_FILE.into(),
    ];
    if let Some(t) = target {
        args.extend(["--target".into(), t.to_string()]);
    }
    args
}

/// One side's Job; the sender's names the server pod's address.
pub fn job(
    owner: &Owner,
    spec: &LLMDeploymentSpec,
    side: Side,
    key: &str,
    target: Option<&str>,
) -> Job {
    let role = side.role();
    let role_spec = role_spec(spec, role);
    let mut pod_labels = owner.common_labels(Component::KvTransfer);
    pod_labels.insert(labels::FABRIC_PROBE.to_string(), side.label().to_string());
    pod_labels.insert(labels::FABRIC_PROBE_KEY.to_string(), key_label(key));
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])
    };
    let container = Container {
        name: "probe".into(),
        image: Some(spec.engine.image.clone()),
        command: Some(vec!["python3".into()]),
        args: Some(args(spec, side, target)),
        // The engines' fabric environment (UCX transports, side channel).
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: kv_transfer::name(owner),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities("100m", "256Mi")),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("1Gi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "probe".into(),
            mount_path: SCRIPT_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        security_context: Some(unprivileged()),
        termination_message_path: Some(RESULT_FILE.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let mut meta = owner.object_meta(job_name(owner, side), Component::KvTransfer);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::FABRIC_PROBE_KEY.to_string(), key_label(key));
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(DEADLINE_SECONDS),
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    volumes: Some(vec![Volume {
                        name: "probe".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: config_map_name(owner),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    affinity: Some(beside(owner, role)),
                    node_selector: (!role_spec.node_selector.is_empty())
                        .then(|| role_spec.node_selector.clone()),
                    tolerations: (!role_spec.tolerations.is_empty())
                        .then(|| role_spec.tolerations.clone()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// What a finished probe pod reported: its termination message (the probe's JSON
/// line), its exit code, and the nodes of the two sides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Finished<'a> {
    pub message: Option<&'a str>,
    pub exit_code: i32,
    pub from_node: Option<&'a str>,
    pub to_node: Option<&'a str>,
}

fn cause_text(cause: &str) -> &str {
    match cause {
        "handshake_refused" => "NIXL handshake refused",
        "transport_unavailable" => "UCX transport unavailable",
        "timeout" => "timed out",
        "corrupted" => "the bytes arrived corrupted",
        "nixl_unavailable" => "NIXL is not installed in the engine image",
        _ => "failed",
    }
}

/// The status a finished probe leaves, for `key`.
pub fn result(key: &str, side: Side, f: &Finished<'_>, now: &str) -> KvTransferStatus {
    let parsed: Option<Value> = f
        .message
        .and_then(|m| m.lines().rev().find_map(|l| serde_json::from_str(l).ok()));
    let status = |proven: bool, message: String, gb: Option<f64>| KvTransferStatus {
        probed: key.to_string(),
        proven,
        message,
        gb_per_second: gb,
        probed_at: Some(now.to_string()),
    };
    let path = match (f.from_node, f.to_node) {
        (Some(a), Some(b)) => format!("from node {a} to node {b}"),
        _ => "from a decode node to a prefill node".to_string(),
    };
    match parsed {
        Some(v) if v["ok"] == Value::Bool(true) && v.get("gbPerSecond").is_some() => {
            let bytes = v["bytes"].as_f64().unwrap_or(0.0);
            let seconds = v["seconds"].as_f64().unwrap_or(0.0);
            let gb = v["gbPerSecond"].as_f64();
            let handshake = v["handshakeSeconds"].as_f64().unwrap_or(0.0);
            status(
                true,
                format!(
                    "NIXL wrote {:.0} MiB {path} in {:.1} ms ({:.2} GB/s) after a {:.2} s handshake",
                    bytes / f64::from(1u32 << 20),
                    seconds * 1000.0,
                    gb.unwrap_or(0.0),
                    handshake
                ),
                gb,
            )
        }
        Some(v) if v["ok"] == Value::Bool(false) => {
            let cause = v["cause"].as_str().unwrap_or("");
            let detail = v["detail"].as_str().unwrap_or("");
            status(
                false,
                format!(
                    "probe {} ({}): {cause}: {detail}",
                    cause_text(cause),
                    side.label()
                ),
                None,
            )
        }
        // The server's own success is the sender's write arriving: no timing.
        Some(v) if v["ok"] == Value::Bool(true) => {
            status(true, format!("NIXL transfer {path} arrived intact"), None)
        }
        _ if f.exit_code == 0 => status(
            true,
            format!("the probe completed {path} but reported no measurement"),
            None,
        ),
        _ => status(
            false,
            format!(
                "probe {} exited {} without a result: {}",
                side.label(),
                f.exit_code,
                f.message
                    .unwrap_or("no message")
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::{PD_NIXL, sample};

    fn at(key: &str, side: Side, message: Option<&str>, code: i32) -> KvTransferStatus {
        let f = Finished {
            message,
            exit_code: code,
            from_node: Some("gpu-1"),
            to_node: Some("gpu-0"),
        };
        result(key, side, &f, "2026-11-30T00:00:00Z")
    }

    #[test]
    fn a_measured_transfer_proves_the_fabric_with_its_bandwidth() {
        let s = at(
            "k",
            Side::Sender,
            Some(
                r#"{"ok":true,"role":"send","bytes":67108864,"seconds":0.0143,"gbPerSecond":4.705,"handshakeSeconds":0.18}"#,
            ),
            0,
        );
        assert!(s.proven);
        assert_eq!(s.gb_per_second, Some(4.705));
        assert_eq!(
            s.message,
            "NIXL wrote 64 MiB from node gpu-1 to node gpu-0 in 14.3 ms (4.71 GB/s) after a 0.18 s handshake"
        );
        assert_eq!(s.probed, "k");
    }

    #[test]
    fn a_failed_probe_names_its_cause() {
        let s = at(
            "k",
            Side::Sender,
            Some(
                r#"{"ok":false,"cause":"handshake_refused","detail":"no NIXL handshake with 10.0.0.3:5601 within 60s"}"#,
            ),
            1,
        );
        assert!(!s.proven);
        assert!(
            s.message
                .starts_with("probe NIXL handshake refused (sender)"),
            "{}",
            s.message
        );
        assert!(s.message.contains("10.0.0.3:5601"));
        let s = at(
            "k",
            Side::Server,
            Some("Traceback ...\nImportError: libucs.so"),
            1,
        );
        assert!(!s.proven);
        assert!(
            s.message.contains("exited 1") && s.message.contains("libucs"),
            "{}",
            s.message
        );
        // A pod that completed without running the probe (a simulated node).
        assert!(at("k", Side::Server, None, 0).proven);
    }

    #[test]
    fn the_jobs_run_beside_the_roles_with_the_fabric_and_a_deadline() {
        let ld = sample(PD_NIXL);
        let owner = Owner::of(&ld).expect("owner");
        let key = probe_key("abc", None);
        let server = job(&owner, &ld.spec, Side::Server, &key, None);
        let sender = job(&owner, &ld.spec, Side::Sender, &key, Some("10.0.0.7"));
        assert_eq!(
            server.metadata.name.as_deref(),
            Some("llama-pd-fabric-probe-server")
        );
        let pod = |j: &Job| {
            j.spec
                .as_ref()
                .and_then(|s| s.template.spec.clone())
                .expect("pod")
        };
        let (sp, cp) = (pod(&server), pod(&sender));
        let c = &sp.containers[0];
        assert_eq!(c.command.as_deref(), Some(&["python3".to_string()][..]));
        let a = c.args.clone().unwrap_or_default();
        assert_eq!(a[1], "serve");
        assert!(a.windows(2).any(|w| w == ["--port", "5600"]), "{a:?}");
        let sa = cp.containers[0].args.clone().unwrap_or_default();
        assert_eq!(sa[1], "send");
        assert!(
            sa.windows(2).any(|w| w == ["--target", "10.0.0.7"]),
            "{sa:?}"
        );
        let role_of = |p: &PodSpec| {
            p.affinity
                .as_ref()
                .and_then(|a| a.pod_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()?[0]
                        .label_selector
                        .as_ref()?
                        .match_labels
                        .as_ref()?
                        .get(labels::ROLE)
                        .cloned()
                })
        };
        assert_eq!(role_of(&sp).as_deref(), Some("prefill"));
        assert_eq!(role_of(&cp).as_deref(), Some("decode"));
        let js = server.spec.as_ref().expect("spec");
        assert_eq!(
            (js.backoff_limit, js.active_deadline_seconds),
            (Some(0), Some(180))
        );
        assert_eq!(
            c.env_from
                .as_ref()
                .and_then(|e| e[0].config_map_ref.as_ref())
                .map(|r| r.name.as_str()),
            Some("llama-pd-kv-transfer")
        );
        assert!(
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some_and(|r| !r.keys().any(|k| k.contains("gpu"))),
            "no GPU"
        );
        assert_ne!(probe_key("abc", Some("again")), key);
        assert!(fabric_hash(&ld.spec).is_some());
    }
}
