//! Keeping the config in force current, without a restart and keeping the prefix
//! index.
//!
//! Two sources: the `<name>-epp-config` ConfigMap itself, watched through the API
//! (`--config-map`; a change is in force within a second or two), and the mounted
//! file (`--config-file`), polled. A kubelet refreshes a mounted ConfigMap only every
//! minute or so, so while the API watch is live the file is only read at start-up;
//! it takes over when the watch fails. Either way a new config is parsed and
//! validated, and either put in force atomically or refused with a logged reason
//! and a metric, the last good config staying in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use llmd_api::endpoint_picker_config::{CONFIG_KEY, ConfigError, SchedulerConfig};

use crate::endpoint_picker::EndpointPicker;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid { path: String, source: ConfigError },
}

/// Reads and validates the file once (start-up).
pub fn load(path: &Path) -> Result<SchedulerConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    SchedulerConfig::from_yaml(&text).map_err(|source| LoadError::Invalid {
        path: path.display().to_string(),
        source,
    })
}

/// Whether the ConfigMap watch currently delivers: then it, not the file, is the
/// source of truth.
#[derive(Debug, Default)]
pub struct ApiSource {
    live: AtomicBool,
}

impl ApiSource {
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }
}

/// Validates `text` from `origin` and puts it in force unless it is the config
/// already in force.
fn offer(picker: &EndpointPicker, text: &str, origin: &str) {
    match SchedulerConfig::from_yaml(text) {
        Ok(config) if config.hash == picker.config().hash => {}
        Ok(config) => {
            let hash = config.hash.clone();
            picker.apply_config(config);
            tracing::info!(%origin, %hash, "config applied");
        }
        Err(e) => {
            picker.telemetry.record_config_rejected();
            tracing::error!(%origin, reason = %e, "config rejected; the last good config stays in force");
        }
    }
}

/// Polls `path` every `interval` and applies changes, unless the API source is live.
pub async fn watch_file(
    path: PathBuf,
    interval: Duration,
    picker: Arc<EndpointPicker>,
    api: Arc<ApiSource>,
) {
    let origin = path.display().to_string();
    let mut last_text: Option<String> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(path = %origin, error = %e, "config file unreadable; keeping the config in force");
                continue;
            }
        };
        if last_text.as_deref() == Some(text.as_str()) {
            continue;
        }
        if !api.is_live() {
            offer(&picker, &text, &origin);
        }
        last_text = Some(text);
    }
}

/// Watches ConfigMap `namespace/name` (a field selector on its name, so a Role
/// narrowed to that one resourceName suffices) and applies its config on change.
pub async fn watch_config_map(
    client: Client,
    namespace: String,
    name: String,
    picker: Arc<EndpointPicker>,
    api: Arc<ApiSource>,
) {
    let origin = format!("configmap {namespace}/{name}");
    let cms: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher::watcher(cms, config).default_backoff());
    loop {
        match stream.try_next().await {
            Ok(Some(Event::Apply(cm) | Event::InitApply(cm))) => {
                api.live.store(true, Ordering::Relaxed);
                match cm.data.as_ref().and_then(|d| d.get(CONFIG_KEY)) {
                    Some(text) => offer(&picker, text, &origin),
                    None => {
                        picker.telemetry.record_config_rejected();
                        tracing::error!(%origin, key = CONFIG_KEY, "key missing; the last good config stays in force");
                    }
                }
            }
            Ok(Some(Event::Delete(_))) => {
                tracing::warn!(%origin, "deleted; the last good config stays in force");
            }
            Ok(Some(Event::Init | Event::InitDone)) => {}
            Ok(None) => {
                api.live.store(false, Ordering::Relaxed);
                tracing::error!(%origin, "config watch ended");
                return;
            }
            Err(e) => {
                api.live.store(false, Ordering::Relaxed);
                tracing::warn!(%origin, error = %e, "config watch failed; retrying, the mounted file stands in");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use llmd_api::RouterSpec;
    use llmd_api::endpoint_picker_config::EndpointPickerConfig;

    use super::*;
    use crate::pool::endpoint::EndpointRegistry;
    use crate::scripted_api;
    use crate::telemetry::Telemetry;

    fn config_text(prefix_weight: f64) -> String {
        let mut router = RouterSpec::default();
        router.scorers.prefix_cache = prefix_weight;
        EndpointPickerConfig::for_router(&router, &router.scorers, false).to_yaml()
    }

    fn picker() -> Arc<EndpointPicker> {
        let start = SchedulerConfig::from_yaml(&config_text(3.0)).expect("valid");
        Arc::new(EndpointPicker::new(
            Arc::new(EndpointRegistry::new()),
            start,
            Arc::new(Telemetry::new()),
            Duration::from_secs(2),
        ))
    }

    fn config_map(text: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x-epp-config", "namespace": "ns", "resourceVersion": "7"},
            "data": {CONFIG_KEY: text},
        })
    }

    async fn wait_for_hash(picker: &EndpointPicker, hash: &str) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            if picker.config().hash == hash {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_config_map_change_is_applied_from_the_watch_by_name() {
        let updated = config_text(5.0);
        let (client, queries) = scripted_api::list_then_watch(
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMapList",
                "metadata": {"resourceVersion": "7"},
                "items": [config_map(&config_text(3.0))],
            }),
            serde_json::json!({"type": "MODIFIED", "object": config_map(&updated)}),
        );
        let picker = picker();
        let api = Arc::new(ApiSource::default());
        let task = tokio::spawn(watch_config_map(
            client,
            "ns".into(),
            "x-epp-config".into(),
            picker.clone(),
            api.clone(),
        ));
        let want = SchedulerConfig::from_yaml(&updated).expect("valid").hash;
        assert!(
            wait_for_hash(&picker, &want).await,
            "the watched change is in force"
        );
        assert!(api.is_live());
        task.abort();
        let queries = scripted_api::sent(&queries);
        assert!(
            queries
                .iter()
                .all(|q| q.contains("fieldSelector=metadata.name%3Dx-epp-config")),
            "{queries:?}"
        );
    }

    #[tokio::test]
    async fn the_file_stands_in_only_while_the_watch_is_not_live() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config_text(4.0)).expect("write");
        let picker = picker();
        let before = picker.config().hash.clone();
        let api = Arc::new(ApiSource::default());
        api.live.store(true, Ordering::Relaxed);
        let task = tokio::spawn(watch_file(
            path.clone(),
            Duration::from_millis(10),
            picker.clone(),
            api.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            picker.config().hash,
            before,
            "a stale file never overrides the API"
        );
        api.live.store(false, Ordering::Relaxed);
        std::fs::write(&path, config_text(6.0)).expect("write");
        let want = SchedulerConfig::from_yaml(&config_text(6.0))
            .expect("valid")
            .hash;
        assert!(wait_for_hash(&picker, &want).await, "the file takes over");
        task.abort();
    }
}
