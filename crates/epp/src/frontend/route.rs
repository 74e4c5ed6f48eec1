//! The request-routing path both front ends share: a parsed request is checked
//! against the pool's models and picked for; the decision is announced in the same
//! headers whichever front end carries it.

use llmd_api::endpoint_picker::header;

use crate::endpoint_picker::{EndpointPicker, PickRequest, Routing};
use crate::frontend::request::{ApiKind, InferenceRequest};
use crate::frontend::slo::{self, Objectives};
use crate::telemetry::HeaderLabels;

/// Why a request cannot be routed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    BadRequest(String),
    #[error("model {0:?} is not served by this pool")]
    ModelNotServed(String),
    #[error("no healthy model server can serve this request")]
    NoEndpoint,
}

impl RouteError {
    /// The HTTP status a client gets.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::BadRequest(_) => 400,
            RouteError::ModelNotServed(_) => 404,
            RouteError::NoEndpoint => 503,
        }
    }

    /// The OpenAI error `type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            RouteError::BadRequest(_) => "invalid_request_error",
            RouteError::ModelNotServed(_) => "model_not_found",
            RouteError::NoEndpoint => "no_endpoint",
        }
    }
}

/// Parses a request body of `kind`.
pub fn parse(kind: ApiKind, body: &[u8]) -> Result<InferenceRequest, RouteError> {
    InferenceRequest::parse(kind, body).map_err(|e| RouteError::BadRequest(e.to_string()))
}

/// What a pick needs besides the parsed request: its headers' asks, and the token
/// ids an engine gave its prompt ([`EndpointPicker::engine_tokens`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct PickOptions<'a> {
    pub session_token: Option<&'a str>,
    pub explain: bool,
    pub slo: Objectives,
    pub tokens: Option<&'a [u32]>,
}

/// Picks endpoints for `request` (`None` when there is no body to route on, e.g. a
/// GET through the gateway), never `exclude`; with `explain`, the routing carries
/// the `x-llmd-explain` JSON.
pub fn pick(
    picker: &EndpointPicker,
    request: Option<&InferenceRequest>,
    exclude: Option<&str>,
    options: PickOptions<'_>,
) -> Result<Routing, RouteError> {
    let PickOptions {
        session_token,
        explain,
        slo,
        tokens,
    } = options;
    let (model, prompt) = request.map_or(("", ""), |r| (r.model.as_str(), r.prompt.as_str()));
    if !model.is_empty() && !picker.registry.serves_model(model) {
        return Err(RouteError::ModelNotServed(model.to_string()));
    }
    picker
        .pick(PickRequest {
            model,
            prompt,
            session_token,
            exclude,
            explain,
            slo,
            tokens,
        })
        .ok_or(RouteError::NoEndpoint)
}

/// The objectives a request's headers carry, else the config's defaults; unusable
/// values are counted and ignored.
pub fn objectives<'a>(
    picker: &EndpointPicker,
    get: impl Fn(&str) -> Option<&'a str>,
) -> Objectives {
    let (objectives, invalid) = slo::from_headers(get);
    let objectives = objectives.or(picker.config().default_slo);
    for name in invalid {
        tracing::debug!(
            header = name,
            "ignoring an objective that is not a number of ms"
        );
        picker
            .telemetry
            .slo_headers_invalid
            .get_or_create(&HeaderLabels { header: name })
            .inc();
    }
    objectives
}

/// Response headers about latency: the TTFT predicted for the request when it
/// carried an objective or asked for an explanation, the time per output token when
/// it carried that objective, and the objectives no endpoint was predicted to meet.
pub fn latency_headers(
    routing: &Routing,
    objectives: &Objectives,
    explain: bool,
) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    let predicted = routing.ticket.as_ref().map(|t| t.prediction.ttft);
    if let (true, Some(p)) = (objectives.any() || explain, predicted) {
        headers.push((header::PREDICTED_TTFT_MS, milliseconds(p)));
    }
    if let (Some(_), Some(itl)) = (objectives.tpot, routing.decision.decode.predicted_itl) {
        headers.push((header::PREDICTED_TPOT_MS, milliseconds(itl)));
    }
    if !routing.slo_misses.is_empty() {
        headers.push((header::SLO_PREDICTED_MISS, routing.slo_misses.join(",")));
    }
    headers
}

/// Seconds as milliseconds with one decimal.
pub fn milliseconds(seconds: f64) -> String {
    format!("{:.1}", seconds * 1000.0)
}

/// The headers that name the chosen endpoints: the destination, and the prefiller of
/// a disaggregated request.
pub fn endpoint_headers<'a>(
    decode: &'a str,
    prefill: Option<&'a str>,
) -> Vec<(&'static str, &'a str)> {
    let mut headers = vec![(header::DESTINATION, decode)];
    if let Some(p) = prefill {
        headers.push((header::PREFILLER, p));
    }
    headers
}
