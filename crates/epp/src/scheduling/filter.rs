//! Filters: which endpoints a scheduling profile goes on to score. They run in the
//! profile's order, each over what the previous ones kept. Role filters judge one
//! endpoint at a time; the prefix-affinity gate compares the candidates it is given,
//! so it needs the request's prefix matches.

use llmd_api::endpoint_picker_config::{AffinityGate, Filter, RoleFilter};

use crate::scheduling::candidate::{Candidate, RequestFeatures};

/// Does role filter `filter` let `candidate` through?
pub fn accepts(filter: RoleFilter, candidate: &Candidate) -> bool {
    match filter {
        RoleFilter::Decode => candidate.role.serves_decode(),
        RoleFilter::Prefill => candidate.role.serves_prefill(),
    }
}

/// Would the gate keep `candidate`: it holds at least the threshold of the prompt and
/// its queue (scraped waiting + sent since the scrape, as the queue scorer sees it)
/// is below the limit. An endpoint without fresh metrics is not judged overloaded:
/// it is only a candidate when no endpoint has fresh metrics (see
/// `EndpointPicker::candidates`), and then the prefix match is all there is to go on.
pub fn gate_keeps(gate: &AffinityGate, candidate: &Candidate, request: &RequestFeatures) -> bool {
    request.prefix_match(candidate.matched_blocks) >= gate.affinity_threshold
        && candidate
            .load
            .is_none_or(|l| l.waiting < gate.max_waiting_requests as f64)
}

/// Narrows `candidates` to what every filter keeps, in order.
pub fn apply(filters: &[Filter], candidates: &mut Vec<&Candidate>, request: &RequestFeatures) {
    for filter in filters {
        match filter {
            Filter::Role(role) => candidates.retain(|c| accepts(*role, c)),
            Filter::PrefixCacheAffinity(gate) => {
                // Closed: only the holders that can take more go on. Open (no such
                // holder): everyone goes on and the scorers spread the load.
                if candidates.iter().any(|c| gate_keeps(gate, c, request)) {
                    candidates.retain(|c| gate_keeps(gate, c, request));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::endpoint::Role;
    use crate::scheduling::candidate::Load;

    fn kept(filters: &[Filter], all: &[Candidate], request: &RequestFeatures) -> Vec<String> {
        let mut v: Vec<&Candidate> = all.iter().collect();
        apply(filters, &mut v, request);
        v.iter().map(|c| c.address.to_string()).collect()
    }

    #[test]
    fn role_filters_follow_llm_d() {
        let all = [
            Candidate::new("p", Role::Prefill),
            Candidate::new("d", Role::Decode),
            Candidate::new("b", Role::Both),
            Candidate::new("u", Role::Unlabeled),
        ];
        let none = RequestFeatures::default();
        let role = |r| [Filter::Role(r)];
        assert_eq!(
            kept(&role(RoleFilter::Decode), &all, &none),
            ["d", "b", "u"]
        );
        assert_eq!(kept(&role(RoleFilter::Prefill), &all, &none), ["p", "b"]);
        assert_eq!(kept(&[], &all, &none).len(), 4);
    }

    /// A decode endpoint holding `matched` of 10 prompt blocks with `waiting` queued.
    fn holder(address: &str, matched: usize, waiting: f64) -> Candidate {
        let mut c = Candidate::new(address, Role::Decode);
        c.matched_blocks = matched;
        c.load = Some(Load {
            waiting,
            ..Load::default()
        });
        c
    }

    fn ten_blocks() -> RequestFeatures {
        RequestFeatures {
            model: String::new(),
            prompt_blocks: 10,
            block_size_tokens: 16,
            prompt_tokens: 160,
            session_endpoint: None,
            slo_ttft: None,
            slo_tpot: None,
        }
    }

    fn gate(affinity_threshold: f64, max_waiting_requests: u64) -> [Filter; 1] {
        [Filter::PrefixCacheAffinity(AffinityGate {
            affinity_threshold,
            max_waiting_requests,
        })]
    }

    #[test]
    fn the_gate_closes_on_the_endpoints_holding_the_prompt() {
        let all = [
            holder("cold", 0, 0.0),
            holder("warm", 9, 2.0),
            holder("hot", 10, 1.0),
            holder("lukewarm", 5, 0.0),
        ];
        assert_eq!(kept(&gate(0.8, 8), &all, &ten_blocks()), ["warm", "hot"]);
    }

    #[test]
    fn the_gate_opens_when_no_endpoint_holds_enough_of_the_prompt() {
        let all = [holder("a", 7, 0.0), holder("b", 0, 3.0)];
        assert_eq!(kept(&gate(0.8, 8), &all, &ten_blocks()), ["a", "b"]);
        let short = RequestFeatures::default();
        assert_eq!(
            kept(&gate(0.8, 8), &all, &short),
            ["a", "b"],
            "a prompt shorter than a block matches nothing"
        );
    }

    #[test]
    fn the_threshold_is_inclusive() {
        let all = [holder("at", 8, 0.0), holder("below", 7, 0.0)];
        assert_eq!(kept(&gate(0.8, 8), &all, &ten_blocks()), ["at"]);
        assert_eq!(kept(&gate(0.7, 8), &all, &ten_blocks()), ["at", "below"]);
    }

    #[test]
    fn an_endpoint_at_the_waiting_limit_is_not_kept() {
        let all = [
            holder("busy-holder", 10, 8.0),
            holder("idle-holder", 9, 7.0),
            holder("cold", 0, 0.0),
        ];
        assert_eq!(kept(&gate(0.8, 8), &all, &ten_blocks()), ["idle-holder"]);
        // Every holder overloaded: the gate opens and load spreading decides.
        assert_eq!(
            kept(&gate(0.8, 7), &all, &ten_blocks()),
            ["busy-holder", "idle-holder", "cold"]
        );
    }

    #[test]
    fn the_gate_sees_only_what_the_role_filter_kept() {
        let mut prefiller = holder("prefiller", 10, 0.0);
        prefiller.role = Role::Prefill;
        let all = [prefiller, holder("d1", 0, 0.0), holder("d2", 0, 1.0)];
        let filters = [Filter::Role(RoleFilter::Decode), gate(0.8, 8)[0]];
        assert_eq!(kept(&filters, &all, &ten_blocks()), ["d1", "d2"]);
    }
}
