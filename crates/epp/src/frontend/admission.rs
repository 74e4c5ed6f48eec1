//! The EPP's one admission limit: requests in flight across both front ends. A
//! burst beyond it is refused at once (429 with Retry-After, in the OpenAI error
//! shape) instead of queueing bodies in memory.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Seconds a refused client is asked to wait.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// Admits up to `limit` requests at once.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    limit: usize,
}

/// Held while a request is in flight; dropping it admits the next.
pub type Admitted = OwnedSemaphorePermit;

impl Admission {
    pub fn new(limit: usize) -> Admission {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A place for one more request, or `None` when `limit` are in flight.
    pub fn try_admit(&self) -> Option<Admitted> {
        self.permits.clone().try_acquire_owned().ok()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// The message a refused client gets.
    pub fn refusal(&self) -> String {
        format!(
            "the EndpointPicker has {} requests in flight, its limit; retry in {RETRY_AFTER_SECONDS}s",
            self.limit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_again_after_a_release() {
        let admission = Admission::new(2);
        let a = admission.try_admit().expect("first");
        let _b = admission.try_admit().expect("second");
        assert!(admission.try_admit().is_none(), "third is refused");
        assert_eq!(admission.in_flight(), 2);
        drop(a);
        assert!(admission.try_admit().is_some(), "a release admits the next");
    }
}
