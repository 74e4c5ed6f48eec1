//! Loading the EndpointPickerConfig file and applying changes live.
//!
//! A mounted ConfigMap is updated in place (an atomic symlink swap), so the file is
//! polled: when its text changes it is parsed and validated, and either put in force
//! atomically or refused with a logged reason and a metric, the last good config
//! staying in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::endpoint_picker::EndpointPicker;
use llmd_api::endpoint_picker_config::{ConfigError, SchedulerConfig};

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

/// Polls `path` every `interval` and applies changes to `picker`.
pub async fn watch(path: PathBuf, interval: Duration, picker: Arc<EndpointPicker>) {
    let mut last_text: Option<String> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "config file unreadable; keeping the config in force");
                continue;
            }
        };
        if last_text.as_deref() == Some(text.as_str()) {
            continue;
        }
        match SchedulerConfig::from_yaml(&text) {
            Ok(config) if config.hash == picker.config().hash => {}
            Ok(config) => {
                let hash = config.hash.clone();
                picker.apply_config(config);
                tracing::info!(path = %path.display(), %hash, "config applied");
            }
            Err(e) => {
                picker.telemetry.record_config_rejected();
                tracing::error!(path = %path.display(), reason = %e, "config rejected; the last good config stays in force");
            }
        }
        last_text = Some(text);
    }
}
