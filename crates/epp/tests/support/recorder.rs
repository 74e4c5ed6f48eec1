//! A recording engine: an OpenAI-compatible stand-in that keeps every request it
//! receives (path, headers, body), so a test can see exactly what the EPP forwarded.
//! It answers like vLLM's P/D: a request with `kv_transfer_params.do_remote_decode`
//! gets `kv_transfer_params` naming itself back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde_json::{Value, json};

/// One request as the engine saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

pub struct Recorder {
    pub address: String,
    log: Log,
    _runtime: tokio::runtime::Runtime,
}

async fn complete(
    State(log): State<Log>,
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let remote_decode = body
        .pointer("/kv_transfer_params/do_remote_decode")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    log.0.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
        path: path.to_string(),
        headers,
        body,
    });
    let mut answer = json!({
        "id": "cmpl-1", "object": "text_completion", "model": "test-model",
        "choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}],
    });
    if remote_decode {
        answer["kv_transfer_params"] = json!({
            "do_remote_prefill": true, "do_remote_decode": false,
            "remote_engine_id": "recorder", "remote_block_ids": [1],
            "remote_host": "127.0.0.1", "remote_port": 5600,
        });
    }
    axum::Json(answer)
}

impl Recorder {
    pub fn start() -> Recorder {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let log = Log::default();
        let app = Router::new()
            .route(
                "/v1/completions",
                post(|s, h, b| complete(s, "/v1/completions", h, b)),
            )
            .route(
                "/v1/chat/completions",
                post(|s, h, b| complete(s, "/v1/chat/completions", h, b)),
            )
            .route("/health", get(|| async { "ok" }))
            .route(
                "/v1/models",
                get(|| async { axum::Json(json!({"data": [{"id": "test-model"}]})) }),
            )
            .with_state(log.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let address: SocketAddr = listener.local_addr().expect("address");
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            address: address.to_string(),
            log,
            _runtime: runtime,
        }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
