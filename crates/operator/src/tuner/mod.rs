//! The tuner, run by the operator: for each LLMDeployment with
//! `spec.router.autoTune.enabled`, every `interval` it reads the EndpointPicker's own
//! latency metrics (one scrape per EPP replica) and steps the deployment's
//! [`llmd_tuner::Tuner`], which runs experiments between the incumbent weighting and
//! candidates. When the weights in force change, or an experiment ends, it records
//! them in `status.routing` (with the reason in numbers and a bounded history) and
//! emits an event; the reconcile renders them into the `<name>-epp-config`
//! ConfigMap, which the EndpointPicker applies live. A quiet deployment writes
//! nothing.
//!
//! It runs inside the leader only, next to the controller, reading the controller's
//! cache of LLMDeployments.

pub mod record;
pub mod settings;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use llmd_api::{LLMDeployment, ScorerWeights};
use llmd_tuner::Tuner;
use llmd_tuner::epp_metrics::{Snapshot, window};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::context::Context;
use crate::epp_scrape::{self, Scrape};
use crate::error::Result;

/// What the tuner keeps about one deployment between slices.
struct Memory {
    next_run: Instant,
    tuner: Tuner,
    /// The last complete scrape and when it was taken.
    previous: Option<(Instant, BTreeMap<String, Snapshot>)>,
    /// The weights last recorded in status.routing.
    recorded: Option<ScorerWeights>,
    /// status.routing says the tuner holds for want of metrics.
    held: bool,
}

impl Memory {
    /// A fresh memory, seeded from what status.routing says, so a restarted operator
    /// carries on from the incumbent (an experiment in flight is dropped).
    fn seeded(ld: &LLMDeployment, now: Instant) -> Memory {
        let spec = ld.spec.scorer_weights();
        let routing = ld.status.as_ref().and_then(|s| s.routing.as_ref());
        let in_force = routing.and_then(|r| ScorerWeights::from_plugins(&r.weights));
        let incumbent = routing
            .and_then(|r| r.incumbent.as_ref())
            .and_then(ScorerWeights::from_plugins)
            .or_else(|| in_force.clone())
            .unwrap_or_else(|| spec.clone());
        Memory {
            next_run: now,
            tuner: Tuner::new(settings::of(&ld.spec.router.auto_tune), spec, incumbent),
            previous: None,
            recorded: in_force,
            held: false,
        }
    }
}

/// Run until `shutdown` fires.
pub async fn run(
    ctx: Arc<Context>,
    store: Store<LLMDeployment>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut memory: HashMap<ObjectRef<LLMDeployment>, Memory> = HashMap::new();
    // Deployments whose tuner-written routing this process released (once: a
    // failure is logged, not retried every second).
    let mut released: HashSet<ObjectRef<LLMDeployment>> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        // autoTune turned off: what the tuner wrote goes (its history, its
        // incumbent); the reconcile writes the static weights.
        for ld in store.state() {
            let key = ObjectRef::from(ld.as_ref());
            if ld.spec.router.auto_tune.enabled || !record::has_tuner_fields(&ld) {
                released.remove(&key);
                continue;
            }
            if released.insert(key)
                && let Err(e) = record::release(&ctx, &ld).await
            {
                warn!(name = %ld.name_any(), error = %e, "clearing the tuner's status.routing failed");
            }
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
            let entry = memory
                .entry(ObjectRef::from(ld.as_ref()))
                .or_insert_with(|| Memory::seeded(&ld, now));
            if entry.next_run > now {
                continue;
            }
            entry.next_run = now + settings::slice(&ld.spec.router.auto_tune);
            entry.tuner.reconfigure(
                settings::of(&ld.spec.router.auto_tune),
                ld.spec.scorer_weights(),
            );
            ctx.metrics.tuner_rounds.inc();
            if let Err(e) = round(&ctx, &ld, entry, now).await {
                warn!(name = %ld.name_any(), error = %e, "tuning round failed");
            }
        }
    }
}

/// One slice of one deployment.
async fn round(ctx: &Context, ld: &LLMDeployment, memory: &mut Memory, now: Instant) -> Result<()> {
    let namespace = ld.namespace().unwrap_or_default();
    let name = ld.name_any();
    let snapshots = match epp_scrape::scrape(ctx, &namespace, &name).await? {
        Scrape::Complete(pages) => pages
            .iter()
            .map(|(pod, page)| (pod.clone(), Snapshot::parse(page)))
            .collect::<BTreeMap<_, _>>(),
        Scrape::Partial(why) => {
            // Never decide from a partial window: the next one starts afresh.
            memory.previous = None;
            let in_force = memory.tuner.in_force().clone();
            memory.held = true;
            return record::holding(ctx, ld, &in_force, &mut memory.recorded, &why).await;
        }
    };
    let Some((then, previous)) = memory.previous.replace((now, snapshots.clone())) else {
        if std::mem::take(&mut memory.held) {
            // The reason said the tuner was holding: it measures again.
            memory.recorded = None;
        }
        return record::first(ctx, ld, memory.tuner.in_force(), &mut memory.recorded).await;
    };
    let slice = window(&previous, &snapshots, (now - then).as_secs_f64());
    let step = memory.tuner.step(&slice);
    debug!(%name, requests = slice.ttft.count, ?step, "tuning slice");
    record::step(
        ctx,
        ld,
        &step,
        memory.tuner.incumbent(),
        &mut memory.recorded,
    )
    .await
}
