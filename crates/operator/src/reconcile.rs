//! The reconcile of one LLMDeployment, as a pipeline:
//! `validate -> build -> apply -> observe -> status`.
//! Validation and building are pure; `apply`, `observe` and `status::write` talk to
//! the API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use llmd_api::LLMDeployment;
use llmd_api::conditions::reason;
use tracing::info;

use crate::build::{self, BuildOptions, Owner};
use crate::conditions::Failure;
use crate::context::Context;
use crate::error::{Category, Error, Result};
use crate::fabric_probe::{self, Probe};
use crate::leader_election::ensure_leading;
use crate::observe::Observed;
use crate::status::{self, Facts};
use crate::{apply, discovery, events, rendering, validate};

/// Where the KV fabric probe stands, advanced one step when the fabric can be
/// probed (valid spec, Ready prefill and decode pods on the current config).
async fn probe_fabric(
    ctx: &Context,
    owner: &Owner,
    ld: &LLMDeployment,
    observed: &Observed,
    invalid: bool,
) -> Result<Probe> {
    if fabric_probe::current_key(ld).is_none() || (!invalid && observed.kv_peers_ready()) {
        return fabric_probe::advance(ctx, owner, ld).await;
    }
    Ok(match fabric_probe::recorded(ld) {
        Some(done) => Probe::Done(done.clone()),
        None => Probe::Probing("waiting for Ready prefill and decode pods".into()),
    })
}

/// How often a settled deployment is looked at again without any event.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a deployment that is still rolling out, or has an object in the way of a
/// child, is looked at again.
const PROGRESS_CHECK: Duration = Duration::from_secs(10);
/// How often a deployment waiting for the LeaderWorkerSet API asks again.
const LWS_CHECK: Duration = Duration::from_secs(15);
/// How often a running KV fabric probe is looked at.
const PROBE_CHECK: Duration = Duration::from_secs(1);
/// How often the EndpointPicker is asked again while some pod's KV events have not
/// reached it (an engine publishes only once it serves).
const KV_EVENTS_CHECK: Duration = Duration::from_secs(30);

/// The reconcile entry point the controller calls.
pub async fn reconcile(ld: Arc<LLMDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&ld, &ctx).await;
    ctx.metrics.observe_reconcile(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok() {
        ctx.reset_failures(&ld);
    }
    result
}

/// Now, at the second precision the API keeps.
fn now() -> Time {
    let seconds = chrono::Utc::now().timestamp();
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

async fn reconcile_inner(ld: &LLMDeployment, ctx: &Context) -> Result<Action> {
    if ld.metadata.deletion_timestamp.is_some() {
        // Children carry owner references: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let owner = Owner::of(ld).ok_or(Error::MissingMetadata("namespace or uid"))?;
    let pool_served = ctx.inference_pool_served().await?;

    // validate
    let mut failure = validate::failure(&ld.spec);
    if failure.is_some() {
        ctx.metrics.count_error(Category::InvalidSpec);
    }
    // A replica spanning nodes needs the LeaderWorkerSet API: asked only then.
    let mut lws_missing = false;
    if failure.is_none() && !validate::multi_node_roles(&ld.spec).is_empty() {
        lws_missing = !discovery::leader_worker_set_served(&ctx.client).await?;
        if lws_missing {
            failure = validate::leader_worker_set_missing(&ld.spec);
        }
    }

    // build
    let mut options = BuildOptions {
        epp_defaults: ctx.epp_defaults.clone(),
        inference_pool_served: pool_served,
        tuned_weights: ld.tuned_weights(),
        fabric_unproven: !fabric_probe::splitting_allowed(ld),
        autoscaled: ld.status.as_ref().and_then(|s| s.autoscaling.clone()),
    };
    let mut children = build::build(&owner, &ld.spec, &options);

    // apply: model-server pods keep their rendering unless the user asks for ours.
    let fresh = ld
        .annotations()
        .get(rendering::OPT_IN)
        .is_some_and(|v| v == rendering::OPT_IN_LATEST);
    let prune = ctx.should_prune(ld);
    let mut refused = None;
    let mut applied = None;
    if failure.is_none() {
        match apply::apply(ctx, &owner, &children, pool_served, fresh, prune).await {
            Ok(done) => {
                if prune {
                    ctx.pruned(ld);
                }
                ctx.adapters_may_have_changed(ld);
                failure = done.conflict_failure();
                ensure_leading()?;
                events::children_updated(ctx, ld, &done).await;
                applied = Some(done);
            }
            Err(e @ Error::Refused { .. }) => {
                failure = Some(Failure {
                    reason: reason::APPLY_FAILED,
                    message: e.to_string(),
                });
                refused = Some(e);
            }
            Err(e) => return Err(e),
        }
    }

    // observe
    let mut observed = match &applied {
        Some(applied) => Observed::from_applied(&applied.live, &owner, &ld.spec),
        None => Observed::read(ctx, &owner, &ld.spec).await?,
    };
    // A deployment's first reconcile has just created its pods' owners: none can be
    // unschedulable yet.
    if ld.status.is_some() {
        observed.find_unschedulable(ctx, &owner).await?;
    }
    observed.find_kv_events(ctx, &owner, &ld.spec).await?;
    observed.kv_probe = probe_fabric(ctx, &owner, ld, &observed, failure.is_some()).await?;
    // A probe that just finished changes what the EndpointPicker may do: apply that
    // now, so no status says the fabric is proven while its config says otherwise.
    let unproven = !observed.kv_probe.allows_splitting();
    if failure.is_none() && unproven != options.fabric_unproven {
        options.fabric_unproven = unproven;
        children = build::build(&owner, &ld.spec, &options);
        apply::apply(ctx, &owner, &children, pool_served, fresh, false).await?;
        ensure_leading()?;
    }

    // status
    let mut facts = Facts::of(&owner, &ld.spec, pool_served, &children);
    facts.kept_renderings = applied.as_ref().map(|a| a.kept.clone()).unwrap_or_default();
    let new_status = status::desired(ld, &observed, failure.as_ref(), &facts, &now());
    ensure_leading()?;
    events::transitions(ctx, ld, &new_status).await;
    events::newer_rendering(ctx, ld, &new_status).await;
    let lds: Api<LLMDeployment> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    if status::write(&lds, ld, new_status).await? {
        ctx.metrics.status_writes.inc();
    }

    if let Some(e) = refused {
        return Err(e);
    }
    if applied.as_ref().is_some_and(|a| !a.conflicts.is_empty()) {
        // What is in the way is not ours, so no watch reports its removal: look again.
        return Ok(Action::requeue(PROGRESS_CHECK));
    }
    if lws_missing {
        // Installing a CRD is no event of ours: look again.
        return Ok(Action::requeue(LWS_CHECK));
    }
    if failure.is_some() {
        info!(name = %owner.name, namespace = %owner.namespace, "spec cannot be served; waiting for a change");
        return Ok(Action::await_change());
    }
    // A running probe is looked at every second (its Jobs are not watched); one
    // waiting for Ready pods follows the rollout's pace.
    let probe_running = matches!(observed.kv_probe, Probe::Probing(_)) && observed.kv_peers_ready();
    Ok(Action::requeue(if probe_running {
        PROBE_CHECK
    } else if !observed.settled() {
        PROGRESS_CHECK
    } else if observed.kv_events.as_ref().is_some_and(|k| !k.complete()) {
        KV_EVENTS_CHECK
    } else {
        RESYNC
    }))
}
