//! The three samples under config/samples build the expected children.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use llmd_api::endpoint_picker_config::{EndpointPickerConfig, plugin, profile};
use llmd_api::{LLMDeployment, labels};

use super::*;

pub(crate) const AGGREGATED: &str =
    include_str!("../../../../config/samples/llmd_v1alpha1_aggregated.yaml");
pub(crate) const PD_NIXL: &str =
    include_str!("../../../../config/samples/llmd_v1alpha1_pd_nixl.yaml");
pub(crate) const AUTOTUNED: &str =
    include_str!("../../../../config/samples/llmd_v1alpha1_autotuned_router.yaml");
pub(crate) const AUTOSCALED: &str =
    include_str!("../../../../config/samples/llmd_v1alpha1_autoscaled_pd.yaml");

/// A sample as the API server would hand it to the operator.
pub(crate) fn sample(yaml: &str) -> LLMDeployment {
    let mut ld: LLMDeployment = serde_yaml::from_str(yaml).expect("sample parses");
    ld.metadata.namespace = Some("inference".into());
    ld.metadata.uid = Some("5f0c6a2e-0000-4000-8000-000000000001".into());
    ld.metadata.generation = Some(1);
    ld
}

fn children(yaml: &str, options: &BuildOptions) -> (Owner, Children) {
    let ld = sample(yaml);
    let owner = Owner::of(&ld).expect("owner");
    let children = build(&owner, &ld.spec, options);
    (owner, children)
}

fn pod_spec(server: &ModelServer) -> &k8s_openapi::api::core::v1::PodSpec {
    server
        .stateful_set()
        .expect("a StatefulSet")
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn vllm(server: &ModelServer) -> &Container {
    &pod_spec(server).containers[0]
}

fn arg_after<'a>(container: &'a Container, flag: &str) -> Option<&'a str> {
    let args = container.args.as_ref()?;
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).map(String::as_str)
}

fn gpus(container: &Container) -> Option<&Quantity> {
    container
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("nvidia.com/gpu")
}

fn epp_config(children: &Children) -> EndpointPickerConfig {
    let data = children.endpoint_picker.config.data.as_ref().expect("data");
    serde_yaml::from_str(&data[llmd_api::endpoint_picker_config::CONFIG_KEY])
        .expect("config parses")
}

/// Every child's metadata, as applied.
fn every_object_meta(
    children: &Children,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta> {
    children
        .in_apply_order()
        .iter()
        .map(|c| serde_json::from_value(c.to_json()["metadata"].clone()).expect("metadata"))
        .collect()
}

#[test]
fn aggregated_sample_builds_decode_only_without_kv_fabric() {
    let (_, children) = children(AGGREGATED, &BuildOptions::default());
    assert!(children.prefill.is_none());
    assert!(children.kv_transfer.is_none());
    assert!(children.inference_pool.is_none(), "CRD not served");
    let sts = &children.decode.stateful_set().expect("a StatefulSet");
    assert_eq!(
        sts.metadata.name.as_deref(),
        Some("llama-aggregated-decode")
    );
    let spec = sts.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(4));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        spec.service_name.as_deref(),
        Some("llama-aggregated-decode")
    );
    let container = vllm(&children.decode);
    assert_eq!(arg_after(container, "--tensor-parallel-size"), Some("2"));
    assert_eq!(
        arg_after(container, "--model"),
        Some("meta-llama/Llama-3.1-8B-Instruct")
    );
    assert_eq!(
        arg_after(container, "--served-model-name"),
        Some("meta-llama/Llama-3.1-8B-Instruct")
    );
    assert_eq!(arg_after(container, "--port"), Some("8000"));
    assert_eq!(arg_after(container, "--max-model-len"), Some("8192"));
    assert_eq!(arg_after(container, "--kv-transfer-config"), None);
    assert_eq!(gpus(container), Some(&Quantity("2".into())));
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(requests.get("cpu"), Some(&Quantity("4".into())));
    let probe_path = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .and_then(|h| h.path.as_deref());
    assert_eq!(probe_path, Some("/health"));
    let config = epp_config(&children);
    assert_eq!(config.scheduling_profiles.len(), 1);
    assert!(
        config
            .plugins
            .iter()
            .any(|p| p.plugin_type == plugin::SINGLE_PROFILE_HANDLER)
    );
}

