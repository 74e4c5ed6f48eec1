//! What the schema cannot catch shows up as Degraded with a reason, and fixing the
//! spec recovers.

use std::time::Duration;

use kube::Api;
use llmd_api::LLMDeployment;

use super::harness::*;

/// A one-pod deployment with `decode_extra` (YAML lines indented under decode).
fn with_decode(name: &str, decode_extra: &str) -> String {
    format!(
        "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: {name}\nspec:\n  model:\n    name: test/model\n    uri: hf://test/model\n  decode:\n    replicas: 1\n{decode_extra}"
    )
}

async fn degraded_then_fixed(ns: &str, name: &str, bad: &str, reason: &str, message_part: &str) {
    let lds: Api<LLMDeployment> = Api::namespaced(client().await, ns);
    let out = apply_yaml(ns, &with_decode(name, bad));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ld = wait_for_ld(&lds, name, Duration::from_secs(60), "Degraded", |ld| {
        condition(ld, "Degraded").is_some_and(|c| c.status == "True" && c.reason == reason)
    })
    .await;
    let degraded = condition(&ld, "Degraded").expect("Degraded");
    assert!(
        degraded.message.contains(message_part),
        "{}",
        degraded.message
    );
    assert_eq!(
        condition(&ld, "Ready").map(|c| c.status.as_str()),
        Some("False")
    );

    // kubectl apply of the fixed manifest drops the bad field.
    assert!(apply_yaml(ns, &with_decode(name, "")).status.success());
    let ld = wait_for_ld(
        &lds,
        name,
        Duration::from_secs(120),
        "Ready after the fix",
        is_ready,
    )
    .await;
    assert_eq!(
        condition(&ld, "Degraded").map(|c| c.status.as_str()),
        Some("False")
    );
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn spec_the_schema_accepts_but_cannot_serve_is_degraded_until_fixed() {
    install_crds().await;
    let ns = TestNamespace::create("e2e-degraded").await;
    let _operator = Operator::start(&ns.name, "op", &[]);
    // A GPU count that contradicts parallelism: caught by the operator, nothing applied.
    degraded_then_fixed(
        &ns.name,
        "gpu-mismatch",
        "    resources:\n      limits:\n        nvidia.com/gpu: \"4\"\n",
        "InvalidSpec",
        "spec.decode.resources.limits sets nvidia.com/gpu: 4 but each pod needs 1",
    )
    .await;
    // A quantity the CRD schema cannot check (the API server would answer the
    // StatefulSet with a 500): caught by the operator too.
    degraded_then_fixed(
        &ns.name,
        "bad-quantity",
        "    resources:\n      requests:\n        cpu: lots\n",
        "InvalidSpec",
        "spec.decode.resources.requests.cpu: \"lots\" is not a quantity",
    )
    .await;
    // A node selector only the API server's StatefulSet validation refuses: the
    // refusal is reported with the server's message.
    degraded_then_fixed(
        &ns.name,
        "bad-selector",
        "    nodeSelector:\n      \"not a label key!\": x\n",
        "ApplyFailed",
        "StatefulSet bad-selector-decode",
    )
    .await;
}
