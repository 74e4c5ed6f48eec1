//! `llmd-epp --kv-events-port` against real llm-d-inference-sim processes, each at
//! its own loopback "pod IP" with its events port bound there (as a vLLM pod binds
//! `tcp://*:<port>`): a prefix the EPP never routed is routed to the engine that
//! reported storing it. The EPP tokenizes as the engines do by asking their
//! `/tokenize` (the default token source), for completions and for chat, whose
//! messages only the engine knows how to render.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Epp, Sim, free_port, http, kv_events, sim_bin, tenant_prompt, wait_for};

/// A simulator at `ip` whose events come out of `ip:events_port`, as a vLLM pod's.
fn sim_with_events(rt: &tokio::runtime::Runtime, ip: &'static str, events_port: u16) -> Sim {
    let flags = rt.block_on(async {
        let (sink, flags) = kv_events::sink(free_port(), true).await;
        kv_events::republish(sink, &format!("tcp://{ip}:{events_port}")).await;
        flags
    });
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Sim::start_at(&sim_bin(), ip, &flags)
}

fn complete(url: &str, prompt: &str) -> reqwest::blocking::Response {
    post(
        url,
        json!({"model": "test-model", "prompt": prompt, "max_tokens": 2}),
    )
}

fn post(url: &str, body: serde_json::Value) -> reqwest::blocking::Response {
    let r = http().post(url).json(&body).send().expect("answered");
    assert!(r.status().is_success(), "status {}", r.status());
    r
}

/// A chat turn: the tenant's context as the system message, then a question.
fn chat(tenant: usize, question: usize) -> serde_json::Value {
    let context = tenant_prompt(tenant, 0);
    json!({
        "model": "test-model",
        "max_tokens": 2,
        "messages": [
            {"role": "system", "content": context},
            {"role": "user", "content": format!("Question {question}: what is fact{tenant}x{question}?")},
        ],
    })
}

/// A counter's value in a metrics page (0 when absent).
fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

fn precise_metric(epp: &Epp, address: &str) -> bool {
    epp.metrics_text().contains(&format!(
        "llmd_epp_endpoint_prefix_precise{{endpoint=\"{address}\"}} 1"
    ))
}

/// KV-event messages the EPP applied from `address`.
fn messages(epp: &Epp, address: &str) -> u64 {
    let prefix = format!("llmd_epp_kv_events_messages_total{{endpoint=\"{address}\"}} ");
    epp.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[test]
fn a_prefix_the_epp_never_routed_goes_to_the_engine_that_reported_it() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let events_port = free_port();
    let sims = [
        sim_with_events(&rt, "127.0.0.2", events_port),
        sim_with_events(&rt, "127.0.0.3", events_port),
    ];
    let list: Vec<String> = sims.iter().map(Sim::address).collect();
    let epp = Epp::start_with(
        &list.join(","),
        None,
        &["--kv-events-port", &events_port.to_string()],
    );

    // Until an engine's events reach the EPP it is routed approximately; warm each
    // engine directly (PUB/SUB drops what precedes the subscription) until both flow.
    let mut warm = 0;
    wait_for(
        "KV events from both engines",
        Duration::from_secs(30),
        || {
            for sim in &sims {
                warm += 1;
                let url = format!("http://{}/v1/completions", sim.address());
                complete(&url, &format!("warm-up {warm} {}", "x ".repeat(40)));
            }
            std::thread::sleep(Duration::from_millis(300));
            list.iter().all(|a| precise_metric(&epp, a)).then_some(())
        },
    );

    // Each tenant's context goes straight to one engine, never through the EPP, so
    // only that engine's events can tell the EPP where it is: tenants 1 and 2 as
    // completions, tenants 3 and 4 as chat (the engine renders the messages).
    for (tenant, holder, is_chat) in [(1, 1, false), (2, 0, false), (3, 0, true), (4, 1, true)] {
        let expected = &list[holder];
        let (path, first) = if is_chat {
            ("/v1/chat/completions", chat(tenant, 0))
        } else {
            (
                "/v1/completions",
                json!({"model": "test-model", "prompt": tenant_prompt(tenant, 0), "max_tokens": 2}),
            )
        };
        let before = messages(&epp, expected);
        post(&format!("http://{}{path}", sims[holder].address()), first);
        // Engines flush events within a second.
        wait_for("the engine's events", Duration::from_secs(10), || {
            (messages(&epp, expected) > before).then_some(())
        });
        for q in 1..6 {
            let body = if is_chat {
                chat(tenant, q)
            } else {
                json!({"model": "test-model", "prompt": tenant_prompt(tenant, q), "max_tokens": 2})
            };
            let r = post(&epp.url(path), body);
            let got = r
                .headers()
                .get("x-gateway-destination-endpoint")
                .and_then(|v| v.to_str().ok());
            assert_eq!(got, Some(expected.as_str()), "tenant {tenant} question {q}");
        }
    }
    // Every routed prompt was tokenized by an engine: 20 asked, none failed.
    let metrics = epp.metrics_text();
    let tokenize = |outcome: &str| {
        counter(
            &metrics,
            &format!("llmd_epp_engine_tokenize_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(tokenize("tokenized") + tokenize("cached"), 20, "{metrics}");
    for outcome in ["failed", "timeout", "no_endpoint"] {
        assert_eq!(tokenize(outcome), 0, "{outcome}: {metrics}");
    }
    assert!(
        !metrics.contains("llmd_epp_kv_events_refused_total"),
        "{metrics}"
    );
}
