//! The autoscaler, run by the operator next to the tuner (leader only, reading the
//! controller's cache): for each role with `spec.<role>.autoscaling`, every
//! `intervalSeconds` it reads the EndpointPicker's metrics (one scrape per replica)
//! and the role's pods, and steps that role's [`llmd_tuner::autoscale::Autoscaler`].
//! Its decision goes into `status.autoscaling.<role>` (with its own field manager)
//! and an Event when the count changes; the reconcile renders it into the role's
//! StatefulSet. `spec` is never written (GitOps tools own it). A role that holds
//! steady writes nothing.
//!
//! Scale-down drains: the StatefulSet removes its highest pods, whose deletion the
//! EndpointPicker sees at once, so it stops choosing them while they finish.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use llmd_api::endpoint_picker::selector_string;
use llmd_api::{AutoscalingSpec, AutoscalingStatus, LLMDeployment, RoleScaling, RoleSpec, labels};
use llmd_tuner::autoscale::{Autoscaler, Decision, Kind, Observation, Pages, Policy, measure};
use serde_json::json;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::build::model_server::Role;
use crate::context::Context;
use crate::epp_scrape::{self, Scrape};
use crate::error::{Error, Result};

/// Field manager of `status.autoscaling`.
pub const FIELD_MANAGER: &str = "llmd-operator-autoscaler";

/// One role's state between rounds.
#[derive(Default)]
struct RoleMemory {
    next_run: Option<Instant>,
    scaler: Autoscaler,
    previous: Option<Pages>,
    /// The kind of the decision last written (a change of kind is news).
    written: Option<Kind>,
}

/// One deployment's: its roles, and `status.autoscaling` as last written.
struct Memory {
    roles: HashMap<Role, RoleMemory>,
    status: AutoscalingStatus,
}

fn autoscaled(ld: &LLMDeployment, role: Role) -> Option<(&RoleSpec, &AutoscalingSpec)> {
    let spec = match role {
        Role::Prefill => ld.spec.active_prefill()?,
        Role::Decode => &ld.spec.decode,
    };
    Some((spec, spec.autoscaling.as_ref()?))
}

fn entry(status: &mut AutoscalingStatus, role: Role) -> &mut Option<RoleScaling> {
    match role {
        Role::Prefill => &mut status.prefill,
        Role::Decode => &mut status.decode,
    }
}

fn policy(a: &AutoscalingSpec) -> Option<Policy> {
    Some(Policy {
        min: a.min_replicas,
        max: a.max_replicas,
        target: a.target.signal()?,
        up_window: f64::from(a.scale_up_stabilization_seconds),
        down_window: f64::from(a.scale_down_stabilization_seconds),
    })
}

/// Run until `shutdown` fires.
pub async fn run(
    ctx: Arc<Context>,
    store: Store<LLMDeployment>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let started = Instant::now();
    let mut memory: HashMap<ObjectRef<LLMDeployment>, Memory> = HashMap::new();
    // Deployments whose status.autoscaling this process has cleared (once: what
    // another field manager owns stays, and is not retried every second).
    let mut cleared: HashSet<ObjectRef<LLMDeployment>> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = Instant::now();
        let live: Vec<Arc<LLMDeployment>> = store
            .state()
            .into_iter()
            .filter(|ld| ld.metadata.deletion_timestamp.is_none())
            .collect();
        memory.retain(|key, _| live.iter().any(|ld| ObjectRef::from(ld.as_ref()) == *key));
        cleared.retain(|key| live.iter().any(|ld| ObjectRef::from(ld.as_ref()) == *key));
        for ld in live {
            let recorded = ld.status.as_ref().and_then(|s| s.autoscaling.clone());
            let roles: Vec<Role> = [Role::Prefill, Role::Decode]
                .into_iter()
                .filter(|r| autoscaled(&ld, *r).is_some())
                .collect();
            let key = ObjectRef::from(ld.as_ref());
            if roles.is_empty() {
                memory.remove(&key);
                if recorded.is_some()
                    && cleared.insert(key)
                    && let Err(e) = write(&ctx, &ld, &AutoscalingStatus::default()).await
                {
                    warn!(name = %ld.name_any(), error = %e, "clearing status.autoscaling failed");
                }
                continue;
            }
            cleared.remove(&key);
            let deployment = memory.entry(key).or_insert_with(|| Memory {
                roles: HashMap::new(),
                status: recorded.unwrap_or_default(),
            });
            // A role no longer autoscaled leaves status.
            let mut dropped = false;
            for role in [Role::Prefill, Role::Decode] {
                if !roles.contains(&role) {
                    deployment.roles.remove(&role);
                    dropped |= entry(&mut deployment.status, role).take().is_some();
                }
            }
            if dropped && let Err(e) = write(&ctx, &ld, &deployment.status).await {
                warn!(name = %ld.name_any(), error = %e, "clearing a role's autoscaling failed");
            }
            step(
                &ctx,
                &ld,
                &roles,
                deployment,
                now,
                (now - started).as_secs_f64(),
            )
            .await;
        }
    }
}

