//! Talking to model servers: the prefill call, the decode call and relaying the
//! decode response (buffered, or streamed chunk by chunk as it arrives).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use llmd_api::endpoint_picker::header;
use serde_json::{Map, Value};

use super::{ProxyError, ProxyState, pd_two_step};
use crate::frontend::admission::Admitted;
use crate::frontend::latency::{Frontend, LatencyClock};
use crate::frontend::request::ApiKind;
use crate::frontend::route;
use crate::pool::endpoint::{EndpointState, InFlightGuard};
use crate::predict::Ticket;

/// Why a model server gave no response.
#[derive(Debug)]
pub enum SendError {
    /// No first byte within the first-byte timeout.
    Timeout(Duration),
    Http(reqwest::Error),
}

impl SendError {
    /// Nothing reached the model server: another may safely be tried.
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Http(e) if e.is_connect())
    }

    pub fn into_proxy_error(self, address: &str) -> ProxyError {
        match self {
            SendError::Timeout(after) => ProxyError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("model server {address} sent nothing within {after:?}"),
            ),
            SendError::Http(e) => {
                ProxyError::upstream(format!("model server {address} unreachable: {e}"))
            }
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Timeout(after) => write!(f, "no first byte within {after:?}"),
            SendError::Http(e) => e.fmt(f),
        }
    }
}

/// POSTs `body` to `address` and returns the response once its headers arrived,
/// within the first-byte timeout (generation may stream on for minutes after).
pub async fn send_raw(
    s: &ProxyState,
    address: &str,
    kind: ApiKind,
    bytes: Bytes,
    passed: &HeaderMap,
) -> Result<reqwest::Response, SendError> {
    let request = s
        .client
        .post(format!("http://{address}{}", kind.path()))
        .headers(passed.clone())
        .header("content-type", "application/json")
        .body(bytes)
        .send();
    match tokio::time::timeout(s.first_byte_timeout, request).await {
        Ok(result) => result.map_err(SendError::Http),
        Err(_) => Err(SendError::Timeout(s.first_byte_timeout)),
    }
}

/// [`send_raw`] with the error turned into a 502 (or 504 on the timeout).
pub async fn send(
    s: &ProxyState,
    address: &str,
    kind: ApiKind,
    bytes: Bytes,
    passed: &HeaderMap,
) -> Result<reqwest::Response, ProxyError> {
    send_raw(s, address, kind, bytes, passed)
        .await
        .map_err(|e| e.into_proxy_error(address))
}

/// Runs the prefill step and returns the `kv_transfer_params` for decode.
pub async fn prefill(
    s: &ProxyState,
    prefiller: &Arc<EndpointState>,
    kind: ApiKind,
    original: &Map<String, Value>,
    passed: &HeaderMap,
) -> Result<Option<Value>, ProxyError> {
    let _guard = InFlightGuard::new(prefiller.clone());
    let address = &prefiller.endpoint.address;
    let response = send(
        s,
        address,
        kind,
        to_bytes(pd_two_step::prefill_body(original)),
        passed,
    )
    .await?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ProxyError::upstream(format!("prefill on {address} failed: {e}")))?;
    if !status.is_success() {
        return Err(ProxyError::upstream(format!(
            "prefill on {address} answered {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
        )));
    }
    pd_two_step::kv_transfer_params(&bytes)
        .map_err(|e| ProxyError::upstream(format!("prefill on {address}: {e}")))
}

/// Client headers the model server may need (auth, tracing, request ids).
const PASSED_HEADERS: &[&str] = &["authorization", "x-request-id", "traceparent", "tracestate"];

pub fn passed_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in PASSED_HEADERS {
        if let Some(v) = from.get(*name) {
            out.insert(*name, v.clone());
        }
    }
    out
}

/// The headers of both P/D legs: `request_id` (one fresh id, so two clients that
/// reuse an id never collide in the engines' KV bookkeeping) as the request id, the
/// client's own id passed on as [`header::CLIENT_REQUEST_ID`].
pub fn pd_leg_headers(passed: &HeaderMap, request_id: &str) -> HeaderMap {
    let mut out = passed.clone();
    if let Some(client_id) = out.remove(header::REQUEST_ID) {
        out.insert(header::CLIENT_REQUEST_ID, client_id);
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        out.insert(header::REQUEST_ID, id);
    }
    out
}

