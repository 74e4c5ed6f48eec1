//! session-affinity-scorer: 1 for the endpoint named by the request's
//! `x-session-token`, 0 for the rest.

use crate::scheduling::candidate::{Candidate, RequestFeatures};

pub fn score(candidates: &[&Candidate], request: &RequestFeatures) -> Vec<f64> {
    candidates
        .iter()
        .map(|c| match &request.session_endpoint {
            Some(s) if **s == *c.address => 1.0,
            _ => 0.0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::endpoint::Role;

    #[test]
    fn only_the_session_endpoint_scores() {
        let a = Candidate::new("a:1", Role::Decode);
        let b = Candidate::new("b:1", Role::Decode);
        let req = RequestFeatures {
            session_endpoint: Some("b:1".into()),
            ..Default::default()
        };
        assert_eq!(score(&[&a, &b], &req), vec![0.0, 1.0]);
        assert_eq!(
            score(&[&a, &b], &RequestFeatures::default()),
            vec![0.0, 0.0]
        );
    }
}
