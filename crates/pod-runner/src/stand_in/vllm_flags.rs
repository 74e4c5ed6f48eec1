//! The vLLM -> llm-d-inference-sim argument table and the translation that
//! applies it, kept apart from the image table in [`super`] because it is the
//! part that grows with every vLLM release and has its own tests.
//!
//! The translation is one table ([`VLLM_FLAGS`]): a flag either maps to a
//! simulator flag (with its value checked), is validated and dropped, or is
//! dropped because the simulator has nothing like it. Unknown flags are dropped
//! too and reported, never fatal: a new vLLM flag must not take a pod down.

/// How a flag's value is checked and passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    /// A decimal integer.
    Int,
    /// A TCP port (1-65535).
    Port,
    /// Any single value.
    Text,
    /// One or more values up to the next flag (vLLM's `nargs='+'`).
    List,
    /// LoRA modules: `name=path` (rewritten as the simulator's JSON form) or JSON.
    LoraList,
    /// A JSON object.
    Json,
    /// No value: a switch.
    None,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    /// Passed to the simulator as this flag.
    Map(&'static str),
    /// Checked, then dropped.
    Validate,
    /// Dropped: no simulator equivalent (it simulates, it does not compute).
    Drop,
    /// vLLM's `--kv-events-config`: where the engine publishes KV events (see
    /// [`KvEvents`]).
    KvEvents,
}

/// vLLM flag -> what the simulator gets. The one place this mapping lives.
const VLLM_FLAGS: &[(&str, Action, Value)] = &[
    ("--model", Action::Map("--model"), Value::Text),
    (
        "--served-model-name",
        Action::Map("--served-model-name"),
        Value::List,
    ),
    ("--port", Action::Map("--port"), Value::Port),
    (
        "--max-model-len",
        Action::Map("--max-model-len"),
        Value::Int,
    ),
    ("--max-num-seqs", Action::Map("--max-num-seqs"), Value::Int),
    (
        "--data-parallel-size",
        Action::Map("--data-parallel-size"),
        Value::Int,
    ),
    ("-dp", Action::Map("--data-parallel-size"), Value::Int),
    ("--block-size", Action::Map("--block-size"), Value::Int),
    (
        "--num-gpu-blocks-override",
        Action::Map("--kv-cache-size"),
        Value::Int,
    ),
    (
        "--lora-modules",
        Action::Map("--lora-modules"),
        Value::LoraList,
    ),
    ("--max-loras", Action::Map("--max-loras"), Value::Int),
    ("--seed", Action::Map("--seed"), Value::Int),
    (
        "--enable-request-id-headers",
        Action::Map("--enable-request-id-headers"),
        Value::None,
    ),
    // vLLM logs each request it receives (with its id); the simulator its HTTP
    // requests, headers included.
    (
        "--enable-log-requests",
        Action::Map("--log-http"),
        Value::None,
    ),
    // The simulator handles P/D from the request's kv_transfer_params.
    ("--kv-transfer-config", Action::Validate, Value::Json),
    ("--kv-events-config", Action::KvEvents, Value::Json),
    ("--tensor-parallel-size", Action::Drop, Value::Text),
    ("-tp", Action::Drop, Value::Text),
    ("--pipeline-parallel-size", Action::Drop, Value::Text),
    ("-pp", Action::Drop, Value::Text),
    ("--data-parallel-size-local", Action::Drop, Value::Text),
    ("--data-parallel-address", Action::Drop, Value::Text),
    ("--data-parallel-rpc-port", Action::Drop, Value::Text),
    ("--data-parallel-start-rank", Action::Drop, Value::Text),
    ("--enable-prefix-caching", Action::Drop, Value::None),
    ("--no-enable-prefix-caching", Action::Drop, Value::None),
    ("--enable-chunked-prefill", Action::Drop, Value::None),
    ("--enforce-eager", Action::Drop, Value::None),
    ("--trust-remote-code", Action::Drop, Value::None),
    ("--enable-lora", Action::Drop, Value::None),
    ("--disable-log-requests", Action::Drop, Value::None),
    ("--disable-log-stats", Action::Drop, Value::None),
    ("--load-format", Action::Drop, Value::Text),
    ("--gpu-memory-utilization", Action::Drop, Value::Text),
    ("--shutdown-timeout", Action::Drop, Value::Text),
    ("--dtype", Action::Drop, Value::Text),
    ("--kv-cache-dtype", Action::Drop, Value::Text),
    ("--quantization", Action::Drop, Value::Text),
    ("--max-num-batched-tokens", Action::Drop, Value::Text),
    ("--max-lora-rank", Action::Drop, Value::Text),
    ("--download-dir", Action::Drop, Value::Text),
    ("--tokenizer", Action::Drop, Value::Text),
    ("--revision", Action::Drop, Value::Text),
    ("--host", Action::Drop, Value::Text),
    ("--swap-space", Action::Drop, Value::Text),
    ("--uvicorn-log-level", Action::Drop, Value::Text),
];

