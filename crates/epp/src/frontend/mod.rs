//! The front ends: Envoy's ext-proc gRPC service and the OpenAI-compatible HTTP
//! proxy. Both parse a request and route it through [`route::pick`].

pub mod admission;
pub mod ext_proc;
pub mod latency;
pub mod proxy;
pub mod request;
pub mod route;
pub mod slo;