/// The roles of one deployment whose interval is up: one scrape of its
/// EndpointPicker replicas serves them all, then each decides and records.
async fn step(
    ctx: &Context,
    ld: &LLMDeployment,
    roles: &[Role],
    deployment: &mut Memory,
    now: Instant,
    seconds: f64,
) {
    let due: Vec<(Role, &RoleSpec, Policy)> = roles
        .iter()
        .filter_map(|role| {
            let (role_spec, settings) = autoscaled(ld, *role)?;
            let state = deployment.roles.entry(*role).or_default();
            if state.next_run.is_some_and(|t| t > now) {
                return None;
            }
            state.next_run =
                Some(now + Duration::from_secs(settings.interval_seconds.max(5) as u64));
            Some((*role, role_spec, policy(settings)?))
        })
        .collect();
    if due.is_empty() {
        return;
    }
    let namespace = ld.namespace().unwrap_or_default();
    let pages = match epp_scrape::scrape(ctx, &namespace, &ld.name_any()).await {
        Ok(Scrape::Complete(pages)) => Ok(pages),
        Ok(Scrape::Partial(why)) => Err(why),
        Err(e) => Err(e.to_string()),
    };
    for (role, role_spec, policy) in due {
        let state = deployment.roles.entry(role).or_default();
        let decision = match round(
            ctx,
            ld,
            role,
            role_spec,
            &policy,
            state,
            &deployment.status,
            &pages,
            seconds,
        )
        .await
        {
            Ok(d) => d,
            Err(e) => {
                warn!(name = %ld.name_any(), role = role.label(), error = %e, "autoscaling round failed");
                continue;
            }
        };
        if let Err(e) = record(ctx, ld, role, decision, state, &mut deployment.status).await {
            warn!(name = %ld.name_any(), role = role.label(), error = %e, "recording an autoscaling decision failed");
        }
    }
}

/// The role's pods: the Ready ones' IPs, and how many the scheduler cannot place.
async fn pods(ctx: &Context, ld: &LLMDeployment, role: Role) -> Result<(Vec<String>, i32)> {
    let namespace = ld.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = selector_string(&std::collections::BTreeMap::from([
        (labels::INSTANCE.to_string(), ld.name_any()),
        (labels::ROLE.to_string(), role.label().to_string()),
        // Serving pods only: a multi-node replica's workers are not endpoints.
        (labels::INFERENCE_SERVING.to_string(), "true".to_string()),
    ]));
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list a role's pods", e))?;
    let condition = |p: &Pod, type_: &str, status: &str| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == status))
    };
    let mut ready = Vec::new();
    let mut pending = 0;
    for p in &list.items {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if condition(p, "PodScheduled", "False") {
            pending += 1;
        } else if condition(p, "Ready", "True")
            && let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone())
        {
            ready.push(ip);
        }
    }
    Ok((ready, pending))
}

/// One role's decision from this round's scrape (`pages`, or why there is none).
#[allow(clippy::too_many_arguments)]
async fn round(
    ctx: &Context,
    ld: &LLMDeployment,
    role: Role,
    role_spec: &RoleSpec,
    policy: &Policy,
    state: &mut RoleMemory,
    status: &AutoscalingStatus,
    pages: &std::result::Result<Pages, String>,
    seconds: f64,
) -> Result<Decision> {
    let (ready, pending) = pods(ctx, ld, role).await?;
    let signal = match pages {
        Ok(pages) => {
            let measured = measure(policy.target, pages, state.previous.as_ref(), &ready);
            state.previous = Some(pages.clone());
            measured
        }
        Err(why) => {
            state.previous = None;
            Err(why.clone())
        }
    };
    let current = match role {
        Role::Prefill => status.prefill.as_ref(),
        Role::Decode => status.decode.as_ref(),
    };
    Ok(state.scaler.decide(
        policy,
        &Observation {
            now: seconds,
            current: role_spec.desired_replicas(current),
            ready: ready.len() as i32,
            pending,
            signal,
        },
    ))
}

/// Writes the decision when the count or the kind of decision changed (or status
/// has none yet), with an Event for a change of count or a blocked scale-up.
async fn record(
    ctx: &Context,
    ld: &LLMDeployment,
    role: Role,
    decision: Decision,
    state: &mut RoleMemory,
    status: &mut AutoscalingStatus,
) -> Result<()> {
    let slot = entry(status, role);
    let previous = slot.clone();
    let moved = previous.as_ref().map(|p| p.replicas) != Some(decision.replicas);
    if !moved && state.written == Some(decision.kind) {
        return Ok(());
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    *slot = Some(RoleScaling {
        replicas: decision.replicas,
        observed: decision.observed.clone(),
        reason: decision.reason.clone(),
        last_scale_time: if moved && previous.is_some() {
            Some(now)
        } else {
            previous.and_then(|p| p.last_scale_time)
        },
    });
    write(ctx, ld, status).await?;
    // Metrics missing before the first ever reading (pods still starting) is no news.
    let had_metrics = state.written.is_some_and(|k| k != Kind::NoMetrics);
    state.written = Some(decision.kind);
    let event = match decision.kind {
        Kind::ScaledUp => Some((EventType::Normal, "ScaledUp")),
        Kind::ScaledDown => Some((EventType::Normal, "ScaledDown")),
        Kind::Unschedulable => Some((EventType::Warning, "ScaleUpBlocked")),
        Kind::NoMetrics if had_metrics => Some((EventType::Warning, "AutoscalingHeld")),
        _ => None,
    };
    info!(name = %ld.name_any(), role = role.label(), replicas = decision.replicas, "{}", decision.reason);
    if let Some((type_, reason)) = event {
        ctx.publish(
            ld,
            Event {
                type_,
                reason: reason.into(),
                note: Some(
                    format!("{}: {}", role.label(), decision.reason)
                        .chars()
                        .take(1000)
                        .collect(),
                ),
                action: "Autoscale".into(),
                secondary: None,
            },
        )
        .await;
    }
    Ok(())
}

async fn write(ctx: &Context, ld: &LLMDeployment, status: &AutoscalingStatus) -> Result<()> {
    let name = ld.name_any();
    let namespace = ld.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<LLMDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let empty = status.prefill.is_none() && status.decode.is_none();
    let body = json!({
        "apiVersion": "llmd.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "status": if empty { json!({}) } else { json!({"autoscaling": status}) },
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| Error::kube(format!("write status.autoscaling of {name}"), e))?;
    Ok(())
}
