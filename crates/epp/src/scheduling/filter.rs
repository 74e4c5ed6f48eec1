//! Role filters: which endpoints a scheduling profile may consider.

use llmd_api::endpoint_picker_config::RoleFilter;

use crate::scheduling::candidate::Candidate;

/// Does `filter` let `candidate` through?
pub fn accepts(filter: RoleFilter, candidate: &Candidate) -> bool {
    match filter {
        RoleFilter::Decode => candidate.role.serves_decode(),
        RoleFilter::Prefill => candidate.role.serves_prefill(),
    }
}

/// The candidates every filter accepts.
pub fn apply<'a>(filters: &[RoleFilter], candidates: &'a [Candidate]) -> Vec<&'a Candidate> {
    candidates
        .iter()
        .filter(|c| filters.iter().all(|f| accepts(*f, c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::endpoint::Role;

    #[test]
    fn role_filters_follow_llm_d() {
        let all = [
            Candidate::new("p", Role::Prefill),
            Candidate::new("d", Role::Decode),
            Candidate::new("b", Role::Both),
            Candidate::new("u", Role::Unlabeled),
        ];
        let names =
            |v: Vec<&Candidate>| v.iter().map(|c| c.address.to_string()).collect::<Vec<_>>();
        assert_eq!(names(apply(&[RoleFilter::Decode], &all)), ["d", "b", "u"]);
        assert_eq!(names(apply(&[RoleFilter::Prefill], &all)), ["p", "b"]);
        assert_eq!(names(apply(&[], &all)).len(), 4);
    }
}
