//! Default container images. The chart, the OLM bundle and the Dockerfiles use the
//! same names and tags.

/// The vLLM image a model server runs when `spec.engine.image` is not set.
pub const DEFAULT_ENGINE_IMAGE: &str = "vllm/vllm-openai:v0.33.0";

/// The EndpointPicker image when `spec.router.image` is not set.
pub const DEFAULT_EPP_IMAGE: &str = "ghcr.io/llmd-dev/llmd-epp:0.1.0";

/// The operator's own image.
pub const OPERATOR_IMAGE: &str = "ghcr.io/llmd-dev/llmd-operator:0.1.0";
