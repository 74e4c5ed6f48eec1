//! One endpoint's latency model: the work this EPP has sent there and not seen
//! finish, the endpoint's concurrency as its metrics reveal it, how long its
//! requests decode, and the TTFT regression fitted from what it answered. Time is
//! passed in, so every rule is testable without a clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::predict::itl::{ItlCoefficients, ItlFeatures, ItlRegression};
use crate::predict::regression::{Coefficients, Features, TtftRegression, Update};

/// A request sent to the endpoint and not finished.
#[derive(Clone, Debug)]
struct Pending {
    id: u64,
    dispatched: Instant,
    /// What its TTFT was predicted from, and the prediction.
    features: Features,
    predicted_ttft: f64,
    /// The whole prompt: what it prefills if the cache it was predicted to hit
    /// turns out not to hold it.
    prompt_tokens: f64,
    first_token: Option<Instant>,
    /// Decode pressure when it was sent, and the inter-token latency predicted.
    itl_features: ItlFeatures,
    predicted_itl: f64,
}

/// A prediction for one request on one endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    pub ttft: f64,
    pub features: Features,
    /// Mean time between its tokens once it decodes.
    pub itl: f64,
    pub itl_features: ItlFeatures,
}

/// What a response's inter-token latency taught the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ItlObserved {
    pub predicted: f64,
    pub actual: f64,
    pub features: ItlFeatures,
    pub update: Update,
}

/// The priors of an endpoint's models: the fleet's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Priors<'a> {
    pub ttft: &'a Coefficients,
    pub itl: &'a ItlCoefficients,
}

/// What a first token taught the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observed {
    pub predicted: f64,
    pub actual: f64,
    pub features: Features,
    pub update: Update,
}

#[derive(Debug, Default)]
pub struct PodLatency {
    pending: Vec<Pending>,
    next_id: u64,
    regression: TtftRegression,
    /// Most requests seen running while others waited: the endpoint's slots
    /// (vLLM's max-num-seqs). `None` until a scrape shows a queue.
    slots: Option<usize>,
    /// Running mean of first token to end, in seconds.
    decode_seconds: Option<f64>,
    itl: ItlRegression,
    /// From the last scrape: requests running, and the share of the KV cache in use.
    running: f64,
    kv_usage: f64,
}

impl PodLatency {
    /// A scrape: with requests waiting, the running count is the slot count.
    pub fn observe_scrape(&mut self, running: f64, waiting: f64, kv_usage: f64) {
        if running.is_finite() && running >= 0.0 {
            self.running = running;
        }
        if kv_usage.is_finite() {
            self.kv_usage = kv_usage.clamp(0.0, 1.0);
        }
        if waiting >= 1.0 && running >= 1.0 && running.is_finite() {
            let running = running as usize;
            self.slots = Some(self.slots.map_or(running, |s| s.max(running)));
        }
    }

    #[cfg(test)]
    fn slots(&self) -> Option<usize> {
        self.slots
    }

    /// The model's coefficients, or `prior` before it learned anything.
    pub fn coefficients(&self, prior: &Coefficients) -> Coefficients {
        self.regression.coefficients(prior)
    }

    /// The inter-token model's coefficients, or `prior` before it learned anything.
    pub fn itl_coefficients(&self, prior: &ItlCoefficients) -> ItlCoefficients {
        self.itl.coefficients(prior)
    }

    /// The features of a request with `uncached_tokens` to prefill, sent now; the
    /// prefill times of the requests ahead are estimated with `coefficients`.
    pub fn features(
        &self,
        uncached_tokens: usize,
        cached_tokens: usize,
        now: Instant,
        coefficients: &Coefficients,
    ) -> Features {
        let queued_prefill_tokens = self
            .pending
            .iter()
            .filter(|p| p.first_token.is_none())
            .map(|p| p.features.uncached_tokens)
            .sum();
        Features {
            uncached_tokens: uncached_tokens as f64,
            queued_prefill_tokens,
            slot_wait: self.slot_wait(now, coefficients),
            cached_tokens: cached_tokens as f64,
        }
    }

