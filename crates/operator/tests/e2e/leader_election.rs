//! Two operator processes: only the leader reconciles; the standby takes over when
//! the leader is killed, or frozen, and a frozen leader that wakes up writes nothing
//! and exits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use llmd_api::LLMDeployment;
use serde_json::{Value, json};

use super::harness::*;

const LEASE_ARGS: [&str; 6] = [
    "--lease-duration-seconds",
    "4",
    "--lease-renew-deadline-seconds",
    "3",
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

/// Lease timings and an EndpointPicker image of its own, so that whichever operator
/// last wrote the EPP Deployment can be told from its image.
fn frozen_args(image: &str) -> Vec<&str> {
    vec![
        "--lease-duration-seconds",
        "6",
        "--lease-renew-deadline-seconds",
        "4",
        "--lease-retry-seconds",
        "1",
        "--default-epp-image",
        image,
    ]
}

/// What a write by an operator would change: each child of `name` (resourceVersion and
/// managedFields) and the LLMDeployment (resourceVersion, managedFields, status).
fn footprint(namespace: &str, name: &str) -> BTreeMap<String, Value> {
    let kinds = "configmaps,services,statefulsets,serviceaccounts,roles,rolebindings,deployments,inferencepools.inference.networking.k8s.io";
    let selector = format!("app.kubernetes.io/instance={name}");
    let children: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        kinds,
        "-n",
        namespace,
        "-l",
        &selector,
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .expect("kubectl JSON");
    let ld: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        "llmdeployments.llmd.dev",
        name,
        "-n",
        namespace,
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .expect("kubectl JSON");
    let items = children["items"].as_array().cloned().unwrap_or_default();
    assert!(items.len() >= 7, "children of {name}: {items:?}");
    items
        .iter()
        .chain([&ld])
        .map(|o| {
            let key = format!("{}/{}", o["kind"], o["metadata"]["name"]);
            assert!(
                o["metadata"]["managedFields"].is_array(),
                "no managedFields on {key}"
            );
            let seen = json!({
                "resourceVersion": o["metadata"]["resourceVersion"],
                "managedFields": o["metadata"]["managedFields"],
                "status": if o["kind"] == "LLMDeployment" { o["status"].clone() } else { Value::Null },
            });
            (key, seen)
        })
        .collect()
}

/// The footprint once it has not moved for three seconds (rollouts finished).
async fn settled_footprint(namespace: &str, name: &str) -> BTreeMap<String, Value> {
    let mut last = footprint(namespace, name);
    let mut since = Instant::now();
    wait_until(Duration::from_secs(90), "children settled", || {
        let now = footprint(namespace, name);
        if now != last {
            last = now;
            since = Instant::now();
        }
        let settled = (since.elapsed() >= Duration::from_secs(3)).then(|| last.clone());
        async move { settled }
    })
    .await
}

async fn epp_image(deployments: &Api<Deployment>, name: &str) -> Option<String> {
    deployments
        .get_opt(name)
        .await
        .ok()??
        .spec?
        .template
        .spec?
        .containers
        .first()?
        .image
        .clone()
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn a_frozen_leader_that_wakes_after_a_takeover_writes_nothing_and_exits() {
    install_crds().await;
    let ns = TestNamespace::create("e2e-frozen-leader").await;
    let client = client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let mut a = Operator::start(&ns.name, "a", &frozen_args("example.com/epp:a"));
    wait_until(Duration::from_secs(30), "a holds the lease", || {
        let leases = leases.clone();
        async move { (holder(&leases).await? == "a").then_some(()) }
    })
    .await;
    let b = Operator::start(&ns.name, "b", &frozen_args("example.com/epp:b"));
    assert!(
        apply_yaml(&ns.name, &small_spec("frozen", 0, 1))
            .status
            .success()
    );
    wait_for_ld(&lds, "frozen", Duration::from_secs(120), "Ready", is_ready).await;
    assert_eq!(
        epp_image(&deployments, "frozen-epp").await.as_deref(),
        Some("example.com/epp:a")
    );

    // The leader freezes; the standby takes over once the lease stops changing.
    a.signal("STOP");
    wait_until(Duration::from_secs(20), "b holds the lease", || {
        let leases = leases.clone();
        async move { (holder(&leases).await? == "b").then_some(()) }
    })
    .await;
    wait_until(
        Duration::from_secs(60),
        "b rendered its EndpointPicker image",
        || {
            let deployments = deployments.clone();
            async move {
                let image = epp_image(&deployments, "frozen-epp").await?;
                (image == "example.com/epp:b").then_some(())
            }
        },
    )
    .await;
    wait_for_ld(&lds, "frozen", Duration::from_secs(120), "Ready", is_ready).await;
    wait_until(Duration::from_secs(10), "b counts its reconciles", || {
        let b = &b;
        async move { (b.metric("llmd_operator_reconciles_total").await? >= 1.0).then_some(()) }
    })
    .await;
    settled_footprint(&ns.name, "frozen").await;

    // b shuts down and releases the lease: the frozen leader will wake to a free
    // lease, and anything written from now on is its doing.
    b.stop();
    let released = leases.get("llmd-operator-leader").await.expect("lease");
    assert_eq!(
        released
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone()),
        None
    );
    let before = footprint(&ns.name, "frozen");

    a.signal("CONT");
    let status = wait_until(Duration::from_secs(30), "a exits", || {
        assert_eq!(
            footprint(&ns.name, "frozen"),
            before,
            "the old leader wrote after it woke up"
        );
        let exited = a.exited();
        async move { exited }
    })
    .await;
    assert!(!status.success(), "a exited with {status}");
    assert_eq!(footprint(&ns.name, "frozen"), before);
    let lease = leases.get("llmd-operator-leader").await.expect("lease");
    assert_eq!(
        lease.metadata.resource_version, released.metadata.resource_version,
        "the old leader touched the lease"
    );
    assert_eq!(
        epp_image(&deployments, "frozen-epp").await.as_deref(),
        Some("example.com/epp:b")
    );
}
