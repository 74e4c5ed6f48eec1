//! The P/D two-step's body rewriting (llm-d routing-sidecar semantics): the prefill
//! request computes the KV cache and returns `kv_transfer_params`; the decode request
//! carries them so the decode server pulls the KV cache instead of recomputing it.

use axum::body::Bytes;
use serde_json::{Map, Value, json};

/// A rewritten body as bytes (serialising a JSON map cannot fail).
pub fn to_bytes(body: Map<String, Value>) -> Bytes {
    Bytes::from(serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
}

/// The body sent to the prefiller: no stream, one token, remote decode requested.
pub fn prefill_body(original: &Map<String, Value>) -> Map<String, Value> {
    let mut body = original.clone();
    body.insert("stream".into(), Value::Bool(false));
    body.remove("stream_options");
    body.insert("max_tokens".into(), json!(1));
    if body.contains_key("max_completion_tokens") {
        body.insert("max_completion_tokens".into(), json!(1));
    }
    // A minimum above the one token asked for would be refused.
    body.remove("min_tokens");
    body.insert(
        "kv_transfer_params".into(),
        json!({
            "do_remote_decode": true,
            "do_remote_prefill": false,
            "remote_engine_id": null,
            "remote_block_ids": null,
            "remote_host": null,
            "remote_port": null,
        }),
    );
    body
}

/// The body sent to the decoder: the client's request (its own stream and token
/// settings) plus the prefiller's `kv_transfer_params`.
pub fn decode_body(
    original: &Map<String, Value>,
    kv_transfer_params: Option<Value>,
) -> Map<String, Value> {
    let mut body = original.clone();
    match kv_transfer_params {
        Some(p) if !p.is_null() => {
            body.insert("kv_transfer_params".into(), p);
        }
        _ => {
            body.remove("kv_transfer_params");
        }
    }
    body
}

/// `kv_transfer_params` from the prefiller's response body, if present.
pub fn kv_transfer_params(prefill_response: &[u8]) -> Result<Option<Value>, String> {
    let v: Value = serde_json::from_slice(prefill_response)
        .map_err(|e| format!("prefill response is not JSON: {e}"))?;
    Ok(v.get("kv_transfer_params")
        .cloned()
        .filter(|p| !p.is_null()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn prefill_asks_for_one_unstreamed_token_and_remote_decode() {
        let b = prefill_body(&body(json!({
            "model": "m", "prompt": "p", "stream": true, "max_tokens": 100,
            "stream_options": {"include_usage": true}, "max_completion_tokens": 50,
            "min_tokens": 10
        })));
        assert!(!b.contains_key("min_tokens"));
        assert_eq!(b["stream"], json!(false));
        assert_eq!(b["max_tokens"], json!(1));
        assert_eq!(b["max_completion_tokens"], json!(1));
        assert!(!b.contains_key("stream_options"));
        assert_eq!(b["kv_transfer_params"]["do_remote_decode"], json!(true));
        assert_eq!(b["kv_transfer_params"]["do_remote_prefill"], json!(false));
        assert_eq!(b["kv_transfer_params"]["remote_host"], Value::Null);
        assert_eq!(b["prompt"], json!("p"));
    }

    #[test]
    fn decode_keeps_the_clients_settings_and_adds_the_params() {
        let original =
            body(json!({"model": "m", "prompt": "p", "stream": true, "max_tokens": 100}));
        let params =
            json!({"do_remote_prefill": true, "remote_host": "10.0.0.1", "remote_port": 5600});
        let b = decode_body(&original, Some(params.clone()));
        assert_eq!(b["stream"], json!(true));
        assert_eq!(b["max_tokens"], json!(100));
        assert_eq!(b["kv_transfer_params"], params);
        assert!(!decode_body(&original, None).contains_key("kv_transfer_params"));
    }

    #[test]
    fn reads_params_from_the_prefill_response() {
        assert_eq!(
            kv_transfer_params(br#"{"choices":[],"kv_transfer_params":{"remote_port":1}}"#),
            Ok(Some(json!({"remote_port": 1})))
        );
        assert_eq!(kv_transfer_params(br#"{"choices":[]}"#), Ok(None));
        assert!(kv_transfer_params(b"<html>").is_err());
    }
}
