//! The tuner scrapes the model servers (real ones, on live nodes) and records its
//! weights in status.routing, which the reconcile renders into the EPP ConfigMap.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use llmd_api::LLMDeployment;

use super::harness::*;

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn auto_tune_scrapes_model_servers_and_drives_the_epp_config() {
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
        "routing set by the scheduler from 2 servers",
        |ld| {
            is_ready(ld)
                && ld
                    .status
                    .as_ref()
                    .and_then(|s| s.routing.as_ref())
                    .and_then(|r| r.reason.as_deref())
                    .is_some_and(|r| r.starts_with("autoTune: no pressure"))
        },
    )
    .await;
    let routing = ld.status.and_then(|s| s.routing).expect("routing");
    assert_eq!(
        routing.weights.len(),
        5,
        "every scorer recorded: {:?}",
        routing.weights
    );
    assert_eq!(routing.weights["prefix-cache-scorer"], 3.0);

    // The EPP config carries the scheduler's weights.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let config = cms.get("tuned-epp-config").await.expect("EPP config");
    let yaml = config
        .data
        .as_ref()
        .map(|d| d["config.yaml"].clone())
        .unwrap_or_default();
    assert!(yaml.contains("prefix-cache-scorer"), "{yaml}");
    let events = kubectl_ok(&[
        "get",
        "events",
        "-n",
        &ns.name,
        "--field-selector",
        "reason=WeightsTuned",
        "-o",
        "name",
    ]);
    assert!(
        !events.trim().is_empty(),
        "a WeightsTuned event is published"
    );

    assert_eq!(routing.rules, ["DriftToSpec"]);

    // A restarted operator remembers what the scheduler last recorded: with nothing
    // new to say, its tuning rounds write nothing.
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
