//! One pod's life on a live node: make its network, start a task per container,
//! write its status whenever a container's state changes, keep its volumes and
//! tokens current, and on deletion stop its processes within the grace period,
//! remove its network and files, and finalise the deletion as the kubelet does
//! (delete with grace 0 and a UID precondition).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::container::{ContainerTask, Report, termination_grace};
use crate::context::{PodContext, Shared, pod_dir_name};
use crate::network::Sandbox;
use crate::node::FIELD_MANAGER;
use crate::pod_status::{self, ContainerView, PodView};
use crate::token;

/// What the runner tells a pod's supervisor.
#[derive(Debug)]
pub enum PodMsg {
    /// The pod object changed.
    Update(Arc<Pod>),
    /// The pod object is gone from the API: stop everything now.
    Gone,
    /// The runner stops: stop the processes (bounded) and clean up.
    Shutdown,
}

pub struct PodHandle {
    pub tx: mpsc::UnboundedSender<PodMsg>,
    pub task: tokio::task::JoinHandle<()>,
    pub resource_version: Option<String>,
}

pub fn spawn(shared: Arc<Shared>, pod: Arc<Pod>) -> PodHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let resource_version = pod.metadata.resource_version.clone();
    let task = tokio::spawn(async move {
        let name = pod_dir_name(&pod);
        Supervisor::new(shared, pod).run(rx).await;
        tracing::debug!(pod = %name, "supervisor done");
    });
    PodHandle {
        tx,
        task,
        resource_version,
    }
}

fn is_deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
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

struct Supervisor {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    pod_tx: watch::Sender<Arc<Pod>>,
    dir: PathBuf,
    uid: String,
    views: Vec<ContainerView>,
    start_time: Timestamp,
    sandbox: Option<Sandbox>,
    last_written: Option<Value>,
}

