//! Discovering the pool by watching Ready pods through the Kubernetes API.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use llmd_api::endpoint_picker::selector_string;
use llmd_api::inference_pool::InferencePool;
use llmd_api::labels;

use crate::pool::endpoint::{Endpoint, EndpointRegistry, Role};

/// Where to look for the pool's pods.
#[derive(Clone, Debug)]
pub struct PodWatchSettings {
    pub namespace: String,
    pub selector: String,
    pub target_port: u16,
}

/// The endpoint a pod contributes, if it is Ready, has an IP and is not terminating.
pub fn endpoint_of(pod: &Pod, target_port: u16) -> Option<Endpoint> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .as_ref()?
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    if !ready {
        return None;
    }
    let role_label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::ROLE))
        .map(String::as_str)
        .unwrap_or("");
    let role = Role::from_label(role_label).unwrap_or_else(|| {
        tracing::warn!(pod = ?pod.metadata.name, role = role_label, "unknown llm-d.ai/role; treating as unlabeled");
        Role::Unlabeled
    });
    let address = if ip.contains(':') {
        format!("[{ip}]:{target_port}")
    } else {
        format!("{ip}:{target_port}")
    };
    let label = |key: &str| pod.metadata.labels.as_ref().and_then(|l| l.get(key));
    let mut endpoint = Endpoint::new(address, role);
    if let Some(value) = label(labels::KV_COMPATIBILITY) {
        endpoint = endpoint.with_kv_compatibility(value.as_str());
    }
    if label(labels::ROUTING_SIDECAR).is_some_and(|v| v == "true") {
        endpoint = endpoint.with_sidecar();
    }
    Some(endpoint)
}

/// Watches pods forever, replacing the registry's set on every change.
pub async fn run(client: Client, settings: PodWatchSettings, registry: Arc<EndpointRegistry>) {
    let api: Api<Pod> = Api::namespaced(client, &settings.namespace);
    let config = watcher::Config::default().labels(&settings.selector);
    let mut pods: BTreeMap<String, Endpoint> = BTreeMap::new();
    let mut init: BTreeMap<String, Endpoint> = BTreeMap::new();
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    loop {
        match stream.try_next().await {
            Ok(Some(event)) => {
                let changed = match event {
                    Event::Apply(pod) => upsert(&mut pods, &pod, settings.target_port),
                    Event::Delete(pod) => pods.remove(&pod_key(&pod)).is_some(),
                    Event::Init => {
                        init.clear();
                        false
                    }
                    Event::InitApply(pod) => {
                        upsert(&mut init, &pod, settings.target_port);
                        false
                    }
                    Event::InitDone => {
                        pods = std::mem::take(&mut init);
                        true
                    }
                };
                if changed {
                    registry.replace_all(pods.values().cloned());
                    tracing::info!(endpoints = pods.len(), "pool changed");
                }
            }
            Ok(None) => {
                tracing::error!("pod watch ended");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "pod watch error; retrying"),
        }
    }
}

