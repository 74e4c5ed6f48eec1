//! Every CEL rule of the CRD, evaluated client-side with the same schema the API
//! server gets: a valid sample passes, and each broken spec fails with a message that
//! names the field.

use kube::core::cel::validate_cel;
use llmd_api::{KvConnector, LLMDeployment, RoleSpec};

const PD_NIXL: &str = include_str!("../../../config/samples/llmd_v1alpha1_pd_nixl.yaml");
const AGGREGATED: &str = include_str!("../../../config/samples/llmd_v1alpha1_aggregated.yaml");
const AUTOTUNED: &str = include_str!("../../../config/samples/llmd_v1alpha1_autotuned_router.yaml");
const AUTOSCALED: &str = include_str!("../../../config/samples/llmd_v1alpha1_autoscaled_pd.yaml");

fn sample(yaml: &str) -> LLMDeployment {
    serde_yaml::from_str(yaml).expect("sample parses")
}

/// Assert that `ld` is refused with a message containing `expected`.
fn refused(ld: &LLMDeployment, expected: &str) {
    match validate_cel(ld) {
        Ok(()) => panic!("accepted, expected a refusal mentioning {expected:?}"),
        Err(errors) => {
            let text = format!("{errors:?}");
            assert!(
                text.contains(expected),
                "refusal {text} does not mention {expected:?}"
            );
        }
    }
}

#[test]
fn samples_pass_every_rule() {
    for yaml in [PD_NIXL, AGGREGATED, AUTOTUNED, AUTOSCALED] {
        let ld = sample(yaml);
        if let Err(e) = validate_cel(&ld) {
            panic!("{:?} refused: {e:?}", ld.metadata.name);
        }
    }
}

#[test]
fn disaggregation_needs_a_kv_connector() {
    let mut ld = sample(PD_NIXL);
    ld.spec.kv_transfer.connector = Some(KvConnector::None);
    refused(&ld, "spec.kvTransfer.connector: disaggregated serving");
    // Without prefill pods, no connector is fine.
    ld.spec.prefill = Some(RoleSpec {
        replicas: 0,
        ..RoleSpec::default()
    });
    assert!(validate_cel(&ld).is_ok());
}

#[test]
fn precise_prefix_mode_owns_the_kv_events_config() {
    let mut ld = sample(AGGREGATED);
    ld.spec.engine.args = vec!["--kv-events-config={}".into()];
    assert!(
        validate_cel(&ld).is_ok(),
        "approximate mode: the user's own is fine"
    );
    ld.spec.router.prefix_cache.mode = llmd_api::PrefixCacheMode::Precise;
    refused(&ld, "spec.router.prefixCache.mode Precise");
    ld.spec.engine.args.clear();
    assert!(validate_cel(&ld).is_ok());
    ld.spec.decode.args = vec!["--kv-events-config".into(), "{}".into()];
    refused(&ld, "must not set --kv-events-config");
}

#[test]
fn decode_needs_a_replica() {
    let mut ld = sample(AGGREGATED);
    ld.spec.decode.replicas = 0;
    refused(&ld, "spec.decode.replicas must be at least 1");
}

#[test]
fn uri_needs_a_known_scheme() {
    for bad in [
        "http://example.com/model",
        "meta-llama/Llama",
        "hf://",
        "hf://has space",
    ] {
        let mut ld = sample(AGGREGATED);
        ld.spec.model.uri = bad.into();
        refused(
            &ld,
            "spec.model.uri must start with hf://, pvc://, s3:// or oci://",
        );
    }
    for good in [
        "pvc://weights/llama",
        "s3://bucket/llama",
        "oci://registry.example/m:1",
    ] {
        let mut ld = sample(AGGREGATED);
        ld.spec.model.uri = good.into();
        assert!(validate_cel(&ld).is_ok(), "{good} refused");
    }
}

#[test]
fn pvc_uri_needs_a_claim_name() {
    let mut ld = sample(AGGREGATED);
    ld.spec.model.uri = "pvc://Bad_Claim/llama".into();
    refused(&ld, "pvc:// needs a valid claim name");
}

#[test]
fn token_secret_and_cache_claim_must_be_object_names() {
    let mut ld = sample(AGGREGATED);
    ld.spec.model.cache_claim = Some("Model_Cache".into());
    refused(
        &ld,
        "spec.model.cacheClaim must be a PersistentVolumeClaim name",
    );
    let mut ld = sample(AGGREGATED);
    ld.spec.model.token_secret = Some(llmd_api::SecretKeyRef {
        name: "HF token".into(),
        key: "HF_TOKEN".into(),
    });
    refused(&ld, "spec.model.tokenSecret.name must be a Secret name");
}

