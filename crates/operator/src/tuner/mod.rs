//! The tuner: for each LLMDeployment with `spec.router.autoTune.enabled`,
//! every `interval` it scrapes the model servers' vLLM metrics, decides new scorer
//! weights with [`rule::decide`], records them in `status.routing` (with the reason)
//! and emits an event. The reconcile then renders them into the `<name>-epp-config`
//! ConfigMap, which the EndpointPicker applies live.
//!
//! It runs inside the leader only, next to the controller, reading the controller's
//! cache of LLMDeployments.

pub mod rule;
pub mod signals;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use llmd_api::endpoint_picker::{model_server_selector, selector_string};
use llmd_api::endpoint_picker_config::EndpointPickerConfig;
use llmd_api::engine_metrics::{self, EngineMetrics};
use llmd_api::{LLMDeployment, MODEL_SERVER_PORT, RoutingStatus, ScorerWeights};
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::error::{Error, Result};

/// Field manager of the tuner's status writes (the reconcile leaves `status.routing`
/// to it while autoTune is on).
pub const FIELD_MANAGER: &str = "llmd-operator-tuner";
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the tuner remembers about one deployment between intervals.
struct Memory {
    next_run: Instant,
    previous: BTreeMap<String, EngineMetrics>,
    /// The rules behind the last status write, so a new assessment is recorded
    /// even when the weights stay. Seeded from status after a restart.
    last_rules: Option<Vec<String>>,
}

/// Parse "30s", "2m", "1h" (the CRD's pattern).
pub fn parse_interval(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds.max(5)))
}

/// Run until `shutdown` fires.
pub async fn run(
    ctx: Arc<Context>,
    store: Store<LLMDeployment>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let http = match reqwest::Client::builder().timeout(SCRAPE_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "tuner disabled: no HTTP client");
            return;
        }
    };
    let mut memory: HashMap<ObjectRef<LLMDeployment>, Memory> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = Instant::now();
        let tuned: Vec<Arc<LLMDeployment>> = store
            .state()
            .into_iter()
            .filter(|ld| {
                ld.spec.router.auto_tune.enabled && ld.metadata.deletion_timestamp.is_none()
            })
            .collect();
        memory.retain(|key, _| tuned.iter().any(|ld| ObjectRef::from(ld.as_ref()) == *key));
        for ld in tuned {
            let interval = parse_interval(&ld.spec.router.auto_tune.interval)
                .unwrap_or(Duration::from_secs(30));
            let entry = memory
                .entry(ObjectRef::from(ld.as_ref()))
                .or_insert_with(|| Memory {
                    next_run: now,
                    previous: BTreeMap::new(),
                    last_rules: ld
                        .status
                        .as_ref()
                        .and_then(|s| s.routing.as_ref())
                        .filter(|r| !r.rules.is_empty())
                        .map(|r| r.rules.clone()),
                });
            if entry.next_run > now {
                continue;
            }
            entry.next_run = now + interval;
            ctx.metrics.tuner_rounds.inc();
            match tune(&ctx, &http, &ld, entry).await {
                Ok(()) => {}
                Err(e) => warn!(name = %ld.name_any(), error = %e, "tuning round failed"),
            }
        }
    }
}

/// Scrape every ready model server of `ld`: pod name -> metrics.
async fn scrape(
    ctx: &Context,
    http: &reqwest::Client,
    ld: &LLMDeployment,
) -> Result<BTreeMap<String, EngineMetrics>> {
    let namespace = ld.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = selector_string(&model_server_selector(&ld.name_any()));
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list model-server pods", e))?;
    let targets: Vec<(String, String)> = list
        .items
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?)))
        .collect();
    let pages = join_all(targets.iter().map(|(_, ip)| {
        let url = format!("http://{ip}:{MODEL_SERVER_PORT}/metrics");
        async move {
            http.get(url)
                .send()
                .await
                .ok()?
                .error_for_status()
                .ok()?
                .text()
                .await
                .ok()
        }
    }))
    .await;
    Ok(targets
        .into_iter()
        .zip(pages)
        .filter_map(|((pod, _), page)| Some((pod, engine_metrics::parse(&page?))))
        .collect())
}

/// One round for one deployment.
async fn tune(
    ctx: &Context,
    http: &reqwest::Client,
    ld: &LLMDeployment,
    memory: &mut Memory,
) -> Result<()> {
    let now_metrics = scrape(ctx, http, ld).await?;
    let signals = signals::from_scrapes(&memory.previous, &now_metrics);
    memory.previous = now_metrics;

    let spec = &ld.spec;
    let routing = ld.status.as_ref().and_then(|s| s.routing.as_ref());
    let current = routing
        .and_then(|r| ScorerWeights::from_plugins(&r.weights))
        .unwrap_or_else(|| spec.router.scorers.clone());
    let tune = &spec.router.auto_tune;
    let decision = rule::decide(
        &current,
        &spec.router.scorers,
        &signals,
        tune.min_weight,
        tune.max_weight,
    );
    // Written when the weights move, or when the assessment (which rules fired)
    // differs from the last one written, so status.routing.reason stays current.
    let rules: Vec<String> = decision
        .rules
        .iter()
        .map(|r| r.as_str().to_string())
        .collect();
    let new_assessment = memory.last_rules.as_ref() != Some(&rules);
    debug!(name = %ld.name_any(), ?signals, changed = decision.changed, "tuning round");
    if !decision.changed && !new_assessment {
        return Ok(());
    }
    let reason = format!("autoTune: {}", decision.reasons.join("; "));
    let config_hash = EndpointPickerConfig::for_spec(spec, &decision.weights).hash();
    let status = RoutingStatus {
        weights: decision.weights.by_plugin(),
        config_hash: Some(config_hash),
        last_updated: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        reason: Some(reason.clone()),
        rules: rules.clone(),
    };
    let name = ld.name_any();
    let namespace = ld.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<LLMDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = json!({
        "apiVersion": "llmd.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "status": {"routing": status},
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| Error::kube(format!("write status.routing of {name}"), e))?;
    memory.last_rules = Some(rules);
    ctx.metrics.tuner_writes.inc();
    info!(name = %name, weights = ?decision.weights, "{reason}");
    ctx.publish(
        ld,
        Event {
            type_: EventType::Normal,
            reason: "WeightsTuned".into(),
            note: Some(reason.chars().take(1000).collect()),
            action: "Tune".into(),
            secondary: None,
        },
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_with_a_floor_of_five_seconds() {
        assert_eq!(parse_interval("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_interval("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_interval("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_interval("1s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_interval("fast"), None);
        assert_eq!(parse_interval("10d"), None);
    }
}
