//! One container's life: wait until it can start, run its process, and restart
//! it with backoff when it exits (per the pod's restartPolicy), reporting every
//! change of its state to the pod's supervisor at once, so the pod is NotReady as
//! soon as its process is gone. Probing the running process is in [`probing`].

mod probing;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use crate::backoff::Backoff;
use crate::context::{Blocked, PodContext};
use crate::kv_forwarder::KvForwarder;
use crate::pod_status::{ContainerView, State, Terminated};
use crate::process;

/// A container's new view, for the supervisor.
#[derive(Debug)]
pub struct Report {
    pub index: usize,
    pub view: ContainerView,
}

/// How a running process came to an end.
enum Outcome {
    Exited(std::process::ExitStatus),
    /// Killed for failing its liveness or startup probe.
    Unhealthy(std::process::ExitStatus),
    /// Stopped because the pod is going away.
    Stopped(std::process::ExitStatus),
}

pub struct ContainerTask {
    ctx: Arc<PodContext>,
    index: usize,
    spec: Container,
    view: ContainerView,
    reports: mpsc::UnboundedSender<Report>,
    /// `Some(grace)` once the pod stops.
    stop: watch::Receiver<Option<Duration>>,
    backoff: Backoff,
    last_block: Option<String>,
}

fn restart_policy(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into())
}

