//! The headers that go on to model servers: the client's auth and tracing headers,
//! and on P/D legs one fresh request id.

use axum::http::{HeaderMap, HeaderValue};
use llmd_api::endpoint_picker::header;

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
