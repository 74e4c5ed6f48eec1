//! Endpoints (model-server pods) and the live set the EndpointPicker routes to.
//!
//! The set is swapped as a whole (`ArcSwap`) so a pick never waits for discovery,
//! and each endpoint's signals (scraped metrics, in-flight count) live beside it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use llmd_api::labels;

use llmd_api::engine_metrics::EngineMetrics;

use crate::predict::PodLatency;

/// The `llm-d.ai/role` of a model server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Prefill,
    Decode,
    /// `both` or `prefill-decode`: serves either step.
    Both,
    /// No role label: an aggregated server (decode-capable).
    Unlabeled,
}

impl Role {
    /// Parses a role label value; unknown values are refused so a typo is visible.
    pub fn from_label(value: &str) -> Option<Role> {
        match value {
            labels::ROLE_PREFILL => Some(Role::Prefill),
            labels::ROLE_DECODE => Some(Role::Decode),
            labels::ROLE_BOTH | labels::ROLE_PREFILL_DECODE => Some(Role::Both),
            "" => Some(Role::Unlabeled),
            _ => None,
        }
    }

    /// The decode-filter accepts decode, both and unlabeled servers.
    pub fn serves_decode(self) -> bool {
        !matches!(self, Role::Prefill)
    }

    /// The prefill-filter accepts prefill and both.
    pub fn serves_prefill(self) -> bool {
        matches!(self, Role::Prefill | Role::Both)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Prefill => labels::ROLE_PREFILL,
            Role::Decode => labels::ROLE_DECODE,
            Role::Both => labels::ROLE_BOTH,
            Role::Unlabeled => "none",
        }
    }
}

/// One model server: where to send requests and which step it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, the value of `x-gateway-destination-endpoint`.
    pub address: Arc<str>,
    pub role: Role,
    /// The pod's KV-compatibility value: a prefill endpoint is paired only with
    /// decode endpoints of the same value (`None` pairs with `None`).
    pub kv_compatibility: Option<Arc<str>>,
    /// Its serving port is the routing sidecar's: the P/D legs run there.
    pub sidecar: bool,
}

impl Endpoint {
    pub fn new(address: impl Into<Arc<str>>, role: Role) -> Self {
        Endpoint {
            address: address.into(),
            role,
            kv_compatibility: None,
            sidecar: false,
        }
    }

    pub fn with_kv_compatibility(mut self, value: impl Into<Arc<str>>) -> Self {
        self.kv_compatibility = Some(value.into());
        self
    }

    pub fn with_sidecar(mut self) -> Self {
        self.sidecar = true;
        self
    }
}

/// Scraped metrics with the time they were read.
#[derive(Clone, Debug)]
pub struct ScrapedMetrics {
    pub metrics: EngineMetrics,
    pub at: Instant,
    /// This EPP's in-flight count when the scrape was stored: requests sent since
    /// then are not in the scraped queue yet.
    pub in_flight_at_scrape: u64,
}

/// An endpoint with its live signals.
#[derive(Debug)]
pub struct EndpointState {
    pub endpoint: Endpoint,
    pub metrics: ArcSwapOption<ScrapedMetrics>,
    /// Model names from the endpoint's `/v1/models`, once read.
    pub models: ArcSwapOption<Vec<String>>,
    /// Requests this EPP sent and that have not finished yet.
    pub in_flight: AtomicU64,
    /// Its TTFT model and the work it is predicted from.
    latency: Mutex<PodLatency>,
}

impl EndpointState {
    /// Whether `model` may be sent here: it is listed in the endpoint's
    /// `/v1/models`, or the endpoint has not answered that yet (nothing to go on), or
    /// no model is named.
    pub fn may_serve(&self, model: &str) -> bool {
        model.is_empty()
            || self
                .models
                .load()
                .as_ref()
                .is_none_or(|models| models.iter().any(|m| m == model))
    }

    pub fn new(endpoint: Endpoint) -> Self {
        EndpointState {
            endpoint,
            metrics: ArcSwapOption::empty(),
            models: ArcSwapOption::empty(),
            in_flight: AtomicU64::new(0),
            latency: Mutex::new(PodLatency::default()),
        }
    }