/// Whether a container that exited with `code` is started again.
pub fn should_restart(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

impl ContainerTask {
    pub fn new(
        ctx: Arc<PodContext>,
        index: usize,
        spec: Container,
        initial: ContainerView,
        reports: mpsc::UnboundedSender<Report>,
        stop: watch::Receiver<Option<Duration>>,
    ) -> Self {
        let backoff = Backoff::new(&ctx.shared.config.restart_backoff);
        Self {
            ctx,
            index,
            spec,
            view: initial,
            reports,
            stop,
            backoff,
            last_block: None,
        }
    }

    fn report(&self) {
        let _ = self.reports.send(Report {
            index: self.index,
            view: self.view.clone(),
        });
    }

    fn stopping(&self) -> Option<Duration> {
        *self.stop.borrow()
    }

    pub async fn run(mut self) {
        loop {
            if self.stopping().is_some() {
                return;
            }
            let (mut spec, kind) = match self.ctx.launch(&self.spec).await {
                Ok(ok) => ok,
                Err(blocked) => {
                    self.blocked(blocked);
                    if !self.wait_for_change().await {
                        return;
                    }
                    continue;
                }
            };
            self.last_block = None;
            if self.stopping().is_some() {
                // The pod went away while its volumes or credentials were prepared.
                return;
            }
            let pod = self.ctx.pod();
            // Kept until the process ends: the simulator's KV events leave the pod
            // through the port the engine would bind.
            let _kv_forwarder = match spec.kv_events {
                None => None,
                Some(ports) => match KvForwarder::start(&spec.netns, ports).await {
                    Ok(f) => {
                        spec.args
                            .extend(["--zmq-endpoint".to_string(), f.sink_endpoint()]);
                        Some(f)
                    }
                    Err(e) => {
                        self.ctx.shared.events.warning(
                            &pod,
                            "Failed",
                            "Start",
                            format!(
                                "KV events not offered: cannot bind port {} (replay {:?}): {e}",
                                ports.events, ports.replay
                            ),
                        );
                        None
                    }
                },
            };
            let mut proc = match process::spawn(&spec) {
                Ok(p) => p,
                Err(e) => {
                    let message = format!("cannot start {}: {e}", spec.program.display());
                    self.ctx.shared.events.warning(
                        &pod,
                        "Failed",
                        "Start",
                        format!("Error: {message}"),
                    );
                    let now = Timestamp::now();
                    let term = Terminated {
                        exit_code: 128,
                        signal: None,
                        reason: "StartError".into(),
                        message: Some(message),
                        started_at: None,
                        finished_at: now,
                        container_id: None,
                    };
                    if !self.after_exit(term, Duration::ZERO).await {
                        return;
                    }
                    continue;
                }
            };
            let program = spec
                .program
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            tracing::info!(
                pod = %self.ctx.dir.display(), container = %self.spec.name, pid = proc.pid,
                log = %spec.log.display(), ?kind, "started"
            );
            self.ctx.shared.events.normal(
                &pod,
                "Started",
                "Start",
                format!(
                    "Started container {}: {program} pid {}, log {}",
                    self.spec.name,
                    proc.pid,
                    spec.log.display()
                ),
            );
            self.view.image_id = format!("local://{}", spec.program.display());
            self.view.container_id = Some(format!("llmd://{}", proc.pid));
            let outcome = self.supervise(&mut proc).await;
            let (Outcome::Exited(status) | Outcome::Unhealthy(status) | Outcome::Stopped(status)) =
                outcome;
            let (code, signal) = process::exit_code(status);
            let term = Terminated {
                exit_code: code,
                signal,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: termination_message(
                    &spec.termination_log,
                    (code != 0
                        && self.spec.termination_message_policy.as_deref()
                            == Some("FallbackToLogsOnError"))
                    .then_some(spec.log.as_path()),
                ),
                started_at: Some(proc.started_at),
                finished_at: Timestamp::now(),
                container_id: self.view.container_id.clone(),
            };
            if matches!(outcome, Outcome::Stopped(_)) {
                self.view.state = State::Terminated(term);
                self.view.ready = false;
                self.view.started = false;
                self.report();
                return;
            }
            tracing::info!(container = %self.spec.name, pid = proc.pid, code, "exited");
            if !self.after_exit(term, proc.started.elapsed()).await {
                return;
            }
        }
    }

    /// Report a container that cannot start; one Event per distinct reason.
    fn blocked(&mut self, blocked: Blocked) {
        if self.last_block.as_deref() != Some(blocked.message.as_str()) {
            let pod = self.ctx.pod();
            tracing::warn!(container = %self.spec.name, reason = blocked.reason, message = %blocked.message, "container cannot start");
            self.ctx.shared.events.warning(
                &pod,
                blocked.event_reason,
                "Start",
                format!("container {}: {}", self.spec.name, blocked.message),
            );
            self.last_block = Some(blocked.message.clone());
        }
        let state = State::Waiting {
            reason: blocked.reason.to_string(),
            message: Some(blocked.message),
        };
        if self.view.state != state || self.view.ready {
            self.view.state = state;
            self.view.ready = false;
            self.view.started = false;
            self.report();
        }
    }

    /// Wait for something that may unblock a container (a ConfigMap or Secret
    /// change, a pod update, or a few seconds). False when the pod stops.
    async fn wait_for_change(&mut self) -> bool {
        let mut config = self.ctx.shared.config_changes.clone();
        let mut pod = self.ctx.pod.clone();
        // A closed channel disables its branch (no busy loop); the timer remains.
        tokio::select! {
            _ = self.stop.changed() => {}
            Ok(()) = config.changed() => {}
            Ok(()) = pod.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        self.stopping().is_none()
    }

    /// After an exit: report it, then either stay terminated (restartPolicy) or
    /// back off and count a restart. False when the container will not run again.
    async fn after_exit(&mut self, term: Terminated, ran_for: Duration) -> bool {
        let pod = self.ctx.pod();
        let code = term.exit_code;
        self.view.ready = false;
        self.view.started = false;
        if !should_restart(&restart_policy(&pod), code) {
            self.view.state = State::Terminated(term);
            self.report();
            let _ = self.stop.changed().await;
            return false;
        }
        let delay = self.backoff.delay_after(ran_for);
        self.view.last_terminated = Some(term);
        self.view.state = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some(format!(
                "back-off {:?} restarting failed container={} pod={}",
                delay,
                self.spec.name,
                pod.metadata.name.as_deref().unwrap_or_default()
            )),
        };
        self.report();
        self.ctx.shared.events.warning(
            &pod,
            "BackOff",
            "Restart",
            format!(
                "Back-off {delay:?} restarting failed container {} (exit code {code})",
                self.spec.name
            ),
        );
        tokio::select! {
            _ = self.stop.changed() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        if self.stopping().is_some() {
            return false;
        }
        self.view.restart_count += 1;
        true
    }
}

/// The pod's terminationGracePeriodSeconds (default 30).
/// Most bytes of a termination message the kubelet keeps.
const TERMINATION_MESSAGE_BYTES: usize = 4096;

/// What the container wrote to its termination message file, as the kubelet
/// reports it (at most 4 KiB); else, with `fallback_log`, the end of its log.
pub fn termination_message(
    file: &std::path::Path,
    fallback_log: Option<&std::path::Path>,
) -> Option<String> {
    let tail = |bytes: Vec<u8>| {
        let start = bytes.len().saturating_sub(TERMINATION_MESSAGE_BYTES);
        String::from_utf8_lossy(&bytes[start..]).trim().to_string()
    };
    let written = std::fs::read(file).ok().map(tail).filter(|m| !m.is_empty());
    written.or_else(|| {
        fallback_log
            .and_then(|log| std::fs::read(log).ok())
            .map(tail)
            .filter(|m| !m.is_empty())
    })
}

pub fn termination_grace(pod: &Pod) -> Duration {
    let secs = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_termination_message_is_the_files_else_the_logs_end() {
        let dir = tempfile::tempdir().expect("dir");
        let (file, log) = (dir.path().join("t"), dir.path().join("log"));
        std::fs::write(&log, "starting\nfailed: no route\n").expect("log");
        assert_eq!(termination_message(&file, None), None);
        assert_eq!(
            termination_message(&file, Some(&log)).as_deref(),
            Some("starting\nfailed: no route")
        );
        std::fs::write(&file, format!("{{\"ok\":true}}{}", " ".repeat(5000))).expect("file");
        let m = termination_message(&file, Some(&log)).expect("written");
        assert!(m.len() <= 4096);
        std::fs::write(&file, "x".repeat(5000) + "END").expect("file");
        let m = termination_message(&file, None).expect("written");
        assert!(m.ends_with("END") && m.len() == 4096, "the end is kept");
    }

    #[test]
    fn restart_policy_decides_whether_an_exit_restarts() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("Always", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(should_restart("OnFailure", 2));
        assert!(!should_restart("Never", 1));
    }
}
