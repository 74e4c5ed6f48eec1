//! The proxy against real llm-d-inference-sim processes: prefix routing, the P/D
//! two-step and live config reload.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::recorder::{self, Recorder};
use support::{Epp, Sim, http, pd_config, sim_bin, tenant_prompt, wait_for};

fn complete(epp: &Epp, prompt: &str) -> reqwest::blocking::Response {
    http()
        .post(epp.url("/v1/completions"))
        .json(&json!({"model": "test-model", "prompt": prompt, "max_tokens": 4}))
        .send()
        .expect("proxy answers")
}

fn header(r: &reqwest::blocking::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn requests_sharing_a_prefix_go_to_the_endpoint_that_holds_it() {
    let bin = sim_bin();
    let sims: Vec<Sim> = (0..3).map(|_| Sim::start(&bin, &[])).collect();
    let list: Vec<String> = sims.iter().map(Sim::address).collect();
    let epp = Epp::start(&list.join(","), None);

    for tenant in 0..3 {
        let first = complete(&epp, &tenant_prompt(tenant, 0));
        assert!(first.status().is_success(), "status {}", first.status());
        let holder = header(&first, "x-gateway-destination-endpoint");
        let pod = header(&first, "x-inference-pod");
        assert!(list.contains(&holder), "{holder} not in the pool");
        for q in 1..6 {
            let r = complete(&epp, &tenant_prompt(tenant, q));
            assert_eq!(
                header(&r, "x-gateway-destination-endpoint"),
                holder,
                "tenant {tenant} q {q}"
            );
            assert_eq!(header(&r, "x-inference-pod"), pod, "the sim that served it");
            let body: Value = r.json().expect("json");
            let cached = body["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0);
            assert!(cached > 0, "the engine reused the prefix: {body}");
        }
    }
    let metrics = epp.metrics_text();
    assert!(
        metrics.contains("llmd_epp_scheduling_decisions_total"),
        "{metrics}"
    );
    assert!(metrics.contains("llmd_epp_prefix_match_ratio_bucket"));
}

#[test]
fn an_explanation_asked_for_comes_back_in_a_response_header() {
    let bin = sim_bin();
    let prefill = Sim::start(&bin, &["--kv-cache-transfer-latency", "1ms"]);
    let decoders: Vec<Sim> = (0..2)
        .map(|_| Sim::start(&bin, &["--kv-cache-transfer-latency", "1ms"]))
        .collect();
    let epp = Epp::start(
        &format!(
            "{}=prefill,{}=decode,{}=decode",
            prefill.address(),
            decoders[0].address(),
            decoders[1].address()
        ),
        Some(&pd_config(32)),
    );
    // Every endpoint scraped once, so both decoders are candidates.
    wait_for("all endpoints scraped", Duration::from_secs(10), || {
        let m = epp.metrics_text();
        [&prefill, &decoders[0], &decoders[1]]
            .iter()
            .all(|s| {
                m.contains(&format!(
                    "llmd_epp_endpoint_waiting_requests{{endpoint=\"{}\"}}",
                    s.address()
                ))
            })
            .then_some(())
    });
    let request = || {
        http()
            .post(epp.url("/v1/completions"))
            .json(&json!({"model": "test-model", "prompt": tenant_prompt(3, 1), "max_tokens": 3, "stream": true}))
    };
    let r = request()
        .header("x-llmd-explain", "true")
        .send()
        .expect("proxy answers");
    assert!(r.status().is_success(), "status {}", r.status());
    let json = header(&r, "x-llmd-explain");
    assert!(json.len() <= 4096 && !json.contains('\n'), "{json}");
    let v: Value = serde_json::from_str(&json).expect("valid JSON");
    let decode = header(&r, "x-gateway-destination-endpoint");
    assert_eq!(v["decode"]["endpoint"], decode.as_str());
    let candidates = v["decodeCandidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 1, "the other decoder: {json}");
    assert_ne!(candidates[0]["endpoint"], decode.as_str());
    assert_eq!(
        v["decode"]["scores"]["queue-scorer"]["weight"],
        json!(2.0),
        "{json}"
    );
    assert_eq!(v["prefill"]["endpoint"], prefill.address().as_str());
    assert_eq!(v["pd"]["threshold"], 32);
    assert_eq!(v["pd"]["disaggregated"], true);
    assert!(r.text().expect("stream").contains("[DONE]"));

    // The same request again: aggregated now, and no explanation unless asked.
    let r = request().send().expect("proxy answers");
    assert!(r.status().is_success());
    assert!(r.headers().get("x-llmd-explain").is_none());
    let r = request()
        .header("x-llmd-explain", "true")
        .send()
        .expect("proxy answers");
    let v: Value = serde_json::from_str(&header(&r, "x-llmd-explain")).expect("valid JSON");
    assert_eq!(v["pd"]["disaggregated"], false, "{v}");
    assert!(v.get("prefill").is_none());
    assert_eq!(v["decode"]["prefixMatch"], json!(1.0), "{v}");
}

fn prefill_count(sim: &Sim) -> f64 {
    let text = http()
        .get(format!("http://{}/metrics", sim.address()))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("vllm:request_prefill_time_seconds_count"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn long_uncached_prompts_take_the_pd_two_step_through_the_proxy() {
    let bin = sim_bin();
    let prefill = Sim::start(&bin, &["--kv-cache-transfer-latency", "1ms"]);
    let decode = Sim::start(&bin, &["--kv-cache-transfer-latency", "1ms"]);
    let epp = Epp::start(
        &format!("{}=prefill,{}=decode", prefill.address(), decode.address()),
        Some(&pd_config(32)),
    );

    // Streamed, so the decode side's stream setting is restored after prefill.
    let r = http()
        .post(epp.url("/v1/completions"))
        .json(&json!({"model": "test-model", "prompt": tenant_prompt(1, 1), "max_tokens": 5, "stream": true}))
        .send()
        .expect("proxy answers");
    assert!(r.status().is_success(), "status {}", r.status());
    assert_eq!(header(&r, "x-prefiller-host-port"), prefill.address());
    assert_eq!(
        header(&r, "x-gateway-destination-endpoint"),
        decode.address()
    );
    assert_eq!(header(&r, "x-inference-pod"), decode.pod_name());
    let text = r.text().expect("stream body");
    assert!(text.contains("data: [DONE]"), "SSE passed through: {text}");
    assert_eq!(prefill_count(&prefill), 1.0, "prefiller ran the prefill");

    // The decode endpoint now holds the prefix: a repeat stays aggregated.
    let r = complete(&epp, &tenant_prompt(1, 1));
    assert!(r.status().is_success());
    assert_eq!(header(&r, "x-prefiller-host-port"), "");
    assert_eq!(prefill_count(&prefill), 1.0);

    // A short prompt is below nonCachedTokens.
    let r = complete(&epp, "hi there");
    assert_eq!(header(&r, "x-prefiller-host-port"), "");

    let metrics = epp.metrics_text();
    assert!(
        metrics.contains("llmd_epp_pd_decisions_total{outcome=\"disaggregated\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_prefiller_named_by_the_client_is_never_contacted() {
    let engine = Recorder::start();
    let outsider = Recorder::start();
    let epp = Epp::start(&format!("{}=decode", engine.address), None);
    for named in [
        outsider.address.clone(),
        engine.address.clone(),
        "169.254.169.254:80".into(),
    ] {
        let r = http()
            .post(epp.url("/v1/completions"))
            .header("x-prefiller-host-port", named.as_str())
            .json(&json!({"model": "test-model", "prompt": "hello", "max_tokens": 2}))
            .send()
            .expect("proxy answers");
        assert_eq!(r.status().as_u16(), 200, "{named}");
        assert!(
            r.headers().get("x-prefiller-host-port").is_none(),
            "{named}"
        );
    }
    assert!(
        outsider.seen().is_empty(),
        "the outsider was never contacted"
    );
    let seen = engine.seen();
    assert_eq!(seen.len(), 3, "each request served aggregated, once");
    assert!(
        seen.iter()
            .all(|s| s.body.get("kv_transfer_params").is_none())
    );
}

#[test]
fn a_clients_kv_transfer_params_never_reach_an_engine() {
    let engine = Recorder::start();
    let epp = Epp::start(&format!("{}=decode", engine.address), None);
    let r = http()
        .post(epp.url("/v1/completions"))
        .json(&json!({
            "model": "test-model", "prompt": "hello", "max_tokens": 2,
            "kv_transfer_params": {"do_remote_prefill": true, "remote_engine_id": "x",
                                   "remote_host": "10.9.9.9", "remote_port": 5600,
                                   "remote_block_ids": [1, 2]},
        }))
        .send()
        .expect("proxy answers");
    assert_eq!(r.status().as_u16(), 200);
    let seen = engine.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body,
        json!({"model": "test-model", "prompt": "hello", "max_tokens": 2})
    );
}

#[test]
fn both_pd_legs_carry_one_fresh_request_id() {
    let prefill = Recorder::start();
    let decode = Recorder::start();
    let epp = Epp::start(
        &format!("{}=prefill,{}=decode", prefill.address, decode.address),
        Some(&pd_config(32)),
    );
    let r = http()
        .post(epp.url("/v1/completions"))
        .header("x-request-id", "client-9")
        .json(&json!({"model": "test-model", "prompt": "word ".repeat(200), "max_tokens": 2}))
        .send()
        .expect("proxy answers");
    assert_eq!(r.status().as_u16(), 200);
    let (p, d) = (prefill.seen(), decode.seen());
    assert_eq!(
        (p.len(), d.len()),
        (1, 1),
        "one prefill leg, one decode leg"
    );
    let id = |s: &recorder::Seen, name: &str| {
        s.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let leg_id = id(&p[0], "x-request-id").expect("prefill leg id");
    assert_eq!(id(&d[0], "x-request-id").as_deref(), Some(leg_id.as_str()));
    assert_ne!(leg_id, "client-9");
    for leg in [&p[0], &d[0]] {
        assert_eq!(id(leg, "x-client-request-id").as_deref(), Some("client-9"));
    }
    assert_eq!(
        d[0].body.pointer("/kv_transfer_params/remote_engine_id"),
        Some(&json!("recorder")),
        "the decode leg carries the prefiller's params"
    );
}

#[test]
fn config_changes_apply_live_and_invalid_ones_are_refused() {
    let bin = sim_bin();
    let sims: Vec<Sim> = (0..2).map(|_| Sim::start(&bin, &[])).collect();
    let list: Vec<String> = sims.iter().map(Sim::address).collect();
    let default = llmd_api::endpoint_picker_config::DEFAULT_CONFIG;
    let epp = Epp::start(&list.join(","), Some(default));

    let holder = header(
        &complete(&epp, &tenant_prompt(7, 0)),
        "x-gateway-destination-endpoint",
    );

    let reweighted = default.replace("weight: 3", "weight: 5");
    epp.write_config(&reweighted);
    wait_for("reload applied", Duration::from_secs(10), || {
        epp.metrics_text()
            .contains("llmd_epp_config_reloads_total{outcome=\"applied\"} 2")
            .then_some(())
    });
    // The prefix index survived the reload.
    let r = complete(&epp, &tenant_prompt(7, 1));
    assert_eq!(header(&r, "x-gateway-destination-endpoint"), holder);

    epp.write_config("apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\nplugins: [{type: no-such-scorer}]\n");
    wait_for("reload rejected", Duration::from_secs(10), || {
        epp.metrics_text()
            .contains("llmd_epp_config_reloads_total{outcome=\"rejected\"} 1")
            .then_some(())
    });
    // The last good config stays in force: still routing, still to the holder.
    let r = complete(&epp, &tenant_prompt(7, 2));
    assert!(r.status().is_success());
    assert_eq!(header(&r, "x-gateway-destination-endpoint"), holder);
}

#[test]
fn ttft_and_inter_token_latency_are_measured_on_the_proxy_path() {
    let bin = sim_bin();
    let sim = Sim::start(&bin, &[]);
    let epp = Epp::start(&sim.address(), None);
    let text = http()
        .post(epp.url("/v1/completions"))
        .json(
            &json!({"model": "test-model", "prompt": "hello there", "max_tokens": 6,
                      "stream": true, "ignore_eos": true}),
        )
        .send()
        .and_then(|r| r.text())
        .expect("stream");
    assert!(text.contains("[DONE]"), "{text}");
    let metrics = epp.metrics_text();
    let count = |family: &str| -> u64 {
        let prefix = format!("llmd_epp_{family}_count{{frontend=\"proxy\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(count("time_to_first_token_seconds"), 1, "{metrics}");
    assert!(count("inter_token_latency_seconds") >= 1, "{metrics}");
    assert_eq!(count("request_duration_seconds"), 1);
}
