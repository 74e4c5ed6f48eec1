//! The vLLM model servers of one role: a StatefulSet `<name>-<role>` and its headless
//! Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, ImageVolumeSource, PersistentVolumeClaimVolumeSource, PodReadinessGate,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use llmd_api::{
    KV_EVENTS_PORT, KV_EVENTS_REPLAY_PORT, KvConnector, LLMDeploymentSpec, MODEL_SERVER_PORT,
    PrefixCacheMode, RoleSpec, labels,
};

use llmd_api::leader_worker_set::{
    LeaderWorkerSet, LeaderWorkerSetSpec, LeaderWorkerTemplate, RollingUpdateConfiguration,
    RolloutStrategy, env as lws_env,
};

use super::meta::{Component, Owner, label_value};
use super::pod_parts::{self, field_env, tcp_port, unprivileged};
use super::{kv_transfer, routing_sidecar};

/// Where model weights from a pvc:// or oci:// uri are mounted.
const MODEL_MOUNT: &str = "/models";
/// Hugging Face cache for hf:// models.
const HF_HOME: &str = "/cache/huggingface";

/// The role a set of model servers plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Prefill,
    Decode,
}

impl Role {
    pub fn component(self) -> Component {
        match self {
            Self::Prefill => Component::Prefill,
            Self::Decode => Component::Decode,
        }
    }

    /// Value of the `llm-d.ai/role` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Prefill => labels::ROLE_PREFILL,
            Self::Decode => labels::ROLE_DECODE,
        }
    }
}

/// The spec of a role (the decode role's when asked for a prefill role the spec
/// lacks).
pub fn role_spec(spec: &LLMDeploymentSpec, role: Role) -> &RoleSpec {
    match (role, &spec.prefill) {
        (Role::Prefill, Some(p)) => p,
        _ => &spec.decode,
    }
}

/// The NIXL side-channel ports of a role's pods, named: vLLM gives each
/// data-parallel rank its own, the base port plus the rank.
pub fn side_channel_ports(spec: &LLMDeploymentSpec, role_spec: &RoleSpec) -> Vec<(String, i32)> {
    let base = spec.kv_transfer.side_channel_port;
    (0..role_spec.parallelism.data.max(1))
        .map(|rank| {
            let name = if rank == 0 {
                "nixl".to_string()
            } else {
                format!("nixl-{rank}")
            };
            (name, base + rank)
        })
        .collect()
}

/// Name of the StatefulSet and of its headless Service.
pub fn name(owner: &Owner, role: Role) -> String {
    owner.child_name(role.component().as_str())
}

/// Labels on the pods of a role.
pub fn pod_labels(owner: &Owner, spec: &LLMDeploymentSpec, role: Role) -> BTreeMap<String, String> {
    let mut labels = owner.common_labels(role.component());
    labels.insert(labels::ROLE.to_string(), role.label().to_string());
    labels.insert(labels::INFERENCE_SERVING.to_string(), "true".to_string());
    labels.insert(labels::MODEL.to_string(), label_value(&spec.model.name));
    labels
}

/// The last value an argument list gives `flag` (`--flag v` or `--flag=v`).
fn flag_value<'a>(args: impl IntoIterator<Item = &'a String>, flag: &str) -> Option<&'a str> {
    let mut found = None;
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        if arg == flag {
            found = args.peek().map(|v| v.as_str());
        } else if let Some(v) = arg.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(v);
        }
    }
    found
}

