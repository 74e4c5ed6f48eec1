//! The request-routing path both front ends share: a parsed request is checked
//! against the pool's models and picked for; the decision is announced in the same
//! headers whichever front end carries it.

use llmd_api::endpoint_picker::header;

use crate::endpoint_picker::{EndpointPicker, PickRequest, Routing};
use crate::frontend::request::{ApiKind, InferenceRequest};

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

/// Picks endpoints for `request` (`None` when there is no body to route on, e.g. a
/// GET through the gateway), never `exclude`; with `explain`, the routing carries
/// the `x-llmd-explain` JSON.
pub fn pick(
    picker: &EndpointPicker,
    request: Option<&InferenceRequest>,
    session_token: Option<&str>,
    exclude: Option<&str>,
    explain: bool,
) -> Result<Routing, RouteError> {
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
        })
        .ok_or(RouteError::NoEndpoint)
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
