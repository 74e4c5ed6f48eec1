//! SSRF protection: the prefillers the sidecar may call are the Ready (or draining)
//! prefill pods of its own pool (a pod watch on the prefill selector), at their
//! `http` ports.
//! Any other address a request names is refused without being contacted.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

/// The prefiller addresses allowed, `ip:port` as [`SocketAddr`] prints them.
pub struct Allowlist {
    /// `None`: protection off, every well-formed address is allowed.
    addresses: Option<ArcSwap<BTreeSet<SocketAddr>>>,
    /// The watch listed the pods once (until then nothing is allowed).
    synced: AtomicBool,
}

impl Allowlist {
    /// No protection (`--enable-ssrf-protection` off).
    pub fn open() -> Self {
        Allowlist {
            addresses: None,
            synced: AtomicBool::new(true),
        }
    }

    /// Protection on, nothing allowed until [`Allowlist::replace`].
    pub fn enforced() -> Self {
        Allowlist {
            addresses: Some(ArcSwap::from_pointee(BTreeSet::new())),
            synced: AtomicBool::new(false),
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Whether a prefiller named `address` may be called.
    pub fn allows(&self, address: SocketAddr) -> bool {
        match &self.addresses {
            None => true,
            Some(set) => set.load().contains(&address),
        }
    }

    pub fn replace(&self, addresses: BTreeSet<SocketAddr>) {
        if let Some(set) = &self.addresses {
            set.store(Arc::new(addresses));
        }
        self.synced.store(true, Ordering::Release);
    }
}

/// Parses a prefiller header value: `ip:port`, optionally `http://`-prefixed; of a
/// comma-separated list the first (as llm-d's sidecar does).
pub fn parse_prefiller(value: &str) -> Result<SocketAddr, String> {
    let first = value.split(',').next().unwrap_or("").trim();
    let bare = first.strip_prefix("http://").unwrap_or(first);
    bare.parse::<SocketAddr>()
        .map_err(|_| format!("{value:?} is not an ip:port address"))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The addresses of the Ready `pods`, and of those terminating (they finish what
/// they were sent, and an EndpointPicker may have named one a moment before it saw
/// the deletion): each pod IP with every container port named `http`. A pod that
/// is starting or failing its probes is not a prefiller.
pub fn addresses<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_none() && !is_ready(pod) {
            continue;
        }
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let ports = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.name.as_deref() == Some("http"))
            .filter_map(|p| u16::try_from(p.container_port).ok());
        out.extend(ports.map(|port| SocketAddr::new(ip, port)));
    }
    out
}

/// Keeps `allowlist` equal to the Ready prefill pods' addresses, forever.
pub async fn watch(client: Client, namespace: String, selector: String, allowlist: Arc<Allowlist>) {
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(&selector);
    let mut pods: std::collections::BTreeMap<String, Pod> = Default::default();
    let mut init: std::collections::BTreeMap<String, Pod> = Default::default();
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let key = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    loop {
        match stream.try_next().await {
            Ok(Some(event)) => {
                let changed = match event {
                    Event::Apply(pod) => {
                        pods.insert(key(&pod), pod);
                        true
                    }
                    Event::Delete(pod) => pods.remove(&key(&pod)).is_some(),
                    Event::Init => {
                        init.clear();
                        false
                    }
                    Event::InitApply(pod) => {
                        init.insert(key(&pod), pod);
                        false
                    }
                    Event::InitDone => {
                        pods = std::mem::take(&mut init);
                        true
                    }
                };
                if changed {
                    let allowed = addresses(pods.values());
                    tracing::info!(prefillers = allowed.len(), "prefill pods changed");
                    allowlist.replace(allowed);
                }
            }
            Ok(None) => {
                tracing::error!("prefill pod watch ended");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "prefill pod watch error; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, terminating: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "deletionTimestamp": terminating.then_some("2026-01-01T00:00:00Z"),
            },
            "spec": {"containers": [{"name": "vllm", "ports": [
                {"name": "http", "containerPort": 8000},
                {"name": "nixl", "containerPort": 5600},
            ]}]},
            "status": {
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            },
        }))
        .expect("a pod")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn only_ready_or_draining_pods_at_their_http_ports_are_allowed() {
        let pods = [
            pod("p0", "10.0.0.1", true, false),
            pod("p1", "10.0.0.2", false, false),
            pod("p2", "10.0.0.3", false, true),
            pod("p3", "fd00::4", true, false),
        ];
        let allowed = addresses(&pods);
        assert_eq!(
            allowed,
            BTreeSet::from([
                addr("10.0.0.1:8000"),
                addr("10.0.0.3:8000"),
                addr("[fd00::4]:8000")
            ])
        );
        let list = Allowlist::enforced();
        assert!(!list.is_synced());
        assert!(
            !list.allows(addr("10.0.0.1:8000")),
            "nothing before the first list"
        );
        list.replace(allowed);
        assert!(list.is_synced());
        assert!(list.allows(addr("10.0.0.1:8000")));
        assert!(
            !list.allows(addr("10.0.0.1:5600")),
            "the side channel is not a prefiller"
        );
        assert!(!list.allows(addr("10.0.0.2:8000")), "not Ready");
        assert!(!list.allows(addr("169.254.169.254:80")));
        assert!(Allowlist::open().allows(addr("169.254.169.254:80")));
    }

    #[test]
    fn prefiller_headers_parse_like_llm_ds() {
        assert_eq!(parse_prefiller("10.0.0.1:8000"), Ok(addr("10.0.0.1:8000")));
        assert_eq!(
            parse_prefiller(" http://10.0.0.1:8000 , 10.0.0.2:8000"),
            Ok(addr("10.0.0.1:8000"))
        );
        assert_eq!(
            parse_prefiller("[fd00::1]:8000"),
            Ok(addr("[fd00::1]:8000"))
        );
        for bad in [
            "",
            "10.0.0.1",
            "metadata.google.internal:80",
            "10.0.0.1:99999",
            "a b",
        ] {
            assert!(parse_prefiller(bad).is_err(), "{bad:?}");
        }
    }
}
