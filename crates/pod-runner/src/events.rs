//! Pod Events (`kubectl describe pod`), published in the background so a slow
//! API server never delays a status write.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: kube::Client) -> Self {
        let reporter = Reporter {
            controller: "llmd-pod-runner".into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    fn reference(pod: &Pod) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }
    }

    fn publish(&self, pod: &Pod, type_: EventType, reason: &str, action: &str, note: String) {
        let recorder = self.recorder.clone();
        let reference = Self::reference(pod);
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: action.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, reason = %event.reason, "event not published");
            }
        });
    }

    pub fn normal(&self, pod: &Pod, reason: &str, action: &str, note: String) {
        self.publish(pod, EventType::Normal, reason, action, note);
    }

    pub fn warning(&self, pod: &Pod, reason: &str, action: &str, note: String) {
        self.publish(pod, EventType::Warning, reason, action, note);
    }
}