/// The value of [`labels::KV_COMPATIBILITY`] for a role's pods: the hash of what two
/// engines must share to hand each other KV cache: the engine image, the model,
/// the KV block size and dtypes the arguments set (else the engine's defaults) and
/// the KV-transfer fabric.
pub fn kv_compatibility(
    spec: &LLMDeploymentSpec,
    role_spec: &RoleSpec,
    kv_transfer_hash: Option<&str>,
) -> String {
    let args: Vec<&String> = spec.engine.args.iter().chain(&role_spec.args).collect();
    let value = |flag| flag_value(args.iter().copied(), flag).unwrap_or("");
    let canonical = serde_json::json!({
        "image": spec.engine.image,
        "model": [spec.model.uri, spec.model.name],
        "blockSize": value("--block-size"),
        "dtype": value("--dtype"),
        "kvCacheDtype": value("--kv-cache-dtype"),
        "fabric": kv_transfer_hash.unwrap_or(""),
    });
    llmd_api::content_hash::content_hash(canonical.to_string().as_bytes())
}

/// Where the weights come from, as vLLM arguments plus the volume that holds them.
struct ModelSource {
    args: Vec<String>,
    volume: Option<(Volume, VolumeMount)>,
}

fn model_source(uri: &str) -> ModelSource {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("hf", uri));
    match scheme {
        "pvc" => {
            let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
            ModelSource {
                args: vec![
                    "--model".into(),
                    format!("{MODEL_MOUNT}/{path}")
                        .trim_end_matches('/')
                        .to_string(),
                ],
                volume: Some((
                    Volume {
                        name: "model".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: claim.to_string(),
                            read_only: Some(true),
                        }),
                        ..Volume::default()
                    },
                    read_only_mount("model", MODEL_MOUNT),
                )),
            }
        }
        "oci" => ModelSource {
            args: vec!["--model".into(), MODEL_MOUNT.into()],
            volume: Some((
                Volume {
                    name: "model".into(),
                    image: Some(ImageVolumeSource {
                        reference: Some(rest.to_string()),
                        pull_policy: Some("IfNotPresent".into()),
                    }),
                    ..Volume::default()
                },
                read_only_mount("model", MODEL_MOUNT),
            )),
        },
        "s3" => ModelSource {
            args: vec![
                "--model".into(),
                uri.to_string(),
                "--load-format".into(),
                "runai_streamer".into(),
            ],
            volume: None,
        },
        _ => ModelSource {
            args: vec!["--model".into(), rest.to_string()],
            volume: None,
        },
    }
}

fn read_only_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The pod's IP, from the downward API, for the KV-events topic.
const POD_IP_ENV: &str = "POD_IP";

fn precise(spec: &LLMDeploymentSpec) -> bool {
    spec.router.prefix_cache.mode == PrefixCacheMode::Precise
}

/// vLLM's `--kv-events-config` for precise prefix routing, as llm-d configures it:
/// ZeroMQ bound on the pod's events port for every EndpointPicker replica to dial,
/// the topic naming the pod (`$(POD_IP)` is expanded from the container's env); and
/// the replay endpoint, from which an EndpointPicker asks again for messages it
/// missed (a gap, or a restarted replica catching up).
pub fn kv_events_config(served_model: &str) -> String {
    serde_json::json!({
        "enable_kv_cache_events": true,
        "publisher": "zmq",
        "endpoint": format!("tcp://*:{KV_EVENTS_PORT}"),
        "replay_endpoint": format!("tcp://*:{KV_EVENTS_REPLAY_PORT}"),
        "topic": format!("kv@$({POD_IP_ENV}):{MODEL_SERVER_PORT}@{served_model}"),
    })
    .to_string()
}

/// Whether the role's engine sits behind the routing sidecar (decode pods of a
/// disaggregated deployment): it then serves on the sidecar's engine port.
fn behind_sidecar(spec: &LLMDeploymentSpec, role: Role) -> bool {
    role == Role::Decode && routing_sidecar::enabled(spec)
}

/// The port and its name the engine serves on.
fn engine_port(spec: &LLMDeploymentSpec, role: Role) -> (&'static str, i32) {
    if behind_sidecar(spec, role) {
        (
            llmd_api::routing_sidecar::ENGINE_PORT_NAME,
            llmd_api::routing_sidecar::ENGINE_PORT,
        )
    } else {
        ("http", MODEL_SERVER_PORT)
    }
}

