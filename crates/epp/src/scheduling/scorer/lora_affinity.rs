//! lora-affinity-scorer (llm-d's semantics): a request for a LoRA adapter prefers an
//! endpoint already running that adapter (1), then one with room to load it (fewer
//! adapters active than its `--max-loras`: 0.8), then one where it only waits (0.6);
//! an endpoint that is full of other adapters, or reports no LoRA state, scores 0.

use crate::scheduling::candidate::{Candidate, RequestFeatures};

pub fn score(candidates: &[&Candidate], request: &RequestFeatures) -> Vec<f64> {
    candidates
        .iter()
        .map(|c| {
            let Some(lora) = &c.lora else {
                return 0.0;
            };
            let model = request.model.as_str();
            if lora.running.iter().any(|a| a == model) {
                1.0
            } else if lora.active_count() < lora.max_loras as usize {
                0.8
            } else if lora.waiting.iter().any(|a| a == model) {
                0.6
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::endpoint::Role;
    use llmd_api::engine_metrics::LoraState;

    fn with(running: &[&str], waiting: &[&str], max: u32) -> Candidate {
        let mut c = Candidate::new("e:1", Role::Decode);
        c.lora = Some(LoraState {
            running: running.iter().map(|s| s.to_string()).collect(),
            waiting: waiting.iter().map(|s| s.to_string()).collect(),
            max_loras: max,
        });
        c
    }

    #[test]
    fn running_beats_room_beats_waiting_beats_full() {
        let running = with(&["sql"], &[], 1);
        let room = with(&["chat"], &[], 2);
        let waiting = with(&["chat"], &["sql"], 2);
        let full = with(&["chat", "code"], &[], 2);
        let unknown = Candidate::new("e:2", Role::Decode);
        let req = RequestFeatures {
            model: "sql".into(),
            ..RequestFeatures::default()
        };
        assert_eq!(
            score(&[&running, &room, &waiting, &full, &unknown], &req),
            [1.0, 0.8, 0.6, 0.0, 0.0]
        );
    }
}
