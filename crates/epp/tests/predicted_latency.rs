//! Routing by predicted latency against real llm-d-inference-sim processes: the
//! models learn which pod prefills faster, and requests with a TTFT objective are
//! answered with the predicted and observed TTFT.

mod support;

use llmd_api::endpoint_picker_config::EndpointPickerConfig;
use llmd_api::{RouterSpec, ScorerWeights};
use serde_json::json;
use std::time::Duration;

use support::{Epp, Sim, http, sim_bin, wait_for};

/// The latency-scorer alone.
fn latency_config() -> String {
    let weights = ScorerWeights {
        prefix_cache: 0.0,
        queue: 0.0,
        kv_cache_utilization: 0.0,
        latency: 1.0,
        ..ScorerWeights::default()
    };
    EndpointPickerConfig::for_router(&RouterSpec::default(), &weights, false).to_yaml()
}

/// A prompt of about `words` tokens sharing nothing with any other.
fn unique_prompt(i: usize, words: usize) -> String {
    format!(
        "unique request {i}: {}",
        "alpha beta gamma delta ".repeat(words / 4)
    )
}

fn complete(epp: &Epp, prompt: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
    let mut r = http()
        .post(epp.url("/v1/completions"))
        .json(&json!({"model": "test-model", "prompt": prompt, "max_tokens": 2}));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().expect("proxy answers")
}

fn header(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn millis(r: &reqwest::blocking::Response, name: &str) -> f64 {
    header(r, name)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name} missing or not a number: {:?}", r.headers()))
}

#[test]
fn the_faster_pod_wins_long_prompts_once_the_models_have_learned() {
    let bin = sim_bin();
    let fast = Sim::start(&bin, &[]);
    // Ten times slower per prompt token (2 ms instead of 0.2 ms).
    let slow = Sim::start(&bin, &["--prefill-time-per-token", "2ms"]);
    let epp = Epp::start(
        &format!("{},{}", fast.address(), slow.address()),
        Some(&latency_config()),
    );
    let mut to_fast = 0;
    for i in 0..40 {
        let r = complete(&epp, &unique_prompt(i, 200), &[]);
        assert!(r.status().is_success(), "status {}", r.status());
        let chosen = header(&r, "x-gateway-destination-endpoint").unwrap_or_default();
        if i >= 20 && chosen == fast.address() {
            to_fast += 1;
        }
    }
    assert!(
        to_fast >= 18,
        "only {to_fast} of the last 20 long prompts went to the fast pod"
    );
    let metrics = epp.metrics_text();
    let line = format!(
        "llmd_epp_latency_model_coefficient{{endpoint=\"{}\",term=\"seconds_per_1k_uncached_tokens\"}}",
        fast.address()
    );
    let fast_price: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in {metrics}"));
    assert!(
        (0.1..0.4).contains(&fast_price),
        "the fast pod prefills 1,000 tokens in about 0.2 s: learned {fast_price}"
    );
    assert!(metrics.contains("llmd_epp_ttft_prediction_error_ratio_count"));
}

#[test]
fn a_request_with_a_ttft_objective_is_answered_with_its_predicted_and_observed_ttft() {
    let bin = sim_bin();
    let sims: Vec<Sim> = (0..2).map(|_| Sim::start(&bin, &[])).collect();
    let list: Vec<String> = sims.iter().map(Sim::address).collect();
    let epp = Epp::start(&list.join(","), Some(&latency_config()));
    for i in 0..10 {
        complete(&epp, &unique_prompt(i, 100), &[]);
    }

    let r = complete(
        &epp,
        &unique_prompt(100, 100),
        &[("x-llm-d-slo-ttft-ms", "5000")],
    );
    assert!(r.status().is_success());
    let predicted = millis(&r, "x-llmd-predicted-ttft-ms");
    let observed = millis(&r, "x-llmd-observed-ttft-ms");
    assert!(predicted > 0.0 && observed > 0.0);
    assert!(
        (predicted - observed).abs() < observed.max(10.0),
        "predicted {predicted} ms, observed {observed} ms"
    );
    assert_eq!(header(&r, "x-llmd-slo-predicted-miss"), None);

    // No pod can answer in a microsecond: served anyway, and said so.
    let r = complete(
        &epp,
        &unique_prompt(101, 100),
        &[("x-slo-ttft-ms", "0.001")],
    );
    assert!(r.status().is_success());
    assert_eq!(
        header(&r, "x-llmd-slo-predicted-miss").as_deref(),
        Some("ttft")
    );

    // Not a number: ignored and counted, never refused.
    let r = complete(
        &epp,
        &unique_prompt(102, 100),
        &[("x-llm-d-slo-ttft-ms", "fast")],
    );
    assert!(r.status().is_success());
    assert_eq!(header(&r, "x-llmd-predicted-ttft-ms"), None);

    let metrics = epp.metrics_text();
    assert!(
        metrics.contains("llmd_epp_slo_predicted_misses_total{objective=\"ttft\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("llmd_epp_slo_headers_invalid_total{header=\"x-llm-d-slo-ttft-ms\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_time_per_token_objective_goes_to_the_pod_that_decodes_fast_enough() {
    let bin = sim_bin();
    let quick = Sim::start(&bin, &[]);
    // 40 ms between tokens instead of 1 ms.
    let slow = Sim::start(&bin, &["--inter-token-latency", "40ms"]);
    // The default weights first: idle pods tie and share the traffic, so both
    // models learn each pod's decode pace (they learn whatever the scorers).
    let weighted =
        EndpointPickerConfig::for_router(&RouterSpec::default(), &ScorerWeights::default(), false);
    let epp = Epp::start(
        &format!("{},{}", quick.address(), slow.address()),
        Some(&weighted.to_yaml()),
    );
    let stream = |i: usize, headers: &[(&str, &str)]| {
        let mut r = http().post(epp.url("/v1/completions")).json(&json!({
            "model": "test-model",
            "prompt": unique_prompt(i, 20),
            "max_tokens": 6,
            "stream": true,
        }));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().expect("proxy answers");
        assert!(r.status().is_success(), "status {}", r.status());
        let chosen = header(&r, "x-gateway-destination-endpoint").unwrap_or_default();
        let predicted = header(&r, "x-llmd-predicted-tpot-ms");
        r.text().expect("the stream ends");
        (chosen, predicted)
    };
    let mut served = std::collections::HashSet::new();
    for i in 0..30 {
        served.insert(stream(i, &[]).0);
    }
    assert_eq!(served.len(), 2, "both pods served: {served:?}");
    epp.write_config(&latency_config());
    wait_for(
        "the latency-scorer in force",
        Duration::from_secs(10),
        || {
            epp.metrics_text()
                .contains("llmd_epp_config_reloads_total{outcome=\"applied\"} 2")
                .then_some(())
        },
    );
    for i in 100..110 {
        let (chosen, predicted) = stream(i, &[("x-llm-d-slo-tpot-ms", "10")]);
        assert_eq!(chosen, quick.address(), "request {i}");
        let predicted: f64 = predicted
            .and_then(|v| v.parse().ok())
            .expect("the predicted time per token");
        assert!(predicted < 10.0, "{predicted} ms");
    }
    assert!(
        epp.metrics_text()
            .contains("llmd_epp_itl_prediction_error_ratio_count")
    );
}
