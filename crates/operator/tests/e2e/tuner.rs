//! The tuner reads the EndpointPicker pod's metrics (on live nodes) and records the
//! weights in force in status.routing, which the reconcile renders into the EPP
//! ConfigMap; a quiet deployment, and a restarted operator, write nothing more.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use llmd_api::LLMDeployment;

use super::harness::*;

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn auto_tune_records_the_weights_in_force_and_a_quiet_deployment_writes_nothing() {
    install_crds().await;
    let ns = TestNamespace::create_live("e2e-tuner").await;
    let operator = Operator::start(&ns.name, "op", &[]);
    let manifest = "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: tuned\nspec:\n  model:\n    name: test/model\n    uri: hf://test/model\n  decode:\n    replicas: 2\n  router:\n    autoTune:\n      enabled: true\n      interval: 5s\n";
    assert!(apply_yaml(&ns.name, manifest).status.success());
    let client = client().await;
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    let ld = wait_for_ld(
        &lds,
        "tuned",
        Duration::from_secs(120),
        "the tuner records the weights in force",
        |ld| {
            is_ready(ld)
                && ld
                    .status
                    .as_ref()
                    .and_then(|s| s.routing.as_ref())
                    .and_then(|r| r.reason.as_deref())
                    .is_some_and(|r| r.starts_with("autoTune: measuring"))
        },
    )
    .await;
    let routing = ld.status.and_then(|s| s.routing).expect("routing");
    assert_eq!(
        routing.weights.len(),
        llmd_api::endpoint_picker_config::Scorer::ALL.len(),
        "every scorer recorded: {:?}",
        routing.weights
    );
    assert_eq!(routing.weights["prefix-cache-scorer"], 3.0);

    // The EPP config carries the tuner's weights.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let config = cms.get("tuned-epp-config").await.expect("EPP config");
    let yaml = config
        .data
        .as_ref()
        .map(|d| d["config.yaml"].clone())
        .unwrap_or_default();
    assert!(yaml.contains("prefix-cache-scorer"), "{yaml}");

    // No traffic: the tuner explores nothing and writes nothing more.
    let writes = operator.metric("llmd_operator_tuner_writes_total").await;
    let rounds = operator
        .metric("llmd_operator_tuner_rounds_total")
        .await
        .unwrap_or(0.0);
    wait_until(Duration::from_secs(60), "two quiet tuning rounds", || {
        let operator = &operator;
        async move {
            (operator.metric("llmd_operator_tuner_rounds_total").await? >= rounds + 2.0)
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        operator.metric("llmd_operator_tuner_writes_total").await,
        writes,
        "nothing written while quiet"
    );

    // A restarted operator carries on from what the tuner last recorded: with
    // nothing new to say, its tuning rounds write nothing.
    operator.stop();
    let before = lds
        .get("tuned")
        .await
        .expect("ld")
        .metadata
        .resource_version;
    let second = Operator::start(&ns.name, "second", &[]);
    wait_until(
        Duration::from_secs(60),
        "two tuning rounds after the restart",
        || {
            let second = &second;
            async move {
                (second.metric("llmd_operator_tuner_rounds_total").await? >= 2.0).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        second.metric("llmd_operator_tuner_writes_total").await,
        Some(0.0)
    );
    assert_eq!(
        second.metric("llmd_operator_status_writes_total").await,
        Some(0.0)
    );
    assert_eq!(
        lds.get("tuned")
            .await
            .expect("ld")
            .metadata
            .resource_version,
        before
    );
}
