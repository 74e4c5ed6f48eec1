//! The write fence: this process may write to the API only while it leads, and stops
//! the instant its renew deadline passes, judged at each write by the monotonic clock
//! rather than by whichever task notices first. After a pause (SIGSTOP, a stalled VM)
//! every task wakes at once; the fence makes sure a reconcile that wins that race
//! still cannot write.
//!
//! One fence per process, installed by `main` when leader election is on. Without
//! one (leader election off, unit tests) every write is allowed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// Until when writes are allowed.
#[derive(Debug)]
pub struct Fence {
    origin: Instant,
    /// Nanoseconds after `origin` until which writes are allowed; 0 when closed.
    open_until: AtomicU64,
}

impl Fence {
    /// A fence that allows nothing until the lease is acquired.
    pub fn closed() -> Self {
        Self {
            origin: Instant::now(),
            open_until: AtomicU64::new(0),
        }
    }

    /// Allow writes until `deadline` (the renew deadline of the last renewal).
    pub fn open_until(&self, deadline: Instant) {
        let nanos = deadline.saturating_duration_since(self.origin).as_nanos();
        self.open_until
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Allow nothing from now on.
    pub fn close(&self) {
        self.open_until.store(0, Ordering::SeqCst);
    }

    /// How long writes are still allowed from `now`; `None` when they are not.
    pub fn time_left(&self, now: Instant) -> Option<Duration> {
        let until = self.origin + Duration::from_nanos(self.open_until.load(Ordering::SeqCst));
        until
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
    }

    pub fn allows(&self, now: Instant) -> bool {
        self.time_left(now).is_some()
    }
}

static PROCESS_FENCE: OnceLock<Arc<Fence>> = OnceLock::new();

/// Make `fence` guard every write of this process. Only the first call counts.
pub fn install(fence: Arc<Fence>) {
    let _ = PROCESS_FENCE.set(fence);
}

/// `Ok` while this process may write; call right before each write.
pub fn ensure_leading() -> Result<()> {
    match PROCESS_FENCE.get() {
        Some(fence) if !fence.allows(Instant::now()) => Err(Error::NotLeading),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fence_closes_at_the_deadline_without_anyone_closing_it() {
        let fence = Fence::closed();
        assert!(!fence.allows(Instant::now()), "closed until acquired");
        let deadline = Instant::now() + Duration::from_secs(10);
        fence.open_until(deadline);
        assert!(fence.allows(Instant::now()));
        assert_eq!(
            fence.time_left(Instant::now()),
            Some(Duration::from_secs(10))
        );
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(fence.allows(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!fence.allows(Instant::now()), "closed at the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_fence_stays_closed_whatever_the_deadline_was() {
        let fence = Fence::closed();
        fence.open_until(Instant::now() + Duration::from_secs(10));
        fence.close();
        assert!(!fence.allows(Instant::now()));
        assert_eq!(fence.time_left(Instant::now()), None);
    }
}
