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

/// A simulator at `ip` whose events come out of `ip:events_port` (and, with
/// `replay_port`, can be asked for again at `ip:replay_port`), as a vLLM pod's.
fn sim_with_events(
    rt: &tokio::runtime::Runtime,
    ip: &'static str,
    events_port: u16,
    replay_port: Option<u16>,
) -> (Sim, llmd_kv_relay::Relay) {
    let (relay, flags) = rt.block_on(kv_events::relay(ip, events_port, replay_port));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    (Sim::start_at(&sim_bin(), ip, &flags), relay)
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
    let (sims, _relays): (Vec<Sim>, Vec<_>) = ["127.0.0.2", "127.0.0.3"]
        .into_iter()
        .map(|ip| sim_with_events(&rt, ip, events_port, None))
        .unzip();
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

/// The config the operator renders for precise mode, with this test's events and
/// replay ports.
fn precise_config(events_port: u16, replay_port: u16) -> String {
    use llmd_api::endpoint_picker_config::{EndpointPickerConfig, plugin};
    let mut router = llmd_api::RouterSpec::default();
    router.prefix_cache.mode = llmd_api::PrefixCacheMode::Precise;
    let mut config = EndpointPickerConfig::for_router(&router, &router.scorers, false);
    let producer = config
        .plugins
        .iter_mut()
        .find(|p| p.plugin_type == plugin::PRECISE_PREFIX_CACHE_PRODUCER)
        .and_then(|p| p.parameters.as_mut())
        .expect("precise mode renders the producer's parameters");
    producer["kvEventsConfig"]["podDiscoveryConfig"] =
        json!({"socketPort": events_port, "replayPort": replay_port});
    config.to_yaml()
}

/// Messages the engine at `ip` keeps for replay, asked as the EPP asks (vLLM's
/// protocol: a DEALER sends `["", start]`, answers end with the end marker).
fn replayable(rt: &tokio::runtime::Runtime, ip: &str, replay_port: u16) -> usize {
    use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend};
    rt.block_on(async {
        let mut dealer = DealerSocket::new();
        dealer
            .connect(&format!("tcp://{ip}:{replay_port}"))
            .await
            .expect("dial the replay port");
        dealer
            .send(llmd_kv_relay::replay_request(0))
            .await
            .expect("ask");
        let mut n = 0;
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(5), dealer.recv())
                .await
                .expect("answered in time")
                .expect("answered");
            match llmd_kv_relay::replay_reply(answer).expect("a replay answer") {
                llmd_kv_relay::ReplayReply::Message(_) => n += 1,
                llmd_kv_relay::ReplayReply::End => return n,
            }
        }
    })
}

#[test]
fn an_epp_started_after_the_engines_cached_rebuilds_their_entries_from_replay() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (events_port, replay_port) = (free_port(), free_port());
    let ips = ["127.0.0.4", "127.0.0.5", "127.0.0.6"];
    let (sims, _relays): (Vec<Sim>, Vec<_>) = ips
        .into_iter()
        .map(|ip| sim_with_events(&rt, ip, events_port, Some(replay_port)))
        .unzip();
    let list: Vec<String> = sims.iter().map(Sim::address).collect();
    // Each tenant's context goes to its own engine before any EPP runs: no EPP
    // heard those events live.
    for (tenant, sim) in sims.iter().enumerate() {
        let url = format!("http://{}/v1/completions", sim.address());
        complete(&url, &tenant_prompt(tenant + 10, 0));
        wait_for(
            "the engine's events kept for replay",
            Duration::from_secs(10),
            || (replayable(&rt, ips[tenant], replay_port) > 0).then_some(()),
        );
    }
    let epp = Epp::start_with(
        &list.join(","),
        Some(&precise_config(events_port, replay_port)),
        &[],
    );
    let replayed = |address: &str| {
        counter(
            &epp.metrics_text(),
            &format!("llmd_epp_kv_events_replayed_total{{endpoint=\"{address}\"}}"),
        )
    };
    wait_for(
        "every engine's events replayed",
        Duration::from_secs(20),
        || {
            list.iter()
                .all(|a| replayed(a) > 0 && precise_metric(&epp, a))
                .then_some(())
        },
    );
    // Each tenant's questions go to the engine that holds its context: from the
    // replay alone (by load, all three would land right by chance 1 in 27).
    for (tenant, expected) in list.iter().enumerate() {
        for q in 1..4 {
            let r = complete(&epp.url("/v1/completions"), &tenant_prompt(tenant + 10, q));
            let got = r
                .headers()
                .get("x-gateway-destination-endpoint")
                .and_then(|v| v.to_str().ok());
            assert_eq!(got, Some(expected.as_str()), "tenant {tenant} question {q}");
        }
    }
}