    /// Seconds until a slot is free for one more request: the requests pending are
    /// replayed first come, first served over the slots, each holding one from its
    /// start (its dispatch, or when a slot frees) for its prefill (the model's fixed
    /// cost and per-token price; its first token when seen) and the endpoint's
    /// decode time. 0 while the slots are unknown (then queued prefill stands in).
    fn slot_wait(&self, now: Instant, coefficients: &Coefficients) -> f64 {
        let Some(slots) = self.slots.filter(|s| *s > 0) else {
            return 0.0;
        };
        if self.pending.len() < slots {
            return 0.0;
        }
        let decode = Duration::from_secs_f64(self.decode_seconds.unwrap_or(0.0));
        let c = coefficients.0;
        let prefill =
            |tokens: f64| Duration::from_secs_f64((c[0] + c[1] * tokens / 1000.0).max(0.0));
        // Slot free times, earliest first (a min-heap).
        let mut free: BinaryHeap<Reverse<Instant>> = BinaryHeap::new();
        let mut queued: Vec<&Pending> = Vec::new();
        for p in &self.pending {
            match p.first_token {
                Some(first) => free.push(Reverse(first + decode)),
                None => queued.push(p),
            }
        }
        queued.sort_by_key(|p| p.dispatched);
        let earliest = |free: &mut BinaryHeap<Reverse<Instant>>| {
            if free.len() < slots {
                None
            } else {
                free.pop().map(|Reverse(t)| t)
            }
        };
        for p in queued {
            let start = earliest(&mut free).map_or(p.dispatched, |t| t.max(p.dispatched));
            let mut first = start + prefill(p.features.uncached_tokens);
            if first < now {
                // Late: the cache it was sent to for did not hold the prompt (or no
                // longer does); it is taken to prefill all of it.
                first = start + prefill(p.prompt_tokens);
            }
            // No first token yet: it comes now at the earliest.
            let end = first.max(now) + decode;
            free.push(Reverse(end));
        }
        earliest(&mut free).map_or(0.0, |t| t.saturating_duration_since(now).as_secs_f64())
    }

    pub fn predict(
        &self,
        uncached_tokens: usize,
        cached_tokens: usize,
        now: Instant,
        prior: Priors<'_>,
    ) -> Prediction {
        let coefficients = self.coefficients(prior.ttft);
        let features = self.features(uncached_tokens, cached_tokens, now, &coefficients);
        // This request joins what runs there: the engine's count, or this EPP's
        // when it knows of more (sent since the scrape).
        let itl_features = ItlFeatures {
            running: self.running.max(self.pending.len() as f64) + 1.0,
            kv_usage: self.kv_usage,
        };
        Prediction {
            ttft: coefficients.predict(&features),
            features,
            itl: self.itl.coefficients(prior.itl).predict(&itl_features),
            itl_features,
        }
    }

    /// Records a request of `prompt_tokens` sent with `prediction`; returns its id.
    pub fn dispatch(&mut self, prediction: Prediction, prompt_tokens: usize, now: Instant) -> u64 {
        self.next_id += 1;
        self.pending.push(Pending {
            id: self.next_id,
            dispatched: now,
            features: prediction.features,
            predicted_ttft: prediction.ttft,
            prompt_tokens: prompt_tokens as f64,
            first_token: None,
            itl_features: prediction.itl_features,
            predicted_itl: prediction.itl,
        });
        self.next_id
    }

    /// The first token of request `id` arrived: learns from its TTFT. `None` for an
    /// unknown id or a second first token. The observation is returned with the
    /// features it was predicted from, for the fleet's model.
    pub fn first_token(&mut self, id: u64, now: Instant, prior: &Coefficients) -> Option<Observed> {
        let p = self
            .pending
            .iter_mut()
            .find(|p| p.id == id && p.first_token.is_none())?;
        p.first_token = Some(now);
        let actual = now.saturating_duration_since(p.dispatched).as_secs_f64();
        let (features, predicted) = (p.features, p.predicted_ttft);
        let update = self.regression.observe(&features, actual, prior);
        Some(Observed {
            predicted,
            actual,
            features,
            update,
        })
    }

