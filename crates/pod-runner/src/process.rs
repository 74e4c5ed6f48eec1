//! Container processes: started inside the pod's network namespace, each in its
//! own session (so a stop signal reaches everything it forked), with stdout and
//! stderr appended to the container's log file, and recorded in a pid file
//! (pid and kernel start time) so a restarted runner can tell its old processes
//! from unrelated ones that reused the pid.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use crate::stand_in::KvEventPorts;
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Everything needed to start one container process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub netns: PathBuf,
    pub log: PathBuf,
    pub pid_file: PathBuf,
    /// Written to the log before the process starts (what was translated or dropped).
    pub notes: Vec<String>,
    /// A simulator's KV-events port to bind and forward ([`crate::kv_forwarder`]).
    pub kv_events: Option<KvEventPorts>,
    /// Where the container's `terminationMessagePath` is (emptied before each start).
    pub termination_log: PathBuf,
}

/// A running container process (the leader of its own process group).
#[derive(Debug)]
pub struct Process {
    child: tokio::process::Child,
    pub pid: i32,
    pub started: Instant,
    pub started_at: Timestamp,
    pid_file: PathBuf,
    exited: Option<ExitStatus>,
}

fn log_line(log: &mut std::fs::File, text: &str) {
    let _ = writeln!(log, "[llmd-pod-runner {}] {text}", Timestamp::now());
}

/// Start the process described by `spec`.
pub fn spawn(spec: &LaunchSpec) -> std::io::Result<Process> {
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    log_line(
        &mut log,
        &format!(
            "starting {} {}",
            spec.program.display(),
            spec.args.join(" ")
        ),
    );
    for note in &spec.notes {
        log_line(&mut log, note);
    }
    let netns = std::fs::File::open(&spec.netns)?;
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(false);
    // SAFETY: between fork and exec only async-signal-safe system calls are made
    // (setns and setsid), on a descriptor opened before the fork.
    unsafe {
        command.pre_exec(move || {
            nix::sched::setns(&netns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = command.spawn()?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| std::io::Error::other("process exited before its pid was known"))?;
    let record = format!("{pid} {}\n", start_time(pid).unwrap_or(0));
    crate::files::write_atomic(&spec.pid_file, record.as_bytes())?;
    Ok(Process {
        child,
        pid,
        started: Instant::now(),
        started_at: Timestamp::now(),
        pid_file: spec.pid_file.clone(),
        exited: None,
    })
}

impl Process {
    /// Wait for the process to exit (cancel-safe).
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let status = self
            .child
            .wait()
            .await
            .unwrap_or_else(|_| ExitStatus::from_raw(255 << 8));
        self.exited = Some(status);
        let _ = std::fs::remove_file(&self.pid_file);
        status
    }

    /// SIGTERM to the process group, SIGKILL after `grace`; returns how it exited.
    /// Signals are only sent while the leader is not yet reaped, so a reused pid
    /// is never hit.
    pub async fn stop(&mut self, grace: Duration) -> ExitStatus {
        if self.exited.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let group = Pid::from_raw(self.pid);
            if !grace.is_zero() {
                let _ = killpg(group, Signal::SIGTERM);
                if let Ok(status) = tokio::time::timeout(grace, self.wait()).await {
                    return status;
                }
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = killpg(group, Signal::SIGKILL);
            }
        }
        self.wait().await
    }
}

/// Exit code as the kubelet reports it (128 + signal for a signalled process),
/// and the signal.
pub fn exit_code(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (255, None),
    }
}

/// The kernel start time (clock ticks since boot) of a process, field 22 of
/// `/proc/<pid>/stat`.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields restart after ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A process recorded in a pid file that is still the same process.
pub fn recorded_alive(pid_file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let mut words = text.split_whitespace();
    let pid: i32 = words.next()?.parse().ok()?;
    let started: u64 = words.next()?.parse().ok()?;
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let zombie = state
        .rfind(')')
        .and_then(|i| state[i + 1..].split_whitespace().next())
        == Some("Z");
    (!zombie && start_time(pid) == Some(started)).then_some(pid)
}

/// Stop a process a previous runner started (not our child: poll /proc).
pub async fn stop_recorded(pid_file: &Path, grace: Duration) {
    let Some(pid) = recorded_alive(pid_file) else {
        let _ = std::fs::remove_file(pid_file);
        return;
    };
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && recorded_alive(pid_file).is_some() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if recorded_alive(pid_file).is_some() {
        let _ = killpg(group, Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(pid_file);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_reads_this_process() {
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(start_time(me).is_some_and(|t| t > 0));
    }

    #[test]
    fn a_pid_file_with_a_different_start_time_is_not_alive() {
        let dir = tempfile::tempdir().expect("dir");
        let me = i32::try_from(std::process::id()).expect("pid");
        let file = dir.path().join("c.pid");
        let started = start_time(me).expect("start");
        std::fs::write(&file, format!("{me} {started}\n")).expect("write");
        assert_eq!(recorded_alive(&file), Some(me));
        std::fs::write(&file, format!("{me} {}\n", started + 1)).expect("write");
        assert_eq!(recorded_alive(&file), None, "pid reused by another process");
    }

    #[test]
    fn signalled_exit_is_128_plus_signal() {
        assert_eq!(exit_code(ExitStatus::from_raw(9)), (137, Some(9)));
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), (3, None));
    }
}