/// The simulator's arguments for a vLLM container, and what was left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Translation {
    pub args: Vec<String>,
    /// Known vLLM flags with no simulator meaning (as given, with their values).
    pub dropped: Vec<String>,
    /// Flags and words the table does not know (dropped).
    pub unknown: Vec<String>,
    /// The ports the engine binds for KV events (`tcp://*:<port>`): the simulator
    /// can only connect out, so the runner binds them in the pod and relays.
    pub kv_events: Option<KvEventPorts>,
}

/// The ports a vLLM pod binds for its KV events: `endpoint` and, when configured,
/// `replay_endpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvEventPorts {
    pub events: u16,
    pub replay: Option<u16>,
}

/// What vLLM's `--kv-events-config` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KvEvents {
    Off,
    /// Bind `tcp://*:<port>` (llm-d's layout: the router dials every pod).
    Bind(KvEventPorts),
    /// Connect out to this endpoint (the simulator does that itself).
    Connect(String),
}

/// vLLM's defaults: events off; with events on, the ZeroMQ publisher on
/// `tcp://*:5557`. vLLM binds when the host is a wildcard and connects otherwise.
fn kv_events(flag: &str, json: &str) -> Result<KvEvents, TranslateError> {
    let invalid = |reason: String| TranslateError::InvalidJson {
        flag: flag.to_string(),
        reason,
    };
    let config: serde_json::Value =
        serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
    let enabled = config
        .get("enable_kv_cache_events")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let publisher = config
        .get("publisher")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("zmq");
    if !enabled || publisher != "zmq" {
        return Ok(KvEvents::Off);
    }
    let endpoint = config
        .get("endpoint")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("tcp://*:5557");
    let (host, port) = tcp_endpoint(endpoint).map_err(invalid)?;
    if !wildcard(host) {
        return Ok(KvEvents::Connect(endpoint.to_string()));
    }
    // A replay endpoint is simulated where the pod binds it, as the events port is.
    let replay = match config
        .get("replay_endpoint")
        .and_then(serde_json::Value::as_str)
    {
        None => None,
        Some(replay) => {
            let (host, port) = tcp_endpoint(replay).map_err(invalid)?;
            wildcard(host).then_some(port)
        }
    };
    Ok(KvEvents::Bind(KvEventPorts {
        events: port,
        replay,
    }))
}

/// The host and port of `tcp://host:port`.
fn tcp_endpoint(endpoint: &str) -> Result<(&str, u16), String> {
    let address = endpoint
        .strip_prefix("tcp://")
        .ok_or_else(|| format!("endpoint {endpoint:?}: only tcp:// is simulated"))?;
    address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok().filter(|p| *p > 0)?)))
        .ok_or_else(|| format!("endpoint {endpoint:?} has no port"))
}

/// vLLM binds when the host is a wildcard and connects otherwise.
fn wildcard(host: &str) -> bool {
    matches!(host, "*" | "0.0.0.0" | "::" | "[::]")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranslateError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("{flag} {value:?} is not an integer")]
    NotInteger { flag: String, value: String },
    #[error("{flag} {value:?} is not a port (1-65535)")]
    NotPort { flag: String, value: String },
    #[error("{flag} is not a JSON object: {reason}")]
    InvalidJson { flag: String, reason: String },
    #[error("{flag} {value:?} is neither name=path nor JSON")]
    InvalidLora { flag: String, value: String },
    #[error("no model: give --model or vLLM's positional model argument")]
    NoModel,
}

