//! Events on an LLMDeployment for what people act on: children written or deleted,
//! and Ready or Degraded flipping.

use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};
use llmd_api::{LLMDeployment, LLMDeploymentStatus, conditions};
use tracing::{info, warn};

use crate::apply::Applied;
use crate::context::Context;

/// `ChildrenUpdated` when the apply step wrote or deleted anything.
pub async fn children_updated(ctx: &Context, ld: &LLMDeployment, applied: &Applied) {
    let mut parts = Vec::new();
    if !applied.written.is_empty() {
        parts.push(format!("applied {}", applied.written.join(", ")));
    }
    if !applied.removed.is_empty() {
        parts.push(format!("deleted {}", applied.removed.join(", ")));
    }
    if parts.is_empty() {
        return;
    }
    let message = parts.join("; ");
    info!(name = %ld.name_any(), namespace = ?ld.namespace(), "{message}");
    ctx.publish(
        ld,
        Event {
            type_: EventType::Normal,
            reason: "ChildrenUpdated".into(),
            note: Some(truncate(&message)),
            action: "Reconcile".into(),
            secondary: None,
        },
    )
    .await;
}

/// An event for each of Ready and Degraded that flipped between the object's status
/// and `new`.
pub async fn transitions(ctx: &Context, ld: &LLMDeployment, new: &LLMDeploymentStatus) {
    let old = ld
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for condition in &new.conditions {
        // The KV fabric probe's verdicts are news too (proven, failed, probing).
        let watched = condition.type_ == conditions::READY
            || condition.type_ == conditions::DEGRADED
            || condition.type_ == conditions::KV_TRANSFER_READY;
        let before = old.iter().find(|c| c.type_ == condition.type_);
        let flipped =
            before.is_none_or(|b| b.status != condition.status || b.reason != condition.reason);
        if !watched || !flipped {
            continue;
        }
        let healthy = (condition.type_ != conditions::DEGRADED) == (condition.status == "True");
        if healthy && before.is_none() && condition.type_ == conditions::DEGRADED {
            continue;
        }
        let type_ = if healthy {
            EventType::Normal
        } else {
            EventType::Warning
        };
        if !healthy {
            warn!(name = %ld.name_any(), condition = %condition.type_, reason = %condition.reason, "{}", condition.message);
        }
        ctx.publish(
            ld,
            Event {
                type_,
                reason: condition.reason.clone(),
                note: Some(truncate(&format!(
                    "{}={}: {}",
                    condition.type_, condition.status, condition.message
                ))),
                action: "Reconcile".into(),
                secondary: None,
            },
        )
        .await;
    }
}

/// Event notes are limited to 1 kB.
pub fn truncate(message: &str) -> String {
    if message.len() <= 1000 {
        return message.to_string();
    }
    let mut end = 1000;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// An event when model-server pods start keeping a rendering this operator would
/// make differently (said once, when `status.newerRendering` appears or changes).
pub async fn newer_rendering(ctx: &Context, ld: &LLMDeployment, new: &LLMDeploymentStatus) {
    let before = ld.status.as_ref().and_then(|s| s.newer_rendering.as_ref());
    let Some(message) = new.newer_rendering.as_ref() else {
        return;
    };
    if before == Some(message) {
        return;
    }
    ctx.publish(
        ld,
        Event {
            type_: EventType::Normal,
            reason: "NewerRenderingAvailable".into(),
            note: Some(truncate(message)),
            action: "Render".into(),
            secondary: None,
        },
    )
    .await;
}