/// A rewritten body as bytes (serialising a JSON map cannot fail).
pub fn to_bytes(body: Map<String, Value>) -> Bytes {
    Bytes::from(serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
}

fn copy_headers(from: &reqwest::Response, to: &mut Response) {
    for (name, value) in from.headers() {
        let n = name.as_str();
        if (n == "content-type" || n.starts_with("x-"))
            && let Ok(v) = HeaderValue::from_bytes(value.as_bytes())
        {
            to.headers_mut().insert(name.clone(), v);
        }
    }
}

/// Turns the decode response into the client's response.
/// `guard` (with the latency ticket of an aggregated request, told of the first
/// token) and `admitted` are held until the last byte reached the client. With
/// `announce_ttft`, a non-streamed answer carries the TTFT it took.
pub async fn relay(
    s: &ProxyState,
    upstream: reqwest::Response,
    stream: bool,
    guard: (InFlightGuard, Option<Ticket>),
    admitted: Admitted,
    started: Instant,
    announce_ttft: bool,
) -> Result<Response, ProxyError> {
    if upstream.status().is_redirection() {
        // Never followed: the pool's members are the only places requests go.
        return Err(ProxyError::upstream(format!(
            "model server answered {} (a redirect, not followed)",
            upstream.status()
        )));
    }
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut clock = LatencyClock::start(s.picker.telemetry.clone(), Frontend::Proxy, started);
    let sse = stream && status.is_success();
    if !sse {
        let mut response = Response::new(Body::empty());
        copy_headers(&upstream, &mut response);
        let bytes = upstream
            .bytes()
            .await
            .map_err(|e| ProxyError::upstream(format!("model server failed mid-response: {e}")))?;
        clock.chunk();
        if let Some(t) = &guard.1 {
            t.first_token();
        }
        if announce_ttft
            && let Ok(v) =
                HeaderValue::from_str(&route::milliseconds(started.elapsed().as_secs_f64()))
        {
            response.headers_mut().insert(header::OBSERVED_TTFT_MS, v);
        }
        clock.finish();
        drop((guard, admitted));
        *response.status_mut() = status;
        *response.body_mut() = Body::from(bytes);
        return Ok(response);
    }

    let mut response = Response::new(Body::empty());
    copy_headers(&upstream, &mut response);
    *response.status_mut() = status;
    struct Relay {
        inner: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        /// Held until the stream ends; `None` once it did.
        held: Option<((InFlightGuard, Option<Ticket>), Admitted, LatencyClock)>,
    }
    let relay = Relay {
        inner: upstream.bytes_stream().boxed(),
        held: Some((guard, admitted, clock)),
    };
    let body = futures::stream::unfold(relay, move |mut r| async move {
        let ((_, ticket), _, clock) = r.held.as_mut()?;
        match r.inner.next().await {
            Some(Ok(chunk)) => {
                if clock.chunk()
                    && let Some(t) = ticket
                {
                    t.first_token();
                }
                Some((Ok::<Bytes, std::io::Error>(chunk), r))
            }
            Some(Err(e)) => {
                // The backend died mid-stream: tell the client in-band, then end.
                tracing::warn!(error = %e, "model server stream broke");
                r.held = None;
                let err = ProxyError::upstream(format!("model server stream broke: {e}"));
                Some((Ok(Bytes::from(format!("data: {}\n\n", err.body()))), r))
            }
            None => {
                if let Some(((_, ticket), _, clock)) = r.held.take()
                    && let (Some(itl), Some(t)) = (clock.finish(), ticket)
                {
                    t.decoded(itl);
                }
                None
            }
        }
    });
    *response.body_mut() = Body::from_stream(body);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_auth_and_tracing_headers_are_passed_to_model_servers() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("x-request-id", HeaderValue::from_static("r1"));
        h.insert("host", HeaderValue::from_static("epp"));
        h.insert(
            "x-prefiller-host-port",
            HeaderValue::from_static("10.0.0.1:8000"),
        );
        let passed = passed_headers(&h);
        assert_eq!(passed.len(), 2);
        assert_eq!(
            passed.get("authorization").map(|v| v.as_bytes()),
            Some(&b"Bearer t"[..])
        );
        assert!(passed.get("host").is_none());
    }

    #[test]
    fn pd_legs_carry_a_fresh_id_and_the_clients_as_a_trace_header() {
        let mut passed = HeaderMap::new();
        passed.insert("x-request-id", HeaderValue::from_static("client-1"));
        let legs = pd_leg_headers(&passed, "epp-42");
        assert_eq!(
            legs.get("x-request-id").map(|v| v.as_bytes()),
            Some(&b"epp-42"[..])
        );
        assert_eq!(
            legs.get("x-client-request-id").map(|v| v.as_bytes()),
            Some(&b"client-1"[..])
        );
        let without = pd_leg_headers(&HeaderMap::new(), "epp-43");
        assert_eq!(without.len(), 1);
    }
}
