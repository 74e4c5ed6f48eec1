//! State shared by every reconcile.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};
use llmd_api::LLMDeployment;
use tokio::sync::Notify;
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
    /// The generation of each deployment whose undesired children this process
    /// has looked for (they appear only when the spec changes).
    pruned: Mutex<HashMap<ObjectRef<LLMDeployment>, i64>>,
    /// Whether InferencePools are served, and when that was asked.
    pools_served: Mutex<Option<(Instant, bool)>>,
    /// Deployments with adapters whose engines the adapter loader should look at
    /// now, and its wake-up.
    adapters_due: Mutex<HashSet<ObjectRef<LLMDeployment>>>,
    pub adapters_wake: Notify,
}

/// How long an answer about served APIs is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(10);

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
            pruned: Mutex::new(HashMap::new()),
            pools_served: Mutex::new(None),
            adapters_due: Mutex::new(HashSet::new()),
            adapters_wake: Notify::new(),
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

    /// Whether this reconcile should look for undesired children: once per
    /// generation of a deployment that has been reconciled before (a new one has
    /// none yet).
    pub fn should_prune(&self, ld: &LLMDeployment) -> bool {
        if ld.status.is_none() {
            return false;
        }
        let pruned = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
        pruned.get(&ObjectRef::from(ld)) != ld.metadata.generation.as_ref()
    }

    /// Records that `ld`'s undesired children are gone for its generation.
    pub fn pruned(&self, ld: &LLMDeployment) {
        let mut pruned = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
        pruned.insert(ObjectRef::from(ld), ld.metadata.generation.unwrap_or(0));
    }

    /// Whether InferencePools are served, asked at most every few seconds.
    pub async fn inference_pool_served(&self) -> crate::error::Result<bool> {
        if let Some((at, served)) = *self.pools_served.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(served);
        }
        let served = crate::discovery::inference_pool_served(&self.client).await?;
        *self.pools_served.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), served));
        Ok(served)
    }

    /// A reconcile of `ld` saw its children change (a new pod, a new spec): the
    /// adapter loader looks at its engines now rather than at its next round.
    pub fn adapters_may_have_changed(&self, ld: &LLMDeployment) {
        if ld.spec.model.adapters.is_empty() {
            return;
        }
        let mut due = self.adapters_due.lock().unwrap_or_else(|p| p.into_inner());
        due.insert(ObjectRef::from(ld));
        self.adapters_wake.notify_one();
    }

    /// The deployments marked by [`Context::adapters_may_have_changed`] since the
    /// last call.
    pub fn take_adapters_due(&self) -> HashSet<ObjectRef<LLMDeployment>> {
        std::mem::take(&mut *self.adapters_due.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn reset_failures(&self, ld: &LLMDeployment) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&ObjectRef::from(ld));
    }
}