#[test]
fn pd_sample_builds_both_roles_sharing_one_nixl_fabric() {
    let (owner, children) = children(
        PD_NIXL,
        &BuildOptions {
            inference_pool_served: true,
            ..BuildOptions::default()
        },
    );
    let prefill = children.prefill.as_ref().expect("prefill");
    assert_eq!(
        prefill
            .stateful_set()
            .expect("a StatefulSet")
            .metadata
            .name
            .as_deref(),
        Some("llama-pd-prefill")
    );
    let RoleWorkload::StatefulSet { service, .. } = &prefill.workload else {
        panic!("a StatefulSet role");
    };
    assert_eq!(service.metadata.name.as_deref(), Some("llama-pd-prefill"));
    assert_eq!(
        service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
    let kv = children
        .kv_transfer
        .as_ref()
        .expect("kv-transfer ConfigMap");
    assert_eq!(kv.metadata.name.as_deref(), Some("llama-pd-kv-transfer"));
    let data = kv.data.as_ref().expect("data");
    let kv_config: serde_json::Value =
        serde_json::from_str(&data[kv_transfer::KV_TRANSFER_CONFIG_ENVS[1]]).expect("json");
    assert_eq!(kv_config["kv_connector"], "NixlConnector");
    assert_eq!(kv_config["kv_role"], "kv_consumer");
    assert_eq!(data[kv_transfer::UCX_TLS_ENV], "cuda_ipc,cuda_copy,tcp");
    assert_eq!(data[kv_transfer::SIDE_CHANNEL_PORT_ENV], "5600");
    let hash = kv_transfer::hash(data);

    for (server, role, gpu_count, config) in [
        (
            prefill,
            "prefill",
            "1",
            "$(LLMD_KV_TRANSFER_CONFIG_PREFILL)",
        ),
        (
            &children.decode,
            "decode",
            "2",
            "$(LLMD_KV_TRANSFER_CONFIG_DECODE)",
        ),
    ] {
        let template = &server
            .stateful_set()
            .expect("a StatefulSet")
            .spec
            .as_ref()
            .expect("spec")
            .template;
        let meta = template.metadata.as_ref().expect("template meta");
        let pod_labels = meta.labels.as_ref().expect("labels");
        assert_eq!(pod_labels[labels::ROLE], role);
        assert_eq!(pod_labels[labels::INFERENCE_SERVING], "true");
        assert_eq!(pod_labels[labels::MANAGED_BY], labels::MANAGER);
        assert_eq!(
            meta.annotations.as_ref().expect("annotations")[labels::KV_TRANSFER_HASH],
            hash
        );
        let container = vllm(server);
        assert_eq!(arg_after(container, "--kv-transfer-config"), Some(config));
        assert_eq!(gpus(container), Some(&Quantity(gpu_count.into())));
        let env_from = container.env_from.as_ref().expect("envFrom");
        assert_eq!(
            env_from[0].config_map_ref.as_ref().map(|c| c.name.as_str()),
            Some("llama-pd-kv-transfer")
        );
        let host = container
            .env
            .as_ref()
            .and_then(|e| {
                e.iter()
                    .find(|v| v.name == kv_transfer::SIDE_CHANNEL_HOST_ENV)
            })
            .and_then(|v| v.value_from.as_ref())
            .and_then(|s| s.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(host, Some("status.podIP"));
        let nixl_port = container
            .ports
            .as_ref()
            .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some("nixl")))
            .map(|p| p.container_port);
        assert_eq!(nixl_port, Some(5600));
    }

    let config = epp_config(&children);
    let names: Vec<&str> = config
        .scheduling_profiles
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, [profile::DECODE, profile::PREFILL]);
    let decider = config
        .plugins
        .iter()
        .find(|p| p.plugin_type == plugin::PD_DECIDER)
        .and_then(|p| p.parameters.clone());
    assert_eq!(decider, Some(serde_json::json!({"nonCachedTokens": 256})));
    let decode_weights: BTreeMap<&str, f64> = config.scheduling_profiles[0]
        .plugins
        .iter()
        .filter_map(|p| Some((p.plugin_ref.as_str(), p.weight?)))
        .collect();
    assert_eq!(
        decode_weights,
        BTreeMap::from([
            (plugin::PREFIX_CACHE_SCORER, 3.0),
            (plugin::QUEUE_SCORER, 2.0),
            (plugin::KV_CACHE_UTILIZATION_SCORER, 2.0)
        ])
    );

    let pool = children
        .inference_pool
        .as_ref()
        .expect("pool when CRD served");
    assert_eq!(pool.spec.endpoint_picker_ref.name, "llama-pd-epp");
    assert_eq!(pool.spec.endpoint_picker_ref.port.number, 9002);
    assert_eq!(
        pool.spec.selector.match_labels[labels::INSTANCE],
        "llama-pd"
    );
    assert_eq!(
        endpoint_picker_service::endpoint(&owner),
        "http://llama-pd-epp.inference.svc:8080"
    );
}