#[test]
fn lora_adapters_have_unique_names_hf_sources_and_fit_max_loras() {
    let adapter = |name: &str, source: &str| llmd_api::LoraAdapterSpec {
        name: name.into(),
        source: source.into(),
    };
    let mut ld = sample(AGGREGATED);
    ld.spec.model.adapters = vec![adapter("sql", "hf://org/sql"), adapter("sql", "hf://org/b")];
    refused(&ld, "adapter names must be unique");
    ld.spec.model.adapters = vec![adapter("sql", "s3://bucket/sql")];
    refused(&ld, "spec.model.adapters[].source must be hf://");
    ld.spec.model.adapters = vec![adapter("sql", "pvc://Not_A_Claim/sql")];
    refused(&ld, "spec.model.adapters[].source must be hf://");
    ld.spec.model.adapters = vec![adapter("sql", "pvc://tuned/sql/v2")];
    assert!(kube::core::cel::validate_cel(&ld).is_ok());
    ld.spec.model.adapters = vec![adapter("my sql", "hf://org/sql")];
    refused(&ld, "spec.model.adapters[].name must be letters");
    ld.spec.model.adapters = vec![adapter("sql", "hf://org/sql")];
    assert!(kube::core::cel::validate_cel(&ld).is_ok());
    // No more than an engine holds at once (--max-loras, default 4).
    let many: Vec<_> = (0..5)
        .map(|i| adapter(&format!("a{i}"), "hf://org/a"))
        .collect();
    ld.spec.model.adapters = many[..4].to_vec();
    assert!(kube::core::cel::validate_cel(&ld).is_ok());
    ld.spec.model.adapters = many.clone();
    refused(&ld, "more adapters than spec.model.maxLoras");
    ld.spec.model.max_loras = Some(5);
    assert!(kube::core::cel::validate_cel(&ld).is_ok());
    ld.spec.model.max_loras = Some(2);
    ld.spec.model.adapters = many[..3].to_vec();
    refused(&ld, "more adapters than spec.model.maxLoras");
}

#[test]
fn network_policy_needs_someone_allowed_in() {
    let mut ld = sample(AGGREGATED);
    ld.spec.network_policy.enabled = true;
    refused(
        &ld,
        "networkPolicy.allowFrom must name who may call the EndpointPicker",
    );
}

#[test]
fn managed_flags_are_refused_in_engine_and_role_args() {
    let mut ld = sample(AGGREGATED);
    ld.spec.engine.args = vec!["--enforce-eager".into(), "--port=9000".into()];
    refused(&ld, "spec.engine.args must not set --port");
    let mut ld = sample(PD_NIXL);
    if let Some(prefill) = ld.spec.prefill.as_mut() {
        prefill.args = vec!["--tensor-parallel-size".into(), "4".into()];
    }
    refused(&ld, "args must not set --port");
    // vLLM's dotted spelling of one key of a JSON flag.
    let mut ld = sample(AGGREGATED);
    ld.spec.engine.args = vec!["--kv-transfer-config.kv_role=kv_both".into()];
    refused(&ld, "spec.engine.args must not set --port");
}

#[test]
fn tensor_parallelism_is_a_power_of_two() {
    let mut ld = sample(AGGREGATED);
    ld.spec.decode.parallelism.tensor = 3;
    refused(&ld, "parallelism.tensor must be a power of two");
}

#[test]
fn gpus_per_pod_are_bounded() {
    let mut ld = sample(AGGREGATED);
    ld.spec.decode.parallelism.tensor = 16;
    ld.spec.decode.parallelism.data = 8;
    refused(
        &ld,
        "GPUs per pod (tensor x pipeline x data, or gpusPerNode",
    );
    // Spread over 8-GPU nodes, a replica of 128 GPUs is 16 pods of 8.
    ld.spec.decode.gpus_per_node = Some(8);
    assert!(validate_cel(&ld).is_ok());
    ld.spec.decode.parallelism.pipeline = 8;
    refused(
        &ld,
        "tensor x pipeline x data (GPUs per replica) must be at most 512",
    );
}

#[test]
fn a_replica_spanning_nodes_needs_a_whole_number_of_them() {
    let mut ld = sample(AGGREGATED);
    ld.spec.decode.parallelism.tensor = 8;
    ld.spec.decode.parallelism.pipeline = 2;
    ld.spec.decode.gpus_per_node = Some(8);
    assert!(validate_cel(&ld).is_ok());
    ld.spec.decode.gpus_per_node = Some(6);
    refused(
        &ld,
        "gpusPerNode: a replica needing more GPUs than one node has",
    );
    // Within one node, any node size will do.
    ld.spec.decode.parallelism.pipeline = 1;
    ld.spec.decode.gpus_per_node = Some(12);
    assert!(validate_cel(&ld).is_ok());
}

