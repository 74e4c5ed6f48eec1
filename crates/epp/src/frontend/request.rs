//! Reading an OpenAI-style request body: the model, the prompt text the prefix
//! index hashes, and whether the client wants a stream.
//!
//! The body is kept as a JSON value so the proxy can forward it unchanged except for
//! the fields the P/D two-step rewrites.

use serde_json::{Map, Value};

/// Which OpenAI endpoint the body was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKind {
    Completions,
    ChatCompletions,
}

impl ApiKind {
    pub fn from_path(path: &str) -> Option<ApiKind> {
        match path.trim_end_matches('/') {
            "/v1/completions" => Some(ApiKind::Completions),
            "/v1/chat/completions" => Some(ApiKind::ChatCompletions),
            _ => None,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            ApiKind::Completions => "/v1/completions",
            ApiKind::ChatCompletions => "/v1/chat/completions",
        }
    }
}

/// A parsed, validated request.
#[derive(Clone, Debug, PartialEq)]
pub struct InferenceRequest {
    pub kind: ApiKind,
    pub model: String,
    /// The prompt as one string (chat messages rendered with their roles as the
    /// simulator renders them), used only for prefix hashing and token counts.
    pub prompt: String,
    pub stream: bool,
    pub body: Map<String, Value>,
}

/// The body field through which vLLM's KV connector is steered (remote engine,
/// host, port, block ids). Only the EPP sets it, on P/D legs: a client's is dropped,
/// so no client can make an engine open a NIXL handshake to an address it chose.
pub const KV_TRANSFER_PARAMS: &str = "kv_transfer_params";

/// Why a body was refused; each maps to a 400 with this message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RequestError {
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` {problem}")]
    InvalidField {
        field: &'static str,
        problem: &'static str,
    },
}

impl InferenceRequest {
    /// The body to forward when the client sent `kv_transfer_params`: the same body
    /// without them. `None` when the client's bytes can go on unchanged.
    pub fn without_client_kv_params(&self) -> Option<Vec<u8>> {
        if !self.body.contains_key(KV_TRANSFER_PARAMS) {
            return None;
        }
        let mut body = self.body.clone();
        body.remove(KV_TRANSFER_PARAMS);
        serde_json::to_vec(&Value::Object(body)).ok()
    }

    /// Parses and validates a body for `kind`.
    pub fn parse(kind: ApiKind, bytes: &[u8]) -> Result<Self, RequestError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| RequestError::MalformedJson(e.to_string()))?;
        let Value::Object(body) = value else {
            return Err(RequestError::NotAnObject);
        };
        let model = match body.get("model") {
            None | Some(Value::Null) => return Err(RequestError::MissingField("model")),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => {
                return Err(RequestError::InvalidField {
                    field: "model",
                    problem: "must be a non-empty string",
                });
            }
        };
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(RequestError::InvalidField {
                    field: "stream",
                    problem: "must be a boolean",
                });
            }
        };
        let prompt = match kind {
            ApiKind::Completions => completion_prompt(&body)?,
            ApiKind::ChatCompletions => chat_prompt(&body)?,
        };
        Ok(InferenceRequest {
            kind,
            model,
            prompt,
            stream,
            body,
        })
    }
}

fn completion_prompt(body: &Map<String, Value>) -> Result<String, RequestError> {
    const BAD: RequestError = RequestError::InvalidField {
        field: "prompt",
        problem: "must be a string, an array of strings or an array of token ids",
    };
    match body.get("prompt") {
        None | Some(Value::Null) => Err(RequestError::MissingField("prompt")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(items)) => {
            let mut out = String::new();
            for item in items {
                match item {
                    Value::String(s) => out.push_str(s),
                    Value::Number(n) => {
                        out.push_str(&n.to_string());
                        out.push(' ');
                    }
                    _ => return Err(BAD),
                }
            }
            Ok(out)
        }
        Some(_) => Err(BAD),
    }
}

/// Chat messages are rendered as llm-d-inference-sim renders them before tokenizing
/// (`### role: text\n` each, text parts joined by newlines), so the precise prefix
/// index sees the token ids the engine reports.
const CHAT_MESSAGE_START: &str = "### ";

