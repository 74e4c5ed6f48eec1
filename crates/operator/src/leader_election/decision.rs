//! What to do with the lease, decided from what this replica saw and when, on its
//! own monotonic clock (client-go's `observedTime`). The holder's `renewTime` is
//! written for people to read and never compared with this machine's clock: the
//! clocks of two machines need not agree, but each one measures elapsed time well.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::LeaseSpec;
use tokio::time::Instant;

use super::timings::Timings;

/// Where this replica stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Not leading: waiting for the lease.
    Candidate,
    /// Leading; the last successful renewal started at `renewed_at`.
    Leader { renewed_at: Instant },
}

/// The lease record as this replica last read it, and when it last saw it change.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub record: LeaseSpec,
    /// When the record last changed, as far as this replica can tell.
    pub changed_at: Instant,
}

impl Observation {
    /// The observation after reading `record` at `now`: the clock restarts only when
    /// the record differs from the one seen before (a renewal, a new holder, a
    /// release). A record seen for the first time counts as just changed.
    pub fn after_reading(previous: Option<Observation>, record: LeaseSpec, now: Instant) -> Self {
        match previous {
            Some(previous) if previous.record == record => previous,
            _ => Self {
                record,
                changed_at: now,
            },
        }
    }
}

/// What to do with the lease this round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Take it: nobody holds it, or its holder has not renewed for a lease duration.
    Acquire,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds a live lease.
    Wait,
    /// We were leading and are no more: another holder, or our renew deadline passed.
    Lost,
}

/// Time a leader that last renewed at `renewed_at` has left before it must stop;
/// `None` once its renew deadline has passed.
pub fn time_left(renewed_at: Instant, now: Instant, timings: &Timings) -> Option<Duration> {
    (renewed_at + timings.renew_deadline)
        .checked_duration_since(now)
        .filter(|left| !left.is_zero())
}

/// The lease duration the holder promised, else ours.
fn lease_duration(record: &LeaseSpec, timings: &Timings) -> Duration {
    record
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(timings.lease_duration, Duration::from_secs)
}

