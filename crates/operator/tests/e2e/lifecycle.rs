//! Convergence, scaling, drift repair, role removal, garbage collection and an
//! operator restart, against the real control plane.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use llmd_api::LLMDeployment;
use llmd_api::inference_pool::InferencePool;
use serde_json::json;

use super::harness::*;

const CONVERGE: Duration = Duration::from_secs(120);

/// Every child object of `name` with its resourceVersion, keyed "Kind/name".
async fn children_versions(client: &Client, ns: &str, name: &str) -> BTreeMap<String, String> {
    let selector =
        format!("app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=llmd-operator");
    let lp = ListParams::default().labels(&selector);
    let mut out = BTreeMap::new();
    macro_rules! collect {
        ($kind:ty, $label:literal) => {
            for o in Api::<$kind>::namespaced(client.clone(), ns)
                .list(&lp)
                .await
                .expect("list")
                .items
            {
                out.insert(
                    format!("{}/{}", $label, o.name_any()),
                    o.resource_version().unwrap_or_default(),
                );
            }
        };
    }
    collect!(StatefulSet, "StatefulSet");
    collect!(Deployment, "Deployment");
    collect!(Service, "Service");
    collect!(ConfigMap, "ConfigMap");
    collect!(ServiceAccount, "ServiceAccount");
    collect!(Role, "Role");
    collect!(RoleBinding, "RoleBinding");
    collect!(InferencePool, "InferencePool");
    out
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn pd_sample_converges_to_ready_on_gpu_nodes() {
    install_crds().await;
    let ns = TestNamespace::create("e2e-converge").await;
    let _operator = Operator::start(&ns.name, "op", &[]);
    let sample = std::fs::read_to_string(repo().join("config/samples/llmd_v1alpha1_pd_nixl.yaml"))
        .expect("sample");
    let out = apply_yaml(&ns.name, &sample);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let client = client().await;
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    let ld = wait_for_ld(&lds, "llama-pd", CONVERGE, "Ready", is_ready).await;
    for type_ in [
        "Ready",
        "PrefillReady",
        "DecodeReady",
        "KVTransferReady",
        "EndpointPickerReady",
    ] {
        let c = condition(&ld, type_).expect("condition");
        assert_eq!(c.status, "True", "{type_}: {}", c.message);
        assert_eq!(c.observed_generation, ld.metadata.generation);
    }
    assert_eq!(
        condition(&ld, "Degraded").map(|c| c.status.as_str()),
        Some("False")
    );
    let status = ld.status.as_ref().expect("status");
    assert_eq!(
        status.prefill.as_ref().map(|p| p.ready.as_str()),
        Some("4/4")
    );
    assert_eq!(
        status.decode.as_ref().map(|p| p.ready.as_str()),
        Some("4/4")
    );

    // Children with the expected spec.
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    for (name, replicas) in [("llama-pd-prefill", 4), ("llama-pd-decode", 4)] {
        let s = sts.get(name).await.expect("statefulset");
        assert_eq!(s.spec.as_ref().and_then(|s| s.replicas), Some(replicas));
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let kv = cms
        .get("llama-pd-kv-transfer")
        .await
        .expect("kv-transfer ConfigMap");
    // One config per role: vLLM 0.33's producer and consumer.
    let data = kv.data.clone().unwrap_or_default();
    for (key, role) in [
        ("LLMD_KV_TRANSFER_CONFIG_PREFILL", "kv_producer"),
        ("LLMD_KV_TRANSFER_CONFIG_DECODE", "kv_consumer"),
    ] {
        let config = data.get(key).map(String::as_str).unwrap_or_default();
        assert!(
            config.contains("NixlConnector") && config.contains(role),
            "{key}: {config}"
        );
    }
    cms.get("llama-pd-epp-config").await.expect("EPP config");
    Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .get("llama-pd-epp")
        .await
        .expect("EPP");

    // Pods scheduled onto GPU nodes with the right requests, Ready, with loopback IPs.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    for (role, gpus) in [("prefill", "1"), ("decode", "2")] {
        let list = pods
            .list(&ListParams::default().labels(&format!(
                "llm-d.ai/role={role},app.kubernetes.io/instance=llama-pd"
            )))
            .await
            .expect("pods");
        assert_eq!(list.items.len(), 4, "{role} pods");
        for pod in list.items {
            let spec = pod.spec.as_ref().expect("pod spec");
            let node = spec.node_name.as_deref().unwrap_or_default();
            assert!(
                node.starts_with("gpu-node-"),
                "{} on {node}",
                pod.name_any()
            );
            let limits = spec.containers[0]
                .resources
                .as_ref()
                .and_then(|r| r.limits.clone())
                .expect("limits");
            assert_eq!(limits["nvidia.com/gpu"].0, gpus);
            let status = pod.status.as_ref().expect("pod status");
            assert!(
                status
                    .pod_ip
                    .as_deref()
                    .is_some_and(|ip| ip.starts_with("127.")),
                "pod IP {:?}",
                status.pod_ip
            );
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            assert!(ready, "{} not Ready", pod.name_any());
        }
    }

    // kubectl get shows the printer columns.
    let table = kubectl_ok(&["get", "llmd", "-n", &ns.name]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "PREFILL", "DECODE", "ROUTER", "AGE"],
        "{table}"
    );
    assert!(
        table.contains("llama-pd") && table.contains("True") && table.contains("4/4"),
        "{table}"
    );
    assert!(
        table.contains(&format!("http://llama-pd-epp.{}.svc:8080", ns.name)),
        "{table}"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn scaling_decode_through_the_scale_subresource_updates_stateful_set_and_status() {
    install_crds().await;
    let ns = TestNamespace::create("e2e-scale").await;
    let _operator = Operator::start(&ns.name, "op", &[]);
    assert!(
        apply_yaml(&ns.name, &small_spec("scale", 0, 1))
            .status
            .success()
    );
    let client = client().await;
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    wait_for_ld(&lds, "scale", CONVERGE, "Ready", is_ready).await;

    // Through the scale subresource, as `kubectl scale` and an HPA do.
    kubectl_ok(&["scale", "llmd/scale", "--replicas=3", "-n", &ns.name]);
    let ld = wait_for_ld(&lds, "scale", CONVERGE, "Ready at 3 decode pods", |ld| {
        is_ready(ld)
            && ld
                .status
                .as_ref()
                .and_then(|s| s.decode.as_ref())
                .is_some_and(|d| d.ready == "3/3")
    })
    .await;
    assert_eq!(ld.metadata.generation, Some(2));
    let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns.name)
        .get("scale-decode")
        .await
        .expect("sts");
    assert_eq!(sts.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let decode = ld
        .status
        .as_ref()
        .and_then(|s| s.decode.clone())
        .expect("decode status");
    assert_eq!(
        (decode.desired, decode.replicas, decode.ready_replicas),
        (3, 3, 3)
    );
    let scale = kubectl_ok(&[
        "get",
        "llmd",
        "scale",
        "-n",
        &ns.name,
        "--subresource=scale",
        "-o",
        "jsonpath={.spec.replicas} {.status.replicas} {.status.selector}",
    ]);
    assert_eq!(
        scale, "3 3 app.kubernetes.io/component=decode,app.kubernetes.io/instance=scale",
        "the scale subresource names the decode pods for an HPA"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn deleted_child_is_recreated_and_edited_child_is_restored() {
    install_crds().await;
    let ns = TestNamespace::create("e2e-drift").await;
    let _operator = Operator::start(&ns.name, "op", &[]);
    assert!(
        apply_yaml(&ns.name, &small_spec("drift", 1, 1))
            .status
            .success()
    );
    let client = client().await;
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    wait_for_ld(&lds, "drift", CONVERGE, "Ready", is_ready).await;

    // Delete a child: it comes back (a new uid).
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let old_uid = cms.get("drift-epp-config").await.expect("cm").uid();
    cms.delete("drift-epp-config", &DeleteParams::default())
        .await
        .expect("delete");
    wait_until(CONVERGE, "EPP ConfigMap recreated", || {
        let cms = cms.clone();
        let old_uid = old_uid.clone();
        async move {
            cms.get_opt("drift-epp-config")
                .await
                .ok()
                .flatten()
                .filter(|c| c.uid() != old_uid)
                .map(|_| ())
        }
    })
    .await;

    // Edit a managed field: it is restored.
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let patch = json!({"spec": {"replicas": 5}});
    sts.patch(
        "drift-decode",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .expect("edit");
    wait_until(CONVERGE, "decode replicas restored to 1", || {
        let sts = sts.clone();
        async move {
            let s = sts.get("drift-decode").await.ok()?;
            (s.spec.as_ref()?.replicas == Some(1)).then_some(())
        }
    })
    .await;
    // Edit a label on the Service's selector target: restored too.
    let svc: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let patch = json!({"spec": {"publishNotReadyAddresses": false}});
    svc.patch(
        "drift-prefill",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .expect("edit svc");
    wait_until(CONVERGE, "prefill Service restored", || {
        let svc = svc.clone();
        async move {
            let s = svc.get("drift-prefill").await.ok()?;
            (s.spec.as_ref()?.publish_not_ready_addresses == Some(true)).then_some(())
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn removing_prefill_deletes_its_stateful_set_and_service() {
    install_crds().await;
    let ns = TestNamespace::create("e2e-unprefill").await;
    let _operator = Operator::start(&ns.name, "op", &[]);
    assert!(
        apply_yaml(&ns.name, &small_spec("pd", 1, 1))
            .status
            .success()
    );
    let client = client().await;
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    wait_for_ld(&lds, "pd", CONVERGE, "Ready", is_ready).await;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let svc: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(sts.get_opt("pd-prefill").await.expect("get").is_some());

    // Re-apply without prefill (kubectl apply prunes the field).
    assert!(
        apply_yaml(&ns.name, &small_spec("pd", 0, 1))
            .status
            .success()
    );
    wait_until(
        CONVERGE,
        "prefill StatefulSet, Service and KV fabric deleted",
        || {
            let (sts, svc, cms) = (sts.clone(), svc.clone(), cms.clone());
            async move {
                let gone = sts.get_opt("pd-prefill").await.ok()?.is_none()
                    && svc.get_opt("pd-prefill").await.ok()?.is_none()
                    && cms.get_opt("pd-kv-transfer").await.ok()?.is_none();
                gone.then_some(())
            }
        },
    )
    .await;
    let ld = wait_for_ld(&lds, "pd", CONVERGE, "Ready without prefill", is_ready).await;
    assert!(ld.status.as_ref().is_some_and(|s| s.prefill.is_none()));
    assert_eq!(
        condition(&ld, "KVTransferReady").map(|c| c.reason.as_str()),
        Some("AggregatedServing")
    );
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn deleting_the_deployment_garbage_collects_every_child() {
    install_crds().await;
    let ns = TestNamespace::create("e2e-gc").await;
    let operator = Operator::start(&ns.name, "op", &[]);
    assert!(
        apply_yaml(&ns.name, &small_spec("gc", 1, 1))
            .status
            .success()
    );
    let client = client().await;
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    wait_for_ld(&lds, "gc", CONVERGE, "Ready", is_ready).await;
    let before = children_versions(&client, &ns.name, "gc").await;
    // Including the decode pods' routing sidecar's ServiceAccount, Role and RoleBinding.
    assert_eq!(before.len(), 15, "children: {before:?}");
    // Stop the operator so only the garbage collector can remove children.
    operator.stop();
    lds.delete("gc", &DeleteParams::foreground())
        .await
        .expect("delete");
    wait_until(CONVERGE, "every child garbage-collected", || {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            children_versions(&client, &ns, "gc")
                .await
                .is_empty()
                .then_some(())
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    wait_until(CONVERGE, "pods gone", || {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn restarting_the_operator_on_a_settled_deployment_writes_nothing() {
    install_crds().await;
    let ns = TestNamespace::create("e2e-restart").await;
    let operator = Operator::start(&ns.name, "first", &[]);
    assert!(
        apply_yaml(&ns.name, &small_spec("settled", 1, 2))
            .status
            .success()
    );
    let client = client().await;
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    wait_for_ld(&lds, "settled", CONVERGE, "Ready and settled", |ld| {
        is_ready(ld) && condition(ld, "Progressing").is_some_and(|c| c.status == "False")
    })
    .await;
    operator.stop();
    let before = children_versions(&client, &ns.name, "settled").await;
    let ld_before = lds.get("settled").await.expect("ld").resource_version();

    let second = Operator::start(&ns.name, "second", &[]);
    // Wait until the new process has reconciled the deployment at least once.
    wait_until(CONVERGE, "second operator reconciled", || {
        let second = &second;
        async move { (second.metric("llmd_operator_reconciles_total").await? >= 1.0).then_some(()) }
    })
    .await;
    let after = children_versions(&client, &ns.name, "settled").await;
    assert_eq!(before, after, "children were written on restart");
    assert_eq!(
        ld_before,
        lds.get("settled").await.expect("ld").resource_version(),
        "status was rewritten"
    );
    assert_eq!(
        second.metric("llmd_operator_status_writes_total").await,
        Some(0.0)
    );
}