#[test]
fn gpu_resource_name_is_a_resource_name() {
    let mut ld = sample(AGGREGATED);
    ld.spec.decode.gpu_resource_name = "nvidia com/gpu!".into();
    refused(&ld, "gpuResourceName must be a resource name");
}

#[test]
fn side_channel_port_must_not_clash_with_the_server_port() {
    let mut ld = sample(PD_NIXL);
    ld.spec.kv_transfer.side_channel_port = 8000;
    refused(&ld, "spec.kvTransfer.sideChannelPort must differ");
}

#[test]
fn ucx_transports_are_a_list() {
    let mut ld = sample(PD_NIXL);
    ld.spec.kv_transfer.ucx.transports = Some("cuda_ipc;tcp".into());
    refused(
        &ld,
        "spec.kvTransfer.ucx.transports must be a comma-separated list",
    );
}

#[test]
fn some_scorer_must_weigh() {
    let mut ld = sample(AGGREGATED);
    ld.spec.router.scorers.prefix_cache = 0.0;
    ld.spec.router.scorers.queue = 0.0;
    ld.spec.router.scorers.kv_cache_utilization = 0.0;
    refused(&ld, "at least one scorer weight must be greater than 0");
}

#[test]
fn auto_tune_bounds_are_ordered() {
    let mut ld = sample(AUTOTUNED);
    ld.spec.router.auto_tune.min_weight = 5.0;
    ld.spec.router.auto_tune.max_weight = 1.0;
    refused(&ld, "spec.router.autoTune.minWeight must not exceed");
}

#[test]
fn auto_tune_interval_is_a_duration_of_at_least_five_seconds() {
    for bad in ["fast", "2s", "30"] {
        let mut ld = sample(AUTOTUNED);
        ld.spec.router.auto_tune.interval = bad.into();
        refused(&ld, "spec.router.autoTune.interval must be a duration");
    }
    let mut ld = sample(AUTOTUNED);
    ld.spec.router.auto_tune.interval = "2m".into();
    assert!(validate_cel(&ld).is_ok());
}

#[test]
fn name_must_leave_room_for_child_names() {
    let mut ld = sample(AGGREGATED);
    ld.metadata.name = Some("n".repeat(43));
    refused(&ld, "metadata.name must be at most 42 characters");
}

fn autoscaling(json: serde_json::Value) -> Option<llmd_api::AutoscalingSpec> {
    Some(serde_json::from_value(json).expect("autoscaling parses"))
}

#[test]
fn autoscaling_bounds_are_ordered_and_name_one_target() {
    let mut ld = sample(AGGREGATED);
    ld.spec.decode.autoscaling = autoscaling(serde_json::json!({
        "minReplicas": 1, "maxReplicas": 4, "target": {"waitingPerPod": 2}
    }));
    assert!(validate_cel(&ld).is_ok());
    ld.spec.decode.autoscaling = autoscaling(serde_json::json!({
        "minReplicas": 5, "maxReplicas": 4, "target": {"waitingPerPod": 2}
    }));
    refused(
        &ld,
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    );
    ld.spec.decode.autoscaling = autoscaling(serde_json::json!({
        "maxReplicas": 4, "target": {"waitingPerPod": 2, "kvCacheUtilization": 0.8}
    }));
    refused(&ld, "autoscaling.target must set exactly one of");
    ld.spec.decode.autoscaling = autoscaling(serde_json::json!({
        "maxReplicas": 4, "target": {}
    }));
    refused(&ld, "autoscaling.target must set exactly one of");
}

#[test]
fn prefill_scales_on_ttft_and_decode_on_its_own_signals() {
    let mut ld = sample(PD_NIXL);
    let on = |target: serde_json::Value| {
        autoscaling(serde_json::json!({"maxReplicas": 8, "target": target}))
    };
    if let Some(p) = ld.spec.prefill.as_mut() {
        p.autoscaling = on(serde_json::json!({"ttftMs": 500}));
    }
    ld.spec.decode.autoscaling = on(serde_json::json!({"interTokenLatencyMs": 40}));
    assert!(validate_cel(&ld).is_ok());
    if let Some(p) = ld.spec.prefill.as_mut() {
        p.autoscaling = on(serde_json::json!({"waitingPerPod": 2}));
    }
    refused(
        &ld,
        "spec.prefill.autoscaling.target: prefill pods scale on ttftMs",
    );
    if let Some(p) = ld.spec.prefill.as_mut() {
        p.autoscaling = None;
    }
    ld.spec.decode.autoscaling = on(serde_json::json!({"ttftMs": 500}));
    refused(&ld, "spec.decode.autoscaling.target: with prefill pods");
    // Without prefill pods, decode pods do the prefill: TTFT is theirs.
    let mut aggregated = sample(AGGREGATED);
    aggregated.spec.decode.autoscaling = on(serde_json::json!({"ttftMs": 500}));
    assert!(validate_cel(&aggregated).is_ok());
}
