//! `llmd-epp --kv-events-port` against real llm-d-inference-sim processes, each at
//! its own loopback "pod IP" with its events port bound there (as a vLLM pod binds
//! `tcp://*:<port>`): a prefix the EPP never routed is routed to the engine that
//! reported storing it.

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
    let r = http()
        .post(url)
        .json(&json!({"model": "test-model", "prompt": prompt, "max_tokens": 2}))
        .send()
        .expect("completion answered");
    assert!(r.status().is_success(), "status {}", r.status());
    r
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
    // only that engine's events can tell the EPP where it is.
    let proxy = epp.url("/v1/completions");
    for (tenant, holder) in [(1, 1), (2, 0)] {
        let expected = &list[holder];
        let before = messages(&epp, expected);
        let url = format!("http://{}/v1/completions", sims[holder].address());
        complete(&url, &tenant_prompt(tenant, 0));
        // Engines flush events within a second.
        wait_for("the engine's events", Duration::from_secs(10), || {
            (messages(&epp, expected) > before).then_some(())
        });
        for q in 1..6 {
            let r = complete(&proxy, &tenant_prompt(tenant, q));
            let got = r
                .headers()
                .get("x-gateway-destination-endpoint")
                .and_then(|v| v.to_str().ok());
            assert_eq!(got, Some(expected.as_str()), "tenant {tenant} question {q}");
        }
    }
    let metrics = epp.metrics_text();
    assert!(
        !metrics.contains("llmd_epp_kv_events_refused_total"),
        "{metrics}"
    );
}
