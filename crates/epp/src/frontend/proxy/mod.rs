//! The OpenAI-compatible HTTP proxy: picks with the same scheduler as ext-proc,
//! performs the P/D two-step itself and streams responses through as they arrive.

mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use crate::openai_error::ProxyError;

use llmd_api::endpoint_picker::header;
use uuid::Uuid;

use crate::endpoint_picker::{EndpointPicker, Routing, session_token_for};
use crate::frontend::admission::{self, Admission, Admitted};
use crate::frontend::latency::{Frontend, LatencyClock};
use crate::frontend::request::{ApiKind, InferenceRequest};
use crate::frontend::route;
use crate::pd::{self, Legs};
use crate::pool::endpoint::{EndpointState, InFlightGuard};
use crate::scheduling::explain;
use crate::telemetry::ProxyLabels;

/// Shared state of the proxy.
pub struct ProxyState {
    pub picker: Arc<EndpointPicker>,
    /// The model-server client, shared with the decode-side sidecar's code.
    pub legs: Legs,
    pub max_body_bytes: usize,
    /// The EPP's one admission limit (shared with ext-proc).
    pub admission: Arc<Admission>,
    /// Set once the process drains: `/health` answers 503.
    pub draining: Arc<AtomicBool>,
}

pub fn router(state: Arc<ProxyState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        // The limit is enforced while reading, with an OpenAI-style 413.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn completions(State(s): State<Arc<ProxyState>>, headers: HeaderMap, body: Body) -> Response {
    handle(s, ApiKind::Completions, headers, body).await
}

async fn chat_completions(
    State(s): State<Arc<ProxyState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(s, ApiKind::ChatCompletions, headers, body).await
}

/// 200 while serving, 503 once draining.
async fn health(State(s): State<Arc<ProxyState>>) -> Response {
    if s.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else {
        "ok".into_response()
    }
}

async fn handle(s: Arc<ProxyState>, kind: ApiKind, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let Some(admitted) = s.admission.try_admit() else {
        s.picker.telemetry.shed.inc();
        let mut refused = ProxyError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            s.admission.refusal(),
        )
        .into_response();
        refused.headers_mut().insert(
            "retry-after",
            HeaderValue::from(admission::RETRY_AFTER_SECONDS),
        );
        return refused;
    };
    let response = match route(&s, kind, &headers, body, admitted, started).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(status = e.status.as_u16(), reason = %e.message, "request refused");
            e.into_response()
        }
    };
    s.picker
        .telemetry
        .proxy_requests
        .get_or_create(&ProxyLabels {
            path: kind.path().into(),
            code: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

/// The request body, at most `limit` bytes (an OpenAI-style 413 beyond).
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ProxyError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("request body exceeds {limit} bytes or could not be read"),
        )
    })
}

fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn route(
    s: &ProxyState,
    kind: ApiKind,
    headers: &HeaderMap,
    body: Body,
    admitted: Admitted,
    started: Instant,
) -> Result<Response, ProxyError> {
    let bytes = read_body(body, s.max_body_bytes).await?;
    let req = route::parse(kind, &bytes)?;
    // Clients never steer the KV fabric: a prefiller they name is ignored (the EPP
    // picks one), and their kv_transfer_params are dropped.
    if let Some(addr) = header_value(headers, header::PREFILLER) {
        tracing::debug!(
            prefiller = addr,
            "ignoring the client's {}",
            header::PREFILLER
        );
    }
    let session = header_value(headers, header::SESSION);
    let explain = explain::asked(header_value(headers, header::EXPLAIN));
    let slo = route::objectives(&s.picker, |n| header_value(headers, n));
    let tokens = s.picker.engine_tokens(&req).await;
    let options = route::PickOptions {
        session_token: session,
        explain,
        slo,
        tokens: tokens.as_deref(),
    };
    let pick = |exclude: Option<&str>| route::pick(&s.picker, Some(&req), exclude, options);
    let mut routing = pick(None)?;
    let mut latency = route::latency_headers(&routing, &slo, explain);
    let clock = LatencyClock::start(s.picker.telemetry.clone(), Frontend::Proxy, started);
    let sent = match send_routed(s, &req, &bytes, headers, &mut routing).await {
        Ok(sent) => sent,
        // The decode endpoint took nothing on: one other may safely be tried.
        Err(Unsent::Refused(e)) => {
            let failed = routing.decode.endpoint.address.clone();
            tracing::warn!(endpoint = %failed, reason = %e.message, "endpoint refused; re-picking");
            routing = pick(Some(&failed))?;
            latency = route::latency_headers(&routing, &slo, explain);
            send_routed(s, &req, &bytes, headers, &mut routing)
                .await
                .map_err(Unsent::into_error)?
        }
        Err(Unsent::Failed(e)) => return Err(e),
    };
    let watch = watch::Watch {
        clock,
        ticket: routing.ticket.take(),
        decode_leg: sent.decode_leg,
        prefill_guard: sent.prefill_guard,
        _guard: sent.decode_guard,
        _admitted: admitted,
    };
    let mut response = pd::relay(sent.upstream, req.stream, watch).await?;
    if slo.any() && !req.stream {
        // A buffered answer's first byte reached the client with its last.
        if let Ok(v) = HeaderValue::from_str(&route::milliseconds(started.elapsed().as_secs_f64()))
        {
            response.headers_mut().insert(header::OBSERVED_TTFT_MS, v);
        }
    }
    let decode = &routing.decode.endpoint.address;
    let session_token = session_token_for(decode);
    let mut announced = route::endpoint_headers(
        decode,
        routing.prefill.as_ref().map(|p| &*p.endpoint.address),
    );
    announced.push((header::SESSION, &session_token));
    if let Some(id) = &sent.pd_request_id {
        announced.push((header::PD_REQUEST_ID, id));
    }
    if let Some(json) = &routing.explanation {
        announced.push((header::EXPLAIN, json));
    }
    announced.extend(latency.iter().map(|(name, value)| (*name, value.as_str())));
    let h = response.headers_mut();
    for (name, value) in announced {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    Ok(response)
}

/// A routed request on its way: the decode endpoint's answer (its headers; the
/// body follows) and what is held until it ends.
struct Sent {
    upstream: reqwest::Response,
    decode_guard: InFlightGuard,
    decode_leg: Option<pd::LegTimer>,
    prefill_guard: Option<InFlightGuard>,
    /// The id the P/D legs carried, when this proxy ran them.
    pd_request_id: Option<String>,
}

/// Why a routed request got no answer.
enum Unsent {
    /// The decode endpoint took nothing on: it refused the connection, or answered
    /// 503 (an engine draining on shutdown refuses new requests so).
    Refused(ProxyError),
    Failed(ProxyError),
}

impl Unsent {
    fn into_error(self) -> ProxyError {
        match self {
            Unsent::Refused(e) | Unsent::Failed(e) => e,
        }
    }
}

/// Sends the request to `decode` as the client sent it (without a client's
/// kv_transfer_params).
async fn send_as_sent(
    s: &ProxyState,
    decode: &Arc<EndpointState>,
    req: &InferenceRequest,
    bytes: &Bytes,
    headers: HeaderMap,
) -> Result<(reqwest::Response, InFlightGuard), Unsent> {
    let address = &decode.endpoint.address;
    let body = req
        .without_client_kv_params()
        .map_or_else(|| bytes.clone(), Bytes::from);
    let guard = InFlightGuard::new(decode.clone());
    let upstream = s
        .legs
        .send(address, req.kind.path(), body, &headers)
        .await
        .map_err(|e| unsent(e.into_proxy_error(address)))?;
    Ok((taken_on(address, upstream).await?, guard))
}

/// A request a model server did not answer: refused, or gone before answering
/// (503), another pod may take it; any other error is the client's answer.
fn unsent(e: ProxyError) -> Unsent {
    if e.status == StatusCode::SERVICE_UNAVAILABLE {
        Unsent::Refused(e)
    } else {
        Unsent::Failed(e)
    }
}

/// The model server's answer, unless it was a 503: an engine draining on
/// shutdown refuses new requests so, and another pod may take it.
async fn taken_on(address: &str, upstream: reqwest::Response) -> Result<reqwest::Response, Unsent> {
    if upstream.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE {
        return Ok(upstream);
    }
    let text = upstream.text().await.unwrap_or_default();
    Err(Unsent::Refused(ProxyError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream_unavailable",
        format!(
            "model server {address} is not taking requests: {}",
            text.chars().take(512).collect::<String>()
        ),
    )))
}

