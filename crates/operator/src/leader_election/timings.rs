//! The three durations of leader election and the order they must keep, as in
//! client-go: lease duration > renew deadline > retry period > 0.
//!
//! A standby takes the lease a lease duration after it last saw the record change; the
//! leader must have stopped writing before then, so it gives up at its renew deadline,
//! which must leave room for at least one retry.

use std::time::Duration;

/// How long each phase of leader election lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long a standby waits, from when it last saw the lease record change, before
    /// it takes the lease.
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby tries; also the timeout of a
    /// standby's lease calls.
    pub retry_period: Duration,
}

/// A combination of timings that would let two replicas lead at once, or none.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTimings {
    #[error("--lease-retry-seconds must be at least 1")]
    NoRetryPeriod,
    #[error(
        "--lease-renew-deadline-seconds ({renew}s) must be shorter than --lease-duration-seconds ({lease}s): a standby takes the lease a lease duration after the last renewal it saw, so the leader must have stopped before then"
    )]
    DeadlineNotBeforeExpiry { renew: u64, lease: u64 },
    #[error(
        "--lease-retry-seconds ({retry}s) must be shorter than --lease-renew-deadline-seconds ({renew}s): the leader needs room to retry a failed renewal before it gives up"
    )]
    RetryNotBeforeDeadline { retry: u64, renew: u64 },
}

impl Default for Timings {
    /// client-go's defaults.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    /// From the flags, in seconds; refuses an order that breaks the contract.
    pub fn from_seconds(lease: u64, renew: u64, retry: u64) -> Result<Self, InvalidTimings> {
        if retry == 0 {
            return Err(InvalidTimings::NoRetryPeriod);
        }
        if renew >= lease {
            return Err(InvalidTimings::DeadlineNotBeforeExpiry { renew, lease });
        }
        if retry >= renew {
            return Err(InvalidTimings::RetryNotBeforeDeadline { retry, renew });
        }
        Ok(Self {
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        })
    }

    /// The lease duration as the Lease records it.
    pub fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_go_defaults_keep_the_order() {
        assert_eq!(Timings::from_seconds(15, 10, 2), Ok(Timings::default()));
    }

    #[test]
    fn lease_must_outlast_the_renew_deadline_which_must_outlast_the_retry_period() {
        assert_eq!(
            Timings::from_seconds(10, 10, 2),
            Err(InvalidTimings::DeadlineNotBeforeExpiry {
                renew: 10,
                lease: 10
            })
        );
        assert_eq!(
            Timings::from_seconds(8, 10, 2),
            Err(InvalidTimings::DeadlineNotBeforeExpiry {
                renew: 10,
                lease: 8
            })
        );
        assert_eq!(
            Timings::from_seconds(15, 2, 2),
            Err(InvalidTimings::RetryNotBeforeDeadline { retry: 2, renew: 2 })
        );
        assert_eq!(
            Timings::from_seconds(15, 10, 0),
            Err(InvalidTimings::NoRetryPeriod)
        );
        let message = Timings::from_seconds(8, 10, 2)
            .expect_err("refused")
            .to_string();
        assert!(
            message.contains("--lease-renew-deadline-seconds (10s)")
                && message.contains("--lease-duration-seconds (8s)"),
            "{message}"
        );
    }
}