#[test]
fn autotuned_sample_builds_router_with_tuned_weights_and_live_config() {
    let tuned = llmd_api::ScorerWeights {
        prefix_cache: 7.5,
        ..llmd_api::ScorerWeights::default()
    };
    let (_, children) = children(
        AUTOTUNED,
        &BuildOptions {
            tuned_weights: Some(tuned),
            ..BuildOptions::default()
        },
    );
    let deployment = &children.endpoint_picker.deployment;
    let spec = deployment.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("qwen-autotuned-epp")
    );
    let args = pod.containers[0].args.as_ref().expect("args");
    assert!(args.windows(2).any(|w| w[0] == "--selector"
        && w[1] == "app.kubernetes.io/instance=qwen-autotuned,llm-d.ai/inference-serving=true"));
    // The config is reloaded live: its hash must not roll the EPP pods.
    let annotations = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref());
    assert!(annotations.is_none_or(|a| a.keys().all(|k| !k.contains("config-hash"))));
    let config = epp_config(&children);
    let prefix_weight = config.scheduling_profiles[0]
        .plugins
        .iter()
        .find(|p| p.plugin_ref == plugin::PREFIX_CACHE_SCORER)
        .and_then(|p| p.weight);
    assert_eq!(prefix_weight, Some(7.5));
    let rules = children.endpoint_picker.role.rules.as_ref().expect("rules");
    for rule in rules {
        assert_eq!(
            rule.verbs,
            ["get", "list", "watch"],
            "EPP role is read-only"
        );
    }
    assert_eq!(gpus(vllm(&children.decode)), Some(&Quantity("4".into())));
}

#[test]
fn precise_prefix_mode_publishes_kv_events_and_the_epps_config_dials_them() {
    let (_, approximate) = children(AGGREGATED, &BuildOptions::default());
    assert_eq!(
        arg_after(vllm(&approximate.decode), "--kv-events-config"),
        None
    );
    let epp_args = |c: &Children| {
        c.endpoint_picker
            .deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers[0].args.clone())
            .unwrap_or_default()
    };
    assert!(!epp_args(&approximate).contains(&"--kv-events-port".to_string()));

    assert!(
        !AGGREGATED.contains("router:"),
        "the sample leaves the router default"
    );
    let yaml = format!("{AGGREGATED}  router:\n    prefixCache: {{mode: Precise}}\n");
    let (_, precise) = children(&yaml, &BuildOptions::default());
    let container = vllm(&precise.decode);
    let config: serde_json::Value = serde_json::from_str(
        arg_after(container, "--kv-events-config").expect("--kv-events-config"),
    )
    .expect("JSON");
    assert_eq!(config["enable_kv_cache_events"], true);
    assert_eq!(config["publisher"], "zmq");
    assert_eq!(config["endpoint"], "tcp://*:5556");
    assert_eq!(config["replay_endpoint"], "tcp://*:5557");
    assert_eq!(
        config["topic"],
        "kv@$(POD_IP):8000@meta-llama/Llama-3.1-8B-Instruct"
    );
    let pod_ip = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_IP")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(pod_ip, Some("status.podIP"));
    for (name, port) in [("kv-events", 5556), ("kv-replay", 5557)] {
        assert!(
            container
                .ports
                .iter()
                .flatten()
                .any(|p| p.name.as_deref() == Some(name) && p.container_port == port),
            "{name} {port}"
        );
    }
    // The EPP hears of it from its config, in llm-d's words, as a live change.
    assert!(!epp_args(&precise).contains(&"--kv-events-port".to_string()));
    let validated = epp_config(&precise).validate().expect("valid");
    assert_eq!(validated.kv_events.map(|k| k.port), Some(5556));
    assert_eq!(validated.kv_events.and_then(|k| k.replay_port), Some(5557));
    assert_eq!(
        epp_config(&approximate).validate().map(|c| c.kv_events),
        Ok(None)
    );
}

#[test]
fn model_server_pods_get_no_token_no_privilege_and_shared_memory_sized_to_their_gpus() {
    for (yaml, shm) in [(AGGREGATED, "2Gi"), (AUTOTUNED, "4Gi")] {
        let (_, children) = children(yaml, &BuildOptions::default());
        let pod = pod_spec(&children.decode);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        let security = pod.containers[0]
            .security_context
            .as_ref()
            .expect("securityContext");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|c| c.seccomp_profile.as_ref())
                .map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        let dev_shm = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "shm")
            .and_then(|v| v.empty_dir.as_ref())
            .expect("shm");
        assert_eq!(dev_shm.medium.as_deref(), Some("Memory"));
        assert_eq!(dev_shm.size_limit, Some(Quantity(shm.into())), "{yaml}");
    }
}

