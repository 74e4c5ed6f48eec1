//! The P/D two-step (llm-d's routing-sidecar semantics), one implementation for the
//! EndpointPicker's own proxy and the decode-side sidecar: the prefill leg computes
//! the prompt's KV cache on a prefill pod and returns `kv_transfer_params`, the
//! decode leg carries them so the decode engine pulls that cache instead of
//! recomputing it; both legs carry one fresh request id.
//!
//! - `body`: the two legs' bodies;
//! - `headers`: what passes on to engines, and the legs' request id;
//! - `legs`: sending a leg, its timing and failure causes;
//! - `relay`: the decode answer back to the client, buffered or streamed;
//! - `metrics`: the families both processes export.

pub mod body;
pub mod headers;
pub mod legs;
pub mod metrics;
pub mod relay;

pub use legs::{Cause, Leg, LegTimer, Legs, SendError};
pub use metrics::PdMetrics;
pub use relay::{RelayWatch, relay};