/// How long a model-server pod has to stop after SIGTERM.
const TERMINATION_GRACE_SECONDS: i64 = 60;
/// How long vLLM keeps serving the requests in flight after SIGTERM: the grace
/// period less the time the process needs to exit.
const SHUTDOWN_TIMEOUT_SECONDS: i64 = TERMINATION_GRACE_SECONDS - 10;

/// vLLM arguments of one role.
pub fn vllm_args(spec: &LLMDeploymentSpec, role: Role, role_spec: &RoleSpec) -> Vec<String> {
    let mut args = model_source(&spec.model.uri).args;
    args.extend([
        "--served-model-name".to_string(),
        spec.model.name.clone(),
        "--port".to_string(),
        engine_port(spec, role).1.to_string(),
        "--tensor-parallel-size".to_string(),
        role_spec.parallelism.tensor.to_string(),
        // On SIGTERM, finish the requests in flight (vLLM aborts them by default).
        "--shutdown-timeout".to_string(),
        SHUTDOWN_TIMEOUT_SECONDS.to_string(),
    ]);
    if role_spec.parallelism.pipeline > 1 {
        args.extend([
            "--pipeline-parallel-size".to_string(),
            role_spec.parallelism.pipeline.to_string(),
        ]);
    }
    if role_spec.parallelism.data > 1 {
        args.extend([
            "--data-parallel-size".to_string(),
            role_spec.parallelism.data.to_string(),
        ]);
    }
    if let Some(len) = spec.model.max_model_len {
        args.extend(["--max-model-len".to_string(), len.to_string()]);
    }
    if spec.effective_connector() == KvConnector::Nixl {
        args.extend([
            "--kv-transfer-config".to_string(),
            format!("$({})", kv_transfer::config_env(role)),
        ]);
    }
    if precise(spec) {
        args.extend([
            "--kv-events-config".to_string(),
            kv_events_config(&spec.model.name),
        ]);
    }
    args.extend(lora_args(&spec.model));
    args.extend(spec.engine.args.iter().cloned());
    args.extend(role_spec.args.iter().cloned());
    args
}

/// vLLM's LoRA flags when the spec serves adapters (none otherwise). The adapters
/// themselves are not flags: the operator loads them at run time (see
/// `adapter_loader`), so adding one restarts no pod.
fn lora_args(model: &llmd_api::ModelSpec) -> Vec<String> {
    if model.adapters.is_empty() {
        return Vec::new();
    }
    vec![
        "--enable-lora".to_string(),
        "--max-loras".to_string(),
        model.max_loras().to_string(),
    ]
}

/// Container resources: the user's, with the GPU resource set in both requests and
/// limits (extended resources must match). The GPU count is the user's if they set it
/// in either list, else tensor x data.
pub fn resources(role_spec: &RoleSpec) -> ResourceRequirements {
    let mut resources = role_spec.resources.clone().unwrap_or_default();
    let gpu = &role_spec.gpu_resource_name;
    let user_gpus = [&resources.limits, &resources.requests]
        .into_iter()
        .find_map(|list| list.as_ref().and_then(|l| l.get(gpu)).cloned());
    let gpus = user_gpus.unwrap_or_else(|| Quantity(role_spec.layout().gpus_per_pod.to_string()));
    for list in [&mut resources.limits, &mut resources.requests] {
        list.get_or_insert_with(BTreeMap::new)
            .insert(gpu.clone(), gpus.clone());
    }
    resources
}

fn health_probe(port: &str, period: i32, failure_threshold: i32) -> Probe {
    pod_parts::health_probe(port, period, failure_threshold, 5)
}

fn pod_ip_env(name: &str) -> EnvVar {
    field_env(name, "status.podIP")
}

/// Seconds a prefill pod keeps an idle HTTP connection (vLLM's default is 5): the
/// decode side's pooled connections to it must not go stale between requests (llm-d
/// uses 120).
const PREFILL_KEEP_ALIVE_SECONDS: &str = "120";