#[test]
fn an_image_that_runs_as_a_user_gets_run_as_non_root_and_keeps_the_default_seccomp() {
    let yaml = AGGREGATED.replace(
        "spec:\n",
        "spec:\n  engine:\n    podSecurityContext: {runAsNonRoot: true, runAsUser: 1001}\n",
    );
    let (_, children) = children(&yaml, &BuildOptions::default());
    let context = pod_spec(&children.decode)
        .security_context
        .as_ref()
        .expect("pod securityContext");
    assert_eq!(context.run_as_non_root, Some(true));
    assert_eq!(context.run_as_user, Some(1001));
    assert_eq!(
        context.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
}

#[test]
fn nixl_roles_follow_the_engine_version_unless_the_spec_picks() {
    let kv_role = |children: &Children, role: model_server::Role| -> String {
        let data = children
            .kv_transfer
            .as_ref()
            .and_then(|c| c.data.clone())
            .expect("fabric");
        let config: serde_json::Value =
            serde_json::from_str(&data[kv_transfer::config_env(role)]).expect("json");
        config["kv_role"].as_str().unwrap_or_default().to_string()
    };
    use model_server::Role::{Decode, Prefill};
    // The default engine (vLLM 0.33): producer and consumer, each role its own key.
    let (_, current) = children(PD_NIXL, &BuildOptions::default());
    assert_eq!(kv_role(&current, Prefill), "kv_producer");
    assert_eq!(kv_role(&current, Decode), "kv_consumer");
    let prefill_args = vllm(current.prefill.as_ref().expect("prefill"))
        .args
        .clone();
    assert!(
        prefill_args
            .unwrap_or_default()
            .contains(&"$(LLMD_KV_TRANSFER_CONFIG_PREFILL)".to_string())
    );
    let keep_alive = |server: &ModelServer| {
        vllm(server)
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "VLLM_HTTP_TIMEOUT_KEEP_ALIVE")
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        keep_alive(current.prefill.as_ref().expect("prefill")),
        Some("120".into())
    );
    assert_eq!(keep_alive(&current.decode), None);
    // An older engine pinned by tag: kv_both for both.
    let old = PD_NIXL.replace(
        "spec:\n",
        "spec:\n  engine: {image: vllm/vllm-openai:v0.11.0}\n",
    );
    let (_, older) = children(&old, &BuildOptions::default());
    assert_eq!(kv_role(&older, Prefill), "kv_both");
    assert_eq!(kv_role(&older, Decode), "kv_both");
    // The spec decides over the version.
    let both = PD_NIXL.replace("  kvTransfer:\n", "  kvTransfer:\n    roles: Both\n");
    assert_ne!(both, PD_NIXL, "the sample has a kvTransfer section");
    let (_, chosen) = children(&both, &BuildOptions::default());
    assert_eq!(kv_role(&chosen, Decode), "kv_both");
}

#[test]
fn lora_adapters_enable_runtime_loading_and_gate_readiness_without_naming_adapters() {
    let with = |adapters: &str| {
        AGGREGATED.replace(
            "    uri: hf://",
            &format!("    adapters:\n{adapters}    uri: hf://"),
        )
    };
    let one = with("    - {name: sql-lora, source: hf://org/sql-lora}\n");
    let two = with(
        "    - {name: sql-lora, source: hf://org/sql-lora}\n    - {name: chat-lora, source: hf://org/chat}\n",
    );
    let (_, with_adapters) = children(&one, &BuildOptions::default());
    let container = vllm(&with_adapters.decode);
    let args = container.args.clone().unwrap_or_default();
    assert!(args.contains(&"--enable-lora".to_string()));
    assert_eq!(arg_after(container, "--max-loras"), Some("4"));
    assert!(!args.iter().any(|a| a == "--lora-modules"), "{args:?}");
    let env = container.env.clone().unwrap_or_default();
    assert!(env.iter().any(
        |e| e.name == "VLLM_ALLOW_RUNTIME_LORA_UPDATING" && e.value.as_deref() == Some("True")
    ));
    let pod = |c: &Children| {
        c.decode
            .stateful_set()
            .expect("a StatefulSet")
            .spec
            .clone()
            .and_then(|s| s.template.spec)
            .expect("pod spec")
    };
    let gates = pod(&with_adapters).readiness_gates.unwrap_or_default();
    assert_eq!(gates.len(), 1);
    assert_eq!(gates[0].condition_type, llmd_api::ADAPTERS_LOADED_CONDITION);
    // Adding an adapter changes nothing in the pods: it is loaded at run time.
    let (_, with_more) = children(&two, &BuildOptions::default());
    assert_eq!(
        with_adapters
            .decode
            .stateful_set()
            .expect("a StatefulSet")
            .spec,
        with_more.decode.stateful_set().expect("a StatefulSet").spec
    );
    // maxLoras is the one LoRA setting in the pod.
    let (_, eight) = children(
        &one.replace("    adapters:\n", "    maxLoras: 8\n    adapters:\n"),
        &BuildOptions::default(),
    );
    assert_eq!(arg_after(vllm(&eight.decode), "--max-loras"), Some("8"));
    let (_, plain) = children(AGGREGATED, &BuildOptions::default());
    assert_eq!(arg_after(vllm(&plain.decode), "--enable-lora"), None);
    assert_eq!(pod(&plain).readiness_gates, None);
}

