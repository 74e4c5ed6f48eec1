//! What users feel, measured the same way on both front ends: time to first token,
//! time between streamed chunks (about one token each) and the whole duration, from
//! the request's arrival at the EPP.

use std::sync::Arc;
use std::time::Instant;

use crate::telemetry::{FrontendLabels, Telemetry};

/// The front end a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frontend {
    Proxy,
    ExtProc,
}

impl Frontend {
    pub const ALL: [Frontend; 2] = [Frontend::Proxy, Frontend::ExtProc];

    pub fn label(self) -> FrontendLabels {
        FrontendLabels {
            frontend: match self {
                Frontend::Proxy => "proxy",
                Frontend::ExtProc => "ext-proc",
            },
        }
    }
}

/// The clock of one request. Dropping it without [`LatencyClock::finish`] records
/// nothing more (an aborted response has no duration worth comparing).
pub struct LatencyClock {
    telemetry: Arc<Telemetry>,
    labels: FrontendLabels,
    started: Instant,
    first_chunk: Option<Instant>,
    last_chunk: Option<Instant>,
    chunks: u32,
}

impl LatencyClock {
    pub fn start(telemetry: Arc<Telemetry>, frontend: Frontend, started: Instant) -> Self {
        LatencyClock {
            telemetry,
            labels: frontend.label(),
            started,
            first_chunk: None,
            last_chunk: None,
            chunks: 0,
        }
    }

    /// A chunk of the response arrived: the first sets the TTFT (and returns true),
    /// the others an inter-token latency.
    pub fn chunk(&mut self) -> bool {
        let now = Instant::now();
        let first = self.last_chunk.is_none();
        match self.last_chunk {
            None => self
                .telemetry
                .ttft
                .get_or_create(&self.labels)
                .observe(now.duration_since(self.started).as_secs_f64()),
            Some(previous) => self
                .telemetry
                .inter_token_latency
                .get_or_create(&self.labels)
                .observe(now.duration_since(previous).as_secs_f64()),
        }
        self.first_chunk.get_or_insert(now);
        self.last_chunk = Some(now);
        self.chunks = self.chunks.saturating_add(1);
        first
    }

    /// The response ended. Returns the mean time between its chunks after the
    /// first (about one token each), when there were at least two.
    pub fn finish(self) -> Option<f64> {
        if self.last_chunk.is_none() {
            // A body-less answer: its first byte was its last.
            self.telemetry
                .ttft
                .get_or_create(&self.labels)
                .observe(self.started.elapsed().as_secs_f64());
        }
        self.telemetry
            .request_duration
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
        match (self.first_chunk, self.last_chunk) {
            (Some(first), Some(last)) if self.chunks >= 2 => {
                Some(last.duration_since(first).as_secs_f64() / f64::from(self.chunks - 1))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str, family: &str, frontend: &str) -> u64 {
        let prefix = format!("llmd_epp_{family}_count{{frontend=\"{frontend}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn the_first_chunk_is_the_ttft_and_the_rest_inter_token_latencies() {
        let telemetry = Arc::new(Telemetry::new());
        let mut clock = LatencyClock::start(telemetry.clone(), Frontend::ExtProc, Instant::now());
        for _ in 0..4 {
            clock.chunk();
        }
        let mean = clock.finish().expect("four chunks have three gaps");
        assert!((0.0..1.0).contains(&mean), "{mean}");
        let text = telemetry.encode();
        assert_eq!(count(&text, "time_to_first_token_seconds", "ext-proc"), 1);
        assert_eq!(count(&text, "inter_token_latency_seconds", "ext-proc"), 3);
        assert_eq!(count(&text, "request_duration_seconds", "ext-proc"), 1);
        assert_eq!(count(&text, "time_to_first_token_seconds", "proxy"), 0);
    }

    #[test]
    fn buckets_are_ten_percent_apart() {
        let buckets: Vec<f64> = crate::telemetry::latency_buckets().collect();
        assert!(buckets[0] <= 0.001);
        assert!(*buckets.last().unwrap_or(&0.0) >= 60.0);
        for pair in buckets.windows(2) {
            assert!((pair[1] / pair[0] - 1.1).abs() < 1e-9);
        }
    }
}