fn env(spec: &LLMDeploymentSpec, role: Role) -> Vec<EnvVar> {
    let mut env = vec![EnvVar {
        name: "HF_HOME".into(),
        value: Some(HF_HOME.into()),
        ..EnvVar::default()
    }];
    if role == Role::Prefill {
        env.push(EnvVar {
            name: "VLLM_HTTP_TIMEOUT_KEEP_ALIVE".into(),
            value: Some(PREFILL_KEEP_ALIVE_SECONDS.into()),
            ..EnvVar::default()
        });
    }
    if let Some(token) = &spec.model.token_secret {
        env.push(EnvVar {
            name: "HF_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: token.name.clone(),
                    key: token.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    if spec.effective_connector() == KvConnector::Nixl {
        env.push(pod_ip_env(kv_transfer::SIDE_CHANNEL_HOST_ENV));
    }
    if precise(spec) {
        env.push(pod_ip_env(POD_IP_ENV));
    }
    if !spec.model.adapters.is_empty() {
        // vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter.
        env.push(EnvVar {
            name: "VLLM_ALLOW_RUNTIME_LORA_UPDATING".into(),
            value: Some("True".into()),
            ..EnvVar::default()
        });
    }
    env.extend(spec.engine.env.iter().cloned());
    env
}

fn ports(spec: &LLMDeploymentSpec, role: Role) -> Vec<ContainerPort> {
    let (name, port) = engine_port(spec, role);
    let mut ports = vec![tcp_port(name, port)];
    if spec.effective_connector() == KvConnector::Nixl {
        for (name, port) in side_channel_ports(spec, role_spec(spec, role)) {
            ports.push(tcp_port(&name, port));
        }
    }
    if precise(spec) {
        ports.push(tcp_port("kv-events", KV_EVENTS_PORT));
        ports.push(tcp_port("kv-replay", KV_EVENTS_REPLAY_PORT));
    }
    ports
}

/// Size of the memory-backed `/dev/shm`: NCCL's shared-memory transport between the
/// pod's GPU workers needs room per worker; 2 GiB (vLLM's Kubernetes guide) and 1 GiB
/// per GPU beyond two. It counts against the pod's memory like any tmpfs.
pub fn shm_size_gib(role_spec: &RoleSpec) -> i64 {
    role_spec.layout().gpus_per_pod.max(2)
}

fn volumes(spec: &LLMDeploymentSpec, role_spec: &RoleSpec) -> (Vec<Volume>, Vec<VolumeMount>) {
    let empty_dir = |name: &str, medium: Option<&str>, size: Option<Quantity>| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(str::to_string),
            size_limit: size,
        }),
        ..Volume::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    };
    // /dev/shm for NCCL between tensor-parallel workers; a writable cache for weights
    // (the user's claim when given, so a restarted pod finds them).
    let shm = Quantity(format!("{}Gi", shm_size_gib(role_spec)));
    let cache = match &spec.model.cache_claim {
        Some(claim) => Volume {
            name: "cache".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(false),
            }),
            ..Volume::default()
        },
        None => empty_dir("cache", None, None),
    };
    let mut volumes = vec![empty_dir("shm", Some("Memory"), Some(shm)), cache];
    let mut mounts = vec![mount("shm", "/dev/shm"), mount("cache", "/cache")];
    if let Some((volume, volume_mount)) = model_source(&spec.model.uri).volume {
        volumes.push(volume);
        mounts.push(volume_mount);
    }
    // The claims of pvc:// adapters, read-only, each at /adapters/<claim>.
    for (i, claim) in spec.model.adapter_claims().into_iter().enumerate() {
        let name = format!("adapters-{i}");
        volumes.push(Volume {
            name: name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_string(),
                read_only: Some(true),
            }),
            ..Volume::default()
        });
        mounts.push(read_only_mount(
            &name,
            &format!("{}/{claim}", llmd_api::ADAPTER_MOUNT),
        ));
    }
    (volumes, mounts)
}