#[test]
fn serving_adapters_turns_the_lora_affinity_scorer_on_unless_the_spec_says_0() {
    let weight = |yaml: &str| {
        let ld = sample(yaml);
        ld.spec
            .scorer_weights()
            .get(llmd_api::endpoint_picker_config::Scorer::LoraAffinity)
    };
    let adapters = AGGREGATED.replace(
        "    uri: hf://",
        "    adapters:\n    - {name: sql, source: hf://org/sql}\n    uri: hf://",
    );
    assert_eq!(weight(AGGREGATED), 0.0);
    assert_eq!(weight(&adapters), llmd_api::DEFAULT_LORA_AFFINITY_WEIGHT);
    let mut off = sample(&adapters);
    off.spec.router.scorers.lora_affinity = Some(0.0);
    assert_eq!(
        off.spec
            .scorer_weights()
            .get(llmd_api::endpoint_picker_config::Scorer::LoraAffinity),
        0.0
    );
    // The EndpointPicker runs the scorer.
    let (_, children) = children(&adapters, &BuildOptions::default());
    let config = serde_yaml::to_string(&epp_config(&children)).expect("yaml");
    assert!(config.contains("lora-affinity-scorer"), "{config}");
}

#[test]
fn a_gated_model_gets_its_token_and_a_cache_claim_keeps_downloads_across_restarts() {
    let (_, plain) = children(AGGREGATED, &BuildOptions::default());
    let env_names: Vec<String> = vllm(&plain.decode)
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    assert!(!env_names.contains(&"HF_TOKEN".to_string()));

    let yaml = AGGREGATED.replace(
        "    uri: hf://",
        "    tokenSecret: {name: hf-token}\n    cacheClaim: model-cache\n    uri: hf://",
    );
    assert_ne!(yaml, AGGREGATED, "the sample names an hf:// model");
    let (_, gated) = children(&yaml, &BuildOptions::default());
    let container = vllm(&gated.decode);
    let token = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "HF_TOKEN")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("HF_TOKEN from the Secret");
    assert_eq!(
        (token.name.as_str(), token.key.as_str()),
        ("hf-token", "HF_TOKEN")
    );
    let pod = pod_spec(&gated.decode);
    let cache = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "cache")
        .expect("cache volume");
    assert_eq!(
        cache
            .persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str()),
        Some("model-cache")
    );
}

#[test]
fn each_role_and_the_endpoint_picker_are_drained_one_pod_at_a_time() {
    let (_, children) = children(PD_NIXL, &BuildOptions::default());
    let budgets = [
        &children
            .prefill
            .as_ref()
            .expect("prefill")
            .disruption_budget,
        &children.decode.disruption_budget,
        &children.endpoint_picker.disruption_budget,
    ];
    let workloads = [
        children
            .prefill
            .as_ref()
            .and_then(|p| p.stateful_set().expect("a StatefulSet").spec.as_ref())
            .map(|s| &s.selector),
        children
            .decode
            .stateful_set()
            .expect("a StatefulSet")
            .spec
            .as_ref()
            .map(|s| &s.selector),
        children
            .endpoint_picker
            .deployment
            .spec
            .as_ref()
            .map(|s| &s.selector),
    ];
    for (budget, selector) in budgets.into_iter().zip(workloads) {
        let spec = budget.spec.as_ref().expect("spec");
        assert_eq!(
            spec.max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
        assert_eq!(
            spec.selector.as_ref(),
            selector,
            "selects its workload's pods"
        );
    }
}

#[test]
fn every_child_is_owned_and_labelled_as_managed() {
    for yaml in [AGGREGATED, PD_NIXL, AUTOTUNED] {
        let (_, children) = children(
            yaml,
            &BuildOptions {
                inference_pool_served: true,
                ..BuildOptions::default()
            },
        );
        for meta in every_object_meta(&children) {
            let labels = meta.labels.as_ref().expect("labels");
            assert_eq!(
                labels[labels::MANAGED_BY],
                labels::MANAGER,
                "{:?}",
                meta.name
            );
            let owners = meta.owner_references.as_ref().expect("owner");
            assert_eq!(owners[0].kind, "LLMDeployment");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("inference"));
        }
    }
}

