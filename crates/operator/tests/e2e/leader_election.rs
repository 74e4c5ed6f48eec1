//! Two operator processes: only the leader reconciles; the standby takes over when
//! the leader is killed.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use llmd_api::LLMDeployment;
use serde_json::json;

use super::harness::*;

const LEASE_ARGS: [&str; 4] = [
    "--lease-duration-seconds",
    "4",
    "--lease-retry-seconds",
    "1",
];

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("llmd-operator-leader")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    install_crds().await;
    let ns = TestNamespace::create("e2e-leader").await;
    let client = client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let a = Operator::start(&ns.name, "a", &LEASE_ARGS);
    let first = wait_until(Duration::from_secs(30), "a holds the lease", || {
        let leases = leases.clone();
        async move { holder(&leases).await }
    })
    .await;
    assert_eq!(first, "a");
    let b = Operator::start(&ns.name, "b", &LEASE_ARGS);

    assert!(
        apply_yaml(&ns.name, &small_spec("led", 0, 1))
            .status
            .success()
    );
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    wait_for_ld(&lds, "led", Duration::from_secs(120), "Ready", is_ready).await;
    wait_until(Duration::from_secs(10), "metrics of both", || {
        let (a, b) = (&a, &b);
        async move { (a.metrics().await.is_some() && b.metrics().await.is_some()).then_some(()) }
    })
    .await;
    assert_eq!(a.metric("llmd_operator_leader").await, Some(1.0));
    assert_eq!(b.metric("llmd_operator_leader").await, Some(0.0));
    assert!(
        a.metric("llmd_operator_reconciles_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        b.metric("llmd_operator_reconciles_total").await,
        Some(0.0),
        "standby reconciled"
    );
    assert_eq!(holder(&leases).await.as_deref(), Some("a"));

    // The leader crashes: no release, the standby waits out the lease and takes over.
    a.kill();
    wait_until(Duration::from_secs(30), "b holds the lease", || {
        let leases = leases.clone();
        async move { (holder(&leases).await? == "b").then_some(()) }
    })
    .await;
    let patch = json!({"spec": {"decode": {"replicas": 2}}});
    lds.patch("led", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("scale");
    wait_for_ld(
        &lds,
        "led",
        Duration::from_secs(120),
        "scaled by the new leader",
        |ld| {
            is_ready(ld)
                && ld
                    .status
                    .as_ref()
                    .and_then(|s| s.decode.as_ref())
                    .is_some_and(|d| d.ready == "2/2")
        },
    )
    .await;
    assert_eq!(b.metric("llmd_operator_leader").await, Some(1.0));
    assert!(
        b.metric("llmd_operator_reconciles_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}