/// The engine container runs with no privilege it could gain or use: no capability,
/// no escalation. (vLLM's image runs as root and writes caches across its
/// filesystem, so a read-only root filesystem is not imposed; a non-root user is the
/// spec's `engine.podSecurityContext`.)
fn engine_security_context() -> SecurityContext {
    unprivileged()
}

/// The pods' security context: the spec's, with the runtime's default seccomp profile
/// unless it names another.
fn pod_security_context(spec: &LLMDeploymentSpec) -> PodSecurityContext {
    let mut context = spec.engine.pod_security_context.clone().unwrap_or_default();
    context
        .seccomp_profile
        .get_or_insert_with(|| SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        });
    context
}

/// Which pod of a replica a template is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member {
    /// The replica is this one pod.
    Single,
    /// A replica spanning `nodes` pods: the leader (node rank 0) serves the API.
    Leader { nodes: i32 },
    /// One of the other pods: headless (engine ranks, no API server).
    Worker { nodes: i32 },
}

/// vLLM's multi-node arguments on top of `args` (vLLM 0.33 derives each node's
/// tensor, pipeline and data-parallel ranks from `--nnodes` and `--node-rank`; its
/// data-parallel address defaults to `--master-addr`). LeaderWorkerSet puts the
/// leader's address and the pod's index in the group in the environment, which
/// Kubernetes expands into the arguments.
fn member_args(mut args: Vec<String>, member: Member) -> Vec<String> {
    let nodes = match member {
        Member::Single => return args,
        Member::Leader { nodes } | Member::Worker { nodes } => nodes,
    };
    args.extend([
        "--nnodes".to_string(),
        nodes.to_string(),
        "--node-rank".to_string(),
        format!("$({})", lws_env::WORKER_INDEX),
        "--master-addr".to_string(),
        format!("$({})", lws_env::LEADER_ADDRESS),
        "--master-port".to_string(),
        MULTI_NODE_MASTER_PORT.to_string(),
        "--distributed-executor-backend".to_string(),
        "mp".to_string(),
    ]);
    if matches!(member, Member::Worker { .. }) {
        args.push("--headless".to_string());
    }
    args
}

/// The torch.distributed rendezvous port on a multi-node replica's leader.
pub const MULTI_NODE_MASTER_PORT: i32 = 29501;

/// What one role's pods are built from.
#[derive(Clone, Copy)]
pub struct RolePods<'a> {
    pub owner: &'a Owner,
    pub spec: &'a LLMDeploymentSpec,
    pub role: Role,
    pub role_spec: &'a RoleSpec,
    /// The KV-transfer fabric's hash, in the pod template so a change rolls the pods.
    pub kv_transfer_hash: Option<&'a str>,
    /// The routing sidecar's image, for decode pods that have one.
    pub sidecar_image: &'a str,
}