    /// The endpoint's latency model (held for a few arithmetic steps at a time).
    pub fn latency(&self) -> MutexGuard<'_, PodLatency> {
        // A panic while holding it leaves plain numbers behind: still usable.
        self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts a request against an endpoint until dropped.
#[derive(Debug)]
pub struct InFlightGuard(Arc<EndpointState>);

impl InFlightGuard {
    pub fn new(state: Arc<EndpointState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(state)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

type EndpointMap = BTreeMap<Arc<str>, Arc<EndpointState>>;

/// The pool's current endpoints, keyed by address.
#[derive(Debug, Default)]
pub struct EndpointRegistry {
    endpoints: ArcSwap<EndpointMap>,
}

impl EndpointRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A consistent view of the pool for one pick.
    pub fn snapshot(&self) -> Arc<EndpointMap> {
        self.endpoints.load_full()
    }

    pub fn get(&self, address: &str) -> Option<Arc<EndpointState>> {
        self.endpoints.load().get(address).cloned()
    }

    /// Replaces the whole set, keeping the signals of endpoints that stay.
    pub fn replace_all(&self, endpoints: impl IntoIterator<Item = Endpoint>) {
        let current = self.endpoints.load_full();
        let next: EndpointMap = endpoints
            .into_iter()
            .map(|e| {
                let state = match current.get(&e.address) {
                    Some(s) if s.endpoint == e => s.clone(),
                    _ => Arc::new(EndpointState::new(e.clone())),
                };
                (e.address.clone(), state)
            })
            .collect();
        self.endpoints.store(Arc::new(next));
    }

    /// Whether `model` is served: some endpoint may take it (it lists it, or has
    /// not answered `/v1/models` yet), or the pool is empty (nothing to check
    /// against). The picker narrows to those same endpoints.
    pub fn serves_model(&self, model: &str) -> bool {
        let pool = self.endpoints.load();
        pool.is_empty() || pool.values().any(|s| s.may_serve(model))
    }

    pub fn len(&self) -> usize {
        self.endpoints.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_labels_follow_llm_d() {
        assert_eq!(Role::from_label("prefill"), Some(Role::Prefill));
        assert_eq!(Role::from_label("prefill-decode"), Some(Role::Both));
        assert_eq!(Role::from_label("both"), Some(Role::Both));
        assert_eq!(Role::from_label("bogus"), None);
        assert!(Role::Unlabeled.serves_decode());
        assert!(!Role::Unlabeled.serves_prefill());
        assert!(!Role::Prefill.serves_decode());
        assert!(Role::Both.serves_prefill() && Role::Both.serves_decode());
    }

    #[test]
    fn replace_all_keeps_state_of_unchanged_endpoints() {
        let reg = EndpointRegistry::new();
        reg.replace_all([Endpoint::new("a:1", Role::Decode)]);
        let a = reg.get("a:1").expect("a present");
        a.in_flight.store(7, Ordering::Relaxed);
        reg.replace_all([
            Endpoint::new("a:1", Role::Decode),
            Endpoint::new("b:1", Role::Prefill),
        ]);
        assert_eq!(
            reg.get("a:1").map(|s| s.in_flight.load(Ordering::Relaxed)),
            Some(7)
        );
        assert_eq!(reg.len(), 2);
        reg.replace_all([Endpoint::new("a:1", Role::Prefill)]);
        assert_eq!(
            reg.get("a:1").map(|s| s.in_flight.load(Ordering::Relaxed)),
            Some(0)
        );
        assert!(reg.get("b:1").is_none());
    }

    #[test]
    fn in_flight_guard_counts_until_dropped() {
        let s = Arc::new(EndpointState::new(Endpoint::new("a:1", Role::Decode)));
        let g = InFlightGuard::new(s.clone());
        assert_eq!(s.in_flight.load(Ordering::Relaxed), 1);
        drop(g);
        assert_eq!(s.in_flight.load(Ordering::Relaxed), 0);
    }
}