/// The rule. A leader is lost once its renew deadline passed or the record names
/// someone else. A candidate takes a lease nobody holds, renews one that names it (a
/// restart under the same identity), and takes one whose record has not changed for
/// the lease duration, counted from when it saw the change.
pub fn decide(
    identity: &str,
    standing: Standing,
    observed: &Observation,
    now: Instant,
    timings: &Timings,
) -> Decision {
    let holder = observed.record.holder_identity.as_deref().unwrap_or("");
    match standing {
        Standing::Leader { renewed_at } => {
            if time_left(renewed_at, now, timings).is_none() || holder != identity {
                Decision::Lost
            } else {
                Decision::Renew
            }
        }
        Standing::Candidate if holder.is_empty() => Decision::Acquire,
        Standing::Candidate if holder == identity => Decision::Renew,
        Standing::Candidate => {
            let unchanged_for = now.saturating_duration_since(observed.changed_at);
            if unchanged_for >= lease_duration(&observed.record, timings) {
                Decision::Acquire
            } else {
                Decision::Wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn record(holder: Option<&str>, renewed_at_second: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                Timestamp::from_second(renewed_at_second).expect("timestamp"),
            )),
            ..LeaseSpec::default()
        }
    }

    fn seen(record: LeaseSpec, at: Instant) -> Observation {
        Observation::after_reading(None, record, at)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn standby_waits_a_lease_duration_from_when_it_saw_the_record_change() {
        let t = Timings::default();
        let t0 = Instant::now();
        let o = seen(record(Some("a"), 100), t0);
        assert_eq!(decide("b", Standing::Candidate, &o, t0, &t), Decision::Wait);
        assert_eq!(
            decide("b", Standing::Candidate, &o, t0 + secs(14), &t),
            Decision::Wait
        );
        assert_eq!(
            decide("b", Standing::Candidate, &o, t0 + secs(15), &t),
            Decision::Acquire
        );
    }

    #[test]
    fn standby_never_compares_the_holders_timestamps_with_its_own_clock() {
        let t = Timings::default();
        let t0 = Instant::now();
        // A renewTime from 1970: a skewed or long-dead holder. Just seen, so it waits.
        let ancient = seen(record(Some("a"), 0), t0);
        assert_eq!(
            decide("b", Standing::Candidate, &ancient, t0 + secs(1), &t),
            Decision::Wait
        );
        // A renewTime far in the future: unchanged for a lease duration, so it is taken.
        let future = seen(record(Some("a"), 4_000_000_000), t0);
        assert_eq!(
            decide("b", Standing::Candidate, &future, t0 + secs(15), &t),
            Decision::Acquire
        );
    }

    #[test]
    fn a_renewal_restarts_the_standbys_wait_and_an_unchanged_record_does_not() {
        let t = Timings::default();
        let t0 = Instant::now();
        let first = seen(record(Some("a"), 100), t0);
        let same =
            Observation::after_reading(Some(first.clone()), record(Some("a"), 100), t0 + secs(10));
        assert_eq!(same.changed_at, t0, "an unchanged record keeps its time");
        let renewed = Observation::after_reading(Some(same), record(Some("a"), 102), t0 + secs(12));
        assert_eq!(renewed.changed_at, t0 + secs(12));
        assert_eq!(
            decide("b", Standing::Candidate, &renewed, t0 + secs(20), &t),
            Decision::Wait
        );
        assert_eq!(
            decide("b", Standing::Candidate, &renewed, t0 + secs(27), &t),
            Decision::Acquire
        );
    }

    #[test]
    fn the_holders_own_lease_duration_is_honoured() {
        let t = Timings::default();
        let t0 = Instant::now();
        let mut long = record(Some("a"), 100);
        long.lease_duration_seconds = Some(60);
        let o = seen(long, t0);
        assert_eq!(
            decide("b", Standing::Candidate, &o, t0 + secs(30), &t),
            Decision::Wait
        );
        assert_eq!(
            decide("b", Standing::Candidate, &o, t0 + secs(60), &t),
            Decision::Acquire
        );
    }

    #[test]
    fn released_lease_is_taken_at_once() {
        let t = Timings::default();
        let t0 = Instant::now();
        for holder in [None, Some("")] {
            let o = seen(record(holder, 100), t0);
            assert_eq!(
                decide("b", Standing::Candidate, &o, t0, &t),
                Decision::Acquire
            );
        }
    }

    #[test]
    fn a_restart_under_the_same_identity_renews_its_own_lease() {
        let t = Timings::default();
        let t0 = Instant::now();
        let o = seen(record(Some("a"), 100), t0);
        assert_eq!(
            decide("a", Standing::Candidate, &o, t0, &t),
            Decision::Renew
        );
    }

    #[test]
    fn leader_renews_until_its_renew_deadline_then_is_lost() {
        let t = Timings::default();
        let t0 = Instant::now();
        let o = seen(record(Some("a"), 100), t0);
        let leader = Standing::Leader { renewed_at: t0 };
        assert_eq!(decide("a", leader, &o, t0 + secs(9), &t), Decision::Renew);
        assert_eq!(decide("a", leader, &o, t0 + secs(10), &t), Decision::Lost);
        assert_eq!(time_left(t0, t0 + secs(4), &t), Some(secs(6)));
        assert_eq!(time_left(t0, t0 + secs(10), &t), None);
        assert_eq!(time_left(t0, t0 + secs(11), &t), None);
    }

    #[test]
    fn leader_that_reads_another_holder_is_lost_before_its_deadline() {
        let t = Timings::default();
        let t0 = Instant::now();
        let leader = Standing::Leader { renewed_at: t0 };
        for holder in [Some("b"), None] {
            let o = seen(record(holder, 100), t0);
            assert_eq!(decide("a", leader, &o, t0 + secs(1), &t), Decision::Lost);
        }
    }
}