impl RolePods<'_> {
    /// The pod template: `member` says which pod of a replica it is for.
    pub fn template(&self, member: Member) -> PodTemplateSpec {
        let RolePods {
            owner,
            spec,
            role,
            role_spec,
            kv_transfer_hash,
            sidecar_image,
        } = *self;
        let (mut volumes, volume_mounts) = volumes(spec, role_spec);
        let serves = !matches!(member, Member::Worker { .. });
        let probe_port = engine_port(spec, role).0;
        let annotations = kv_transfer_hash
            .map(|hash| BTreeMap::from([(labels::KV_TRANSFER_HASH.to_string(), hash.to_string())]));
        let env_from = kv_transfer_hash.map(|_| {
            vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: kv_transfer::name(owner),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]
        });
        let container = Container {
            name: "vllm".into(),
            image: Some(spec.engine.image.clone()),
            args: Some(member_args(vllm_args(spec, role, role_spec), member)),
            env: Some(env(spec, role)),
            env_from,
            ports: Some(ports(spec, role)),
            resources: Some(resources(role_spec)),
            // A headless worker serves no HTTP: it is ready while it runs.
            readiness_probe: serves.then(|| health_probe(probe_port, 5, 3)),
            liveness_probe: serves.then(|| health_probe(probe_port, 10, 3)),
            // Loading weights can take long: up to an hour before liveness applies.
            startup_probe: serves.then(|| health_probe(probe_port, 10, 360)),
            volume_mounts: Some(volume_mounts),
            security_context: Some(engine_security_context()),
            ..Container::default()
        };
        let mut template_labels = pod_labels(owner, spec, role);
        if !serves {
            // Not an endpoint: the EndpointPicker, the InferencePool and the adapter
            // loader select serving pods only.
            template_labels.remove(labels::INFERENCE_SERVING);
        }
        template_labels.insert(
            labels::KV_COMPATIBILITY.to_string(),
            kv_compatibility(spec, role_spec, kv_transfer_hash),
        );
        let mut containers = vec![container];
        let mut service_account = None;
        if serves && behind_sidecar(spec, role) {
            template_labels.insert(labels::ROUTING_SIDECAR.to_string(), "true".to_string());
            containers.push(routing_sidecar::container(owner, spec, sidecar_image));
            volumes.push(routing_sidecar::token_volume());
            service_account = Some(routing_sidecar::name(owner));
        }
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(template_labels),
                annotations,
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers,
                service_account_name: service_account,
                volumes: Some(volumes),
                node_selector: non_empty_map(&role_spec.node_selector),
                tolerations: non_empty_vec(&role_spec.tolerations),
                affinity: role_spec.affinity.clone(),
                termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                // The engine needs no API access (the sidecar's token is
                // projected into its container alone), nor every Service of
                // the namespace in its environment.
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                security_context: Some(pod_security_context(spec)),
                // Ready once the operator has loaded the adapters into the engine (the
                // leader's, for a replica spanning nodes: workers serve no API).
                readiness_gates: (serves && !spec.model.adapters.is_empty()).then(|| {
                    vec![PodReadinessGate {
                        condition_type: llmd_api::ADAPTERS_LOADED_CONDITION.into(),
                    }]
                }),
                ..PodSpec::default()
            }),
        }
    }

    /// The StatefulSet of a role whose replica is one pod.
    pub fn stateful_set(&self, replicas: i32) -> StatefulSet {
        let (owner, role) = (self.owner, self.role);
        let name = name(owner, role);
        StatefulSet {
            metadata: owner.object_meta(name.clone(), role.component()),
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                service_name: Some(name),
                pod_management_policy: Some("Parallel".into()),
                selector: LabelSelector {
                    match_labels: Some(owner.selector_labels(role.component())),
                    ..LabelSelector::default()
                },
                template: self.template(Member::Single),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }
    }

    /// The LeaderWorkerSet of a role whose replica spans nodes: `replicas` groups
    /// of one leader (serving the API, behind the sidecar where the role has one)
    /// and its headless workers, one pod per node; a failed pod recreates its group.
    pub fn leader_worker_set(&self, replicas: i32) -> LeaderWorkerSet {
        let (owner, role) = (self.owner, self.role);
        let nodes = self.role_spec.layout().nodes;
        LeaderWorkerSet {
            metadata: owner.object_meta(name(owner, role), role.component()),
            spec: LeaderWorkerSetSpec {
                replicas: Some(replicas),
                leader_worker_template: LeaderWorkerTemplate {
                    leader_template: Some(self.template(Member::Leader { nodes })),
                    worker_template: self.template(Member::Worker { nodes }),
                    size: Some(nodes),
                    restart_policy: Some("RecreateGroupOnPodRestart".into()),
                },
                rollout_strategy: Some(RolloutStrategy {
                    type_: "RollingUpdate".into(),
                    rolling_update_configuration: Some(RollingUpdateConfiguration {
                        max_unavailable: Some(IntOrString::Int(1)),
                        max_surge: Some(IntOrString::Int(0)),
                    }),
                }),
                startup_policy: Some("LeaderCreated".into()),
            },
            status: None,
        }
    }
}

