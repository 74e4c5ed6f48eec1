//! Probing a running container: its startup, readiness and liveness probe loops,
//! and what their results do to it while its process lives (started, ready, or
//! killed for failing liveness or an exhausted startup probe). The probe checks
//! themselves are [`crate::probe`]'s; this is how one container uses them.

use tokio::sync::mpsc;

use super::{ContainerTask, Outcome, termination_grace};
use crate::pod_status::State;
use crate::probe::{self, ProbeCounter, ProbeKind, ProbePlan};
use crate::process::Process;

impl ContainerTask {
    fn plans(&self) -> Vec<ProbePlan> {
        let pod = self.ctx.pod();
        let timing = &self.ctx.shared.config.probes;
        let mut plans = Vec::new();
        let probes = [
            (ProbeKind::Startup, &self.spec.startup_probe),
            (ProbeKind::Readiness, &self.spec.readiness_probe),
            (ProbeKind::Liveness, &self.spec.liveness_probe),
        ];
        for (kind, probe) in probes {
            let Some(probe) = probe else { continue };
            match probe::plan(probe, &self.spec, kind, timing) {
                Ok(plan) => plans.push(plan),
                Err(e) => self.ctx.shared.events.warning(
                    &pod,
                    "ProbeUnsupported",
                    "Probe",
                    format!("container {}: {e}", self.spec.name),
                ),
            }
        }
        plans
    }

    /// Run the probes while the process lives; returns how it ended.
    pub(super) async fn supervise(&mut self, proc: &mut Process) -> Outcome {
        let plans = self.plans();
        let find = |k: ProbeKind| plans.iter().find(|p| p.kind == k).cloned();
        let (startup, readiness, liveness) = (
            find(ProbeKind::Startup),
            find(ProbeKind::Readiness),
            find(ProbeKind::Liveness),
        );
        let mut startup_counter = startup.as_ref().map(|p| ProbeCounter::new(p, false));
        let mut readiness_counter = readiness.as_ref().map(|p| ProbeCounter::new(p, false));
        let mut liveness_counter = liveness.as_ref().map(|p| ProbeCounter::new(p, true));
        self.view.state = State::Running {
            started_at: proc.started_at,
        };
        self.view.started = startup.is_none();
        self.view.ready = self.view.started && readiness.is_none();
        self.report();

        let (tx, mut results) = mpsc::unbounded_channel();
        let prober = self.ctx.shared.prober.clone();
        let ip = self.ctx.sandbox.ip;
        let probes = tokio::spawn(run_probes(prober, ip, startup, readiness, liveness, tx));
        let _abort = AbortOnDrop(probes);
        let pod = self.ctx.pod();
        loop {
            tokio::select! {
                status = proc.wait() => return Outcome::Exited(status),
                _ = self.stop.changed() => {
                    let grace = self.stopping().unwrap_or_default();
                    return Outcome::Stopped(proc.stop(grace).await);
                }
                Some((kind, result)) = results.recv() => {
                    let ok = result.is_ok();
                    let counter = match kind {
                        ProbeKind::Startup => startup_counter.as_mut(),
                        ProbeKind::Readiness => readiness_counter.as_mut(),
                        ProbeKind::Liveness => liveness_counter.as_mut(),
                    };
                    let Some(counter) = counter else { continue };
                    let flipped = counter.record(ok);
                    if let Err(message) = &result
                        && (flipped == Some(false) || (kind != ProbeKind::Readiness && counter.exhausted()))
                    {
                        self.ctx.shared.events.warning(
                            &pod,
                            "Unhealthy",
                            "Probe",
                            format!("{} probe failed: {message}", kind.as_str()),
                        );
                    }
                    let exhausted = counter.exhausted();
                    let before = (self.view.started, self.view.ready);
                    match kind {
                        ProbeKind::Startup if flipped == Some(true) => {
                            self.view.started = true;
                            self.view.ready = readiness_counter.is_none();
                        }
                        ProbeKind::Readiness => {
                            self.view.ready = self.view.started && counter_result(readiness_counter.as_ref());
                        }
                        _ => {}
                    }
                    if (kind == ProbeKind::Liveness || (kind == ProbeKind::Startup && !self.view.started)) && exhausted {
                        self.ctx.shared.events.normal(
                            &pod,
                            "Killing",
                            "Kill",
                            format!("Container {} failed {} probe, will be restarted", self.spec.name, kind.as_str().to_lowercase()),
                        );
                        self.view.ready = false;
                        self.report();
                        let grace = termination_grace(&pod);
                        return Outcome::Unhealthy(proc.stop(grace).await);
                    }
                    if before != (self.view.started, self.view.ready) {
                        self.report();
                    }
                }
            }
        }
    }
}

fn counter_result(c: Option<&ProbeCounter>) -> bool {
    c.is_none_or(ProbeCounter::result)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type ProbeResult = (ProbeKind, Result<(), String>);

/// The probe loops of one process: startup until it succeeds, then readiness
/// and liveness side by side.
async fn run_probes(
    prober: probe::Prober,
    ip: std::net::Ipv4Addr,
    startup: Option<ProbePlan>,
    readiness: Option<ProbePlan>,
    liveness: Option<ProbePlan>,
    tx: mpsc::UnboundedSender<ProbeResult>,
) {
    if let Some(plan) = startup {
        tokio::time::sleep(plan.initial_delay).await;
        loop {
            let result = prober.check(&plan, ip).await;
            let ok = result.is_ok();
            if tx.send((plan.kind, result)).is_err() || ok {
                break;
            }
            tokio::time::sleep(plan.retry_period).await;
        }
    }
    let one = |plan: Option<ProbePlan>| {
        let (prober, tx) = (prober.clone(), tx.clone());
        async move {
            let Some(plan) = plan else { return };
            tokio::time::sleep(plan.initial_delay).await;
            loop {
                let result = prober.check(&plan, ip).await;
                let period = if result.is_ok() {
                    plan.period
                } else {
                    plan.retry_period
                };
                if tx.send((plan.kind, result)).is_err() {
                    return;
                }
                tokio::time::sleep(period).await;
            }
        }
    };
    tokio::join!(one(readiness), one(liveness));
}
