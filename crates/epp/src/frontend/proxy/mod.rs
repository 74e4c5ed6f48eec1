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

use crate::endpoint_picker::{EndpointPicker, session_token_for};
use crate::frontend::admission::{self, Admission, Admitted};
use crate::frontend::latency::{Frontend, LatencyClock};
use crate::frontend::request::ApiKind;
use crate::frontend::route;
use crate::pd::{self, Legs};
use crate::pool::endpoint::InFlightGuard;
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

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ProxyError> {
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
    // picks one), and their kv_transfer_params are dropped below.
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
    let pick =
        |exclude: Option<&str>| route::pick(&s.picker, Some(&req), session, exclude, explain, slo);
    let routing = pick(None)?;
    let mut latency = route::latency_headers(&routing, &slo, explain);
    let mut ticket = routing.ticket;
    let prefill = routing.prefill;
    let mut decode = routing.decode;
    let mut explanation = routing.explanation;

    // A decode pod with the routing sidecar runs the legs itself, as behind a
    // Gateway: it gets the request with the prefiller named.
    let delegated = prefill.is_some() && decode.endpoint.sidecar;
    let pd_request_id = prefill
        .as_ref()
        .filter(|_| !delegated)
        .map(|_| Uuid::new_v4().to_string());
    let passed = match &pd_request_id {
        Some(id) => pd::headers::pd_leg_headers(&pd::headers::passed_headers(headers), id),
        None => pd::headers::passed_headers(headers),
    };
    let clock = LatencyClock::start(s.picker.telemetry.clone(), Frontend::Proxy, started);
    let mut prefill_guard = None;
    let (upstream, decode_guard, decode_leg) = match &prefill {
        Some(p) if delegated => {
            prefill_guard = Some(InFlightGuard::new(p.clone()));
            let mut headers = passed.clone();
            if let Ok(v) = HeaderValue::from_str(&p.endpoint.address) {
                headers.insert(header::PREFILLER, v);
            }
            let body = req
                .without_client_kv_params()
                .map_or_else(|| bytes.clone(), Bytes::from);
            let guard = InFlightGuard::new(decode.clone());
            let address = &decode.endpoint.address;
            let upstream = s
                .legs
                .send(address, kind.path(), body, &headers)
                .await
                .map_err(|e| e.into_proxy_error(address))?;
            (upstream, guard, None)
        }
        Some(p) => {
            let params = {
                let _prefilling = InFlightGuard::new(p.clone());
                s.legs
                    .prefill(&p.endpoint.address, kind, &req.body, &passed)
                    .await?
            };
            // The prefill leg's answer is the prefiller's first token.
            if let Some(t) = ticket.take() {
                t.first_token();
            }
            let guard = InFlightGuard::new(decode.clone());
            let (upstream, timer) = s
                .legs
                .decode(&decode.endpoint.address, kind, &req.body, params, &passed)
                .await?;
            (upstream, guard, Some(timer))
        }
        None => {
            // Forwarded byte for byte as the client sent it, unless it carries
            // kv_transfer_params.
            let body = req
                .without_client_kv_params()
                .map_or_else(|| bytes.clone(), Bytes::from);
            let guard = InFlightGuard::new(decode.clone());
            match s
                .legs
                .send(&decode.endpoint.address, kind.path(), body.clone(), &passed)
                .await
            {
                Ok(u) => (u, guard, None),
                // Nothing reached the model server yet: try one other endpoint.
                Err(e) if e.is_connect() => {
                    tracing::warn!(endpoint = %decode.endpoint.address, error = %e, "endpoint refused; re-picking");
                    let retry = pick(Some(&decode.endpoint.address))?;
                    latency = route::latency_headers(&retry, &slo, explain);
                    decode = retry.decode;
                    explanation = retry.explanation;
                    ticket = retry.ticket;
                    let guard = InFlightGuard::new(decode.clone());
                    let address = &decode.endpoint.address;
                    let upstream = s
                        .legs
                        .send(address, kind.path(), body, &passed)
                        .await
                        .map_err(|e| e.into_proxy_error(address))?;
                    (upstream, guard, None)
                }
                Err(e) => return Err(e.into_proxy_error(&decode.endpoint.address)),
            }
        }
    };
    let watch = watch::Watch {
        clock,
        ticket,
        decode_leg,
        prefill_guard,
        _guard: decode_guard,
        _admitted: admitted,
    };
    let mut response = pd::relay(upstream, req.stream, watch).await?;
    if slo.any() && !req.stream {
        // A buffered answer's first byte reached the client with its last.
        if let Ok(v) = HeaderValue::from_str(&route::milliseconds(started.elapsed().as_secs_f64()))
        {
            response.headers_mut().insert(header::OBSERVED_TTFT_MS, v);
        }
    }
    let session_token = session_token_for(&decode.endpoint.address);
    let mut announced = route::endpoint_headers(
        &decode.endpoint.address,
        prefill.as_ref().map(|p| &*p.endpoint.address),
    );
    announced.push((header::SESSION, &session_token));
    if let Some(id) = &pd_request_id {
        announced.push((header::PD_REQUEST_ID, id));
    }
    if let Some(json) = &explanation {
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
