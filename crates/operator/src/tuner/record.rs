//! Recording what the tuner decided: `status.routing` (weights in force, the
//! incumbent during an experiment, the reason in numbers, a bounded history), with
//! the tuner's own field manager, and an event. Written only when something changed,
//! so a quiet deployment writes nothing.

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, ResourceExt};
use llmd_api::{LLMDeployment, RoutingChange, RoutingStatus, ScorerWeights};
use llmd_tuner::candidates::describe_change;
use llmd_tuner::{Outcome, Step};
use serde_json::json;
use tracing::info;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::OutcomeLabel;

/// Field manager of the tuner's status writes (the reconcile leaves `status.routing`
/// to it while autoTune is on).
pub const FIELD_MANAGER: &str = "llmd-operator-tuner";
/// Experiments kept in `status.routing.history`.
pub const HISTORY: usize = 10;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn current(ld: &LLMDeployment) -> RoutingStatus {
    ld.status
        .as_ref()
        .and_then(|s| s.routing.clone())
        .unwrap_or_default()
}

/// The first record: the weights in force when the tuner starts on a deployment
/// that has none recorded.
pub async fn first(
    ctx: &Context,
    ld: &LLMDeployment,
    in_force: &ScorerWeights,
    recorded: &mut Option<ScorerWeights>,
) -> Result<()> {
    if recorded.is_some() {
        return Ok(());
    }
    let routing = RoutingStatus {
        weights: in_force.by_plugin(),
        config_hash: Some(
            crate::build::epp_config(
                &ld.spec,
                in_force,
                !crate::fabric_probe::splitting_allowed(ld),
            )
            .hash(),
        ),
        last_updated: Some(now()),
        reason: Some("autoTune: measuring the weights in force".into()),
        incumbent: None,
        history: current(ld).history,
    };
    write(ctx, ld, routing).await?;
    *recorded = Some(in_force.clone());
    Ok(())
}

/// Nothing can be decided (a replica's metrics are missing): the weights in force
/// stay, and the reason says why, written once.
pub async fn holding(
    ctx: &Context,
    ld: &LLMDeployment,
    in_force: &ScorerWeights,
    recorded: &mut Option<ScorerWeights>,
    why: &str,
) -> Result<()> {
    let reason = format!("autoTune holds the weights in force: {why}");
    let mut routing = current(ld);
    if routing.reason.as_deref() == Some(reason.as_str()) && recorded.as_ref() == Some(in_force) {
        return Ok(());
    }
    routing.weights = in_force.by_plugin();
    routing.config_hash = Some(
        crate::build::epp_config(
            &ld.spec,
            in_force,
            !crate::fabric_probe::splitting_allowed(ld),
        )
        .hash(),
    );
    routing.reason = Some(reason);
    if routing.last_updated.is_none() {
        routing.last_updated = Some(now());
    }
    write(ctx, ld, routing).await?;
    *recorded = Some(in_force.clone());
    Ok(())
}

/// After a slice: records the weights for the next one when they change, and the
/// verdict of an experiment that ended.
pub async fn step(
    ctx: &Context,
    ld: &LLMDeployment,
    step: &Step,
    incumbent: &ScorerWeights,
    recorded: &mut Option<ScorerWeights>,
) -> Result<()> {
    let moved = recorded.as_ref() != Some(&step.weights);
    if !moved && step.verdict.is_none() {
        return Ok(());
    }
    let mut routing = current(ld);
    let reason = match (&step.verdict, &step.started) {
        (Some(v), _) => format!("autoTune: {}", v.reason),
        (None, Some(why)) => format!("autoTune experiment: {why}"),
        (None, None) => format!(
            "autoTune: {}",
            step.holding.as_deref().unwrap_or("weights changed")
        ),
    };
    if let Some(v) = &step.verdict {
        routing.history.push(RoutingChange {
            time: now(),
            outcome: format!("{:?}", v.outcome),
            change: describe_change(&v.incumbent, &v.candidate),
            reason: v.reason.clone(),
        });
        let excess = routing.history.len().saturating_sub(HISTORY);
        routing.history.drain(..excess);
    }
    routing.weights = step.weights.by_plugin();
    routing.config_hash = Some(
        crate::build::epp_config(
            &ld.spec,
            &step.weights,
            !crate::fabric_probe::splitting_allowed(ld),
        )
        .hash(),
    );
    routing.incumbent = (step.weights != *incumbent).then(|| incumbent.by_plugin());
    routing.reason = Some(reason.clone());
    if moved {
        routing.last_updated = Some(now());
    }
    write(ctx, ld, routing).await?;
    *recorded = Some(step.weights.clone());
    if let Some(v) = &step.verdict {
        ctx.metrics
            .tuner_verdicts
            .get_or_create(&OutcomeLabel {
                outcome: v.outcome.as_str(),
            })
            .inc();
    }
    let event_reason = match step.verdict.as_ref().map(|v| v.outcome) {
        Some(Outcome::Kept) => "WeightsTuned",
        Some(Outcome::RolledBack | Outcome::StoppedEarly) => "TuningRolledBack",
        Some(Outcome::Abandoned) => "TuningAbandoned",
        None => "TuningExperiment",
    };
    info!(name = %ld.name_any(), weights = ?step.weights, "{reason}");
    ctx.publish(
        ld,
        Event {
            type_: EventType::Normal,
            reason: event_reason.into(),
            note: Some(reason.chars().take(1000).collect()),
            action: "Tune".into(),
            secondary: None,
        },
    )
    .await;
    Ok(())
}

/// Whether status.routing holds what only the tuner writes (history, an incumbent).
pub fn has_tuner_fields(ld: &LLMDeployment) -> bool {
    ld.status
        .as_ref()
        .and_then(|s| s.routing.as_ref())
        .is_some_and(|r| !r.history.is_empty() || r.incumbent.is_some())
}

/// Gives up every status field the tuner wrote: server-side apply removes what no
/// other field manager also set (the history, the incumbent); the reconcile's
/// static weights stay.
pub async fn release(ctx: &Context, ld: &LLMDeployment) -> Result<()> {
    apply_status(ctx, ld, json!({}), "release status.routing").await
}

async fn write(ctx: &Context, ld: &LLMDeployment, routing: RoutingStatus) -> Result<()> {
    apply_status(
        ctx,
        ld,
        json!({ "routing": routing }),
        "write status.routing",
    )
    .await
}

/// Server-side applies `status` as the tuner's field manager: the status fields it
/// owns become exactly these.
async fn apply_status(
    ctx: &Context,
    ld: &LLMDeployment,
    status: serde_json::Value,
    what: &str,
) -> Result<()> {
    let name = ld.name_any();
    let namespace = ld.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<LLMDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = json!({
        "apiVersion": "llmd.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| Error::kube(format!("{what} of {name}"), e))?;
    ctx.metrics.tuner_writes.inc();
    Ok(())
}
