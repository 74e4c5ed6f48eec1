//! The pod's status as its supervisor writes it: the container views it starts
//! from (restart counts carried over from a previous runner), the containers'
//! reports applied to them, and the status patch, written only when it changed.
//! What the patch says is [`crate::pod_status`]'s (pure); this is the writing.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};

use super::Supervisor;
use crate::container::Report;
use crate::node::FIELD_MANAGER;
use crate::pod_status::{self, ContainerView, PodView};

/// Each container's view before its task reports: waiting in ContainerCreating.
pub(super) fn initial_views(pod: &Pod) -> Vec<ContainerView> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            ContainerView::waiting(
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                "ContainerCreating",
                carried_restarts(pod, &c.name),
            )
        })
        .collect()
}

/// Restart counts carried over from a status written before (by a runner that
/// was restarted): a container that had run is counted as restarted once more.
fn carried_restarts(pod: &Pod, name: &str) -> i32 {
    let status: Option<&ContainerStatus> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name));
    status.map_or(0, |s| {
        let ran = s
            .state
            .as_ref()
            .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
            || s.last_state
                .as_ref()
                .is_some_and(|st| st.terminated.is_some());
        s.restart_count + i32::from(ran)
    })
}

impl Supervisor {
    pub(super) fn apply(&mut self, report: Report) {
        if let Some(view) = self.views.get_mut(report.index) {
            *view = report.view;
        }
    }

    pub(super) async fn write_status(&mut self) {
        let patch = pod_status::status_patch(&PodView {
            pod: &self.pod,
            pod_ip: self.sandbox.as_ref().map(|s| s.ip),
            host_ip: self.shared.host_ip(),
            sandbox_ready: self.sandbox.is_some(),
            start_time: self.start_time,
            containers: &self.views,
            now: Timestamp::now(),
        });
        if self.last_written.as_ref() == Some(&patch) {
            return;
        }
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match self
            .api()
            .patch_status(&name, &params, &Patch::Strategic(&patch))
            .await
        {
            Ok(pod) => {
                self.pod = Arc::new(pod);
                self.last_written = Some(patch);
            }
            Err(e) => {
                self.last_written = None;
                tracing::warn!(pod = %self.name(), error = %e, "status write failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, PodStatus};

    #[test]
    fn a_container_that_ran_before_a_runner_restart_counts_one_more_restart() {
        let status = |state: ContainerState, restarts| Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "vllm".into(),
                    restart_count: restarts,
                    state: Some(state),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        };
        assert_eq!(carried_restarts(&status(running, 2), "vllm"), 3);
        assert_eq!(
            carried_restarts(&status(ContainerState::default(), 0), "vllm"),
            0
        );
        assert_eq!(carried_restarts(&Pod::default(), "vllm"), 0);
    }
}
