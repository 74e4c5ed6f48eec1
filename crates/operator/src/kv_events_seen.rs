//! Whether precise prefix routing has its input: on each EndpointPicker replica, the
//! model-server pods whose KV events arrive (`llmd_epp_endpoint_prefix_precise`, 1 for
//! a pod routed from its events, 0 for one the approximate index stands in for), read
//! with the EPP scrape and summed up in the `EndpointPickerReady` message. An engine
//! publishes only when its cache changes, so a pod that has served nothing yet is
//! counted as waiting, not as broken.

use std::collections::BTreeMap;

use llmd_tuner::histogram::parse_values;

use crate::context::Context;
use crate::epp_scrape::{self, Scrape};
use crate::error::Result;

/// The EPP's per-pod gauge: 1 while the pod is routed from its own KV events.
pub const PREFIX_PRECISE: &str = "llmd_epp_endpoint_prefix_precise";

/// What one replica sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Pods whose events flow.
    pub flowing: usize,
    /// Pods the replica follows.
    pub pods: usize,
}

/// Every replica's view, or why it could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvEventsSeen {
    Read(BTreeMap<String, Seen>),
    Unreadable(String),
}

impl Seen {
    /// Counts the per-pod gauge in one `/metrics` page.
    pub fn parse(page: &str) -> Seen {
        let values = parse_values(page, PREFIX_PRECISE);
        Seen {
            flowing: values.iter().filter(|v| **v >= 1.0).count(),
            pods: values.len(),
        }
    }
}

impl KvEventsSeen {
    pub fn from_pages(pages: &BTreeMap<String, String>) -> KvEventsSeen {
        KvEventsSeen::Read(
            pages
                .iter()
                .map(|(pod, page)| (pod.clone(), Seen::parse(page)))
                .collect(),
        )
    }

    /// Every replica follows pods and hears every one of them.
    pub fn complete(&self) -> bool {
        match self {
            KvEventsSeen::Read(replicas) => {
                !replicas.is_empty() && replicas.values().all(|s| s.pods > 0 && s.flowing == s.pods)
            }
            KvEventsSeen::Unreadable(_) => false,
        }
    }

    /// One sentence for the EndpointPickerReady message.
    pub fn message(&self) -> String {
        let replicas = match self {
            KvEventsSeen::Unreadable(why) => {
                return format!("precise prefix routing: KV events not known ({why})");
            }
            KvEventsSeen::Read(replicas) => replicas,
        };
        let Some(worst) = replicas
            .iter()
            .min_by_key(|(_, s)| (s.flowing, std::cmp::Reverse(s.pods)))
        else {
            return "precise prefix routing: no EndpointPicker replica to ask".to_string();
        };
        let (name, seen) = worst;
        let all_alike = replicas.values().all(|s| s == seen);
        let waiting = if seen.flowing < seen.pods {
            " (a pod publishes once it serves; until then its prefix matches are approximate)"
        } else {
            ""
        };
        if all_alike {
            format!(
                "precise prefix routing: KV events flowing from {} of {} model-server pods \
                 on every EndpointPicker replica{waiting}",
                seen.flowing, seen.pods
            )
        } else {
            format!(
                "precise prefix routing: KV events flowing from as few as {} of {} \
                 model-server pods (replica {name}){waiting}",
                seen.flowing, seen.pods
            )
        }
    }
}

/// Reads every Ready replica of deployment `name`.
pub async fn read(ctx: &Context, namespace: &str, name: &str) -> Result<KvEventsSeen> {
    Ok(match epp_scrape::scrape(ctx, namespace, name).await? {
        Scrape::Complete(pages) => KvEventsSeen::from_pages(&pages),
        Scrape::Partial(why) => KvEventsSeen::Unreadable(why),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(values: &[u8]) -> String {
        let mut text = String::from("# TYPE llmd_epp_endpoint_prefix_precise gauge\n");
        for (i, v) in values.iter().enumerate() {
            text.push_str(&format!(
                "llmd_epp_endpoint_prefix_precise{{endpoint=\"10.0.0.{i}:8000\"}} {v}\n"
            ));
        }
        text.push_str("llmd_epp_config_info{hash=\"abc\"} 1\n");
        text
    }

    fn seen(replicas: &[(&str, &[u8])]) -> KvEventsSeen {
        let pages = replicas
            .iter()
            .map(|(name, values)| (name.to_string(), page(values)))
            .collect();
        KvEventsSeen::from_pages(&pages)
    }

    #[test]
    fn a_page_counts_pods_routed_from_their_events() {
        assert_eq!(
            Seen::parse(&page(&[1, 0, 1, 1])),
            Seen {
                flowing: 3,
                pods: 4
            }
        );
        assert_eq!(
            Seen::parse("garbage\n{}"),
            Seen {
                flowing: 0,
                pods: 0
            }
        );
    }

    #[test]
    fn every_replica_hearing_every_pod_is_complete_and_says_so() {
        let s = seen(&[("llama-epp-a", &[1, 1]), ("llama-epp-b", &[1, 1])]);
        assert!(s.complete());
        assert_eq!(
            s.message(),
            "precise prefix routing: KV events flowing from 2 of 2 model-server pods \
             on every EndpointPicker replica"
        );
    }

    #[test]
    fn the_replica_hearing_least_is_named() {
        let s = seen(&[("llama-epp-a", &[1, 1, 1]), ("llama-epp-b", &[1, 0, 0])]);
        assert!(!s.complete());
        assert_eq!(
            s.message(),
            "precise prefix routing: KV events flowing from as few as 1 of 3 \
             model-server pods (replica llama-epp-b) (a pod publishes once it serves; \
             until then its prefix matches are approximate)"
        );
    }

    #[test]
    fn no_pods_followed_or_no_answer_is_not_complete() {
        assert!(!seen(&[("llama-epp-a", &[])]).complete());
        let s = KvEventsSeen::Unreadable("EndpointPicker x did not answer on /metrics".into());
        assert!(!s.complete());
        assert_eq!(
            s.message(),
            "precise prefix routing: KV events not known \
             (EndpointPicker x did not answer on /metrics)"
        );
    }
}