fn is_flag(token: &str) -> bool {
    token.starts_with('-') && token.len() > 1 && token.parse::<f64>().is_err()
}

/// Translate a vLLM command line (`vllm serve <model> --flag ...`; `command` as the
/// container gives it, then `args`) into simulator arguments, with `extra` (the
/// config's defaults) first unless the container sets the same flag.
pub fn translate_vllm(
    command: &[String],
    args: &[String],
    extra: &[String],
) -> Result<Translation, TranslateError> {
    let mut out = Translation::default();
    // The image's entrypoint is replaced; with `vllm serve <model>` the words after
    // `serve` are vLLM's arguments.
    let mut tokens: Vec<&str> = match command.iter().position(|t| t == "serve") {
        Some(i) => command[i + 1..].iter().map(String::as_str).collect(),
        None => Vec::new(),
    };
    tokens.extend(args.iter().map(String::as_str));
    let mut translated: Vec<String> = Vec::new();
    let mut model_seen = false;
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        i += 1;
        if !is_flag(token) {
            if !model_seen {
                translated.extend(["--model".to_string(), token.to_string()]);
                model_seen = true;
            } else {
                out.unknown.push(token.to_string());
            }
            continue;
        }
        let (name, inline) = match token.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (token, None),
        };
        let Some((_, action, kind)) = VLLM_FLAGS.iter().find(|(f, _, _)| *f == name) else {
            // Unknown: a following word is taken to be its value.
            let mut text = token.to_string();
            if inline.is_none() && i < tokens.len() && !is_flag(tokens[i]) {
                text = format!("{token} {}", tokens[i]);
                i += 1;
            }
            out.unknown.push(text);
            continue;
        };
        let values = take_values(name, *kind, inline, &tokens, &mut i)?;
        let values = check(name, *kind, values)?;
        match action {
            Action::Map(to) => {
                if *to == "--model" {
                    model_seen = true;
                }
                translated.push((*to).to_string());
                translated.extend(values);
            }
            Action::KvEvents => match kv_events(name, &values.concat())? {
                KvEvents::Off => out.dropped.push(format!("{name} {}", values.concat())),
                target => {
                    // vLLM publishes every engine step; the simulator holds events
                    // for up to a second unless each is its own batch.
                    translated.extend(
                        [
                            "--enable-kvcache",
                            "--use-vllm-map-event-format",
                            "--event-batch-size",
                            "1",
                        ]
                        .map(String::from),
                    );
                    match target {
                        KvEvents::Connect(endpoint) => {
                            translated.extend(["--zmq-endpoint".to_string(), endpoint]);
                        }
                        KvEvents::Bind(ports) => out.kv_events = Some(ports),
                        KvEvents::Off => {}
                    }
                }
            },
            Action::Validate | Action::Drop => {
                let mut text = name.to_string();
                for v in &values {
                    text.push(' ');
                    text.push_str(v);
                }
                out.dropped.push(text);
            }
        }
    }
    if !model_seen {
        return Err(TranslateError::NoModel);
    }
    out.args = merge_defaults(extra, translated);
    Ok(out)
}

fn take_values(
    name: &str,
    kind: Value,
    inline: Option<String>,
    tokens: &[&str],
    i: &mut usize,
) -> Result<Vec<String>, TranslateError> {
    if kind == Value::None {
        return Ok(inline.into_iter().collect());
    }
    let mut values: Vec<String> = inline.into_iter().collect();
    let many = matches!(kind, Value::List | Value::LoraList);
    while *i < tokens.len() && !is_flag(tokens[*i]) && (values.is_empty() || many) {
        values.push(tokens[*i].to_string());
        *i += 1;
    }
    if values.is_empty() {
        return Err(TranslateError::MissingValue(name.to_string()));
    }
    Ok(values)
}

