//! The tuner: it retunes an EndpointPicker's scorer weights while the deployment
//! runs, for a latency objective users feel (mean or P90 time to first token, as the
//! EndpointPicker measures it), by experiment: a candidate weighting is run against
//! the incumbent and kept only when it measurably wins. No I/O: the operator feeds it
//! the EndpointPicker's metrics every `autoTune.interval`, and the `bench-tuner`
//! benchmark feeds it the same way on a compressed clock, so both run this code.
//! [`autoscale`] holds the autoscaler's decision, fed the same way.

pub mod autoscale;
pub mod candidates;
pub mod epp_metrics;
pub mod experiment;
pub mod histogram;
pub mod objective;
pub mod settings;
pub mod verdict;

pub use candidates::Signals;
pub use experiment::Tuner;
pub use histogram::Histogram;
pub use objective::{Metric, Objective};
pub use settings::Settings;
pub use verdict::{Outcome, Slice, Step, Verdict};
