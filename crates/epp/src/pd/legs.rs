//! Sending the legs of a request to model servers: one plain send (aggregated
//! requests, pass-through), and the P/D two-step's prefill and decode legs with
//! their timing and failure counts.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use super::body;
use super::metrics::PdMetrics;
use crate::frontend::request::ApiKind;
use crate::openai_error::ProxyError;

/// A leg of a disaggregated request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg {
    Prefill,
    Decode,
}

impl Leg {
    pub const ALL: [Leg; 2] = [Leg::Prefill, Leg::Decode];

    pub fn label(self) -> &'static str {
        match self {
            Leg::Prefill => "prefill",
            Leg::Decode => "decode",
        }
    }
}

/// Why a leg's KV transfer did not happen as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// No connection to the engine.
    Unreachable,
    /// The engine could not take the request: it answered 503 (shutting down,
    /// overloaded) or closed the connection before answering.
    Unavailable,
    /// No first byte within the first-byte timeout.
    Timeout,
    /// The engine answered with an error status.
    Status,
    /// The prefiller's answer was not JSON, or broke off.
    BadResponse,
    /// The prefiller answered without `kv_transfer_params`: the decode leg
    /// recomputes the prompt.
    NoKvParams,
    /// The named prefiller is not a Ready prefill pod of the pool (sidecar).
    PrefillerNotAllowed,
}

impl Cause {
    pub const ALL: [Cause; 7] = [
        Cause::Unreachable,
        Cause::Unavailable,
        Cause::Timeout,
        Cause::Status,
        Cause::BadResponse,
        Cause::NoKvParams,
        Cause::PrefillerNotAllowed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Cause::Unreachable => "unreachable",
            Cause::Unavailable => "unavailable",
            Cause::Timeout => "timeout",
            Cause::Status => "error_status",
            Cause::BadResponse => "bad_response",
            Cause::NoKvParams => "no_kv_transfer_params",
            Cause::PrefillerNotAllowed => "prefiller_not_allowed",
        }
    }
}

/// Why a model server gave no response.
#[derive(Debug)]
pub enum SendError {
    /// No first byte within the first-byte timeout.
    Timeout(Duration),
    Http(reqwest::Error),
}

/// The server closed or reset the connection before any answer: a server going
/// away (a pod stopping) or a pooled connection it had already dropped.
fn closed_before_answer(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_canceled())
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        source = s.source();
    }
    false
}

impl SendError {
    fn cause(&self) -> Cause {
        match self {
            SendError::Timeout(_) => Cause::Timeout,
            SendError::Http(_) => Cause::Unreachable,
        }
    }

