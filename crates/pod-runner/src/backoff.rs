//! Restart backoff of a crashing container: the delay doubles from `initial` up to
//! `max` with each quick exit, and starts over once the container ran
//! `reset_after` before exiting (a crash after a long healthy run is not a loop).

use std::time::Duration;

use crate::config::BackoffConfig;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(config: &BackoffConfig) -> Self {
        let initial = Duration::from_millis(config.initial_millis);
        Self {
            initial,
            max: Duration::from_millis(config.max_millis),
            reset_after: Duration::from_millis(config.reset_after_millis),
            next: initial,
        }
    }

    /// The delay before restarting a container that ran for `ran_for`.
    pub fn delay_after(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.reset_after {
            self.next = self.initial;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff::new(&BackoffConfig::default())
    }

    #[test]
    fn delay_doubles_from_one_second_up_to_thirty() {
        let mut b = backoff();
        let quick = Duration::from_millis(100);
        let delays: Vec<u64> = (0..8).map(|_| b.delay_after(quick).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_long_run_resets_the_delay() {
        let mut b = backoff();
        for _ in 0..4 {
            b.delay_after(Duration::ZERO);
        }
        assert_eq!(
            b.delay_after(Duration::from_secs(61)),
            Duration::from_secs(1)
        );
        assert_eq!(b.delay_after(Duration::ZERO), Duration::from_secs(2));
    }
}
