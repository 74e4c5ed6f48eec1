//! API types of llmd-operator: the `LLMDeployment` custom resource, its status and
//! conditions, the label and annotation keys every child carries, the llm-d
//! `EndpointPickerConfig` format and the Gateway API Inference Extension
//! `InferencePool`. This crate does no I/O so that the operator, the EndpointPicker
//! and the tests share one definition.

pub mod conditions;
pub mod content_hash;
pub mod endpoint_picker;
pub mod endpoint_picker_config;
pub mod engine_metrics;
pub mod engine_version;
pub mod images;
pub mod inference_pool;
pub mod labels;
pub mod leader_worker_set;
pub mod llm_deployment;
pub mod routing_sidecar;
pub mod status;

pub use llm_deployment::*;
pub use status::*;
