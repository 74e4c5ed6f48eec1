//! Service-account credentials of a pod: TokenRequests bound to the pod (as the
//! kubelet makes them for projected token volumes), refreshed well before they
//! expire, and a per-pod kubeconfig that points our own binaries at the API
//! server with that token, so what they do is authorised by the pod's
//! ServiceAccount and its RBAC, not by the runner's credentials.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;

use crate::volumes::TokenKey;

/// The token behind the per-pod kubeconfig: the API server's default audience,
/// an hour long.
pub fn kubeconfig_token_key() -> TokenKey {
    TokenKey {
        audience: None,
        expiration_seconds: 3600,
    }
}

#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    issued_at: Instant,
    lifetime: Duration,
}

impl Issued {
    /// Refresh after 80% of the lifetime (the kubelet's rule), so a reader that
    /// re-reads its token file every minute never holds an expired one.
    pub fn needs_refresh(&self, now: Instant) -> bool {
        now.duration_since(self.issued_at) >= self.lifetime.mul_f64(0.8)
    }
}

/// The tokens of one pod, by audience and lifetime.
#[derive(Debug, Default)]
pub struct TokenCache {
    issued: BTreeMap<TokenKey, Issued>,
}

impl TokenCache {
    pub fn get(&self, key: &TokenKey) -> Option<String> {
        self.issued.get(key).map(|i| i.token.clone())
    }

    /// Keys in `wanted` that have no token or need a new one.
    pub fn due<'a>(
        &self,
        wanted: impl IntoIterator<Item = &'a TokenKey>,
        now: Instant,
    ) -> Vec<TokenKey> {
        wanted
            .into_iter()
            .filter(|k| self.issued.get(*k).is_none_or(|i| i.needs_refresh(now)))
            .cloned()
            .collect()
    }

    pub fn insert(&mut self, key: TokenKey, issued: Issued) {
        self.issued.insert(key, issued);
    }
}

/// Ask the API server for a token of the pod's ServiceAccount, bound to the pod
/// (it stops working when the pod is deleted).
pub async fn request(
    client: &kube::Client,
    pod: &Pod,
    key: &TokenKey,
) -> Result<Issued, kube::Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = service_account(pod);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: key.audience.iter().cloned().collect(),
            expiration_seconds: Some(key.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let issued_at = Instant::now();
    let response = api
        .create_token_request(&sa, &PostParams::default(), &request)
        .await?;
    let token = response.status.map(|s| s.token).unwrap_or_default();
    Ok(Issued {
        token,
        issued_at,
        lifetime: Duration::from_secs(u64::try_from(key.expiration_seconds).unwrap_or(3600)),
    })
}

pub fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// Whether the pod gets API credentials: its own `automountServiceAccountToken`,
/// else its ServiceAccount's, else yes.
pub fn automount(pod: &Pod, account: Option<&ServiceAccount>) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.automount_service_account_token)
        .or_else(|| account.and_then(|a| a.automount_service_account_token))
        .unwrap_or(true)
}

/// A kubeconfig for processes of the pod: the API server as reachable from the
/// pod network, its CA, the token file (re-read by clients as it is refreshed)
/// and the pod's namespace as the default.
pub fn kubeconfig(server: &str, ca_file: &Path, token_file: &Path, namespace: &str) -> String {
    let yaml = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server,
            "certificate-authority": ca_file.display().to_string(),
        }}],
        "users": [{"name": "pod", "user": {"tokenFile": token_file.display().to_string()}}],
        "contexts": [{"name": "pod", "context": {
            "cluster": "local", "user": "pod", "namespace": namespace,
        }}],
        "current-context": "pod",
    });
    serde_yaml::to_string(&yaml).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    #[test]
    fn tokens_are_refreshed_after_eighty_percent_of_their_life() {
        let start = Instant::now();
        let issued = Issued {
            token: "t".into(),
            issued_at: start,
            lifetime: Duration::from_secs(3600),
        };
        assert!(!issued.needs_refresh(start + Duration::from_secs(2879)));
        assert!(issued.needs_refresh(start + Duration::from_secs(2880)));
        let mut cache = TokenCache::default();
        let key = kubeconfig_token_key();
        assert_eq!(cache.due([&key], start), vec![key.clone()]);
        cache.insert(key.clone(), issued);
        assert!(cache.due([&key], start).is_empty());
        assert_eq!(cache.get(&key).as_deref(), Some("t"));
    }

    #[test]
    fn automount_follows_the_pod_then_the_service_account() {
        let mut pod = Pod::default();
        let mut sa = ServiceAccount::default();
        assert!(automount(&pod, None));
        sa.automount_service_account_token = Some(false);
        assert!(!automount(&pod, Some(&sa)));
        pod.spec = Some(PodSpec {
            automount_service_account_token: Some(true),
            ..PodSpec::default()
        });
        assert!(automount(&pod, Some(&sa)));
    }

    #[test]
    fn kubeconfig_uses_the_token_file_and_pod_namespace() {
        let text = kubeconfig(
            "https://10.213.0.1:6443",
            Path::new("/s/ca.crt"),
            Path::new("/s/pods/x/serviceaccount/token"),
            "team-a",
        );
        let parsed: kube::config::Kubeconfig = serde_yaml::from_str(&text).expect("kubeconfig");
        let user = parsed.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(
            user.token_file.as_deref(),
            Some("/s/pods/x/serviceaccount/token")
        );
        let ctx = parsed.contexts[0].context.as_ref().expect("context");
        assert_eq!(ctx.namespace.as_deref(), Some("team-a"));
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://10.213.0.1:6443"));
    }
}