#[test]
fn samples_fit_on_four_eight_gpu_nodes() {
    let total: i64 = [AGGREGATED, PD_NIXL, AUTOTUNED]
        .iter()
        .map(|yaml| {
            let ld = sample(yaml);
            let role_gpus =
                |r: &llmd_api::RoleSpec| i64::from(r.replicas) * r.parallelism.gpus_per_replica();
            ld.spec.active_prefill().map_or(0, role_gpus) + role_gpus(&ld.spec.decode)
        })
        .sum();
    assert!(total <= 32, "samples need {total} GPUs");
}

#[test]
fn changing_the_kv_fabric_changes_the_pod_template() {
    let ld = sample(PD_NIXL);
    let owner = Owner::of(&ld).expect("owner");
    let before = build(&owner, &ld.spec, &BuildOptions::default());
    let mut changed = ld.spec.clone();
    changed.kv_transfer.ucx.transports = Some("sm,cuda_ipc,cuda_copy,rc,tcp".into());
    let after = build(&owner, &changed, &BuildOptions::default());
    let template = |c: &Children| {
        c.decode
            .stateful_set()
            .expect("a StatefulSet")
            .spec
            .as_ref()
            .map(|s| s.template.clone())
    };
    assert_ne!(template(&before), template(&after));
}

#[test]
fn epp_image_and_resources_fall_back_to_operator_defaults() {
    let defaults = EndpointPickerDefaults {
        image: "registry.example/epp:9".into(),
        resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "cpu".to_string(),
                Quantity("250m".into()),
            )])),
            ..Default::default()
        }),
    };
    let options = BuildOptions {
        epp_defaults: defaults,
        ..BuildOptions::default()
    };
    let epp_container = |c: &Children| {
        c.endpoint_picker
            .deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod")
            .containers[0]
            .clone()
    };
    let (_, children) = children(AGGREGATED, &options);
    let container = epp_container(&children);
    assert_eq!(container.image.as_deref(), Some("registry.example/epp:9"));
    assert_eq!(
        container
            .resources
            .and_then(|r| r.requests)
            .map(|r| r["cpu"].clone()),
        Some(Quantity("250m".into()))
    );

    let mut ld = sample(AGGREGATED);
    ld.spec.router.image = Some("mine/epp:1".into());
    let owner = Owner::of(&ld).expect("owner");
    let own = build(&owner, &ld.spec, &options);
    assert_eq!(epp_container(&own).image.as_deref(), Some("mine/epp:1"));
}