/// Sends a routed request: aggregated, forwarded as the client sent it; split, to
/// a decode pod's routing sidecar with the prefiller named (the sidecar runs the
/// legs, as behind a Gateway), else through both legs from here.
async fn send_routed(
    s: &ProxyState,
    req: &InferenceRequest,
    bytes: &Bytes,
    client_headers: &HeaderMap,
    routing: &mut Routing,
) -> Result<Sent, Unsent> {
    let kind = req.kind;
    let decode = routing.decode.clone();
    let address = &decode.endpoint.address;
    let passed = pd::headers::passed_headers(client_headers);
    match routing.prefill.clone() {
        None => {
            let (upstream, decode_guard) = send_as_sent(s, &decode, req, bytes, passed).await?;
            Ok(Sent {
                upstream,
                decode_guard,
                decode_leg: None,
                prefill_guard: None,
                pd_request_id: None,
            })
        }
        Some(p) if decode.endpoint.sidecar => {
            let prefill_guard = Some(InFlightGuard::new(p.clone()));
            let mut headers = passed;
            if let Ok(v) = HeaderValue::from_str(&p.endpoint.address) {
                headers.insert(header::PREFILLER, v);
            }
            let (upstream, decode_guard) = send_as_sent(s, &decode, req, bytes, headers).await?;
            Ok(Sent {
                upstream,
                decode_guard,
                decode_leg: None,
                prefill_guard,
                pd_request_id: None,
            })
        }
        Some(p) => {
            let id = Uuid::new_v4().to_string();
            let legs = pd::headers::pd_leg_headers(&passed, &id);
            let params = {
                let _prefilling = InFlightGuard::new(p.clone());
                s.legs
                    .prefill(&p.endpoint.address, kind, &req.body, &legs)
                    .await
                    .map_err(Unsent::Failed)?
            };
            // The prefill leg's answer is the prefiller's first token.
            if let Some(t) = routing.ticket.take() {
                t.first_token();
            }
            let decode_guard = InFlightGuard::new(decode.clone());
            let (upstream, timer) = s
                .legs
                .decode(address, kind, &req.body, params, &legs)
                .await
                .map_err(unsent)?;
            let upstream = taken_on(address, upstream).await?;
            Ok(Sent {
                upstream,
                decode_guard,
                decode_leg: Some(timer),
                prefill_guard: None,
                pd_request_id: Some(id),
            })
        }
    }
}

/// `/v1/models` from any endpoint of the pool.
async fn models(State(s): State<Arc<ProxyState>>) -> Response {
    let pool = s.picker.registry.snapshot();
    let Some(state) = pool
        .values()
        .find(|s| s.endpoint.role.serves_decode())
        .or(pool.values().next())
    else {
        return ProxyError::no_endpoint().into_response();
    };
    let url = format!("http://{}/v1/models", state.endpoint.address);
    match s.legs.client.get(url).send().await {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match r.bytes().await {
                Ok(b) => (status, [("content-type", "application/json")], b).into_response(),
                Err(e) => ProxyError::upstream(format!("reading /v1/models: {e}")).into_response(),
            }
        }
        Err(e) => ProxyError::upstream(format!("{}: {e}", state.endpoint.address)).into_response(),
    }
}

/// Unknown paths get a JSON 404 rather than an empty body.
pub async fn not_found(uri: Uri) -> impl IntoResponse {
    ProxyError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
}
