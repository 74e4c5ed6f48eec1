//! Requests that name no prefiller go to the local engine as they came (a client's
//! `kv_transfer_params` dropped), and so does everything that is not a completion
//! (`/v1/models`, the engine's `/metrics` the EndpointPicker scrapes).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::SidecarState;
use crate::frontend::proxy::read_body;
use crate::frontend::request::{ApiKind, KV_TRANSFER_PARAMS};
use crate::openai_error::ProxyError;
use crate::pd::{self, SendError};
use llmd_api::endpoint_picker::header;

/// Headers that belong to one connection, or that the sidecar alone acts on.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    header::PREFILLER,
];

fn forwarded(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in NOT_FORWARDED {
        out.remove(*name);
    }
    out
}

/// A completion body without the client's `kv_transfer_params` (unchanged when it
/// has none, or is not a JSON object: the engine answers that).
fn without_kv_params(bytes: Bytes) -> Bytes {
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut body)) if body.contains_key(KV_TRANSFER_PARAMS) => {
            body.remove(KV_TRANSFER_PARAMS);
            pd::body::to_bytes(body)
        }
        _ => bytes,
    }
}

pub async fn completion(
    s: &SidecarState,
    kind: ApiKind,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    match read_body(body, s.max_body_bytes).await {
        Ok(bytes) => {
            forward(
                s,
                Method::POST,
                kind.path(),
                headers,
                without_kv_params(bytes),
            )
            .await
        }
        Err(e) => e.into_response(),
    }
}

pub async fn any(
    State(s): State<Arc<SidecarState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match read_body(body, s.max_body_bytes).await {
        Ok(bytes) => forward(&s, method, path, &headers, bytes).await,
        Err(e) => e.into_response(),
    }
}

async fn forward(
    s: &SidecarState,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    bytes: Bytes,
) -> Response {
    let request = s
        .legs
        .client
        .request(method, format!("http://{}{path}", s.engine))
        .headers(forwarded(headers))
        .body(bytes)
        .send();
    let upstream = match tokio::time::timeout(s.legs.first_byte_timeout, request).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            return SendError::Http(e)
                .into_proxy_error(&s.engine)
                .into_response();
        }
        Err(_) => {
            return SendError::Timeout(s.legs.first_byte_timeout)
                .into_proxy_error(&s.engine)
                .into_response();
        }
    };
    // Streamed as it arrives, whatever it is: a completion's events, a page.
    match pd::relay(upstream, true, ()).await {
        Ok(r) => r,
        Err(e) => ProxyError::into_response(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_prefiller_header_and_hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("connection", HeaderValue::from_static("keep-alive"));
        h.insert("host", HeaderValue::from_static("decode:8000"));
        h.insert(header::PREFILLER, HeaderValue::from_static("10.0.0.1:8000"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        let out = forwarded(&h);
        assert_eq!(out.len(), 2);
        assert!(out.contains_key("authorization") && out.contains_key("x-custom"));
    }

    #[test]
    fn a_clients_kv_transfer_params_are_dropped() {
        let b = without_kv_params(Bytes::from_static(
            br#"{"model":"m","prompt":"p","kv_transfer_params":{"remote_host":"169.254.169.254"}}"#,
        ));
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert!(v.get(KV_TRANSFER_PARAMS).is_none());
        assert_eq!(v["prompt"], "p");
        let raw = Bytes::from_static(b"not json");
        assert_eq!(without_kv_params(raw.clone()), raw);
    }
}