fn check(name: &str, kind: Value, values: Vec<String>) -> Result<Vec<String>, TranslateError> {
    let flag = || name.to_string();
    match kind {
        Value::Int => {
            for v in &values {
                if v.trim().parse::<i64>().is_err() {
                    return Err(TranslateError::NotInteger {
                        flag: flag(),
                        value: v.clone(),
                    });
                }
            }
            Ok(values)
        }
        Value::Port => {
            for v in &values {
                if !v.trim().parse::<u16>().is_ok_and(|p| p > 0) {
                    return Err(TranslateError::NotPort {
                        flag: flag(),
                        value: v.clone(),
                    });
                }
            }
            Ok(values)
        }
        Value::Json => {
            for v in &values {
                match serde_json::from_str::<serde_json::Value>(v) {
                    Ok(serde_json::Value::Object(_)) => {}
                    Ok(_) => {
                        return Err(TranslateError::InvalidJson {
                            flag: flag(),
                            reason: "not an object".into(),
                        });
                    }
                    Err(e) => {
                        return Err(TranslateError::InvalidJson {
                            flag: flag(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
            Ok(values)
        }
        Value::LoraList => values.into_iter().map(|v| lora_module(name, v)).collect(),
        Value::Text | Value::List | Value::None => Ok(values),
    }
}

/// vLLM takes `name=path` or a JSON object; the simulator only JSON.
fn lora_module(flag: &str, value: String) -> Result<String, TranslateError> {
    if value.trim_start().starts_with('{') {
        return match serde_json::from_str::<serde_json::Value>(&value) {
            Ok(serde_json::Value::Object(_)) => Ok(value),
            _ => Err(TranslateError::InvalidLora {
                flag: flag.to_string(),
                value,
            }),
        };
    }
    match value.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok(serde_json::json!({"name": name, "path": path}).to_string())
        }
        _ => Err(TranslateError::InvalidLora {
            flag: flag.to_string(),
            value,
        }),
    }
}

/// Flag name of a token (`--a=b` -> `--a`).
fn flag_name(token: &str) -> &str {
    token.split_once('=').map_or(token, |(n, _)| n)
}

/// `extra` groups (a flag and the words after it) whose flag the container does
/// not set, then `--force-dummy-tokenizer`, then the container's own arguments.
fn merge_defaults(extra: &[String], translated: Vec<String>) -> Vec<String> {
    let set: Vec<&str> = translated
        .iter()
        .filter(|t| is_flag(t))
        .map(|t| flag_name(t))
        .collect();
    let mut args = Vec::new();
    let mut keep = true;
    for token in extra {
        if is_flag(token) {
            keep =
                !set.contains(&flag_name(token)) && flag_name(token) != "--force-dummy-tokenizer";
        }
        if keep {
            args.push(token.clone());
        }
    }
    // The simulator must never look for a tokenizer service.
    args.push("--force-dummy-tokenizer".to_string());
    args.extend(translated);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|t| t.to_string()).collect()
    }

    fn run(args: &[&str]) -> Result<Translation, TranslateError> {
        translate_vllm(&[], &s(args), &[])
    }

    fn args_of(args: &[&str]) -> Vec<String> {
        run(args).expect("translates").args
    }

    #[test]
    fn every_mapped_flag_reaches_the_simulator() {
        let out = args_of(&[
            "--model",
            "m",
            "--served-model-name",
            "a",
            "b",
            "--port",
            "8000",
            "--max-model-len",
            "4096",
            "--max-num-seqs",
            "8",
            "--data-parallel-size",
            "2",
            "--block-size",
            "32",
            "--max-loras",
            "2",
            "--seed",
            "7",
        ]);
        assert_eq!(
            out,
            s(&[
                "--force-dummy-tokenizer",
                "--model",
                "m",
                "--served-model-name",
                "a",
                "b",
                "--port",
                "8000",
                "--max-model-len",
                "4096",
                "--max-num-seqs",
                "8",
                "--data-parallel-size",
                "2",
                "--block-size",
                "32",
                "--max-loras",
                "2",
                "--seed",
                "7",
            ])
        );
    }

    #[test]
    fn gpu_block_override_becomes_the_kv_cache_size() {
        let out = args_of(&["--model", "m", "--num-gpu-blocks-override", "512"]);
        assert!(out.ends_with(&s(&["--kv-cache-size", "512"])), "{out:?}");
    }

    #[test]
    fn request_id_and_request_log_switches_reach_the_simulator() {
        let out = args_of(&[
            "--model",
            "m",
            "--enable-request-id-headers",
            "--enable-log-requests",
        ]);
        assert!(
            out.contains(&"--enable-request-id-headers".to_string()),
            "{out:?}"
        );
        assert!(out.contains(&"--log-http".to_string()), "{out:?}");
    }

    #[test]
    fn flag_equals_value_is_the_same_as_two_words() {
        assert_eq!(
            args_of(&["--model=m", "--port=8001"]),
            args_of(&["--model", "m", "--port", "8001"])
        );
    }

    #[test]
    fn positional_model_after_serve_is_the_model() {
        let t =
            translate_vllm(&s(&["vllm", "serve", "org/m"]), &s(&["--port", "9"]), &[]).expect("ok");
        assert_eq!(
            t.args,
            s(&["--force-dummy-tokenizer", "--model", "org/m", "--port", "9"])
        );
        let t = run(&["org/m", "--dtype", "auto"]).expect("ok");
        assert!(t.args.ends_with(&s(&["--model", "org/m"])));
    }

    #[test]
    fn non_integer_port_or_length_is_an_error() {
        assert_eq!(
            run(&["--model", "m", "--port", "http"]),
            Err(TranslateError::NotPort {
                flag: "--port".into(),
                value: "http".into()
            })
        );
        assert_eq!(
            run(&["--model", "m", "--port", "70000"]).map(|_| ()),
            Err(TranslateError::NotPort {
                flag: "--port".into(),
                value: "70000".into()
            })
        );
        assert_eq!(
            run(&["--model", "m", "--max-model-len=16k"]),
            Err(TranslateError::NotInteger {
                flag: "--max-model-len".into(),
                value: "16k".into()
            })
        );
        assert_eq!(
            run(&["--model", "m", "--port"]),
            Err(TranslateError::MissingValue("--port".into()))
        );
    }

    #[test]
    fn kv_transfer_config_is_validated_then_dropped() {
        let t = run(&[
            "--model",
            "m",
            "--kv-transfer-config",
            r#"{"kv_connector":"NixlConnector","kv_role":"kv_both"}"#,
        ])
        .expect("valid json");
        assert!(!t.args.iter().any(|a| a.contains("kv_connector")));
        assert_eq!(t.dropped.len(), 1);
        assert!(matches!(
            run(&[
                "--model",
                "m",
                "--kv-transfer-config",
                "$(LLMD_KV_TRANSFER_CONFIG)"
            ]),
            Err(TranslateError::InvalidJson { .. })
        ));
        assert!(matches!(
            run(&["--model", "m", "--kv-transfer-config=[1]"]),
            Err(TranslateError::InvalidJson { .. })
        ));
    }

    #[test]
    fn kv_events_bound_on_the_pod_are_forwarded_and_connected_ones_passed_on() {
        let bind = run(&[
            "--model",
            "m",
            "--kv-events-config",
            r#"{"enable_kv_cache_events":true,"publisher":"zmq","endpoint":"tcp://*:5556","topic":"kv@10.0.0.1:8000@m"}"#,
        ])
        .expect("valid");
        assert_eq!(
            bind.kv_events,
            Some(KvEventPorts {
                events: 5556,
                replay: None
            })
        );
        assert!(
            bind.args
                .contains(&"--use-vllm-map-event-format".to_string())
        );
        assert!(!bind.args.contains(&"--zmq-endpoint".to_string()));
        // The replay endpoint, bound on the pod too, is relayed with the events.
        let replay = run(&[
            "--model",
            "m",
            "--kv-events-config",
            r#"{"enable_kv_cache_events":true,"endpoint":"tcp://*:5556","replay_endpoint":"tcp://*:5557"}"#,
        ])
        .expect("valid");
        assert_eq!(
            replay.kv_events,
            Some(KvEventPorts {
                events: 5556,
                replay: Some(5557)
            })
        );
        assert!(matches!(
            run(&[
                "--model",
                "m",
                "--kv-events-config",
                r#"{"enable_kv_cache_events":true,"endpoint":"tcp://*:5556","replay_endpoint":"ipc:///x"}"#,
            ]),
            Err(TranslateError::InvalidJson { .. })
        ));
        let connect = run(&[
            "--model",
            "m",
            r#"--kv-events-config={"enable_kv_cache_events":true,"endpoint":"tcp://epp.ns:5557"}"#,
        ])
        .expect("valid");
        assert_eq!(connect.kv_events, None);
        let at = connect.args.iter().position(|a| a == "--zmq-endpoint");
        assert_eq!(
            at.and_then(|i| connect.args.get(i + 1)).map(String::as_str),
            Some("tcp://epp.ns:5557")
        );
        let off = run(&[
            "--model",
            "m",
            "--kv-events-config",
            r#"{"enable_kv_cache_events":false}"#,
        ])
        .expect("valid");
        assert_eq!((off.kv_events, off.dropped.len()), (None, 1));
        for bad in [
            r#"{"enable_kv_cache_events":true,"endpoint":"ipc:///tmp/x"}"#,
            r#"{"enable_kv_cache_events":true,"endpoint":"tcp://*:0"}"#,
            r#"{"enable_kv_cache_events":true,"endpoint":"tcp://*"}"#,
        ] {
            assert!(
                matches!(
                    run(&["--model", "m", "--kv-events-config", bad]),
                    Err(TranslateError::InvalidJson { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn compute_only_flags_are_dropped_and_listed() {
        let t = run(&[
            "--model",
            "m",
            "--tensor-parallel-size",
            "2",
            "--enable-prefix-caching",
            "--gpu-memory-utilization=0.9",
            "--dtype",
            "bfloat16",
            "--load-format",
            "runai_streamer",
            "--port",
            "8000",
        ])
        .expect("ok");
        assert_eq!(
            t.args,
            s(&["--force-dummy-tokenizer", "--model", "m", "--port", "8000"])
        );
        assert_eq!(
            t.dropped,
            s(&[
                "--tensor-parallel-size 2",
                "--enable-prefix-caching",
                "--gpu-memory-utilization 0.9",
                "--dtype bfloat16",
                "--load-format runai_streamer",
            ])
        );
    }

    #[test]
    fn unknown_flags_are_dropped_not_fatal() {
        let t = run(&[
            "--model",
            "m",
            "--brand-new",
            "x",
            "--switch",
            "--port",
            "1",
        ])
        .expect("ok");
        assert_eq!(t.unknown, s(&["--brand-new x", "--switch"]));
        assert!(t.args.ends_with(&s(&["--port", "1"])));
    }

    #[test]
    fn lora_modules_name_path_become_json() {
        let out = args_of(&[
            "--model",
            "m",
            "--lora-modules",
            "a=/l/a",
            r#"{"name":"b","path":"/l/b"}"#,
        ]);
        let i = out
            .iter()
            .position(|a| a == "--lora-modules")
            .expect("flag");
        assert_eq!(out[i + 1], r#"{"name":"a","path":"/l/a"}"#);
        assert_eq!(out[i + 2], r#"{"name":"b","path":"/l/b"}"#);
        assert!(matches!(
            run(&["--model", "m", "--lora-modules", "nopath"]),
            Err(TranslateError::InvalidLora { .. })
        ));
    }

    #[test]
    fn missing_model_is_an_error() {
        assert_eq!(run(&["--port", "8000"]), Err(TranslateError::NoModel));
    }

    #[test]
    fn container_flags_override_configured_defaults() {
        let extra = s(&[
            "--enable-kvcache",
            "--kv-cache-size",
            "1024",
            "--block-size",
            "16",
            "--inter-token-latency",
            "5ms",
        ]);
        let t = translate_vllm(
            &[],
            &s(&[
                "--model",
                "m",
                "--num-gpu-blocks-override=64",
                "--block-size",
                "32",
            ]),
            &extra,
        )
        .expect("ok");
        assert_eq!(
            t.args,
            s(&[
                "--enable-kvcache",
                "--inter-token-latency",
                "5ms",
                "--force-dummy-tokenizer",
                "--model",
                "m",
                "--kv-cache-size",
                "64",
                "--block-size",
                "32",
            ])
        );
    }
}