/// The label selector and first target port of an InferencePool.
pub async fn pool_selector(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(String, u16), String> {
    let api: Api<InferencePool> = Api::namespaced(client.clone(), namespace);
    let pool = api.get(name).await.map_err(|e| e.to_string())?;
    let selector = selector_string(&pool.spec.selector.match_labels);
    let port = pool
        .spec
        .target_ports
        .first()
        .and_then(|p| u16::try_from(p.number).ok())
        .ok_or("no valid targetPorts")?;
    Ok((selector, port))
}

fn pod_key(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn upsert(pods: &mut BTreeMap<String, Endpoint>, pod: &Pod, port: u16) -> bool {
    let key = pod_key(pod);
    match endpoint_of(pod, port) {
        Some(e) => pods.insert(key, e.clone()).as_ref() != Some(&e),
        None => pods.remove(&key).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ready: &str, ip: Option<&str>, role: Option<&str>) -> Pod {
        let labels = role
            .map(|r| format!(r#""labels": {{"llm-d.ai/role": "{r}"}},"#))
            .unwrap_or_default();
        let ip = ip
            .map(|i| format!(r#""podIP": "{i}","#))
            .unwrap_or_default();
        let json = format!(
            r#"{{"metadata": {{{labels} "name": "p"}},
                "status": {{{ip} "conditions": [{{"type": "Ready", "status": "{ready}"}}]}}}}"#
        );
        serde_json::from_str(&json).expect("pod json")
    }

    #[test]
    fn ready_pods_with_an_ip_become_endpoints_with_their_role() {
        assert_eq!(
            endpoint_of(&pod("True", Some("10.0.0.1"), Some("prefill")), 8000),
            Some(Endpoint::new("10.0.0.1:8000", Role::Prefill))
        );
        assert_eq!(
            endpoint_of(&pod("True", Some("10.0.0.2"), None), 8000),
            Some(Endpoint::new("10.0.0.2:8000", Role::Unlabeled))
        );
        assert_eq!(
            endpoint_of(&pod("True", Some("fd00::1"), Some("decode")), 8000),
            Some(Endpoint::new("[fd00::1]:8000", Role::Decode))
        );
    }

    #[test]
    fn unready_or_addressless_pods_are_skipped() {
        assert_eq!(
            endpoint_of(&pod("False", Some("10.0.0.1"), None), 8000),
            None
        );
        assert_eq!(endpoint_of(&pod("True", None, None), 8000), None);
    }

    fn pod_object(name: &str, ip: &str, ready: bool, role: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "5",
                         "labels": {"llm-d.ai/role": role}},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        })
    }

    /// The watch loop against a scripted API: the initial list and one watch event
    /// end up in the registry, the selector is sent as given, unready pods are left out.
    #[tokio::test]
    async fn watches_ready_pods_into_the_registry() {
        let (client, queries) = crate::scripted_api::list_then_watch(
            serde_json::json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "5"},
                "items": [
                    pod_object("d", "10.0.0.1", true, "decode"),
                    pod_object("u", "10.0.0.2", false, "decode"),
                    pod_object("p", "10.0.0.3", true, "prefill"),
                ]
            }),
            serde_json::json!({"type": "ADDED", "object": pod_object("n", "10.0.0.4", true, "both")}),
        );
        let registry = Arc::new(EndpointRegistry::new());
        let settings = PodWatchSettings {
            namespace: "ns".into(),
            selector: "app=x,llm-d.ai/inference-serving=true".into(),
            target_port: 8000,
        };
        let task = tokio::spawn(run(client, settings, registry.clone()));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while registry.len() < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        task.abort();
        let addresses: Vec<(String, Role)> = registry
            .snapshot()
            .values()
            .map(|s| (s.endpoint.address.to_string(), s.endpoint.role))
            .collect();
        assert_eq!(
            addresses,
            vec![
                ("10.0.0.1:8000".to_string(), Role::Decode),
                ("10.0.0.3:8000".to_string(), Role::Prefill),
                ("10.0.0.4:8000".to_string(), Role::Both),
            ]
        );
        let q = crate::scripted_api::sent(&queries).join("\n");
        assert!(
            q.contains("labelSelector=app%3Dx%2Cllm-d.ai%2Finference-serving%3Dtrue"),
            "{q}"
        );
    }

    #[test]
    fn upsert_reports_changes_and_removes_pods_that_turn_unready() {
        let mut pods = BTreeMap::new();
        assert!(upsert(&mut pods, &pod("True", Some("10.0.0.1"), None), 80));
        assert!(!upsert(&mut pods, &pod("True", Some("10.0.0.1"), None), 80));
        assert!(upsert(&mut pods, &pod("False", Some("10.0.0.1"), None), 80));
        assert!(pods.is_empty());
    }
}