/// Every child of a sample, rendered as the API server would receive it, in a fixed
/// order. Golden files under `src/build/golden/` pin the output byte for byte, so a
/// refactor of the builders cannot change what is applied; `UPDATE_GOLDEN=1 cargo
/// test` rewrites them after a deliberate change.
fn rendered(yaml: &str, options: &BuildOptions) -> String {
    let (_, children) = children(yaml, options);
    children
        .in_apply_order()
        .iter()
        .map(|c| serde_yaml::to_string(&c.to_json()).expect("yaml"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn check_golden(file: &str, actual: &str) {
    let path = std::path::Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("src/build/golden")
        .join(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("golden dir");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{file} differs from the golden file; diff it with UPDATE_GOLDEN=1 and git diff"
    );
}

#[test]
fn rendered_children_of_every_sample_match_the_golden_files() {
    let served = BuildOptions {
        inference_pool_served: true,
        ..BuildOptions::default()
    };
    let tuned = BuildOptions {
        inference_pool_served: true,
        tuned_weights: Some(ScorerWeights {
            prefix_cache: 4.5,
            queue: 1.25,
            kv_cache_utilization: 0.0,
            active_requests: 0.5,
            session_affinity: 0.0,
            latency: 0.0,
            lora_affinity: Some(0.0),
        }),
        ..BuildOptions::default()
    };
    for (file, yaml, options) in [
        ("aggregated.yaml", AGGREGATED, &served),
        ("pd_nixl.yaml", PD_NIXL, &served),
        ("autotuned_router.yaml", AUTOTUNED, &served),
        ("autotuned_router_tuned.yaml", AUTOTUNED, &tuned),
        ("autoscaled_pd.yaml", AUTOSCALED, &served),
        (
            "pd_nixl_no_pool_crd.yaml",
            PD_NIXL,
            &BuildOptions::default(),
        ),
    ] {
        check_golden(file, &rendered(yaml, options));
        let (_, children) = children(yaml, options);
        let config = &children.endpoint_picker.config.data.as_ref().expect("data")
            [llmd_api::endpoint_picker_config::CONFIG_KEY];
        check_golden(&file.replace(".yaml", ".epp-config.yaml"), config);
    }
}

#[test]
fn autoscaled_roles_follow_the_autoscalers_decision_within_their_bounds() {
    let mut ld = sample(PD_NIXL);
    ld.spec.decode.autoscaling = Some(
        serde_json::from_value(serde_json::json!({
            "minReplicas": 2, "maxReplicas": 6, "target": {"waitingPerPod": 2}
        }))
        .expect("autoscaling"),
    );
    let owner = Owner::of(&ld).expect("owner");
    let replicas = |options: &BuildOptions| {
        let c = build(&owner, &ld.spec, options);
        let of = |s: &ModelServer| {
            s.stateful_set()
                .expect("a StatefulSet")
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
        };
        (c.prefill.as_ref().and_then(of), of(&c.decode))
    };
    let spec_prefill = Some(ld.spec.active_prefill().expect("prefill").replicas);
    // No decision yet: the spec's count, within the bounds (the sample's 4).
    assert_eq!(replicas(&BuildOptions::default()), (spec_prefill, Some(4)));
    let decided = |n: i32| BuildOptions {
        autoscaled: Some(llmd_api::AutoscalingStatus {
            decode: Some(llmd_api::RoleScaling {
                replicas: n,
                reason: "test".into(),
                ..Default::default()
            }),
            // A decision for a role without autoscaling is ignored.
            prefill: Some(llmd_api::RoleScaling {
                replicas: 9,
                reason: "stale".into(),
                ..Default::default()
            }),
        }),
        ..BuildOptions::default()
    };
    assert_eq!(replicas(&decided(5)), (spec_prefill, Some(5)));
    assert_eq!(
        replicas(&decided(1)),
        (spec_prefill, Some(2)),
        "minReplicas"
    );
    assert_eq!(
        replicas(&decided(40)),
        (spec_prefill, Some(6)),
        "maxReplicas"
    );
}

#[test]
fn pipeline_stages_within_a_node_stay_one_pod() {
    let mut ld = sample(AGGREGATED);
    ld.spec.decode.parallelism = llmd_api::ParallelismSpec {
        tensor: 2,
        pipeline: 2,
        data: 1,
    };
    ld.spec.decode.gpus_per_node = Some(8);
    let owner = Owner::of(&ld).expect("owner");
    let children = build(&owner, &ld.spec, &BuildOptions::default());
    let container = vllm(&children.decode);
    assert_eq!(arg_after(container, "--pipeline-parallel-size"), Some("2"));
    assert_eq!(arg_after(container, "--nnodes"), None);
    assert_eq!(gpus(container), Some(&Quantity("4".into())));
}

#[test]
fn a_replica_spanning_nodes_becomes_a_leader_worker_set_of_one_leader_and_headless_workers() {
    let mut ld = sample(PD_NIXL);
    ld.spec.decode.parallelism = llmd_api::ParallelismSpec {
        tensor: 8,
        pipeline: 2,
        data: 1,
    };
    ld.spec.decode.gpus_per_node = Some(8);
    ld.spec.decode.replicas = 3;
    ld.spec.model.adapters = vec![llmd_api::LoraAdapterSpec {
        name: "sql".into(),
        source: "hf://org/sql".into(),
    }];
    let owner = Owner::of(&ld).expect("owner");
    let children = build(&owner, &ld.spec, &BuildOptions::default());
    assert!(children.decode.stateful_set().is_none());
    assert!(
        children
            .prefill
            .as_ref()
            .and_then(|p| p.stateful_set())
            .is_some()
    );
    let lws = children
        .decode
        .leader_worker_set()
        .expect("a LeaderWorkerSet");
    assert_eq!(lws.metadata.name.as_deref(), Some("llama-pd-decode"));
    assert_eq!(lws.spec.replicas, Some(3));
    let t = &lws.spec.leader_worker_template;
    assert_eq!(t.size, Some(2));
    assert_eq!(
        t.restart_policy.as_deref(),
        Some("RecreateGroupOnPodRestart")
    );
    let leader = t.leader_template.as_ref().expect("leader template");
    let worker = &t.worker_template;
    let labels = |p: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        p.metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    };
    let spec_of = |p: &k8s_openapi::api::core::v1::PodTemplateSpec| p.spec.clone().expect("spec");
    // The leader serves (behind the routing sidecar); the workers do not.
    assert_eq!(labels(leader)[labels::INFERENCE_SERVING], "true");
    assert!(!labels(worker).contains_key(labels::INFERENCE_SERVING));
    assert_eq!(labels(worker)[labels::ROLE], "decode");
    let (leader, worker) = (spec_of(leader), spec_of(worker));
    // The adapter loader opens the leader's gate; workers have none to wait for.
    assert_eq!(leader.readiness_gates.map(|g| g.len()), Some(1));
    assert_eq!(worker.readiness_gates, None);
    assert_eq!(leader.containers.len(), 2, "vllm and the routing sidecar");
    assert_eq!(worker.containers.len(), 1);
    let (lv, wv) = (&leader.containers[0], &worker.containers[0]);
    assert!(lv.readiness_probe.is_some());
    assert!(wv.readiness_probe.is_none() && wv.startup_probe.is_none());
    for c in [lv, wv] {
        assert_eq!(arg_after(c, "--tensor-parallel-size"), Some("8"));
        assert_eq!(arg_after(c, "--pipeline-parallel-size"), Some("2"));
        assert_eq!(arg_after(c, "--nnodes"), Some("2"));
        assert_eq!(arg_after(c, "--node-rank"), Some("$(LWS_WORKER_INDEX)"));
        assert_eq!(arg_after(c, "--master-addr"), Some("$(LWS_LEADER_ADDRESS)"));
        assert_eq!(arg_after(c, "--distributed-executor-backend"), Some("mp"));
        assert_eq!(
            gpus(c),
            Some(&Quantity("8".into())),
            "one node's GPUs per pod"
        );
        // Every rank has its NIXL side channel.
        assert!(
            c.env
                .iter()
                .flatten()
                .any(|e| e.name == "VLLM_NIXL_SIDE_CHANNEL_HOST")
        );
    }
    let headless = |c: &Container| c.args.iter().flatten().any(|a| a == "--headless");
    assert!(!headless(lv) && headless(wv));
    // A LeaderWorkerSet makes its own headless Service: none of ours for decode.
    let services: Vec<String> = children
        .in_apply_order()
        .iter()
        .filter(|c| c.kind() == crate::children::ChildKind::Service)
        .map(|c| c.name())
        .collect();
    assert!(
        !services.contains(&"llama-pd-decode".to_string()),
        "{services:?}"
    );
    assert!(services.contains(&"llama-pd-prefill".to_string()));
}

#[test]
fn pvc_adapters_mount_their_claims_read_only_once_each() {
    let with = |adapters: &str| {
        AGGREGATED.replace(
            "    uri: hf://",
            &format!("    adapters:\n{adapters}    uri: hf://"),
        )
    };
    let one = with(
        "    - {name: fin, source: pvc://tuned/fin}\n    - {name: sql, source: hf://org/sql}\n",
    );
    let two = with(
        "    - {name: fin, source: pvc://tuned/fin}\n    - {name: sql, source: hf://org/sql}\n    - {name: law, source: pvc://tuned/law/v2}\n",
    );
    let (_, children_one) = children(&one, &BuildOptions::default());
    let pod = pod_spec(&children_one.decode);
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "adapters-0")
        .expect("the claim's volume");
    let claim = volume.persistent_volume_claim.as_ref().expect("a claim");
    assert_eq!(
        (claim.claim_name.as_str(), claim.read_only),
        ("tuned", Some(true))
    );
    let mount = vllm(&children_one.decode)
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "adapters-0")
        .expect("mounted");
    assert_eq!(mount.mount_path, "/adapters/tuned");
    assert_eq!(mount.read_only, Some(true));
    // Another adapter from the same claim: the pods stay as they are.
    let (_, children_two) = children(&two, &BuildOptions::default());
    assert_eq!(
        children_one
            .decode
            .stateful_set()
            .expect("a StatefulSet")
            .spec,
        children_two
            .decode
            .stateful_set()
            .expect("a StatefulSet")
            .spec
    );
}