/// The headless Service that gives each pod of the role a stable DNS name.
pub fn headless_service(owner: &Owner, spec: &LLMDeploymentSpec, role: Role) -> Service {
    let mut ports = vec![ServicePort {
        name: Some("http".into()),
        port: MODEL_SERVER_PORT,
        target_port: Some(IntOrString::String("http".into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }];
    if spec.effective_connector() == KvConnector::Nixl {
        for (name, port) in side_channel_ports(spec, role_spec(spec, role)) {
            ports.push(ServicePort {
                name: Some(name.clone()),
                port,
                target_port: Some(IntOrString::String(name)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            });
        }
    }
    Service {
        metadata: owner.object_meta(name(owner, role), role.component()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(owner.selector_labels(role.component())),
            publish_not_ready_addresses: Some(true),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn non_empty_map(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.clone())
}

fn non_empty_vec<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_source_maps_each_scheme() {
        assert_eq!(model_source("hf://org/m").args, ["--model", "org/m"]);
        let pvc = model_source("pvc://weights/llama/8b");
        assert_eq!(pvc.args, ["--model", "/models/llama/8b"]);
        let (volume, _) = pvc.volume.expect("pvc volume");
        assert_eq!(
            volume.persistent_volume_claim.map(|p| p.claim_name),
            Some("weights".to_string())
        );
        assert_eq!(model_source("pvc://weights").args, ["--model", "/models"]);
        assert_eq!(
            model_source("s3://bucket/m").args,
            [
                "--model",
                "s3://bucket/m",
                "--load-format",
                "runai_streamer"
            ]
        );
        let oci = model_source("oci://registry.example/models/llama:8b");
        let (volume, mount) = oci.volume.expect("image volume");
        assert_eq!(
            volume.image.and_then(|i| i.reference),
            Some("registry.example/models/llama:8b".to_string())
        );
        assert_eq!(mount.mount_path, "/models");
    }

    #[test]
    fn kv_compatibility_changes_with_what_kv_handoff_depends_on() {
        let spec: LLMDeploymentSpec = serde_json::from_value(serde_json::json!({
            "model": {"name": "m", "uri": "hf://org/m"},
            "decode": {"replicas": 1},
        }))
        .expect("spec");
        let base = kv_compatibility(&spec, &spec.decode, Some("f1"));
        assert_eq!(base.len(), 16);
        assert_eq!(base, kv_compatibility(&spec, &spec.decode, Some("f1")));
        let mut other = spec.clone();
        other.engine.image = "vllm/vllm-openai:v0.34.0".into();
        assert_ne!(base, kv_compatibility(&other, &other.decode, Some("f1")));
        assert_ne!(base, kv_compatibility(&spec, &spec.decode, Some("f2")));
        let mut role = spec.decode.clone();
        role.args = vec!["--block-size=32".into()];
        let with_block = kv_compatibility(&spec, &role, Some("f1"));
        assert_ne!(base, with_block);
        role.args = vec!["--block-size".into(), "32".into()];
        assert_eq!(with_block, kv_compatibility(&spec, &role, Some("f1")));
        // What does not touch the KV layout leaves it alone.
        role.args = vec!["--max-num-seqs".into(), "8".into()];
        assert_eq!(base, kv_compatibility(&spec, &role, Some("f1")));
    }

    /// The decode StatefulSet of `ld` with the spec's replicas.
    fn decode_set(owner: &Owner, ld: &llmd_api::LLMDeployment) -> StatefulSet {
        RolePods {
            owner,
            spec: &ld.spec,
            role: Role::Decode,
            role_spec: &ld.spec.decode,
            kv_transfer_hash: Some("h"),
            sidecar_image: "epp",
        }
        .stateful_set(ld.spec.decode.replicas)
    }

    #[test]
    fn the_routing_sidecar_can_be_sized_or_switched_off() {
        let mut ld = crate::build::tests::sample(crate::build::tests::PD_NIXL);
        let owner = Owner::of(&ld).expect("owner");
        let pod = |ld: &llmd_api::LLMDeployment| {
            decode_set(&owner, ld)
                .spec
                .and_then(|s| s.template.spec)
                .expect("pod")
        };
        ld.spec.router.sidecar.resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), Quantity("250m".into()))])),
            ..ResourceRequirements::default()
        });
        let with = pod(&ld);
        assert_eq!(with.containers.len(), 2);
        assert_eq!(
            with.containers[1]
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("cpu")),
            Some(&Quantity("250m".into()))
        );
        ld.spec.router.sidecar.enabled = false;
        let without = pod(&ld);
        assert_eq!(without.containers.len(), 1, "no sidecar");
        assert_eq!(without.service_account_name, None);
        let ports = without.containers[0].ports.clone().unwrap_or_default();
        assert_eq!(
            (ports[0].name.as_deref(), ports[0].container_port),
            (Some("http"), 8000)
        );
        let children = crate::build::build(&owner, &ld.spec, &Default::default());
        assert!(children.routing_sidecar.is_none());
        assert!(
            children
                .undesired(&owner)
                .iter()
                .any(|(_, name)| name == "llama-pd-routing-sidecar"),
            "its ServiceAccount and RBAC are pruned"
        );
    }

    #[test]
    fn each_data_parallel_rank_declares_its_own_side_channel_port() {
        let mut ld = crate::build::tests::sample(crate::build::tests::PD_NIXL);
        ld.spec.decode.parallelism.data = 3;
        let owner = Owner::of(&ld).expect("owner");
        let sts = decode_set(&owner, &ld);
        let pod = sts.spec.and_then(|s| s.template.spec).expect("pod");
        let nixl: Vec<(String, i32)> = pod.containers[0]
            .ports
            .iter()
            .flatten()
            .filter(|p| p.name.as_deref().is_some_and(|n| n.starts_with("nixl")))
            .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
            .collect();
        assert_eq!(
            nixl,
            [
                ("nixl".into(), 5600),
                ("nixl-1".into(), 5601),
                ("nixl-2".into(), 5602)
            ]
        );
        let svc = headless_service(&owner, &ld.spec, Role::Decode);
        let ports = svc.spec.and_then(|s| s.ports).unwrap_or_default();
        assert_eq!(
            ports
                .iter()
                .filter(|p| p.port >= 5600 && p.port <= 5602)
                .count(),
            3
        );
        // Prefill keeps one rank.
        let prefill = crate::build::model_server::role_spec(&ld.spec, Role::Prefill);
        assert_eq!(side_channel_ports(&ld.spec, prefill).len(), 1);
    }

    #[test]
    fn gpu_request_follows_parallelism_unless_set() {
        let mut role = RoleSpec::default();
        role.parallelism.tensor = 4;
        role.parallelism.data = 2;
        let res = resources(&role);
        assert_eq!(
            res.limits.as_ref().and_then(|l| l.get("nvidia.com/gpu")),
            Some(&Quantity("8".into()))
        );
        assert_eq!(
            res.requests.as_ref().and_then(|l| l.get("nvidia.com/gpu")),
            Some(&Quantity("8".into()))
        );

        role.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "nvidia.com/gpu".to_string(),
                Quantity("1".into()),
            )])),
            ..ResourceRequirements::default()
        });
        let res = resources(&role);
        assert_eq!(
            res.limits.as_ref().and_then(|l| l.get("nvidia.com/gpu")),
            Some(&Quantity("1".into()))
        );
        assert_eq!(
            res.requests.as_ref().and_then(|l| l.get("nvidia.com/gpu")),
            Some(&Quantity("1".into()))
        );
    }
}