impl Supervisor {
    fn new(shared: Arc<Shared>, pod: Arc<Pod>) -> Self {
        let dir = shared.pods_dir().join(pod_dir_name(&pod));
        let views = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| {
                ContainerView::waiting(
                    &c.name,
                    c.image.as_deref().unwrap_or_default(),
                    "ContainerCreating",
                    carried_restarts(&pod, &c.name),
                )
            })
            .collect();
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(Timestamp::now, |t| t.0);
        let (pod_tx, _) = watch::channel(pod.clone());
        Self {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            shared,
            pod,
            pod_tx,
            dir,
            views,
            start_time,
            sandbox: None,
            last_written: None,
        }
    }

    fn name(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.pod.metadata.name.as_deref().unwrap_or_default()
        )
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(
            self.shared.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
        )
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<PodMsg>) {
        let phase = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if pod_status::is_terminal(&phase) {
            // Finished before (e.g. before a runner restart): nothing to run.
            self.idle(&mut rx).await;
            return;
        }
        if is_deleting(&self.pod) {
            self.finalise().await;
            self.idle(&mut rx).await;
            return;
        }
        if let Some(msg) = self.make_sandbox(&mut rx).await {
            self.end_early(msg, &mut rx).await;
            return;
        }
        self.write_status().await;
        self.run_containers(&mut rx).await;
    }

    /// Wait (doing nothing) until the pod is gone or the runner stops; a
    /// deletion of a finished pod is finalised.
    async fn idle(&mut self, rx: &mut mpsc::UnboundedReceiver<PodMsg>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                PodMsg::Update(pod) => {
                    if is_deleting(&pod) {
                        self.pod = pod;
                        self.finalise().await;
                    }
                }
                PodMsg::Gone | PodMsg::Shutdown => return,
            }
        }
    }

    /// Allocate the pod's address (its status.podIP if it has one) and make its
    /// network, retrying on failure. Returns a message that ends the pod early.
    async fn make_sandbox(&mut self, rx: &mut mpsc::UnboundedReceiver<PodMsg>) -> Option<PodMsg> {
        let preferred: Option<Ipv4Addr> = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let mut delay = Duration::from_secs(1);
        loop {
            let ip = self
                .shared
                .ips
                .lock()
                .map_err(|_| "IP allocator poisoned".to_string())
                .and_then(|mut a| a.allocate(&self.uid, preferred).map_err(|e| e.to_string()));
            let result = match ip {
                Ok(ip) => self
                    .shared
                    .network
                    .create_sandbox(&self.uid, ip)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match result {
                Ok(sandbox) => {
                    tracing::info!(pod = %self.name(), ip = %sandbox.ip, netns = %sandbox.netns, "sandbox ready");
                    self.sandbox = Some(sandbox);
                    return None;
                }
                Err(e) => {
                    tracing::warn!(pod = %self.name(), error = %e, "cannot create the pod network");
                    self.shared.events.warning(
                        &self.pod,
                        "FailedCreatePodSandBox",
                        "CreateSandbox",
                        format!("Failed to create pod network: {e}"),
                    );
                    self.write_status().await;
                }
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(PodMsg::Update(pod)) => {
                        self.pod = pod;
                        if is_deleting(&self.pod) {
                            return Some(PodMsg::Update(self.pod.clone()));
                        }
                    }
                    Some(other) => return Some(other),
                    None => return Some(PodMsg::Shutdown),
                },
                _ = tokio::time::sleep(delay) => delay = (delay * 2).min(Duration::from_secs(30)),
            }
        }
    }

    async fn automount(&self) -> bool {
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<ServiceAccount> = Api::namespaced(self.shared.client.clone(), &ns);
        let account = api
            .get_opt(&token::service_account(&self.pod))
            .await
            .ok()
            .flatten();
        token::automount(&self.pod, account.as_ref())
    }

    async fn run_containers(&mut self, rx: &mut mpsc::UnboundedReceiver<PodMsg>) {
        let Some(sandbox) = self.sandbox.clone() else {
            return;
        };
        let automount = self.automount().await;
        let ctx = Arc::new(PodContext::new(
            self.shared.clone(),
            self.dir.clone(),
            sandbox,
            self.pod_tx.subscribe(),
            automount,
        ));
        if self
            .pod
            .spec
            .as_ref()
            .is_some_and(|s| s.init_containers.as_ref().is_some_and(|i| !i.is_empty()))
        {
            self.shared.events.warning(
                &self.pod,
                "InitContainersUnsupported",
                "Start",
                "init containers are not run by llmd-pod-runner; starting the containers".into(),
            );
        }
        let (report_tx, mut reports) = mpsc::unbounded_channel::<Report>();
        let (stop_tx, stop_rx) = watch::channel(None::<Duration>);
        let mut tasks = JoinSet::new();
        for (index, spec) in self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .enumerate()
        {
            let task = ContainerTask::new(
                ctx.clone(),
                index,
                spec.clone(),
                self.views[index].clone(),
                report_tx.clone(),
                stop_rx.clone(),
            );
            tasks.spawn(task.run());
        }
        drop(report_tx);
        let mut config_changes = self.shared.config_changes.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut ending: Option<PodMsg> = None;
        let mut torn_down = false;
        loop {
            tokio::select! {
                msg = rx.recv(), if ending.is_none() => {
                    let msg = msg.unwrap_or(PodMsg::Shutdown);
                    let grace = match &msg {
                        PodMsg::Update(pod) => {
                            self.pod = pod.clone();
                            let _ = self.pod_tx.send(pod.clone());
                            if !is_deleting(pod) { continue; }
                            deletion_grace(pod)
                        }
                        PodMsg::Gone => Duration::ZERO,
                        PodMsg::Shutdown => self.shared.config.shutdown_grace(),
                    };
                    tracing::info!(pod = %self.name(), ?grace, "stopping the pod's processes");
                    let _ = stop_tx.send(Some(grace));
                    ending = Some(msg);
                }
                Some(report) = reports.recv() => {
                    self.apply(report);
                    while let Ok(more) = reports.try_recv() {
                        self.apply(more);
                    }
                    let phase = pod_status::phase(&self.views, restart_policy(&self.pod));
                    if ending.is_none() || matches!(ending, Some(PodMsg::Update(_))) {
                        self.write_status().await;
                    }
                    if pod_status::is_terminal(phase) && !torn_down && ending.is_none() {
                        // Finished for good: release the network, keep the object.
                        self.teardown(&ctx).await;
                        torn_down = true;
                    }
                }
                joined = tasks.join_next(), if ending.is_some() => {
                    if joined.is_none() { break; }
                }
                Ok(()) = config_changes.changed() => {
                    if !torn_down && let Err(b) = ctx.refresh().await {
                        tracing::debug!(pod = %self.name(), message = %b.message, "volumes not refreshed");
                    }
                }
                _ = tick.tick() => {
                    if !torn_down && ending.is_none() {
                        let _ = ctx.refresh().await;
                        if self.last_written.is_none() { self.write_status().await; }
                    }
                }
            }
        }
        while let Ok(report) = reports.try_recv() {
            self.apply(report);
        }
        let ending = ending.unwrap_or(PodMsg::Shutdown);
        match &ending {
            // Deleted: the containers' final states, then the object goes.
            PodMsg::Update(_) => self.write_status().await,
            // Tell the truth while the runner is away: nothing runs.
            PodMsg::Shutdown => {
                for view in &mut self.views {
                    view.ready = false;
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), self.write_status()).await;
            }
            PodMsg::Gone => {}
        }
        if !torn_down {
            self.teardown(&ctx).await;
        }
        if matches!(ending, PodMsg::Update(_)) {
            self.finalise().await;
            self.idle(rx).await;
        }
    }

    fn apply(&mut self, report: Report) {
        if let Some(view) = self.views.get_mut(report.index) {
            *view = report.view;
        }
    }

    /// The pod ended before its network existed: a deletion is finalised at once.
    async fn end_early(&mut self, msg: PodMsg, rx: &mut mpsc::UnboundedReceiver<PodMsg>) {
        if let PodMsg::Update(pod) = msg {
            self.pod = pod;
            self.finalise().await;
            self.idle(rx).await;
        }
    }

    async fn teardown(&mut self, ctx: &Arc<PodContext>) {
        if let Some(sandbox) = self.sandbox.take() {
            if let Err(e) = self.shared.network.destroy_sandbox(&sandbox).await {
                tracing::warn!(pod = %self.name(), error = %e, "cannot remove the pod network");
            }
            if let Ok(mut ips) = self.shared.ips.lock() {
                let _ = ips.release(&self.uid);
            }
        }
        ctx.remove_files();
    }

    /// Remove the pod object now that nothing of it runs (grace 0, this UID only).
    async fn finalise(&self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        match self.api().delete(&name, &params).await {
            Ok(_) => tracing::info!(pod = %self.name(), "deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %self.name(), error = %e, "final delete failed"),
        }
    }

    async fn write_status(&mut self) {
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

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// metadata.deletionGracePeriodSeconds, else spec.terminationGracePeriodSeconds.
pub fn deletion_grace(pod: &Pod) -> Duration {
    match pod.metadata.deletion_grace_period_seconds {
        Some(s) => Duration::from_secs(u64::try_from(s).unwrap_or(0)),
        None => termination_grace(pod),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, PodSpec, PodStatus};

    #[test]
    fn deletion_grace_prefers_the_deletion_period() {
        let mut pod = Pod {
            spec: Some(PodSpec {
                termination_grace_period_seconds: Some(60),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        assert_eq!(deletion_grace(&pod), Duration::from_secs(60));
        pod.metadata.deletion_grace_period_seconds = Some(5);
        assert_eq!(deletion_grace(&pod), Duration::from_secs(5));
    }

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
