//! Predicted latency: a TTFT model per endpoint, learned online from the first
//! tokens this EPP sees, that the latency-scorer and the explanation read.
//!
//! - `regression`: the decayed, prior-pulled, outlier-clipped least squares;
//! - `itl`: the inter-token latency model, from the decode pressure at dispatch;
//! - `pod`: one endpoint's pending work, slots and decode time around it;
//! - `fleet`: the same regression over every endpoint's observations, the prior
//!   each endpoint's own model starts from and is pulled towards;
//! - `ticket`: one routed request's place in its endpoint's model, from dispatch to
//!   its last byte.

pub mod fleet;
pub mod itl;
pub mod pod;
pub mod regression;
pub mod ticket;

pub use fleet::FleetModel;
pub use pod::{PodLatency, Prediction};
pub use regression::Coefficients;
pub use ticket::Ticket;
