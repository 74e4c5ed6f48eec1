//! With the Gateway API Inference Extension CRD served, an LLMDeployment gets an
//! InferencePool pointing at its EndpointPicker; disabling it deletes the pool.
//!
//! The suite installs the InferencePool CRD with its own (see harness::install_crds).

use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use llmd_api::LLMDeployment;
use llmd_api::inference_pool::InferencePool;
use serde_json::json;

use super::harness::*;

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn inference_pool_follows_the_spec_when_the_crd_is_served() {
    install_crds().await;
    let client = client().await;
    let ns = TestNamespace::create("e2e-pool").await;
    let pools: Api<InferencePool> = Api::namespaced(client.clone(), &ns.name);
    let _operator = Operator::start(&ns.name, "op", &[]);
    assert!(
        apply_yaml(&ns.name, &small_spec("pooled", 0, 1))
            .status
            .success()
    );

    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    wait_for_ld(
        &lds,
        "pooled",
        Duration::from_secs(120),
        "Ready with a pool",
        |ld| {
            is_ready(ld)
                && ld
                    .status
                    .as_ref()
                    .and_then(|s| s.router.as_ref())
                    .and_then(|r| r.inference_pool.as_deref())
                    == Some("Created")
        },
    )
    .await;
    let pool = pools.get("pooled").await.expect("InferencePool");
    assert_eq!(pool.spec.endpoint_picker_ref.name, "pooled-epp");
    assert_eq!(pool.spec.endpoint_picker_ref.port.number, 9002);
    assert_eq!(pool.spec.target_ports[0].number, 8000);
    assert_eq!(
        pool.spec.selector.match_labels["llm-d.ai/inference-serving"],
        "true"
    );

    // A deleted pool is recreated (the operator watches InferencePools).
    let old_uid = pool.metadata.uid.clone();
    pools
        .delete("pooled", &Default::default())
        .await
        .expect("delete pool");
    wait_until(Duration::from_secs(30), "InferencePool recreated", || {
        let pools = pools.clone();
        let old_uid = old_uid.clone();
        async move {
            let p = pools.get_opt("pooled").await.ok()??;
            (p.metadata.uid != old_uid).then_some(())
        }
    })
    .await;

    let patch = json!({"spec": {"inferencePool": {"enabled": false}}});
    lds.patch("pooled", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("disable");
    wait_until(Duration::from_secs(60), "InferencePool deleted", || {
        let pools = pools.clone();
        async move { pools.get_opt("pooled").await.ok()?.is_none().then_some(()) }
    })
    .await;
    wait_for_ld(
        &lds,
        "pooled",
        Duration::from_secs(60),
        "status says Disabled",
        |ld| {
            ld.status
                .as_ref()
                .and_then(|s| s.router.as_ref())
                .and_then(|r| r.inference_pool.as_deref())
                == Some("Disabled")
        },
    )
    .await;
}
