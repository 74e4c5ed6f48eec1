//! The decode-side routing sidecar (`llmd-sidecar`), compatible with llm-d's
//! (`pkg/sidecar/proxy`): it owns the decode pod's serving port with the engine
//! behind it. A completion that names a prefiller in `x-prefiller-host-port` (the
//! EndpointPicker's answer to a Gateway) runs the P/D two-step of [`crate::pd`]:
//! the prefill leg on that prefiller, if the allowlist admits it, then the decode
//! leg on the local engine. Everything else passes through to the engine.
//!
//! - `cli`: its flags; `allowlist`: which prefillers it may call;
//! - `passthrough`: requests forwarded unchanged; `serve`: the process.

pub mod allowlist;
pub mod cli;
mod passthrough;
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use llmd_api::endpoint_picker::header;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use uuid::Uuid;

use crate::frontend::proxy::read_body;
use crate::frontend::request::{ApiKind, InferenceRequest};
use crate::openai_error::ProxyError;
use crate::pd::{self, Cause, Leg, LegTimer, Legs, PdMetrics, RelayWatch};
use allowlist::Allowlist;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `disaggregated` (prefill leg, then decode leg), `passthrough` or `refused`.
    pub route: &'static str,
    pub code: String,
}

/// The sidecar's metrics, `llmd_sidecar_*`.
pub struct SidecarMetrics {
    registry: Registry,
    pub pd: PdMetrics,
    pub requests: Family<RequestLabels, Counter>,
}

impl Default for SidecarMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("llmd_sidecar");
        let pd = PdMetrics::default();
        pd.register(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route (disaggregated, passthrough, refused) and status code",
            requests.clone(),
        );
        SidecarMetrics {
            registry,
            pd,
            requests,
        }
    }
}

impl SidecarMetrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// One serving port's state (one per data-parallel rank).
pub struct SidecarState {
    pub legs: Legs,
    /// The local engine this port fronts, `127.0.0.1:<port>`.
    pub engine: String,
    pub allowlist: Arc<Allowlist>,
    pub max_body_bytes: usize,
    pub metrics: Arc<SidecarMetrics>,
}

pub fn router(state: Arc<SidecarState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/health", get(health))
        .fallback(passthrough::any)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// 200 once the sidecar can judge prefillers (its allowlist listed the pool once),
/// 503 before; the engine's own health is its container's probe.
async fn health(State(s): State<Arc<SidecarState>>) -> Response {
    if s.allowlist.is_synced() {
        StatusCode::OK.into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "prefill pods not listed yet",
        )
            .into_response()
    }
}

async fn completions(
    State(s): State<Arc<SidecarState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(s, ApiKind::Completions, headers, body).await
}

async fn chat_completions(
    State(s): State<Arc<SidecarState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(s, ApiKind::ChatCompletions, headers, body).await
}

async fn handle(s: Arc<SidecarState>, kind: ApiKind, headers: HeaderMap, body: Body) -> Response {
    let (route, response) = match headers.get(header::PREFILLER) {
        None => (
            "passthrough",
            passthrough::completion(&s, kind, &headers, body).await,
        ),
        Some(value) => match disaggregate(&s, kind, &headers, value, body).await {
            Ok(r) => ("disaggregated", r),
            Err(e) => {
                tracing::info!(status = e.status.as_u16(), reason = %e.message, "request refused");
                ("refused", e.into_response())
            }
        },
    };
    s.metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            code: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

/// The prefiller a request names, if the allowlist admits it.
fn prefiller(s: &SidecarState, value: &HeaderValue) -> Result<SocketAddr, ProxyError> {
    let text = value.to_str().unwrap_or("");
    let address = allowlist::parse_prefiller(text).map_err(|e| {
        ProxyError::new(
            StatusCode::BAD_REQUEST,
            "invalid_prefiller",
            format!("{}: {e}", header::PREFILLER),
        )
    })?;
    if !s.allowlist.allows(address) {
        s.metrics
            .pd
            .failed(Leg::Prefill, Cause::PrefillerNotAllowed);
        return Err(ProxyError::new(
            StatusCode::FORBIDDEN,
            "prefiller_not_allowed",
            format!(
                "{}: {address} is not a Ready prefill pod of this pool; not contacted",
                header::PREFILLER
            ),
        ));
    }
    Ok(address)
}

/// Times the decode leg until the answer's first byte.
struct DecodeWatch(LegTimer);

impl RelayWatch for DecodeWatch {
    fn chunk(&mut self) {
        self.0.first_byte();
    }
    fn end(self) {}
}

async fn disaggregate(
    s: &SidecarState,
    kind: ApiKind,
    headers: &HeaderMap,
    prefiller_header: &HeaderValue,
    body: Body,
) -> Result<Response, ProxyError> {
    let prefiller = prefiller(s, prefiller_header)?;
    let bytes = read_body(body, s.max_body_bytes).await?;
    let req = InferenceRequest::parse(kind, &bytes)
        .map_err(|e| ProxyError::bad_request(e.to_string()))?;
    let request_id = Uuid::new_v4().to_string();
    let passed = pd::headers::pd_leg_headers(&pd::headers::passed_headers(headers), &request_id);
    // The client's own kv_transfer_params never reach an engine: the prefill body
    // sets its own, the decode body carries the prefiller's.
    let params = s
        .legs
        .prefill(&prefiller.to_string(), kind, &req.body, &passed)
        .await?;
    let (upstream, timer) = s
        .legs
        .decode(&s.engine, kind, &req.body, params, &passed)
        .await?;
    let mut response = pd::relay(upstream, req.stream, DecodeWatch(timer)).await?;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(header::PD_REQUEST_ID, v);
    }
    Ok(response)
}
