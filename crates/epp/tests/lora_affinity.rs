//! The lora-affinity-scorer against real engines: a request for an adapter goes to
//! the engine already running it, and away from one whose adapter slots are full of
//! another (read from llm-d-inference-sim's `vllm:lora_requests_info`).

mod support;

use std::io::Read;
use std::time::Duration;

use llmd_api::ScorerWeights;
use llmd_api::endpoint_picker_config::EndpointPickerConfig;
use serde_json::{Value, json};
use support::*;

fn lora_sim(bin: &std::path::Path) -> Sim {
    Sim::start(
        bin,
        &[
            "--max-loras",
            "1",
            "--lora-modules",
            r#"{"name":"sql","path":"/adapters/sql"}"#,
            r#"{"name":"chat","path":"/adapters/chat"}"#,
            // Slow tokens: a streamed request keeps its adapter running.
            "--inter-token-latency",
            "50ms",
        ],
    )
}

/// Routing by the LoRA-affinity scorer alone.
fn config() -> String {
    let weights = ScorerWeights {
        lora_affinity: Some(1.0),
        ..ScorerWeights::of(0.0, 0.0, 0.0)
    };
    EndpointPickerConfig::for_router(&Default::default(), &weights, false).to_yaml()
}

/// The LoRA-affinity scores the EPP gave the endpoints for a request for `model`,
/// from the explanation of one pick.
fn lora_scores(epp: &Epp, model: &str) -> Vec<(String, f64)> {
    let Ok(r) = http()
        .post(epp.url("/v1/completions"))
        .header("x-llmd-explain", "true")
        .json(&json!({"model": model, "prompt": "hi", "max_tokens": 1}))
        .send()
    else {
        return Vec::new();
    };
    let explained: Value = r
        .headers()
        .get("x-llmd-explain")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    let winner = std::iter::once(&explained["decode"]);
    let others = explained["decodeCandidates"]
        .as_array()
        .into_iter()
        .flatten();
    winner
        .chain(others)
        .filter_map(|c| {
            let score = c["scores"]["lora-affinity-scorer"]["score"].as_f64()?;
            Some((c["endpoint"].as_str()?.to_string(), score))
        })
        .collect()
}

fn served_by(epp: &Epp, model: &str) -> String {
    let r = http()
        .post(epp.url("/v1/completions"))
        .json(&json!({"model": model, "prompt": "select 1", "max_tokens": 2}))
        .send()
        .expect("proxy answers");
    assert_eq!(r.status(), 200);
    r.headers()
        .get("x-gateway-destination-endpoint")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn an_adapter_goes_where_it_runs_and_away_from_full_engines() {
    let bin = sim_bin();
    let (a, b) = (lora_sim(&bin), lora_sim(&bin));
    let epp = Epp::start(&format!("{},{}", a.address(), b.address()), Some(&config()));
    // Adapter "sql" running on engine a (its one slot), for as long as the test runs.
    let mut long = http()
        .post(format!("http://{}/v1/completions", a.address()))
        .json(
            &json!({"model": "sql", "prompt": "a long query", "max_tokens": 2000,
                      "ignore_eos": true, "stream": true}),
        )
        .send()
        .expect("engine a answers");
    let mut first = [0u8; 16];
    long.read_exact(&mut first).expect("the stream started");
    // Once the EPP has scraped that (probed with "sql" requests, which a serves at
    // once beside the running one; a "chat" request there would wait for the slot).
    wait_for(
        "the EPP sees sql running on a only",
        Duration::from_secs(10),
        || {
            let mut scores = lora_scores(&epp, "sql");
            scores.sort_by(|x, y| x.0.cmp(&y.0));
            let mut want = vec![(a.address(), 1.0), (b.address(), 0.8)];
            want.sort_by(|x, y| x.0.cmp(&y.0));
            (scores == want).then_some(())
        },
    );
    for _ in 0..5 {
        assert_eq!(
            served_by(&epp, "sql"),
            a.address(),
            "sql runs on a: 1.0 vs 0.8"
        );
    }
    assert_eq!(served_by(&epp, "chat"), b.address(), "a is full: 0 vs 0.8");
    drop(long);
}
