//! A model larger than one node: the replica becomes a LeaderWorkerSet the real API
//! server accepts (its CRD from LWS's published types stands in for the upstream
//! one, which cannot be fetched here; no LWS controller runs, so no pods start),
//! and without the LeaderWorkerSet API the deployment is Degraded, saying what to
//! install.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, CustomResourceExt};
use llmd_api::LLMDeployment;
use llmd_api::leader_worker_set::LeaderWorkerSet;

use super::harness::*;

const NAME: &str = "big";
const CRD: &str = "leaderworkersets.leaderworkerset.x-k8s.io";

fn manifest(decode: &str) -> String {
    format!(
        "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: {NAME}\nspec:\n  model:\n    name: test/model\n    uri: hf://test/model\n  decode:\n    replicas: 2\n    parallelism: {{tensor: 8, pipeline: 2}}\n{decode}"
    )
}

async fn lws_served() -> bool {
    let client = client().await;
    match client
        .list_api_group_resources("leaderworkerset.x-k8s.io/v1")
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.name == "leaderworkersets"),
        Err(_) => false,
    }
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn a_replica_larger_than_a_node_is_a_leader_worker_set_the_api_server_accepts() {
    install_crds().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client().await);
    // A cluster kept from an earlier run may have the stand-in already.
    if crds.get_opt(CRD).await.expect("get CRD").is_some() {
        let _ = crds.delete(CRD, &DeleteParams::default()).await;
        wait_until(Duration::from_secs(60), "the LWS API gone", || async {
            (!lws_served().await).then_some(())
        })
        .await;
    }
    let ns = TestNamespace::create("e2e-multi-node").await;
    let _operator = Operator::start(&ns.name, "op", &[]);
    let lds: Api<LLMDeployment> = Api::namespaced(client().await, &ns.name);
    let sets: Api<LeaderWorkerSet> = Api::namespaced(client().await, &ns.name);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client().await, &ns.name);
    let services: Api<Service> = Api::namespaced(client().await, &ns.name);

    // Without the API: Degraded, naming the role, the layout and what to install.
    let out = apply_yaml(&ns.name, &manifest("    gpusPerNode: 8\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ld = wait_for_ld(&lds, NAME, Duration::from_secs(60), "Degraded", |ld| {
        condition(ld, "Degraded")
            .is_some_and(|c| c.status == "True" && c.reason == "LeaderWorkerSetNotInstalled")
    })
    .await;
    let message = &condition(&ld, "Degraded").expect("Degraded").message;
    for part in [
        "spec.decode needs 16 GPUs per replica (tensor 8 x pipeline 2 x data 1)",
        "a group of 2 pods",
        "install LeaderWorkerSet",
    ] {
        assert!(message.contains(part), "{part} in {message}");
    }

    // Once the API is served, the operator creates the set on its own.
    Api::<CustomResourceDefinition>::all(client().await)
        .patch(
            CRD,
            &PatchParams::apply("llmd-e2e").force(),
            &Patch::Apply(LeaderWorkerSet::crd()),
        )
        .await
        .expect("install the LeaderWorkerSet CRD");
    let lws = wait_until(
        Duration::from_secs(60),
        "the decode LeaderWorkerSet",
        || async { sets.get_opt(&format!("{NAME}-decode")).await.ok().flatten() },
    )
    .await;
    let template = &lws.spec.leader_worker_template;
    assert_eq!((lws.spec.replicas, template.size), (Some(2), Some(2)));
    let args = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        t.spec.as_ref().expect("pod spec").containers[0]
            .args
            .clone()
            .unwrap_or_default()
    };
    let leader = args(template.leader_template.as_ref().expect("leader"));
    let worker = args(&template.worker_template);
    for needle in ["--nnodes", "$(LWS_WORKER_INDEX)", "$(LWS_LEADER_ADDRESS)"] {
        assert!(leader.iter().any(|a| a == needle), "{needle} in {leader:?}");
    }
    assert!(worker.iter().any(|a| a == "--headless"), "{worker:?}");
    assert!(!leader.iter().any(|a| a == "--headless"));
    wait_for_ld(
        &lds,
        NAME,
        Duration::from_secs(30),
        "Degraded cleared",
        |ld| condition(ld, "Degraded").is_some_and(|c| c.status == "False"),
    )
    .await;
    assert!(
        stateful_sets
            .get_opt(&format!("{NAME}-decode"))
            .await
            .expect("get")
            .is_none()
    );
    // The set makes its own headless Service of that name: none of ours is in its way.
    assert!(
        services
            .get_opt(&format!("{NAME}-decode"))
            .await
            .expect("get")
            .is_none()
    );

    // Back within one node: a StatefulSet again, and the set is removed.
    assert!(apply_yaml(&ns.name, &manifest("")).status.success());
    wait_until(
        Duration::from_secs(60),
        "a StatefulSet instead of the LeaderWorkerSet",
        || async {
            let sts = stateful_sets
                .get_opt(&format!("{NAME}-decode"))
                .await
                .ok()??;
            let gone = sets
                .get_opt(&format!("{NAME}-decode"))
                .await
                .ok()?
                .is_none();
            gone.then_some(sts)
        },
    )
    .await;
}
