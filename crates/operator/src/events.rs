//! Events on an LLMDeployment for what people act on: children written or deleted,
//! and Ready or Degraded flipping.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
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

/// Whether a condition that was `before` and is now `condition` is worth an Event,
/// and of which type: a flip of status or reason is; a condition's first
/// appearance is only when it is a problem (Degraded), since a new deployment
/// that is not Ready yet, or serves without KV transfer, is no news (and at scale
/// those Events were a tenth of the writes).
fn news(before: Option<&Condition>, condition: &Condition) -> Option<EventType> {
    let healthy = (condition.type_ != conditions::DEGRADED) == (condition.status == "True");
    match before {
        None if healthy || condition.type_ != conditions::DEGRADED => return None,
        Some(b) if b.status == condition.status && b.reason == condition.reason => return None,
        _ => {}
    }
    Some(if healthy {
        EventType::Normal
    } else {
        EventType::Warning
    })
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
        if !watched {
            continue;
        }
        let Some(type_) = news(before, condition) else {
            continue;
        };
        let healthy = type_ == EventType::Normal;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }
    }

    #[test]
    fn flips_are_news_and_a_first_appearance_only_when_degraded() {
        let not_ready = condition(conditions::READY, "False", "ComponentsNotReady");
        let ready = condition(conditions::READY, "True", "AllComponentsReady");
        let aggregated = condition(conditions::KV_TRANSFER_READY, "True", "AggregatedServing");
        let invalid = condition(conditions::DEGRADED, "True", "InvalidSpec");
        let fine = condition(conditions::DEGRADED, "False", "AsExpected");
        // A new deployment: not Ready yet, no KV transfer, nothing wrong: no Events.
        for first in [&not_ready, &aggregated, &fine] {
            assert_eq!(news(None, first), None, "{first:?}");
        }
        // An invalid spec from the start is.
        assert_eq!(news(None, &invalid), Some(EventType::Warning));
        // Flips are, both ways; an unchanged condition is not.
        assert_eq!(news(Some(&not_ready), &ready), Some(EventType::Normal));
        assert_eq!(news(Some(&ready), &not_ready), Some(EventType::Warning));
        assert_eq!(news(Some(&invalid), &fine), Some(EventType::Normal));
        assert_eq!(news(Some(&ready), &ready), None);
    }
}