    pub fn into_proxy_error(self, address: &str) -> ProxyError {
        match self {
            SendError::Timeout(after) => ProxyError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("model server {address} sent nothing within {after:?}"),
            ),
            // Nothing reached it (starting, or gone after draining): the caller
            // may try elsewhere, as a 503 tells clients.
            SendError::Http(e) if e.is_connect() => ProxyError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                format!("model server {address} refused the connection: {e}"),
            ),
            // It went away before answering (a pod stopping mid-rollout): also a
            // 503, which the EndpointPicker's proxy answers by picking again.
            SendError::Http(e) if closed_before_answer(&e) => ProxyError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                format!("model server {address} closed the connection before answering: {e}"),
            ),
            SendError::Http(e) => {
                ProxyError::upstream(format!("model server {address} failed: {e}"))
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

/// Times a decode leg until the first byte of its answer.
pub struct LegTimer {
    metrics: PdMetrics,
    started: Instant,
    recorded: bool,
}

impl LegTimer {
    /// The answer's first byte arrived (recorded once).
    pub fn first_byte(&mut self) {
        if !self.recorded {
            self.recorded = true;
            self.metrics
                .leg_took(Leg::Decode, self.started.elapsed().as_secs_f64());
        }
    }
}

/// The client model servers are called with, and what the legs are measured by.
#[derive(Clone)]
pub struct Legs {
    pub client: reqwest::Client,
    /// How long a model server may take to send response headers.
    pub first_byte_timeout: Duration,
    pub metrics: PdMetrics,
}

impl Legs {
    /// POSTs `bytes` to `address` at `path` and returns the response once its
    /// headers arrived, within the first-byte timeout (generation may stream on
    /// for minutes after).
    pub async fn send(
        &self,
        address: &str,
        path: &str,
        bytes: Bytes,
        headers: &HeaderMap,
    ) -> Result<reqwest::Response, SendError> {
        let request = self
            .client
            .post(format!("http://{address}{path}"))
            .headers(headers.clone())
            .header("content-type", "application/json")
            .body(bytes)
            .send();
        match tokio::time::timeout(self.first_byte_timeout, request).await {
            Ok(result) => result.map_err(SendError::Http),
            Err(_) => Err(SendError::Timeout(self.first_byte_timeout)),
        }
    }

    /// Runs the prefill leg on `address` and returns the `kv_transfer_params` the
    /// decode leg carries (`None`: the decode leg computes the prompt itself, as the
    /// prefiller returned none, refused the connection, answered 503 or went away
    /// before answering: a prefill pod stopping does not fail the request, as
    /// nothing it did reaches the client). Counts the request as split.
    pub async fn prefill(
        &self,
        address: &str,
        kind: ApiKind,
        original: &Map<String, Value>,
        headers: &HeaderMap,
    ) -> Result<Option<Value>, ProxyError> {
        self.metrics.splits.inc();
        let started = Instant::now();
        let result = self.prefill_inner(address, kind, original, headers).await;
        self.metrics
            .leg_took(Leg::Prefill, started.elapsed().as_secs_f64());
        match result {
            Ok(Some(params)) => Ok(Some(params)),
            Ok(None) => {
                self.metrics.failed(Leg::Prefill, Cause::NoKvParams);
                tracing::warn!(
                    prefiller = address,
                    "the prefiller returned no kv_transfer_params; decoding recomputes the prompt"
                );
                Ok(None)
            }
            Err((cause @ (Cause::Unreachable | Cause::Unavailable), error)) => {
                self.metrics.failed(Leg::Prefill, cause);
                tracing::warn!(prefiller = address, reason = %error.message, "decoding without a prefill leg");
                Ok(None)
            }
            Err((cause, error)) => {
                self.metrics.failed(Leg::Prefill, cause);
                Err(error)
            }
        }
    }

    async fn prefill_inner(
        &self,
        address: &str,
        kind: ApiKind,
        original: &Map<String, Value>,
        headers: &HeaderMap,
    ) -> Result<Option<Value>, (Cause, ProxyError)> {
        let bytes = body::to_bytes(body::prefill_body(original));
        let response = self
            .send(address, kind.path(), bytes, headers)
            .await
            .map_err(|e| match e {
                SendError::Timeout(after) => (
                    Cause::Timeout,
                    ProxyError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "prefill_timeout",
                        format!("prefill on {address} sent nothing within {after:?}"),
                    ),
                ),
                // Refused: nothing reached the prefiller.
                SendError::Http(e) if e.is_connect() => (
                    Cause::Unreachable,
                    ProxyError::upstream(format!("prefill on {address} unreachable: {e}")),
                ),
                SendError::Http(e) if closed_before_answer(&e) => (
                    Cause::Unavailable,
                    ProxyError::upstream(format!(
                        "prefill on {address} closed the connection before answering: {e}"
                    )),
                ),
                SendError::Http(e) => (
                    Cause::BadResponse,
                    ProxyError::upstream(format!("prefill on {address} failed: {e}")),
                ),
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            (
                Cause::BadResponse,
                ProxyError::upstream(format!("prefill on {address} broke off: {e}")),
            )
        })?;
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return Err((Cause::Unavailable, prefill_refusal(address, status, &bytes)));
        }
        if !status.is_success() {
            return Err((Cause::Status, prefill_refusal(address, status, &bytes)));
        }
        body::kv_transfer_params(&bytes).map_err(|e| {
            (
                Cause::BadResponse,
                ProxyError::upstream(format!("prefill on {address}: {e}")),
            )
        })
    }

    /// Sends the decode leg (the client's body with the prefiller's parameters) to
    /// `address`; the timer records the leg at the answer's first byte.
    pub async fn decode(
        &self,
        address: &str,
        kind: ApiKind,
        original: &Map<String, Value>,
        params: Option<Value>,
        headers: &HeaderMap,
    ) -> Result<(reqwest::Response, LegTimer), ProxyError> {
        let started = Instant::now();
        let bytes = body::to_bytes(body::decode_body(original, params));
        match self.send(address, kind.path(), bytes, headers).await {
            Ok(response) => {
                if response.status().is_server_error() {
                    self.metrics.failed(Leg::Decode, Cause::Status);
                }
                let timer = LegTimer {
                    metrics: self.metrics.clone(),
                    started,
                    recorded: false,
                };
                Ok((response, timer))
            }
            Err(e) => {
                self.metrics.failed(Leg::Decode, e.cause());
                Err(e.into_proxy_error(address))
            }
        }
    }
}

