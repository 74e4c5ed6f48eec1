//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas at most one reconciles at a time. client-go's contract:
//!
//! - a standby takes the lease once the record has not changed for a lease duration,
//!   timed by its own monotonic clock from when it saw the change ([`decision`]);
//! - the leader renews every retry period, and if no renewal succeeds before its renew
//!   deadline (shorter than the lease duration) it stops writing at once ([`fence`])
//!   and gives up leading; `main` then stops the controller and exits non-zero, so the
//!   process restarts clean instead of acting on state from before the gap;
//! - every lease call has a timeout (the retry period for a standby, the time left
//!   before the deadline for the leader), so a hung call cannot outlive the deadline;
//! - writes carry the lease's resourceVersion, so two candidates never both win one
//!   round; a leader that shuts down cleanly while still leading releases the lease so
//!   a standby takes over at once. A leader that lost it never touches it again.
//!
//! Written here rather than taken from kube-leader-election because that crate is
//! built against an older kube.

pub mod decision;
pub mod fence;
pub mod timings;

use std::sync::Mutex;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

pub use decision::{Decision, Observation, Standing};
pub use fence::{Fence, ensure_leading};
pub use timings::Timings;

/// One candidate for the lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    /// The record as last read, and when it last changed on our clock.
    observed: Mutex<Option<Observation>>,
}

/// The outcome of one round against the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    /// We hold the lease now.
    Held,
    /// Someone else holds a live lease (a candidate waits).
    Waiting,
    /// We were leading and the record says we are not.
    Lost,
    /// Another writer changed the lease between our read and our write.
    Contended,
}

/// Why a leader stopped leading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// No renewal succeeded before the renew deadline.
    DeadlinePassed,
    /// The lease names someone else (or nobody) now.
    TakenOver { holder: Option<String> },
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::DeadlinePassed => write!(f, "no renewal succeeded before the renew deadline"),
            Lost::TakenOver { holder: Some(h) } => write!(f, "the lease is now held by {h}"),
            Lost::TakenOver { holder: None } => write!(f, "the lease was released by someone else"),
        }
    }
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: String, identity: String, timings: Timings) -> Self {
        Self {
            api,
            name,
            identity,
            timings,
            observed: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Record what we just read (or wrote) and return the observation.
    fn observe(&self, record: LeaseSpec, now: Instant) -> Observation {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        let next = Observation::after_reading(observed.take(), record, now);
        *observed = Some(next.clone());
        next
    }

    /// The record that makes us the holder as of `now`, from the one we read.
    fn claimed(&self, mut spec: LeaseSpec, decision: Decision) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        if decision == Decision::Acquire {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.timings.lease_duration_seconds());
        spec
    }

    /// One round: read the lease, decide, and write it if we take or renew it.
    async fn round(&self, standing: Standing) -> Result<Round, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let now = MicroTime(Timestamp::now());
            let spec = LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.timings.lease_duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.observe(spec, Instant::now());
                    Ok(Round::Held)
                }
                Err(e) if conflict(&e) => Ok(Round::Contended),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let now = Instant::now();
        let observed = self.observe(spec.clone(), now);
        let decision = decision::decide(&self.identity, standing, &observed, now, &self.timings);
        match decision {
            Decision::Wait => return Ok(Round::Waiting),
            Decision::Lost => return Ok(Round::Lost),
            Decision::Acquire | Decision::Renew => {}
        }
        let claimed = self.claimed(spec, decision);
        lease.spec = Some(claimed.clone());
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observe(claimed, Instant::now());
                Ok(Round::Held)
            }
            Err(e) if conflict(&e) => Ok(Round::Contended),
            Err(e) => Err(e),
        }
    }

    /// The holder named by the record we last read.
    fn last_holder(&self) -> Option<String> {
        let observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        observed
            .as_ref()
            .and_then(|o| o.record.holder_identity.clone())
            .filter(|h| !h.is_empty())
    }

    /// Try every retry period until we hold the lease, or `stop` fires (`None`).
    /// Returns when the winning round started: the leader's deadline counts from there,
    /// before the server stored the renewal a standby will time from.
    pub async fn acquire(&self, mut stop: watch::Receiver<bool>) -> Option<Instant> {
        let retry = self.timings.retry_period;
        loop {
            if *stop.borrow() {
                return None;
            }
            let started = Instant::now();
            match tokio::time::timeout(retry, self.round(Standing::Candidate)).await {
                Ok(Ok(Round::Held)) => return Some(started),
                Ok(Ok(round)) => debug!(?round, "lease not acquired"),
                Ok(Err(e)) => warn!(error = %e, "leader election round failed"),
                Err(_) => warn!(timeout = ?retry, "leader election round timed out"),
            }
            tokio::select! {
                _ = tokio::time::sleep_until(started + retry) => {},
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }

    /// Renew every retry period while leading, keeping `fence` open until the renew
    /// deadline of the last renewal. Returns when leading ends, with the fence closed.
    pub async fn keep_leading(&self, mut renewed_at: Instant, fence: &Fence) -> Lost {
        let timings = self.timings;
        fence.open_until(renewed_at + timings.renew_deadline);
        let mut next_round = renewed_at + timings.retry_period;
        loop {
            // Wake at the deadline at the latest, so leading stops exactly there.
            tokio::time::sleep_until(next_round.min(renewed_at + timings.renew_deadline)).await;
            let started = Instant::now();
            let Some(left) = decision::time_left(renewed_at, started, &timings) else {
                fence.close();
                return Lost::DeadlinePassed;
            };
            next_round = started + timings.retry_period;
            let standing = Standing::Leader { renewed_at };
            match tokio::time::timeout(left, self.round(standing)).await {
                Ok(Ok(Round::Held)) => {
                    renewed_at = started;
                    fence.open_until(renewed_at + timings.renew_deadline);
                }
                Ok(Ok(Round::Lost | Round::Waiting)) => {
                    fence.close();
                    if decision::time_left(renewed_at, Instant::now(), &timings).is_none() {
                        return Lost::DeadlinePassed;
                    }
                    return Lost::TakenOver {
                        holder: self.last_holder(),
                    };
                }
                Ok(Ok(Round::Contended)) => debug!("lease changed under the renewal; retrying"),
                Ok(Err(e)) => warn!(error = %e, time_left = ?left, "could not renew the lease"),
                Err(_) => warn!(timeout = ?left, "lease renewal timed out"),
            }
        }
    }

    /// Give the lease up, if the record still names us, so a standby takes over at
    /// once. Call only while still within the renew deadline, with the controller
    /// stopped.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests;
