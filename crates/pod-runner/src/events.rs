//! Pod Events (`kubectl describe pod`, `kubectl get events`), published in the
//! background so a slow API server never delays a status write.
//!
//! Each Event is its own object: kube-runtime's `Recorder` folds events with the
//! same reason into one series and keeps the first note, which would show the
//! pid and log of a container's first start after every restart. The callers
//! already emit an event only when something changes, so there is nothing to fold.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

const CONTROLLER: &str = "llmd.dev/pod-runner";

#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    instance: String,
}

impl Events {
    pub fn new(client: kube::Client) -> Self {
        let instance = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "llmd-pod-runner".into());
        Self { client, instance }
    }

    /// The Event object (pure, for tests).
    pub fn event(
        pod: &Pod,
        instance: &str,
        type_: &str,
        reason: &str,
        action: &str,
        note: String,
        now: Timestamp,
    ) -> Event {
        let name = pod.metadata.name.clone().unwrap_or_default();
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: pod.metadata.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(type_.to_string()),
            reason: Some(reason.to_string()),
            action: Some(action.to_string()),
            // The API server refuses notes over 1 kB.
            note: Some(note.chars().take(1000).collect()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(instance.to_string()),
            ..Event::default()
        }
    }

    fn publish(&self, pod: &Pod, type_: &str, reason: &str, action: &str, note: String) {
        let event = Self::event(
            pod,
            &self.instance,
            type_,
            reason,
            action,
            note,
            Timestamp::now(),
        );
        let api: Api<Event> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, reason = ?event.reason, "event not published");
            }
        });
    }

    pub fn normal(&self, pod: &Pod, reason: &str, action: &str, note: String) {
        self.publish(pod, "Normal", reason, action, note);
    }

    pub fn warning(&self, pod: &Pod, reason: &str, action: &str, note: String) {
        self.publish(pod, "Warning", reason, action, note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_the_pod_and_keeps_its_note_short() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.uid = Some("u".into());
        let now = Timestamp::now();
        let e = Events::event(
            &pod,
            "host",
            "Warning",
            "NoLocalStandIn",
            "Start",
            "x".repeat(2000),
            now,
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert!(
            e.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("p."))
        );
        assert_eq!(e.regarding.and_then(|r| r.uid).as_deref(), Some("u"));
        assert_eq!(e.note.map(|n| n.len()), Some(1000));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
    }
}
