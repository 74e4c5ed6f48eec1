//! The configurations a tuner run is compared with: fixed weightings, each the
//! config llmd-epp reads, rendered by `llmd-api` as the operator renders it.

use llmd_api::endpoint_picker_config::EndpointPickerConfig;
use llmd_api::{RouterSpec, ScorerWeights};

use super::workload::Fleet;

/// One configuration of a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Config {
    /// The tuner, starting from the default weights.
    Tuned,
    /// Fixed weights for the whole run.
    Fixed {
        label: &'static str,
        weights: ScorerWeights,
    },
    /// llm-d's newer default: a prefix-affinity gate, then load spreading.
    AffinityGate,
    /// A tuned run's weights, set at the same moments with no tuner watching: what
    /// the path the tuner took is worth without its feedback. Each change is (seconds
    /// from the start, the weights from then on).
    Replay {
        label: String,
        path: Vec<(f64, ScorerWeights)>,
    },
}

impl Config {
    pub fn label(&self) -> String {
        match self {
            Config::Tuned => "tuned".into(),
            Config::Fixed { label, .. } => format!("fixed:{label}"),
            Config::AffinityGate => "fixed:affinity-gate".into(),
            Config::Replay { label, .. } => format!("replay:{label}"),
        }
    }

    /// The config file the run starts with.
    pub fn initial(&self, fleet: &Fleet) -> String {
        match self {
            Config::Tuned | Config::Replay { .. } => render(fleet, &ScorerWeights::default()),
            Config::Fixed { weights, .. } => render(fleet, weights),
            Config::AffinityGate => {
                EndpointPickerConfig::affinity_gate(&router(fleet), false).to_yaml()
            }
        }
    }
}

/// The tuned run and the fixed weightings it must beat.
pub fn all() -> Vec<Config> {
    vec![
        Config::Tuned,
        Config::Fixed {
            label: "3/2/2",
            weights: ScorerWeights::of(3.0, 2.0, 2.0),
        },
        Config::Fixed {
            label: "prefix-only",
            weights: ScorerWeights::of(1.0, 0.0, 0.0),
        },
        Config::Fixed {
            label: "queue-only",
            weights: ScorerWeights::of(0.0, 1.0, 0.0),
        },
        Config::Fixed {
            label: "1/1/1",
            weights: ScorerWeights::of(1.0, 1.0, 1.0),
        },
        Config::AffinityGate,
    ]
}

/// The router section matching the fleet (the prefix index's block size is the
/// engines').
pub fn router(fleet: &Fleet) -> RouterSpec {
    let mut router = RouterSpec::default();
    router.prefix_cache.block_size_tokens = i32::try_from(fleet.block_size).unwrap_or(16);
    router
}

/// The EndpointPickerConfig for `weights`, aggregated serving.
pub fn render(fleet: &Fleet, weights: &ScorerWeights) -> String {
    EndpointPickerConfig::for_router(&router(fleet), weights, false).to_yaml()
}
