//! The runner's nodes, registered and kept alive as a kubelet does its own: the
//! Node object (labels, taints, capacity, addresses), a Ready condition, and a
//! Lease in `kube-node-lease` renewed every 10 s, which is what the node
//! lifecycle controller watches to decide a node is alive.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::config::NodeConfig;

pub const FIELD_MANAGER: &str = "llmd-pod-runner";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How often the Ready condition's heartbeat is rewritten when nothing changed.
pub const STATUS_REFRESH: Duration = Duration::from_secs(60);

/// The Node object (metadata and spec) for server-side apply.
pub fn node_object(node: &NodeConfig) -> Value {
    let mut labels: BTreeMap<String, String> = BTreeMap::from([
        ("kubernetes.io/hostname".into(), node.name.clone()),
        ("kubernetes.io/os".into(), "linux".into()),
        ("kubernetes.io/arch".into(), "amd64".into()),
    ]);
    labels.extend(node.labels.clone());
    let taints: Vec<Value> = node
        .taints
        .iter()
        .map(|t| json!({"key": t.key, "value": t.value, "effect": t.effect}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": node.annotations,
        },
        "spec": { "taints": taints },
    })
}

/// The Node status: capacity (also allocatable), the address pods and clients
/// reach the node at, and the conditions with `ready` as the Ready status.
pub fn node_status(
    node: &NodeConfig,
    address: Ipv4Addr,
    ready: bool,
    since: Timestamp,
    now: Timestamp,
) -> Value {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": Time(now),
            "lastTransitionTime": Time(since),
        })
    };
    let ready_condition = if ready {
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "llmd-pod-runner is posting ready status",
        )
    } else {
        condition(
            "Ready",
            "False",
            "KubeletNotReady",
            "llmd-pod-runner stopped",
        )
    };
    json!({
        "status": {
            "capacity": node.capacity,
            "allocatable": node.capacity,
            "addresses": [
                {"type": "InternalIP", "address": address.to_string()},
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
                ready_condition,
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": concat!("llmd-pod-runner/", env!("CARGO_PKG_VERSION")),
                "containerRuntimeVersion": "llmd-pod-runner://processes",
                "kernelVersion": "",
                "osImage": "",
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
                "kubeProxyVersion": "",
            },
        }
    })
}

fn lease(node: &str, now: Timestamp) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": node, "namespace": LEASE_NAMESPACE},
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": MicroTime(now),
        },
    })
}

/// Registers the nodes and keeps them alive.
pub struct Nodes {
    client: kube::Client,
    nodes: Vec<NodeConfig>,
    address: Ipv4Addr,
    since: Timestamp,
}

impl Nodes {
    pub fn new(client: kube::Client, nodes: Vec<NodeConfig>, address: Ipv4Addr) -> Self {
        Self {
            client,
            nodes,
            address,
            since: Timestamp::now(),
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Create or update every Node and mark it Ready.
    pub async fn register(&self) -> Result<(), kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for node in &self.nodes {
            api.patch(&node.name, &params, &Patch::Apply(node_object(node)))
                .await?;
        }
        self.post_status(true).await?;
        self.renew_leases().await
    }

    pub async fn post_status(&self, ready: bool) -> Result<(), kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let now = Timestamp::now();
        let since = if ready { self.since } else { now };
        for node in &self.nodes {
            let status = node_status(node, self.address, ready, since, now);
            api.patch_status(
                &node.name,
                &PatchParams::default(),
                &Patch::Strategic(status),
            )
            .await?;
        }
        Ok(())
    }

    pub async fn renew_leases(&self) -> Result<(), kube::Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let now = Timestamp::now();
        for node in &self.nodes {
            api.patch(&node.name, &params, &Patch::Apply(lease(&node.name, now)))
                .await?;
        }
        Ok(())
    }

    /// Renew the leases every 10 s and the status every minute, until dropped.
    pub async fn heartbeat(&self) {
        let mut lease_tick = tokio::time::interval(LEASE_RENEW);
        let mut status_tick = tokio::time::interval(STATUS_REFRESH);
        lease_tick.tick().await;
        status_tick.tick().await;
        loop {
            tokio::select! {
                _ = lease_tick.tick() => {
                    if let Err(e) = self.renew_leases().await {
                        tracing::warn!(error = %e, "node lease renewal failed");
                    }
                }
                _ = status_tick.tick() => {
                    if let Err(e) = self.post_status(true).await {
                        tracing::warn!(error = %e, "node status update failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TaintConfig;

    fn gpu_node() -> NodeConfig {
        NodeConfig {
            name: "live-gpu-0".into(),
            labels: BTreeMap::from([("llmd.dev/live".into(), "true".into())]),
            annotations: BTreeMap::new(),
            capacity: BTreeMap::from([("nvidia.com/gpu".into(), "8".into())]),
            taints: vec![TaintConfig {
                key: "llmd.dev/live".into(),
                value: Some("true".into()),
                effect: "NoSchedule".into(),
            }],
        }
    }

    #[test]
    fn node_object_carries_labels_and_the_live_taint() {
        let obj = node_object(&gpu_node());
        assert_eq!(obj["metadata"]["labels"]["llmd.dev/live"], "true");
        assert_eq!(
            obj["metadata"]["labels"]["kubernetes.io/hostname"],
            "live-gpu-0"
        );
        assert_eq!(obj["spec"]["taints"][0]["effect"], "NoSchedule");
        let parsed: Node = serde_json::from_value(obj).expect("a Node");
        assert!(
            parsed
                .metadata
                .annotations
                .is_none_or(|a| !a.contains_key("kwok.x-k8s.io/node"))
        );
    }

    #[test]
    fn node_status_reports_capacity_address_and_readiness() {
        let now = Timestamp::now();
        let s = node_status(&gpu_node(), Ipv4Addr::new(10, 213, 0, 1), true, now, now);
        assert_eq!(s["status"]["allocatable"]["nvidia.com/gpu"], "8");
        assert_eq!(s["status"]["addresses"][0]["address"], "10.213.0.1");
        let ready = &s["status"]["conditions"][3];
        assert_eq!(
            (ready["type"].as_str(), ready["status"].as_str()),
            (Some("Ready"), Some("True"))
        );
        let s = node_status(&gpu_node(), Ipv4Addr::new(10, 213, 0, 1), false, now, now);
        assert_eq!(s["status"]["conditions"][3]["status"], "False");
    }
}
