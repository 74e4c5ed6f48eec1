//! Reading the EndpointPicker's metrics: one scrape per Ready EPP replica, so the
//! operator's cost grows with deployments, not with model servers. The tuner reads
//! latency from them; the reconcile reads which pods' KV events reach each replica.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use llmd_api::endpoint_picker::{METRICS_PORT, selector_string};
use llmd_api::labels;

use crate::context::Context;
use crate::error::{Error, Result};

/// How long one replica may take to answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The client for EndpointPicker scrapes.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The replicas' `/metrics` pages by pod name, or why not every replica could be read.
pub enum Scrape {
    Complete(BTreeMap<String, String>),
    /// Some replica did not answer (or answered garbage): its window would be
    /// partial, so nothing is decided from it.
    Partial(String),
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Scrapes every Ready EPP replica of deployment `name` in `namespace`.
pub async fn scrape(ctx: &Context, namespace: &str, name: &str) -> Result<Scrape> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = selector_string(&BTreeMap::from([
        (labels::INSTANCE.to_string(), name.to_string()),
        (labels::COMPONENT.to_string(), "endpoint-picker".to_string()),
    ]));
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list EndpointPicker pods", e))?;
    let replicas: Vec<(String, String)> = list
        .items
        .iter()
        .filter(|p| ready(p) && p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?)))
        .collect();
    if replicas.is_empty() {
        return Ok(Scrape::Partial("no Ready EndpointPicker replica".into()));
    }
    let answers = join_all(replicas.iter().map(|(_, ip)| {
        let url = format!("http://{ip}:{METRICS_PORT}/metrics");
        async move {
            let response = ctx
                .http
                .get(url)
                .send()
                .await
                .ok()?
                .error_for_status()
                .ok()?;
            response.text().await.ok()
        }
    }))
    .await;
    let mut pages = BTreeMap::new();
    for ((pod, _), page) in replicas.into_iter().zip(answers) {
        let Some(page) = page else {
            return Ok(Scrape::Partial(format!(
                "EndpointPicker {pod} did not answer on /metrics"
            )));
        };
        // An EPP that served nothing yet has no latency series, but always its
        // config info: a page without it is not an EndpointPicker's.
        if !page.contains("llmd_epp_config_info") {
            return Ok(Scrape::Partial(format!(
                "EndpointPicker {pod}'s /metrics is not an EndpointPicker's"
            )));
        }
        pages.insert(pod, page);
    }
    Ok(Scrape::Complete(pages))
}
