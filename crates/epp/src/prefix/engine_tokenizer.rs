//! Token ids from the serving engine's own tokenizer, for the precise prefix index.
//!
//! The precise index matches a prompt against the token ids engines report storing,
//! so it must tokenize exactly as they do: with the model's tokenizer and, for chat,
//! its chat template. Rather than ship every model's tokenizer, the EndpointPicker
//! asks an engine of the pool: vLLM's `/tokenize` (which llm-d-inference-sim serves
//! too) takes the request's prompt or messages and answers its token ids. Answers are
//! kept in a bounded LRU keyed by what was asked, so a repeated prompt costs nothing;
//! a pick waits at most the configured timeout, and a request not tokenized in time
//! (or when no engine answers) is matched against the approximate index instead.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
use serde_json::{Map, Value};

use crate::frontend::request::{ApiKind, InferenceRequest};
use crate::pool::endpoint::{EndpointRegistry, EndpointState};
use crate::telemetry::{OutcomeLabels, Telemetry};

/// Chat request fields that change how the engine renders messages into a prompt.
const CHAT_RENDERING: &[&str] = &[
    "add_generation_prompt",
    "continue_final_message",
    "chat_template",
    "chat_template_kwargs",
    "tools",
    "documents",
];

/// What to send to `/tokenize` for a request, or its token ids when the client sent
/// token ids (nothing to ask).
#[derive(Debug, PartialEq)]
pub enum Ask {
    Body(Value),
    Tokens(Vec<u32>),
}

/// The `/tokenize` request for `req`: a completion's prompt, or a chat request's
/// messages with whatever shapes their rendering.
pub fn ask(req: &InferenceRequest) -> Ask {
    let mut body = Map::new();
    body.insert("model".into(), Value::String(req.model.clone()));
    match req.kind {
        ApiKind::Completions => {
            if let Some(ids) = req.body.get("prompt").and_then(token_ids) {
                return Ask::Tokens(ids);
            }
            body.insert("prompt".into(), Value::String(req.prompt.clone()));
        }
        ApiKind::ChatCompletions => {
            let messages = req.body.get("messages").cloned().unwrap_or(Value::Null);
            body.insert("messages".into(), messages);
            for field in CHAT_RENDERING {
                if let Some(v) = req.body.get(*field) {
                    body.insert((*field).into(), v.clone());
                }
            }
        }
    }
    Ask::Body(Value::Object(body))
}

/// A prompt given as token ids (`[1, 2, 3]`), each fitting 32 bits.
fn token_ids(prompt: &Value) -> Option<Vec<u32>> {
    let items = prompt.as_array()?;
    if items.is_empty() {
        return None;
    }
    items
        .iter()
        .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

/// The token ids of a `/tokenize` answer (`{"tokens": [...], "count": n, ...}`).
pub fn parse_answer(body: &[u8]) -> Result<Vec<u32>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let tokens = v
        .get("tokens")
        .and_then(Value::as_array)
        .ok_or("no `tokens` array")?;
    tokens
        .iter()
        .map(|t| {
            t.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("token {t} is not a 32-bit id"))
        })
        .collect()
}

/// Why a request got no engine token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Miss {
    Failed,
    Timeout,
    NoEndpoint,
}

impl Miss {
    fn outcome(self) -> &'static str {
        match self {
            Miss::Failed => "failed",
            Miss::Timeout => "timeout",
            Miss::NoEndpoint => "no_endpoint",
        }
    }
}

/// Asks the pool's engines for token ids, remembering their answers.
pub struct EngineTokenizer {
    http: reqwest::Client,
    cache: Mutex<LruCache<u128, Arc<[u32]>>>,
    next: AtomicUsize,
    telemetry: Arc<Telemetry>,
    /// A failure was logged at warn level already (the rest go to debug).
    warned: AtomicBool,
}

