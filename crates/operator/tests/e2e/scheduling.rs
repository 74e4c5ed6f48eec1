//! A pod that cannot be scheduled is reported, not silent.

use std::time::Duration;

use kube::Api;
use llmd_api::LLMDeployment;

use super::harness::*;

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn unschedulable_pod_shows_up_as_a_condition_with_the_reason() {
    install_crds().await;
    let ns = TestNamespace::create("e2e-unschedulable").await;
    let _operator = Operator::start(&ns.name, "op", &[]);
    // 16 GPUs per pod; the biggest node has 8.
    let manifest = "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: huge\nspec:\n  model:\n    name: test/huge\n    uri: hf://test/huge\n  decode:\n    replicas: 1\n    parallelism:\n      tensor: 16\n";
    let out = apply_yaml(&ns.name, manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lds: Api<LLMDeployment> = Api::namespaced(client().await, &ns.name);
    let ld = wait_for_ld(
        &lds,
        "huge",
        Duration::from_secs(90),
        "DecodeReady=False Unschedulable",
        |ld| {
            condition(ld, "DecodeReady")
                .is_some_and(|c| c.status == "False" && c.reason == "Unschedulable")
        },
    )
    .await;
    let decode = condition(&ld, "DecodeReady").expect("DecodeReady");
    assert!(
        decode.message.contains("nvidia.com/gpu"),
        "message names the resource: {}",
        decode.message
    );
    let degraded = condition(&ld, "Degraded").expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "Unschedulable")
    );
    let ready = condition(&ld, "Ready").expect("Ready");
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("DecodeReady"), "{}", ready.message);
    // kubectl describe shows a warning event for it.
    let describe = kubectl_ok(&["describe", "llmd", "huge", "-n", &ns.name]);
    assert!(describe.contains("Unschedulable"), "{describe}");
}
