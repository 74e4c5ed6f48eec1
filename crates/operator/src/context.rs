//! State shared by every reconcile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};
use llmd_api::LLMDeployment;
use tracing::debug;

use crate::build::EndpointPickerDefaults;
use crate::metrics::Metrics;

pub struct Context {
    pub client: Client,
    /// EndpointPicker image and resources when a spec leaves them unset.
    pub epp_defaults: EndpointPickerDefaults,
    pub metrics: Arc<Metrics>,
    /// For the EndpointPickers' `/metrics` (short timeouts).
    pub http: reqwest::Client,
    recorder: Recorder,
    /// Consecutive failed reconciles per object, for backoff.
    failures: Mutex<HashMap<ObjectRef<LLMDeployment>, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        instance: Option<String>,
        epp_defaults: EndpointPickerDefaults,
    ) -> Self {
        let reporter = Reporter {
            controller: "llmd-operator".into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            epp_defaults,
            metrics,
            http: crate::epp_scrape::client(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Publish an event on the LLMDeployment; a failure to publish is logged, never fatal.
    pub async fn publish(&self, ld: &LLMDeployment, event: Event) {
        if let Err(e) = self.recorder.publish(&event, &ld.object_ref(&())).await {
            debug!(error = %e, "could not publish event");
        }
    }

    /// Count a failure of `ld`; returns how many came before it in a row.
    pub fn record_failure(&self, ld: &LLMDeployment) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(ObjectRef::from(ld)).or_insert(0);
        let before = *count;
        *count = count.saturating_add(1);
        before
    }

    pub fn reset_failures(&self, ld: &LLMDeployment) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&ObjectRef::from(ld));
    }
}