impl EngineTokenizer {
    pub fn new(telemetry: Arc<Telemetry>, cache_size: usize) -> Self {
        EngineTokenizer {
            http: reqwest::Client::new(),
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(cache_size).unwrap_or(NonZeroUsize::MIN),
            )),
            next: AtomicUsize::new(0),
            telemetry,
            warned: AtomicBool::new(false),
        }
    }

    /// Keeps at most `cache_size` answers from now on.
    pub fn resize(&self, cache_size: usize) {
        let size = NonZeroUsize::new(cache_size).unwrap_or(NonZeroUsize::MIN);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.cap() != size {
            cache.resize(size);
        }
    }

    /// `req`'s token ids as an engine of the pool that serves its model computes
    /// them; `None` when none answered within `timeout`.
    pub async fn tokens(
        &self,
        registry: &EndpointRegistry,
        req: &InferenceRequest,
        timeout: Duration,
    ) -> Option<Arc<[u32]>> {
        let body = match ask(req) {
            Ask::Tokens(ids) => return Some(ids.into()),
            Ask::Body(b) => b,
        };
        let text = body.to_string();
        let key = xxhash_rust::xxh3::xxh3_128(text.as_bytes());
        let hit = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(tokens) = hit {
            self.count("cached");
            return Some(tokens);
        }
        match self.ask_engine(registry, &req.model, text, timeout).await {
            Ok(tokens) => {
                let tokens: Arc<[u32]> = tokens.into();
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .put(key, tokens.clone());
                self.count("tokenized");
                Some(tokens)
            }
            Err((miss, why)) => {
                self.count(miss.outcome());
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(reason = %why, "no engine token ids for a request: matched against the approximate prefix index (further failures are logged at debug level; see llmd_epp_engine_tokenize_total)");
                } else {
                    tracing::debug!(reason = %why, "no engine token ids for a request");
                }
                None
            }
        }
    }

    async fn ask_engine(
        &self,
        registry: &EndpointRegistry,
        model: &str,
        body: String,
        timeout: Duration,
    ) -> Result<Vec<u32>, (Miss, String)> {
        let engine = self
            .engine_for(registry, model)
            .ok_or((Miss::NoEndpoint, format!("no endpoint serves {model:?}")))?;
        let url = format!("http://{}/tokenize", engine.endpoint.address);
        let call = async {
            let response = self
                .http
                .post(&url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                return Err(format!("{url} answered {status}: {text}"));
            }
            parse_answer(&bytes).map_err(|e| format!("{url}: {e}"))
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result.map_err(|e| (Miss::Failed, e)),
            Err(_) => Err((
                Miss::Timeout,
                format!("{url} did not answer within {} ms", timeout.as_millis()),
            )),
        }
    }

    /// The next endpoint, in turn, that may serve `model`: of those whose metrics
    /// are fresh, else of all; an engine's own port before a routing sidecar's (which
    /// passes `/tokenize` through to its engine, one hop later).
    fn engine_for(&self, registry: &EndpointRegistry, model: &str) -> Option<Arc<EndpointState>> {
        let snapshot = registry.snapshot();
        let class = |s: &EndpointState| (s.metrics.load().is_none(), s.endpoint.sidecar);
        let usable: Vec<&Arc<EndpointState>> =
            snapshot.values().filter(|s| s.may_serve(model)).collect();
        let best = usable.iter().map(|s| class(s)).min()?;
        let pool: Vec<&Arc<EndpointState>> =
            usable.into_iter().filter(|s| class(s) == best).collect();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % pool.len();
        Some(pool[i].clone())
    }

    fn count(&self, outcome: &str) {
        self.telemetry
            .engine_tokenize
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(kind: ApiKind, body: &str) -> InferenceRequest {
        InferenceRequest::parse(kind, body.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_completion_asks_for_its_prompt_and_token_ids_need_no_asking() {
        let r = request(
            ApiKind::Completions,
            r#"{"model":"m","prompt":"Hello there"}"#,
        );
        assert_eq!(
            ask(&r),
            Ask::Body(json!({"model": "m", "prompt": "Hello there"}))
        );
        let r = request(ApiKind::Completions, r#"{"model":"m","prompt":[1,2,3]}"#);
        assert_eq!(ask(&r), Ask::Tokens(vec![1, 2, 3]));
        // Ids beyond 32 bits are no token ids an engine reports: the text is asked.
        let r = request(
            ApiKind::Completions,
            r#"{"model":"m","prompt":[1,5000000000]}"#,
        );
        assert!(matches!(ask(&r), Ask::Body(_)));
    }

    #[test]
    fn a_chat_request_asks_with_its_messages_and_what_shapes_their_rendering() {
        let r = request(
            ApiKind::ChatCompletions,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
                "chat_template_kwargs":{"enable_thinking":false},"max_tokens":5,"stream":true}"#,
        );
        assert_eq!(
            ask(&r),
            Ask::Body(json!({
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "chat_template_kwargs": {"enable_thinking": false},
            }))
        );
    }

    #[test]
    fn an_answer_is_its_token_ids_and_garbage_is_refused() {
        assert_eq!(
            parse_answer(br#"{"count":2,"max_model_len":10,"tokens":[7,4294967295]}"#),
            Ok(vec![7, u32::MAX])
        );
        for bad in [
            &b"nope"[..],
            br#"{"count":1}"#,
            br#"{"tokens":[-1]}"#,
            br#"{"tokens":[4294967296]}"#,
            br#"{"tokens":["a"]}"#,
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// A stand-in engine whose `/tokenize` answers `answer` after `delay`, counting
    /// the calls.
    async fn engine(answer: &'static str, delay: Duration) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/tokenize",
            axum::routing::post(move || {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                    answer
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (address, calls)
    }

    fn pool(addresses: &[&str]) -> EndpointRegistry {
        let registry = EndpointRegistry::new();
        registry.replace_all(
            addresses
                .iter()
                .map(|a| crate::pool::endpoint::Endpoint::new(*a, Role::Decode)),
        );
        registry
    }

    fn outcomes(t: &Telemetry) -> Vec<(String, u64)> {
        crate::telemetry::ENGINE_TOKENIZE_OUTCOMES
            .iter()
            .map(|o| {
                let n = t
                    .engine_tokenize
                    .get_or_create(&OutcomeLabels {
                        outcome: o.to_string(),
                    })
                    .get();
                (o.to_string(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    use crate::pool::endpoint::Role;

    #[tokio::test]
    async fn an_answer_is_asked_once_then_served_from_the_cache() {
        let (address, calls) = engine(r#"{"count":3,"tokens":[5,6,7]}"#, Duration::ZERO).await;
        let telemetry = Arc::new(Telemetry::new());
        let tokenizer = EngineTokenizer::new(telemetry.clone(), 8);
        let registry = pool(&[&address]);
        let r = request(ApiKind::Completions, r#"{"model":"m","prompt":"a b c"}"#);
        for _ in 0..3 {
            let got = tokenizer
                .tokens(&registry, &r, Duration::from_secs(5))
                .await;
            assert_eq!(got.as_deref(), Some(&[5, 6, 7][..]));
        }
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(
            outcomes(&telemetry),
            [("cached".to_string(), 2), ("tokenized".to_string(), 1)]
        );
    }

    #[tokio::test]
    async fn a_slow_a_broken_or_a_missing_engine_gives_no_tokens_and_says_why() {
        let telemetry = Arc::new(Telemetry::new());
        let tokenizer = EngineTokenizer::new(telemetry.clone(), 8);
        let r = request(ApiKind::Completions, r#"{"model":"m","prompt":"a b c"}"#);
        let wait = Duration::from_millis(100);
        let (slow, _) = engine(r#"{"tokens":[1]}"#, Duration::from_secs(5)).await;
        assert_eq!(tokenizer.tokens(&pool(&[&slow]), &r, wait).await, None);
        let (broken, _) = engine(r#"{"tokens":"nope"}"#, Duration::ZERO).await;
        assert_eq!(tokenizer.tokens(&pool(&[&broken]), &r, wait).await, None);
        assert_eq!(tokenizer.tokens(&pool(&[]), &r, wait).await, None);
        assert_eq!(
            outcomes(&telemetry),
            [
                ("failed".to_string(), 1),
                ("timeout".to_string(), 1),
                ("no_endpoint".to_string(), 1)
            ]
        );
        // Nothing failed is remembered: a working engine is asked next time.
        let (good, calls) = engine(r#"{"tokens":[9]}"#, Duration::ZERO).await;
        let got = tokenizer.tokens(&pool(&[&good]), &r, wait).await;
        assert_eq!(got.as_deref(), Some(&[9][..]));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
