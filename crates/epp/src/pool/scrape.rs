//! Scraping every endpoint's `/metrics` (and, now and then, `/v1/models`).
//!
//! One task per endpoint, each on its own clock with its own timeout, so a slow or
//! dead endpoint never delays the others. A supervisor starts and stops the tasks as
//! endpoints come and go and forgets departed endpoints in the prefix index.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::endpoint_picker::EndpointPicker;
use crate::pool::endpoint::EndpointState;
use crate::telemetry::{EndpointLabels, RoleLabels};
use llmd_api::engine_metrics;

/// How often one endpoint's ignored metric values are logged at most.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
pub struct ScrapeSettings {
    pub interval: Duration,
    pub timeout: Duration,
    /// How often the model list is refreshed.
    pub models_interval: Duration,
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// Runs forever: keeps one scrape task per endpoint in the pool.
pub async fn run(picker: Arc<EndpointPicker>, client: reqwest::Client, settings: ScrapeSettings) {
    let mut tasks: HashMap<Arc<str>, (Arc<EndpointState>, JoinHandle<()>)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pool = picker.registry.snapshot();
        tasks.retain(|addr, (state, handle)| {
            let keep = pool.get(addr).is_some_and(|s| Arc::ptr_eq(s, state));
            if !keep {
                handle.abort();
                let labels = EndpointLabels {
                    endpoint: addr.to_string(),
                };
                picker.telemetry.endpoint_waiting.remove(&labels);
                picker.telemetry.endpoint_running.remove(&labels);
                picker.telemetry.endpoint_kv_cache_usage.remove(&labels);
            }
            keep
        });
        for (addr, state) in pool.iter() {
            if !tasks.contains_key(addr) {
                let handle = tokio::spawn(scrape_loop(
                    picker.clone(),
                    client.clone(),
                    state.clone(),
                    settings,
                ));
                tasks.insert(addr.clone(), (state.clone(), handle));
            }
        }
        picker.index.retain(|a| pool.contains_key(a));
        let mut roles: HashMap<&'static str, i64> = HashMap::new();
        for s in pool.values() {
            *roles.entry(s.endpoint.role.as_str()).or_default() += 1;
        }
        for role in ["prefill", "decode", "both", "none"] {
            picker
                .telemetry
                .endpoints
                .get_or_create(&RoleLabels { role: role.into() })
                .set(roles.get(role).copied().unwrap_or(0));
        }
    }
}

async fn scrape_loop(
    picker: Arc<EndpointPicker>,
    client: reqwest::Client,
    state: Arc<EndpointState>,
    settings: ScrapeSettings,
) {
    let metrics_url = format!("http://{}/metrics", state.endpoint.address);
    let models_url = format!("http://{}/v1/models", state.endpoint.address);
    let mut next_models = Instant::now();
    let mut next_rejection_log = Instant::now();
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match fetch(&client, &metrics_url, settings.timeout).await {
            Ok(text) => {
                let metrics = engine_metrics::parse(&text);
                if metrics.rejected_samples > 0 {
                    picker
                        .telemetry
                        .rejected_samples
                        .inc_by(u64::from(metrics.rejected_samples));
                    // Once a minute per endpoint: a broken exporter must not flood the log.
                    if Instant::now() >= next_rejection_log {
                        next_rejection_log = Instant::now() + REJECTION_LOG_INTERVAL;
                        tracing::warn!(endpoint = %state.endpoint.address, samples = metrics.rejected_samples, "ignoring NaN, negative or absurd metric values");
                    }
                }
                picker.record_scrape(&state, metrics);
            }
            Err(e) => {
                picker.telemetry.scrape_errors.inc();
                tracing::debug!(endpoint = %state.endpoint.address, error = %e, "metrics scrape failed");
            }
        }
        if Instant::now() >= next_models {
            next_models = Instant::now() + settings.models_interval;
            if let Ok(text) = fetch(&client, &models_url, settings.timeout).await
                && let Ok(list) = serde_json::from_str::<ModelList>(&text)
            {
                state.models.store(Some(Arc::new(
                    list.data.into_iter().map(|m| m.id).collect(),
                )));
            }
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<String, String> {
    let response = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    response.text().await.map_err(|e| e.to_string())
}
