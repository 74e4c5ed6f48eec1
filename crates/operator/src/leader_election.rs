//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas exactly one reconciles. The usual client-go protocol: the holder renews
//! `renewTime` every retry period; another candidate takes the lease over once
//! `renewTime + leaseDurationSeconds` has passed; writes use the lease's
//! resourceVersion, so two candidates can never both win the same round. A holder that
//! cannot renew within the lease duration stops leading (the process exits), and a
//! holder that shuts down cleanly releases the lease so a standby takes over at once.
//!
//! Written here rather than taken from kube-leader-election because that crate is
//! built against an older kube.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

/// One candidate for the lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// The lease as the candidate sees it at one instant.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold it and should renew.
    Renew,
    /// Nobody holds it (released or expired): take it.
    TakeOver,
    /// Someone else holds a live lease.
    Wait,
}

/// Pure rule: what to do with a lease held by `holder`, last renewed at `renewed`.
pub fn decide(
    spec: &LeaseSpec,
    identity: &str,
    now: Timestamp,
    default_duration: Duration,
) -> Decision {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = spec.lease_duration_seconds.map_or(default_duration, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(0))
    });
    let expired = match &spec.renew_time {
        Some(MicroTime(renewed)) => {
            let elapsed = now.duration_since(*renewed);
            elapsed > SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
        }
        None => true,
    };
    if expired {
        Decision::TakeOver
    } else {
        Decision::Wait
    }
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: String, identity: String, duration: Duration) -> Self {
        Self {
            api,
            name,
            identity,
            duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// One round: acquire or renew. `Ok(true)` while we hold the lease.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        match decide(&spec, &self.identity, now, self.duration) {
            Decision::Wait => return Ok(false),
            Decision::Renew => spec.renew_time = Some(MicroTime(now)),
            Decision::TakeOver => {
                spec.holder_identity = Some(self.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(self.duration_seconds());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Retry every `retry` until we hold the lease (`true`) or `stop` fires (`false`).
    pub async fn acquire(&self, retry: Duration, mut stop: watch::Receiver<bool>) -> bool {
        loop {
            if *stop.borrow() {
                return false;
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election round failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {},
                _ = stop.wait_for(|s| *s) => return false,
            }
        }
    }

    /// Renew every `retry` in the background. The returned channel turns `true` once
    /// the lease is lost: someone else holds it, or no renewal succeeded for a whole
    /// lease duration (after which a standby may already lead).
    pub fn keep_renewing(
        self: Arc<Self>,
        retry: Duration,
    ) -> (JoinHandle<()>, watch::Receiver<bool>) {
        let (lost_tx, lost_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut last_renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(retry).await;
                match self.try_acquire_or_renew().await {
                    Ok(true) => last_renewed = tokio::time::Instant::now(),
                    Ok(false) => break,
                    Err(e) => warn!(error = %e, "could not renew the lease"),
                }
                if last_renewed.elapsed() > self.duration {
                    break;
                }
            }
            let _ = lost_tx.send(true);
        });
        (task, lost_rx)
    }

    /// Give the lease up so a standby takes over without waiting for expiry.
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
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_at: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_at).expect("ts"))),
            ..LeaseSpec::default()
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("ts")
    }

    #[test]
    fn holder_renews_others_wait_until_expiry() {
        let d = Duration::from_secs(15);
        assert_eq!(
            decide(&spec(Some("a"), 100), "a", at(200), d),
            Decision::Renew
        );
        assert_eq!(
            decide(&spec(Some("a"), 100), "b", at(110), d),
            Decision::Wait
        );
        assert_eq!(
            decide(&spec(Some("a"), 100), "b", at(115), d),
            Decision::Wait
        );
        assert_eq!(
            decide(&spec(Some("a"), 100), "b", at(116), d),
            Decision::TakeOver
        );
    }

    #[test]
    fn released_lease_is_taken_at_once() {
        let d = Duration::from_secs(15);
        assert_eq!(
            decide(&spec(None, 100), "b", at(101), d),
            Decision::TakeOver
        );
        assert_eq!(
            decide(&spec(Some(""), 100), "b", at(101), d),
            Decision::TakeOver
        );
    }
}