/// The client's error for a prefill leg answered with `status`: a 4xx is the
/// request's own fault and keeps its status and the engine's message; anything
/// else is the prefiller's, a 502.
fn prefill_refusal(address: &str, status: reqwest::StatusCode, body: &[u8]) -> ProxyError {
    let message = engine_message(body);
    match StatusCode::from_u16(status.as_u16()) {
        Ok(s) if s.is_client_error() => ProxyError::new(
            s,
            "invalid_request_error",
            format!("prefill on {address} refused the request ({status}): {message}"),
        ),
        _ => ProxyError::upstream(format!("prefill on {address} answered {status}: {message}")),
    }
}

/// The message of an engine's error body (OpenAI's nested shape or vLLM's older
/// flat one), else the start of the body as text.
fn engine_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    message.unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefill_4xx_keeps_its_status_and_the_engines_message() {
        let e = prefill_refusal(
            "10.0.0.1:8000",
            reqwest::StatusCode::BAD_REQUEST,
            br#"{"error":{"message":"prompt too long","type":"BadRequestError","code":400}}"#,
        );
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("prompt too long"), "{}", e.message);
        assert!(e.message.contains("10.0.0.1:8000"), "{}", e.message);

        let flat = prefill_refusal(
            "p",
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"object":"error","message":"bad field","code":422}"#,
        );
        assert!(flat.message.contains("bad field"), "{}", flat.message);
    }

    #[test]
    fn a_prefill_5xx_is_a_bad_gateway() {
        let e = prefill_refusal(
            "p",
            reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            b"<html>down",
        );
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(e.message.contains("<html>down"), "{}", e.message);
    }

    #[test]
    fn causes_have_distinct_labels() {
        let all = Cause::ALL;
        let labels: std::collections::BTreeSet<_> = all.iter().map(|c| c.label()).collect();
        assert_eq!(labels.len(), all.len());
    }

    /// A one-connection server that reads a request and, given `answer`, writes it
    /// back raw (else closes without a word, as a stopping pod does).
    fn one_shot_server(answer: Option<&'static str>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let _ = conn.read(&mut [0u8; 4096]);
                if let Some(answer) = answer {
                    let _ = conn.write_all(answer.as_bytes());
                }
            }
        });
        address
    }

    fn legs() -> Legs {
        Legs {
            client: reqwest::Client::new(),
            first_byte_timeout: Duration::from_secs(5),
            metrics: PdMetrics::default(),
        }
    }

    fn failures(legs: &Legs, cause: Cause) -> u64 {
        legs.metrics
            .failures
            .get_or_create(&super::super::metrics::FailureLabels {
                stage: Leg::Prefill.label(),
                cause: cause.label(),
            })
            .get()
    }

    #[tokio::test]
    async fn a_prefiller_that_cannot_take_the_request_leaves_the_prompt_to_the_decoder() {
        let body = Map::from_iter([("prompt".to_string(), Value::from("hello"))]);
        let shutting_down = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
            connection: close\r\n\r\n{\"error\":\"server is shutting down\"}";
        for answer in [Some(shutting_down), None] {
            let legs = legs();
            let address = one_shot_server(answer);
            let params = legs
                .prefill(&address, ApiKind::Completions, &body, &HeaderMap::new())
                .await;
            assert_eq!(params, Ok(None), "{answer:?}");
            assert_eq!(failures(&legs, Cause::Unavailable), 1, "{answer:?}");
        }
        // Any other 5xx is the prefiller's fault, and the client's error.
        let legs = legs();
        let address = one_shot_server(Some(
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nboom",
        ));
        let e = legs
            .prefill(&address, ApiKind::Completions, &body, &HeaderMap::new())
            .await
            .expect_err("a 500 fails the request");
        assert_eq!(e.status, StatusCode::BAD_GATEWAY, "{}", e.message);
        assert_eq!(failures(&legs, Cause::Status), 1);
    }

    #[tokio::test]
    async fn a_server_that_closes_before_answering_is_unavailable_not_a_bad_gateway() {
        let address = one_shot_server(None);
        let sent = reqwest::Client::new()
            .post(format!("http://{address}/v1/completions"))
            .body("{}")
            .send()
            .await
            .expect_err("no answer");
        let e = SendError::Http(sent).into_proxy_error(&address);
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE, "{}", e.message);
        assert!(
            e.message.contains("closed the connection before answering"),
            "{}",
            e.message
        );
    }
}
