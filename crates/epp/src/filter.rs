//! Role filters: which endpoints a scheduling profile may consider.

use llmd_api::endpoint_picker_config::plugin;

use crate::candidate::Candidate;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleFilter {
    /// decode, both, prefill-decode and unlabeled endpoints.
    Decode,
    /// prefill, both and prefill-decode endpoints.
    Prefill,
}

impl RoleFilter {
    pub fn from_plugin_type(t: &str) -> Option<RoleFilter> {
        match t {
            plugin::DECODE_FILTER => Some(RoleFilter::Decode),
            plugin::PREFILL_FILTER => Some(RoleFilter::Prefill),
            _ => None,
        }
    }

    pub fn accepts(self, c: &Candidate) -> bool {
        match self {
            RoleFilter::Decode => c.role.serves_decode(),
            RoleFilter::Prefill => c.role.serves_prefill(),
        }
    }
}

/// The candidates every filter accepts.
pub fn apply<'a>(filters: &[RoleFilter], candidates: &'a [Candidate]) -> Vec<&'a Candidate> {
    candidates
        .iter()
        .filter(|c| filters.iter().all(|f| f.accepts(c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Role;

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
