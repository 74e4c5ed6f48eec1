//! Open-loop driving: each request is sent at its arrival time whatever the state
//! of earlier ones, streamed, and timed to its first token and its end. Where the
//! engine reports usage, the prompt tokens it found in its KV cache are kept too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use llmd_api::endpoint_picker::header;
use serde_json::json;

use crate::routers::Router;
use crate::workload::Request;

#[derive(Clone, Debug)]
pub struct Sample {
    pub ttft: f64,
    pub e2e: f64,
    pub ok: bool,
    /// What the engine reported of the prompt (streams asked for usage only).
    pub usage: Option<PromptUsage>,
    /// The pod that served it, as the EndpointPicker named it
    /// (`x-gateway-destination-endpoint`); routers that do not say leave it empty.
    pub endpoint: Option<String>,
}

/// The prompt's tokens and how many of them the engine found in its KV cache
/// (`usage.prompt_tokens_details.cached_tokens` of vLLM and the simulator).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PromptUsage {
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
}

impl Sample {
    /// A request that failed or gave up after `secs`.
    pub fn failed(secs: f64) -> Sample {
        Sample {
            ttft: secs,
            e2e: secs,
            ok: false,
            usage: None,
            endpoint: None,
        }
    }
}

/// The usage an OpenAI-style stream reported (its last `usage` event).
fn stream_usage(body: &str) -> Option<PromptUsage> {
    body.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| l.contains("\"usage\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let usage = v.get("usage")?;
            Some(PromptUsage {
                prompt_tokens: usage.get("prompt_tokens")?.as_u64()?,
                cached_tokens: usage
                    .pointer("/prompt_tokens_details/cached_tokens")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
            })
        })
        .next()
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
            "stream_options": {"include_usage": true},
        });
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            one_within(&client, &url, &body, per_request_timeout).await
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

/// [`one`], given up (failed) after `timeout`.
pub async fn one_within(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Sample {
    let sent = Instant::now();
    tokio::time::timeout(timeout, one(client, url, body, sent))
        .await
        .unwrap_or_else(|_| Sample::failed(timeout.as_secs_f64()))
}

/// Streams one completion request; times its first token and its end.
pub async fn one(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    sent: Instant,
) -> Sample {
    let failed = |sent: Instant| Sample::failed(sent.elapsed().as_secs_f64());
    let Ok(resp) = client.post(url).json(body).send().await else {
        return failed(sent);
    };
    if !resp.status().is_success() {
        return failed(sent);
    }
    let endpoint = resp
        .headers()
        .get(header::DESTINATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut stream = resp.bytes_stream();
    let mut ttft = None;
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return failed(sent);
        };
        let from = text.len();
        text.push_str(&String::from_utf8_lossy(&chunk));
        if ttft.is_none() && text[from..].contains("\"text\"") {
            ttft = Some(sent.elapsed().as_secs_f64());
        }
    }
    let e2e = sent.elapsed().as_secs_f64();
    Sample {
        ttft: ttft.unwrap_or(e2e),
        e2e,
        ok: text.contains("[DONE]"),
        usage: stream_usage(&text),
        endpoint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streams_last_usage_event_gives_the_cached_prompt_tokens() {
        let body = concat!(
            "data: {\"choices\":[{\"text\":\"a\"}]}\n\n",
            "data: {\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":1,",
            "\"prompt_tokens_details\":{\"cached_tokens\":96}},\"choices\":[]}\n\n",
            "data: [DONE]\n\n"
        );
        assert_eq!(
            stream_usage(body),
            Some(PromptUsage {
                prompt_tokens: 100,
                cached_tokens: 96
            })
        );
        // No details: nothing cached; no usage at all: unknown.
        let plain = "data: {\"usage\":{\"prompt_tokens\":7}}\n\ndata: [DONE]\n\n";
        assert_eq!(stream_usage(plain).map(|u| u.cached_tokens), Some(0));
        assert_eq!(
            stream_usage("data: {\"choices\":[]}\n\ndata: [DONE]\n\n"),
            None
        );
    }
}
