//! One pod's life on a live node: make its network, start a task per container,
//! write its status whenever a container's state changes, keep its volumes and
//! tokens current, and on deletion stop its processes within the grace period,
//! remove its network and files, and finalise the deletion as the kubelet does
//! (delete with grace 0 and a UID precondition). The network is in [`sandbox`],
//! the status writing in [`status`].

mod sandbox;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Preconditions};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::container::{ContainerTask, Report, termination_grace};
use crate::context::{PodContext, Shared, pod_dir_name};
use crate::network::Sandbox;
use crate::pod_status::{self, ContainerView};
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
        let views = status::initial_views(&pod);
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
                            if !is_deleting(pod) {
                                // Someone else's condition (a readiness gate) may
                                // change Ready; an unchanged patch is not written.
                                self.write_status().await;
                                continue;
                            }
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

    /// The pod ended before its network existed: a deletion is finalised at once.
    async fn end_early(&mut self, msg: PodMsg, rx: &mut mpsc::UnboundedReceiver<PodMsg>) {
        if let PodMsg::Update(pod) = msg {
            self.pod = pod;
            self.finalise().await;
            self.idle(rx).await;
        }
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
    use k8s_openapi::api::core::v1::PodSpec;

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
}
