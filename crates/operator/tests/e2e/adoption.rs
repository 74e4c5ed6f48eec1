//! An object with a child's name that the LLMDeployment does not control is never
//! written: the deployment reports it as Degraded, the other children are applied,
//! and once the object is gone the operator creates its own.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use llmd_api::LLMDeployment;

use super::harness::*;

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn a_users_config_map_in_the_way_is_left_alone_until_it_is_deleted() {
    install_crds().await;
    let client = client().await;
    let ns = TestNamespace::create("e2e-adoption").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);

    // A user's ConfigMap with the name the EndpointPicker config would take.
    let theirs = ConfigMap {
        metadata: ObjectMeta {
            name: Some("taken-epp-config".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("note".into(), "mine".into())])),
        ..ConfigMap::default()
    };
    let params = PostParams {
        field_manager: Some("e2e-user".into()),
        ..PostParams::default()
    };
    let before = config_maps
        .create(&params, &theirs)
        .await
        .expect("user ConfigMap");

    let _operator = Operator::start(&ns.name, "op", &[]);
    assert!(
        apply_yaml(&ns.name, &small_spec("taken", 0, 1))
            .status
            .success()
    );
    let ld = wait_for_ld(
        &lds,
        "taken",
        Duration::from_secs(60),
        "Degraded with ChildConflict",
        |ld| {
            condition(ld, "Degraded")
                .is_some_and(|c| c.status == "True" && c.reason == "ChildConflict")
        },
    )
    .await;
    let message = &condition(&ld, "Degraded").expect("Degraded").message;
    assert!(
        message.contains("ConfigMap taken-epp-config has no controller"),
        "{message}"
    );

    // The other children are applied.
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    wait_until(
        Duration::from_secs(60),
        "decode StatefulSet and EndpointPicker Deployment",
        || {
            let (stateful_sets, deployments) = (stateful_sets.clone(), deployments.clone());
            async move {
                stateful_sets.get_opt("taken-decode").await.ok()??;
                deployments.get_opt("taken-epp").await.ok()?.map(|_| ())
            }
        },
    )
    .await;

    // The user's ConfigMap is as they left it.
    let after = config_maps
        .get("taken-epp-config")
        .await
        .expect("still there");
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(
        after.metadata.managed_fields,
        before.metadata.managed_fields
    );
    assert_eq!(after.data, before.data);
    assert_eq!(after.metadata.owner_references, None);

    // Once it is gone, the operator creates its own and Degraded clears.
    config_maps
        .delete("taken-epp-config", &Default::default())
        .await
        .expect("delete");
    let uid = ld.metadata.uid.clone().expect("uid");
    wait_until(
        Duration::from_secs(60),
        "the operator's own ConfigMap",
        || {
            let (config_maps, uid) = (config_maps.clone(), uid.clone());
            async move {
                let ours = config_maps.get_opt("taken-epp-config").await.ok()??;
                let controlled = ours
                    .metadata
                    .owner_references?
                    .iter()
                    .any(|r| r.controller == Some(true) && r.uid == uid);
                controlled.then_some(())
            }
        },
    )
    .await;
    wait_for_ld(
        &lds,
        "taken",
        Duration::from_secs(60),
        "Degraded=False",
        |ld| condition(ld, "Degraded").is_some_and(|c| c.status == "False"),
    )
    .await;
}
