//! Upgrading the operator does not roll GPU pods because a rendered default
//! changed: the model-server workloads keep the pod template they were created
//! with, status says a newer rendering is available, and the user takes it by
//! annotating the LLMDeployment (or by changing the spec).

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Api;
use llmd_api::LLMDeployment;

use super::harness::*;

const NAME: &str = "upgraded";
const OLD: &str = "registry.example/llmd-epp:old";
const NEW: &str = "registry.example/llmd-epp:new";

/// The image of container `name` in a StatefulSet's pod template.
fn image(sts: &StatefulSet, name: &str) -> Option<String> {
    sts.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == name)?
        .image
        .clone()
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn an_operator_upgrade_keeps_the_pods_rendering_until_the_user_takes_the_new_one() {
    install_crds().await;
    let ns = TestNamespace::create("e2e-rendering").await;
    let lds: Api<LLMDeployment> = Api::namespaced(client().await, &ns.name);
    let sets: Api<StatefulSet> = Api::namespaced(client().await, &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client().await, &ns.name);
    let decode = format!("{NAME}-decode");

    // The old operator's default EndpointPicker image is also the decode pods'
    // routing sidecar image.
    let old = Operator::start(&ns.name, "op-old", &["--default-epp-image", OLD]);
    let out = apply_yaml(&ns.name, &small_spec(NAME, 1, 1));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = wait_until(
        Duration::from_secs(60),
        "the decode StatefulSet",
        || async {
            let sts = sets.get_opt(&decode).await.ok()??;
            (image(&sts, "routing-sidecar").as_deref() == Some(OLD)).then_some(sts)
        },
    )
    .await;
    old.stop();

    // The new operator renders the sidecar with its own default, and keeps the old
    // rendering: no pod template change, said in status.
    let _new = Operator::start(&ns.name, "op-new", &["--default-epp-image", NEW]);
    let ld = wait_for_ld(
        &lds,
        NAME,
        Duration::from_secs(60),
        "status.newerRendering",
        |ld| {
            ld.status
                .as_ref()
                .is_some_and(|s| s.newer_rendering.is_some())
        },
    )
    .await;
    let message = ld
        .status
        .and_then(|s| s.newer_rendering)
        .unwrap_or_default();
    for part in [
        "StatefulSet/upgraded-decode keeps the pod template it was created with",
        "spec.containers[routing-sidecar].image",
        "llmd.dev/rendering=latest",
    ] {
        assert!(message.contains(part), "{part} in {message}");
    }
    assert!(
        !message.contains("prefill"),
        "prefill pods render the same: {message}"
    );
    // The new operator did reconcile: the EndpointPicker (no GPU) runs its image.
    wait_until(
        Duration::from_secs(30),
        "the EndpointPicker on the new image",
        || async {
            let d = deployments.get_opt(&format!("{NAME}-epp")).await.ok()??;
            let image = d.spec?.template.spec?.containers.first()?.image.clone()?;
            (image == NEW).then_some(())
        },
    )
    .await;
    let kept = sets.get(&decode).await.expect("decode StatefulSet");
    assert_eq!(
        kept.metadata.generation, before.metadata.generation,
        "no rollout"
    );
    assert_eq!(image(&kept, "routing-sidecar").as_deref(), Some(OLD));
    let described = kubectl_ok(&["describe", "llmd", NAME, "-n", &ns.name]);
    assert!(described.contains("NewerRenderingAvailable"), "{described}");

    // The user takes the new rendering: the pods roll onto it, status clears.
    kubectl_ok(&[
        "annotate",
        "llmd",
        NAME,
        "-n",
        &ns.name,
        "llmd.dev/rendering=latest",
    ]);
    wait_until(
        Duration::from_secs(60),
        "the decode pods on the new rendering",
        || async {
            let sts = sets.get_opt(&decode).await.ok()??;
            (image(&sts, "routing-sidecar").as_deref() == Some(NEW)).then_some(())
        },
    )
    .await;
    wait_for_ld(
        &lds,
        NAME,
        Duration::from_secs(30),
        "status.newerRendering cleared",
        |ld| {
            ld.status
                .as_ref()
                .is_some_and(|s| s.newer_rendering.is_none())
        },
    )
    .await;
}