fn chat_prompt(body: &Map<String, Value>) -> Result<String, RequestError> {
    let messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(RequestError::MissingField("messages")),
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(_) => {
            return Err(RequestError::InvalidField {
                field: "messages",
                problem: "must be a non-empty array",
            });
        }
    };
    let mut out = String::new();
    for message in messages {
        let Some(obj) = message.as_object() else {
            return Err(RequestError::InvalidField {
                field: "messages",
                problem: "must contain objects",
            });
        };
        let Some(role) = obj.get("role").and_then(Value::as_str) else {
            return Err(RequestError::InvalidField {
                field: "messages",
                problem: "entries need a string `role`",
            });
        };
        out.push_str(CHAT_MESSAGE_START);
        out.push_str(role);
        out.push_str(": ");
        match obj.get("content") {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Array(parts)) => {
                let texts = parts
                    .iter()
                    .filter_map(|part| part.get("text").and_then(Value::as_str));
                for (i, text) in texts.enumerate() {
                    if i > 0 {
                        out.push('\n');
                    }
                    out.push_str(text);
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => {
                return Err(RequestError::InvalidField {
                    field: "messages",
                    problem: "`content` must be a string or an array of parts",
                });
            }
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_kv_transfer_params_are_dropped_and_nothing_else() {
        let body = br#"{"model":"m","prompt":"hi","kv_transfer_params":{"remote_host":"10.9.9.9","remote_port":5600},"max_tokens":3}"#;
        let req = InferenceRequest::parse(ApiKind::Completions, body).expect("parses");
        let stripped = req.without_client_kv_params().expect("stripped");
        let value: Value = serde_json::from_slice(&stripped).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"model": "m", "prompt": "hi", "max_tokens": 3})
        );
        let clean =
            InferenceRequest::parse(ApiKind::Completions, br#"{"model":"m","prompt":"hi"}"#)
                .expect("parses");
        assert_eq!(clean.without_client_kv_params(), None);
    }

    #[test]
    fn parses_a_completion() {
        let r = InferenceRequest::parse(
            ApiKind::Completions,
            br#"{"model":"m","prompt":"hello world","stream":true}"#,
        )
        .expect("valid");
        assert_eq!(r.model, "m");
        assert_eq!(r.prompt, "hello world");
        assert!(r.stream);
    }

    #[test]
    fn renders_chat_messages_with_roles() {
        let r = InferenceRequest::parse(
            ApiKind::ChatCompletions,
            br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
        )
        .expect("valid");
        assert_eq!(r.prompt, "### system: be brief\n### user: hi\n");
        assert!(!r.stream);
    }

    #[test]
    fn refuses_bad_bodies_with_the_reason() {
        let k = ApiKind::Completions;
        assert!(matches!(
            InferenceRequest::parse(k, b"{not json"),
            Err(RequestError::MalformedJson(_))
        ));
        assert_eq!(
            InferenceRequest::parse(k, b"[1]"),
            Err(RequestError::NotAnObject)
        );
        assert_eq!(
            InferenceRequest::parse(k, br#"{"prompt":"x"}"#),
            Err(RequestError::MissingField("model"))
        );
        assert_eq!(
            InferenceRequest::parse(k, br#"{"model":"m"}"#),
            Err(RequestError::MissingField("prompt"))
        );
        assert!(matches!(
            InferenceRequest::parse(k, br#"{"model":"m","prompt":{}}"#),
            Err(RequestError::InvalidField {
                field: "prompt",
                ..
            })
        ));
        assert!(matches!(
            InferenceRequest::parse(k, br#"{"model":"m","prompt":"x","stream":"yes"}"#),
            Err(RequestError::InvalidField {
                field: "stream",
                ..
            })
        ));
        assert_eq!(
            InferenceRequest::parse(ApiKind::ChatCompletions, br#"{"model":"m"}"#),
            Err(RequestError::MissingField("messages"))
        );
    }

    #[test]
    fn api_kind_from_path() {
        assert_eq!(
            ApiKind::from_path("/v1/completions"),
            Some(ApiKind::Completions)
        );
        assert_eq!(
            ApiKind::from_path("/v1/chat/completions/"),
            Some(ApiKind::ChatCompletions)
        );
        assert_eq!(ApiKind::from_path("/v1/embeddings"), None);
    }
}
