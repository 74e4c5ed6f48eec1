//! LoRA adapters on the live stack: the operator loads `spec.model.adapters` into
//! every engine at run time, a new adapter is served without restarting a pod, a
//! removed one is unloaded, and the EndpointPicker routes an adapter only to pods
//! that list it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;

use super::data_plane::{LiveStack, header, pod_name};
use super::harness::*;

const NAME: &str = "lora";

fn manifest() -> String {
    format!(
        "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: {NAME}\nspec:\n  model:\n    name: test/model\n    uri: hf://test/model\n    adapters:\n    - {{name: sql, source: hf://org/sql-lora}}\n  decode:\n    replicas: 2\n  router:\n    replicas: 1\n"
    )
}

/// The adapters an engine lists in `/v1/models` (models with a parent).
async fn adapters_on(pod: &Pod) -> Option<Vec<String>> {
    let url = format!("http://{}:8000/v1/models", pod_ip(pod));
    let text = pod_http().get(url).send().await.ok()?.text().await.ok()?;
    let list: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut names: Vec<String> = list["data"]
        .as_array()?
        .iter()
        .filter(|m| !m["parent"].is_null())
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Some(names)
}

/// A completion for `model` through the EPP pod: its status and the pod that served it.
async fn ask(epp: &str, model: &str, prompt: &str) -> (u16, Option<String>) {
    let r = pod_http()
        .post(format!("http://{epp}:8080/v1/completions"))
        .header("content-type", "application/json")
        .body(json!({"model": model, "prompt": prompt, "max_tokens": 4}).to_string())
        .send()
        .await
        .expect("the EPP pod answers");
    (r.status().as_u16(), header(&r, "x-inference-pod"))
}

/// Each decode pod's uid and restart count, by name.
fn identities(pods: &[Pod]) -> BTreeMap<String, (String, i32)> {
    pods.iter()
        .map(|p| (pod_name(p), (uid(p), restart_count(p))))
        .collect()
}

async fn wait_for_adapters(stack: &LiveStack, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    wait_until(
        Duration::from_secs(60),
        &format!("every decode pod lists exactly the adapters {want:?}"),
        || {
            let want = want.clone();
            async move {
                let pods = stack.role("decode").await;
                for pod in &pods {
                    if adapters_on(pod).await? != want {
                        return None;
                    }
                }
                (pods.len() == 2).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn adapters_are_loaded_at_run_time_and_routed_to_the_pods_that_hold_them() {
    let stack = LiveStack::start("e2e-lora", NAME, &manifest()).await;
    let epp = stack.epp_ip().await;
    let sets: Api<StatefulSet> = Api::namespaced(client().await, stack.namespace());
    let generation = || async {
        sets.get(&format!("{NAME}-decode"))
            .await
            .expect("decode StatefulSet")
            .metadata
            .generation
    };

    // Ready means loaded: the readiness gate held each pod until the operator had
    // loaded the adapter into its engine.
    let pods = stack.role("decode").await;
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        assert_eq!(adapters_on(pod).await, Some(vec!["sql".to_string()]));
        let gate = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == llmd_api::ADAPTERS_LOADED_CONDITION)
            })
            .expect("the adapters-loaded condition");
        assert_eq!(gate.status, "True", "{gate:?}");
    }
    let before = identities(&pods);
    let generation_before = generation().await;
    let decode: Vec<String> = before.keys().cloned().collect();
    for i in 0..6 {
        let (status, pod) = ask(&epp, "sql", &format!("select {i}")).await;
        assert_eq!(status, 200);
        assert!(decode.contains(&pod.expect("x-inference-pod")));
    }
    let (status, _) = ask(&epp, "chat", "hello").await;
    assert_eq!(status, 404, "an adapter nobody serves is not found");

    // Add an adapter: loaded into the running engines, no pod restarts.
    stack
        .patch_spec(json!({"model": {"adapters": [
            {"name": "sql", "source": "hf://org/sql-lora"},
            {"name": "chat", "source": "hf://org/chat-lora"},
        ]}}))
        .await;
    wait_for_adapters(&stack, &["chat", "sql"]).await;
    wait_until(
        Duration::from_secs(30),
        "the EndpointPicker routes the new adapter",
        || async { (ask(&epp, "chat", "hello").await.0 == 200).then_some(()) },
    )
    .await;
    for i in 0..6 {
        let (status, pod) = ask(&epp, "chat", &format!("hello {i}")).await;
        assert_eq!(status, 200);
        assert!(decode.contains(&pod.expect("x-inference-pod")));
    }
    assert_eq!(
        identities(&stack.role("decode").await),
        before,
        "the same pods, never restarted"
    );
    assert_eq!(
        generation().await,
        generation_before,
        "the pod template did not change"
    );

    // Remove one: unloaded, and no longer routed.
    stack
        .patch_spec(json!({"model": {"adapters": [
            {"name": "chat", "source": "hf://org/chat-lora"},
        ]}}))
        .await;
    wait_for_adapters(&stack, &["chat"]).await;
    wait_until(
        Duration::from_secs(30),
        "the EndpointPicker stops routing the removed adapter",
        || async { (ask(&epp, "sql", "select").await.0 == 404).then_some(()) },
    )
    .await;
    assert_eq!(identities(&stack.role("decode").await), before);

    let described = kubectl_ok(&["describe", "llmd", NAME, "-n", stack.namespace()]);
    for needle in [
        "adapter sql loaded into running engines",
        "adapter chat loaded into running engines",
        "adapter sql unloaded from running engines",
    ] {
        assert!(described.contains(needle), "{needle} in:\n{described}");
    }
}
