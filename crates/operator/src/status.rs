//! The LLMDeployment status: computed as a value, written only when it changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use llmd_api::endpoint_picker::selector_string;
use llmd_api::endpoint_picker_config::EndpointPickerConfig;
use llmd_api::{
    LLMDeployment, LLMDeploymentSpec, LLMDeploymentStatus, RoleStatus, RouterStatus, RoutingStatus,
};
use serde_json::json;

use crate::apply::FIELD_MANAGER;
use crate::build::{Children, Component, Owner, endpoint_picker_service};
use crate::conditions::{self, Failure};
use crate::error::{Error, Result};
use crate::fabric_probe::Probe;
use crate::observe::{Observed, Workload};
use crate::rendering::Kept;

/// What the reconcile learned, beyond the workloads.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub router_endpoint: Option<String>,
    pub inference_pool: Option<&'static str>,
    pub epp_config: Option<EndpointPickerConfig>,
    pub routing_reason: Option<String>,
    /// Label selectors of the prefill and decode pods.
    pub prefill_selector: String,
    pub decode_selector: String,
    /// Model-server workloads that kept their rendering in this reconcile.
    pub kept_renderings: Vec<Kept>,
}

impl Facts {
    /// The facts a reconcile knows once it has built the children.
    pub fn of(
        owner: &Owner,
        spec: &LLMDeploymentSpec,
        pool_served: bool,
        children: &Children,
    ) -> Facts {
        Facts {
            router_endpoint: Some(endpoint_picker_service::endpoint(owner)),
            inference_pool: Some(match (spec.inference_pool.enabled, pool_served) {
                (false, _) => "Disabled",
                (true, false) => "CRDNotInstalled",
                (true, true) => "Created",
            }),
            epp_config: Some(children.endpoint_picker.picker_config.clone()),
            routing_reason: Some("static weights from spec.router.scorers".to_string()),
            prefill_selector: selector_string(&owner.selector_labels(Component::Prefill)),
            decode_selector: selector_string(&owner.selector_labels(Component::Decode)),
            kept_renderings: Vec::new(),
        }
    }
}

/// `status.newerRendering` for the workloads that kept their rendering.
pub fn newer_rendering(kept: &[Kept]) -> Option<String> {
    if kept.is_empty() {
        return None;
    }
    let each: Vec<String> = kept
        .iter()
        .map(|k| {
            format!(
                "{} keeps the pod template it was created with (this operator renders {} differently)",
                k.workload,
                if k.differences.is_empty() {
                    "it".to_string()
                } else {
                    k.differences.join(", ")
                }
            )
        })
        .collect();
    Some(format!(
        "{}. Change the spec, or annotate the LLMDeployment {}={}, to roll the pods onto the new rendering",
        each.join("; "),
        crate::rendering::OPT_IN,
        crate::rendering::OPT_IN_LATEST
    ))
}

fn role_status(w: &Workload, selector: &str) -> RoleStatus {
    RoleStatus {
        desired: w.desired,
        replicas: w.replicas,
        ready_replicas: w.ready,
        updated_replicas: w.updated,
        ready: format!("{}/{}", w.ready, w.desired),
        selector: selector.to_string(),
    }
}

fn routing(previous: Option<&RoutingStatus>, facts: &Facts, now: &Time) -> Option<RoutingStatus> {
    let config = facts.epp_config.as_ref()?;
    let config_hash = config.hash();
    let last_updated = match previous {
        Some(p) if p.config_hash.as_deref() == Some(config_hash.as_str()) => p.last_updated.clone(),
        _ => Some(now.0.to_string()),
    };
    Some(RoutingStatus {
        weights: config.weights(),
        config_hash: Some(config_hash),
        last_updated,
        reason: facts.routing_reason.clone(),
        incumbent: None,
        history: Vec::new(),
    })
}

/// The status the object should have. Timestamps of unchanged conditions are kept, so
/// the result equals the current status when nothing changed.
pub fn desired(
    ld: &LLMDeployment,
    observed: &Observed,
    failure: Option<&Failure>,
    facts: &Facts,
    now: &Time,
) -> LLMDeploymentStatus {
    let generation = ld.metadata.generation.unwrap_or(0);
    let previous = ld.status.clone().unwrap_or_default();
    let verdicts = conditions::compute(observed, failure);
    let previous_routing = previous.routing.as_ref();
    LLMDeploymentStatus {
        observed_generation: Some(generation),
        conditions: conditions::merge(&previous.conditions, verdicts, generation, now),
        prefill: observed
            .prefill
            .as_ref()
            .map(|w| role_status(w, &facts.prefill_selector)),
        decode: Some(role_status(&observed.decode, &facts.decode_selector)),
        router: Some(RouterStatus {
            replicas: observed.endpoint_picker.desired,
            ready_replicas: observed.endpoint_picker.ready,
            endpoint: facts.router_endpoint.clone(),
            inference_pool: facts.inference_pool.map(str::to_string),
        }),
        // The probe's last result stays until a new one replaces it.
        kv_transfer: match &observed.kv_probe {
            Probe::Done(result) => Some(result.clone()),
            Probe::Probing(_) => previous.kv_transfer.clone(),
            Probe::NotRequired => None,
        },
        // status.autoscaling belongs to the autoscaler.
        autoscaling: previous.autoscaling.clone(),
        newer_rendering: newer_rendering(&facts.kept_renderings),
        // While autoTune is on, status.routing belongs to the tuner.
        routing: if ld.spec.router.auto_tune.enabled {
            previous.routing.clone()
        } else {
            routing(previous_routing, facts, now).or_else(|| previous.routing.clone())
        },
    }
}

/// Write `status` with server-side apply unless it equals the current one. Returns
/// whether a write was sent.
pub async fn write(
    api: &Api<LLMDeployment>,
    ld: &LLMDeployment,
    status: LLMDeploymentStatus,
) -> Result<bool> {
    if ld.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let name = ld.name_any();
    let mut status_json = serde_json::to_value(&status).map_err(|e| Error::Serialize {
        what: "status",
        message: e.to_string(),
    })?;
    if let Some(object) = status_json.as_object_mut() {
        // The autoscaler's, always.
        object.remove("autoscaling");
        if ld.spec.router.auto_tune.enabled {
            // Not ours to write while the tuner owns it.
            object.remove("routing");
        }
    }
    let body = json!({
        "apiVersion": "llmd.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "status": status_json,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| Error::kube(format!("write status of {name}"), e))?;
    Ok(true)
}
