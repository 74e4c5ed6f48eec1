//! Bad input gets a clear error and never disturbs other requests.

mod support;

use std::io::Read;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Epp, Sim, http, pd_config, sim_bin, tenant_prompt, wait_for};

fn post_raw(epp: &Epp, path: &str, body: Vec<u8>) -> (u16, Value) {
    let r = http()
        .post(epp.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .expect("proxy answers");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn malformed_missing_oversized_and_unknown_get_clear_errors() {
    let bin = sim_bin();
    let sim = Sim::start(&bin, &[]);
    let epp = Epp::start(&sim.address(), None);

    let (s, b) = post_raw(&epp, "/v1/completions", b"{\"model\": ".to_vec());
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not valid JSON"),
        "{b}"
    );

    let (s, b) = post_raw(&epp, "/v1/completions", br#"{"prompt":"x"}"#.to_vec());
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("`model`"),
        "{b}"
    );

    let (s, b) = post_raw(
        &epp,
        "/v1/chat/completions",
        br#"{"model":"test-model"}"#.to_vec(),
    );
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("`messages`"),
        "{b}"
    );

    let big = format!(
        r#"{{"model":"test-model","prompt":"{}"}}"#,
        "a".repeat(9 * 1024 * 1024)
    );
    let (s, _) = post_raw(&epp, "/v1/completions", big.into_bytes());
    assert_eq!(s, 413);

    // The model list is learned from the endpoints shortly after start.
    wait_for("unknown model refused", Duration::from_secs(10), || {
        let (s, b) = post_raw(
            &epp,
            "/v1/completions",
            serde_json::to_vec(&json!({"model": "other-model", "prompt": "x"})).ok()?,
        );
        (s == 404).then_some(b)
    });

    // Nothing of the above disturbed a good request.
    let (s, b) = post_raw(
        &epp,
        "/v1/chat/completions",
        serde_json::to_vec(&json!({"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}))
            .expect("json"),
    );
    assert_eq!(s, 200, "{b}");
    let models: Value = http()
        .get(epp.url("/v1/models"))
        .send()
        .and_then(|r| r.json())
        .expect("models");
    assert_eq!(models["data"][0]["id"], "test-model");
}

#[test]
fn no_decode_endpoint_is_a_503() {
    let epp = Epp::start("127.0.0.1:9=prefill", None);
    let r = http()
        .post(epp.url("/v1/completions"))
        .json(&json!({"model": "m", "prompt": "x"}))
        .send()
        .expect("proxy answers");
    assert_eq!(r.status().as_u16(), 503);
    let b: Value = r.json().expect("json error");
    assert_eq!(b["error"]["type"], "no_endpoint");
}

#[test]
fn a_backend_dying_mid_stream_ends_the_stream_with_an_error_event() {
    let bin = sim_bin();
    let mut dying = Sim::start(&bin, &["--inter-token-latency", "50ms"]);
    let epp = Epp::start(&dying.address(), None);
    let mut r = http()
        .post(epp.url("/v1/completions"))
        .json(&json!({"model": "test-model", "prompt": "tell me a story", "max_tokens": 200, "stream": true, "ignore_eos": true}))
        .send()
        .expect("proxy answers");
    assert_eq!(r.status().as_u16(), 200);
    let mut first = [0u8; 16];
    r.read_exact(&mut first)
        .expect("first bytes arrive before the end");
    dying.kill();
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    assert!(
        rest.contains("model server stream broke"),
        "in-band error: {rest}"
    );
    assert!(!rest.contains("[DONE]"));

    // The proxy is still healthy.
    let ok = http().get(epp.url("/health")).send().expect("health");
    assert!(ok.status().is_success());
}

#[test]
fn an_endpoint_that_stops_answering_is_routed_around() {
    let bin = sim_bin();
    let live = Sim::start(&bin, &[]);
    let mut dead = Sim::start(&bin, &[]);
    let epp = Epp::start_with(
        &format!("{},{}", live.address(), dead.address()),
        None,
        &["--metrics-staleness", "300ms"],
    );
    let metrics_for =
        |addr: &str| format!("llmd_epp_endpoint_waiting_requests{{endpoint=\"{addr}\"}}");
    wait_for("both endpoints scraped", Duration::from_secs(10), || {
        let m = epp.metrics_text();
        (m.contains(&metrics_for(&live.address())) && m.contains(&metrics_for(&dead.address())))
            .then_some(())
    });
    dead.kill();
    let body =
        serde_json::to_vec(&json!({"model": "test-model", "prompt": "hello", "max_tokens": 2}))
            .expect("json");
    // Once the dead endpoint's metrics are stale, every request lands on the live one.
    wait_for("dead endpoint dropped", Duration::from_secs(10), || {
        (0..10)
            .all(|_| post_raw(&epp, "/v1/completions", body.clone()).0 == 200)
            .then_some(())
    });
    for _ in 0..20 {
        let r = http()
            .post(epp.url("/v1/completions"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .expect("proxy answers");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()
                .get("x-gateway-destination-endpoint")
                .and_then(|v| v.to_str().ok()),
            Some(live.address().as_str())
        );
    }
}

#[test]
fn a_refused_connection_is_retried_on_another_endpoint() {
    let bin = sim_bin();
    let live = Sim::start(&bin, &[]);
    let mut dead = Sim::start(&bin, &[]);
    // Metrics stay "fresh" for a minute: only the retry can save these requests.
    let epp = Epp::start_with(
        &format!("{},{}", live.address(), dead.address()),
        None,
        &["--metrics-staleness", "60s"],
    );
    let gauge = |addr: &str| format!("llmd_epp_endpoint_waiting_requests{{endpoint=\"{addr}\"}}");
    wait_for("both endpoints scraped", Duration::from_secs(10), || {
        let m = epp.metrics_text();
        (m.contains(&gauge(&live.address())) && m.contains(&gauge(&dead.address()))).then_some(())
    });
    dead.kill();
    for i in 0..20 {
        let body = serde_json::to_vec(&json!({"model": "test-model", "prompt": format!("distinct prompt {i}"), "max_tokens": 2}))
            .expect("json");
        let (s, b) = post_raw(&epp, "/v1/completions", body);
        assert_eq!(s, 200, "request {i}: {b}");
    }
}

/// A P/D pool whose prefill pod fails every completion with `failure` (the
/// simulator's failure type), and the answer to one long prompt sent through it.
fn split_with_failing_prefiller(failure: &str) -> (Sim, Sim, Epp, reqwest::blocking::Response) {
    let bin = sim_bin();
    let prefill = Sim::start(
        &bin,
        &[
            "--failure-injection-rate",
            "100",
            "--failure-types",
            failure,
        ],
    );
    let decode = Sim::start(&bin, &[]);
    let epp = Epp::start(
        &format!("{}=prefill,{}=decode", prefill.address(), decode.address()),
        Some(&pd_config(32)),
    );
    let r = http()
        .post(epp.url("/v1/completions"))
        .json(&json!({"model": "test-model", "prompt": tenant_prompt(5, 1), "max_tokens": 2}))
        .send()
        .expect("proxy answers");
    (prefill, decode, epp, r)
}

#[test]
fn a_failed_prefill_leg_is_an_error_for_the_client_and_a_counted_pd_failure() {
    // The prefill pod answers its metrics but refuses every completion with a 400.
    let (prefill, _decode, epp, r) = split_with_failing_prefiller("invalid_request");
    assert_eq!(r.status(), 400, "the prefiller's 4xx keeps its status");
    let body: serde_json::Value = r.json().expect("an OpenAI error body");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("prefill on {}", prefill.address())),
        "{body}"
    );
    let metrics = epp.metrics_text();
    assert!(
        metrics.contains("llmd_epp_pd_failures_total{stage=\"prefill\",cause=\"error_status\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("llmd_epp_pd_splits_total 1"), "{metrics}");
}

#[test]
fn a_prefill_pod_that_cannot_take_the_request_leaves_the_prompt_to_the_decode_pod() {
    // The prefill pod answers every completion 503, as an overloaded engine or one
    // shutting down does: the client still gets its answer, computed by the decoder.
    let (_prefill, _decode, epp, r) = split_with_failing_prefiller("server_error");
    assert_eq!(r.status(), 200);
    let metrics = epp.metrics_text();
    assert!(
        metrics.contains("llmd_epp_pd_failures_total{stage=\"prefill\",cause=\"unavailable\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("llmd_epp_pd_splits_total 1"), "{metrics}");
}

#[test]
fn a_lora_adapter_the_engines_serve_is_routed_and_an_unknown_name_is_a_404() {
    // As the operator renders spec.model.adapters (the local stand-in turns vLLM's
    // name=path into the simulator's JSON form).
    let sim = Sim::start(
        &sim_bin(),
        &[
            "--max-loras",
            "2",
            "--lora-modules",
            r#"{"name":"sql-lora","path":"/adapters/sql"}"#,
        ],
    );
    let epp = Epp::start(&sim.address(), None);
    let complete = |model: &str| {
        post_raw(
            &epp,
            "/v1/completions",
            serde_json::to_vec(&json!({"model": model, "prompt": "select", "max_tokens": 2}))
                .unwrap_or_default(),
        )
    };
    // The model list (adapters included) is learned from the endpoints shortly after
    // start; until then nothing can be refused.
    wait_for("unknown adapter refused", Duration::from_secs(10), || {
        let (s, b) = complete("no-such-lora");
        (s == 404).then_some(b)
    });
    let (s, b) = complete("sql-lora");
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["model"], "sql-lora", "{b}");
}