    /// Request `id` decoded with a mean inter-token latency of `mean_itl` seconds:
    /// learns from it. `None` for an unknown id.
    pub fn decoded(
        &mut self,
        id: u64,
        mean_itl: f64,
        prior: &ItlCoefficients,
    ) -> Option<ItlObserved> {
        let p = self.pending.iter().find(|p| p.id == id)?;
        let (features, predicted) = (p.itl_features, p.predicted_itl);
        let update = self.itl.observe(&features, mean_itl, prior);
        Some(ItlObserved {
            predicted,
            actual: mean_itl,
            features,
            update,
        })
    }

    /// Request `id` ended (answered, failed or cancelled).
    pub fn finish(&mut self, id: u64, now: Instant) {
        let Some(i) = self.pending.iter().position(|p| p.id == id) else {
            return;
        };
        let p = self.pending.swap_remove(i);
        if let Some(first) = p.first_token {
            let decode = now.saturating_duration_since(first).as_secs_f64();
            self.decode_seconds = Some(match self.decode_seconds {
                Some(d) => 0.9 * d + 0.1 * decode,
                None => decode,
            });
        }
    }

    /// Requests sent and not finished.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIOR: Coefficients = Coefficients([0.005, 0.4, 0.0, 1.0, 0.0]);
    const PRIORS: Priors<'static> = Priors {
        ttft: &PRIOR,
        itl: &ItlCoefficients::UNINFORMED,
    };

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn queued_prefill_counts_until_the_first_token() {
        let t0 = Instant::now();
        let mut pod = PodLatency::default();
        let a = pod.dispatch(pod.predict(1000, 0, t0, PRIORS), 1000, t0);
        let _b = pod.dispatch(pod.predict(500, 0, t0, PRIORS), 500, t0);
        assert_eq!(
            pod.features(10, 0, t0, &PRIOR).queued_prefill_tokens,
            1500.0
        );
        pod.first_token(a, t0 + secs(0.4), &PRIOR);
        assert_eq!(pod.features(10, 0, t0, &PRIOR).queued_prefill_tokens, 500.0);
    }

    #[test]
    fn slots_are_learned_from_scrapes_that_show_a_queue() {
        let mut pod = PodLatency::default();
        pod.observe_scrape(3.0, 0.0, 0.0);
        assert_eq!(pod.slots(), None, "no queue: the limit is not reached");
        pod.observe_scrape(4.0, 2.0, 0.0);
        pod.observe_scrape(2.0, 1.0, 0.0);
        assert_eq!(pod.slots(), Some(4));
    }

    #[test]
    fn with_every_slot_busy_the_wait_is_until_the_earliest_end() {
        let t0 = Instant::now();
        let mut pod = PodLatency::default();
        pod.observe_scrape(2.0, 1.0, 0.0);
        // A long prefill (0.805 s) and a short one (0.045 s) hold both slots.
        pod.dispatch(pod.predict(2000, 0, t0, PRIORS), 2000, t0);
        assert_eq!(
            pod.features(0, 0, t0, &PRIOR).slot_wait,
            0.0,
            "one slot still free"
        );
        pod.dispatch(pod.predict(100, 0, t0, PRIORS), 100, t0);
        let wait = pod.features(0, 0, t0, &PRIOR).slot_wait;
        assert!((wait - 0.045).abs() < 1e-6, "{wait}");
        // A third (5 ms) request takes the short one's slot at 45 ms; the next
        // waits for it, not for the long one.
        pod.dispatch(pod.predict(0, 0, t0, PRIORS), 0, t0);
        let wait = pod.features(0, 0, t0, &PRIOR).slot_wait;
        assert!((wait - 0.05).abs() < 1e-6, "{wait}");
        // A fourth takes that slot at 50 ms in turn.
        pod.dispatch(pod.predict(0, 0, t0, PRIORS), 0, t0);
        let wait = pod.features(0, 0, t0, &PRIOR).slot_wait;
        assert!((wait - 0.055).abs() < 1e-6, "{wait}");
    }

    #[test]
    fn decode_time_keeps_slots_busy_after_the_first_token() {
        let t0 = Instant::now();
        let mut pod = PodLatency::default();
        pod.observe_scrape(1.0, 1.0, 0.0);
        let a = pod.dispatch(pod.predict(0, 0, t0, PRIORS), 0, t0);
        pod.first_token(a, t0 + secs(0.01), &PRIOR);
        pod.finish(a, t0 + secs(0.11));
        let b = pod.dispatch(pod.predict(0, 0, t0, PRIORS), 0, t0 + secs(1.0));
        pod.first_token(b, t0 + secs(1.01), &PRIOR);
        let wait = pod.features(0, 0, t0 + secs(1.01), &PRIOR).slot_wait;
        assert!((wait - 0.1).abs() < 1e-6, "decodes for 0.1 s more: {wait}");
    }

    #[test]
    fn a_request_late_for_its_first_token_is_taken_to_prefill_its_whole_prompt() {
        let t0 = Instant::now();
        let mut pod = PodLatency::default();
        pod.observe_scrape(1.0, 1.0, 0.0);
        // Predicted to find 1,000 of its 1,000 tokens cached: 5 ms of prefill.
        pod.dispatch(pod.predict(0, 1000, t0, PRIORS), 1000, t0);
        let on_time = pod.features(0, 0, t0, &PRIOR).slot_wait;
        assert!((on_time - 0.005).abs() < 1e-6, "{on_time}");
        // 100 ms on, no first token: the cache did not hold it; 0.405 s in all.
        let late = pod.features(0, 0, t0 + secs(0.1), &PRIOR).slot_wait;
        assert!((late - 0.305).abs() < 1e-6, "{late}");
    }

    #[test]
    fn decode_pressure_is_predicted_from_the_scrape_and_what_was_sent_since() {
        let t0 = Instant::now();
        let mut pod = PodLatency::default();
        pod.observe_scrape(2.0, 0.0, 0.5);
        let p = pod.predict(0, 0, t0, PRIORS);
        assert_eq!(p.itl_features.running, 3.0, "two running and this one");
        assert_eq!(p.itl_features.kv_usage, 0.5);
        for _ in 0..3 {
            pod.dispatch(pod.predict(0, 0, t0, PRIORS), 0, t0);
        }
        let p = pod.predict(0, 0, t0, PRIORS);
        assert_eq!(p.itl_features.running, 4.0, "three sent since the scrape");
        let id = pod.dispatch(p, 0, t0);
        let seen = pod
            .decoded(id, 0.03, &ItlCoefficients::UNINFORMED)
            .expect("known id");
        assert_eq!((seen.predicted, seen.actual), (0.02, 0.03));
        assert!(
            pod.decoded(999, 0.03, &ItlCoefficients::UNINFORMED)
                .is_none()
        );
    }

    #[test]
    fn first_tokens_teach_the_regression_once() {
        let t0 = Instant::now();
        let mut pod = PodLatency::default();
        let a = pod.dispatch(pod.predict(1000, 0, t0, PRIORS), 1000, t0);
        let seen = pod
            .first_token(a, t0 + secs(0.5), &PRIOR)
            .expect("known id");
        assert!((seen.actual - 0.5).abs() < 1e-9);
        assert!((seen.predicted - 0.405).abs() < 1e-9);
        assert_eq!(pod.first_token(a, t0 + secs(0.6), &PRIOR), None);
        assert_eq!(pod.first_token(999, t0, &PRIOR), None);
        pod.finish(a, t0 + secs(0.7));
        pod.finish(a, t0 + secs(0.7));
        assert_eq!(pod.pending(), 0);
    }

    #[test]
    fn a_request_that_never_answers_leaves_when_it_is_finished() {
        let t0 = Instant::now();
        let mut pod = PodLatency::default();
        let a = pod.dispatch(pod.predict(100, 0, t0, PRIORS), 100, t0);
        pod.finish(a, t0 + secs(30.0));
        assert_eq!(pod.pending(), 0);
        assert_eq!(pod.features(0, 0, t0, &PRIOR).queued_prefill_tokens, 0.0);
        assert_eq!(pod.coefficients(&PRIOR), PRIOR, "nothing learned from it");
    }
}
