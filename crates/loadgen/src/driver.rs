//! Open-loop driving: each request is sent at its arrival time whatever the state
//! of earlier ones, streamed, and timed to its first token and its end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::routers::Router;
use crate::workload::Request;

#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub ttft: f64,
    pub e2e: f64,
    pub ok: bool,
}

/// Sends every request; gives up on any request after `per_request_timeout`.
pub async fn run(
    router: Arc<Router>,
    client: reqwest::Client,
    requests: &[Request],
    max_tokens: u32,
    per_request_timeout: Duration,
) -> (Vec<Sample>, f64) {
    let start = Instant::now();
    let mut handles = Vec::with_capacity(requests.len());
    for r in requests {
        let due = start + Duration::from_secs_f64(r.at_secs);
        tokio::time::sleep_until(due.into()).await;
        let url = format!("{}/v1/completions", router.base());
        let body = json!({
            "model": "bench-model",
            "prompt": r.prompt,
            "max_tokens": max_tokens,
            "ignore_eos": true,
            "stream": true,
        });
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let sent = Instant::now();
            let fut = one(&client, &url, &body, sent);
            match tokio::time::timeout(per_request_timeout, fut).await {
                Ok(s) => s,
                Err(_) => Sample {
                    ttft: per_request_timeout.as_secs_f64(),
                    e2e: per_request_timeout.as_secs_f64(),
                    ok: false,
                },
            }
        }));
    }
    let mut samples = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(s) = h.await {
            samples.push(s);
        }
    }
    (samples, start.elapsed().as_secs_f64())
}

/// Streams one completion request; times its first token and its end.
pub async fn one(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    sent: Instant,
) -> Sample {
    let failed = |sent: Instant| Sample {
        ttft: sent.elapsed().as_secs_f64(),
        e2e: sent.elapsed().as_secs_f64(),
        ok: false,
    };
    let Ok(resp) = client.post(url).json(body).send().await else {
        return failed(sent);
    };
    if !resp.status().is_success() {
        return failed(sent);
    }
    let mut stream = resp.bytes_stream();
    let mut ttft = None;
    let mut done = false;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return failed(sent);
        };
        let text = String::from_utf8_lossy(&chunk);
        if ttft.is_none() && text.contains("\"text\"") {
            ttft = Some(sent.elapsed().as_secs_f64());
        }
        if text.contains("[DONE]") {
            done = true;
        }
    }
    let e2e = sent.elapsed().as_secs_f64();
    Sample {
        ttft: ttft.unwrap_or(e2e),
        e2e,
        ok: done,
    }
}
