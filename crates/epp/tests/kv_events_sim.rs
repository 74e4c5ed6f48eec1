//! The precise prefix index fed by a real llm-d-inference-sim's KV events over
//! ZeroMQ: what the engine reports storing for a prompt is what the EPP's own
//! tokenization of that prompt matches, in both of the engine's encodings.

mod support;

use std::sync::Arc;
use std::time::Duration;

use llmd_epp::prefix::engine_tokens::sim_token_ids;
use llmd_epp::prefix::kv_events::decode_message;
use llmd_epp::prefix::kv_subscriber::{KvSubscriber, Mode};
use llmd_epp::prefix::precise::{PreciseIndex, block_keys, root_key};
use llmd_epp::telemetry::Telemetry;
use support::{Sim, free_port, http, kv_events, sim_bin};
use zeromq::{SocketRecv, SubSocket};

const BLOCK: usize = 16;

/// A prompt of about `words` tokens: words, punctuation and runs of spaces, so the
/// engine's tokenizer and ours must agree on more than plain words.
fn prompt(tenant: &str, words: usize) -> String {
    (0..words)
        .map(|i| match i % 7 {
            0 => format!("{tenant}{i},"),
            3 => format!("q_{i}?  "),
            _ => format!("w{i}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn complete(sim: &str, prompt: String) {
    let url = format!("http://{sim}/v1/completions");
    tokio::task::spawn_blocking(move || {
        let body = serde_json::json!({"model": "test-model", "prompt": prompt, "max_tokens": 1});
        let r = http().post(url).json(&body).send().expect("completion");
        assert!(r.status().is_success(), "completion: {}", r.status());
    })
    .await
    .expect("completion task");
}

/// Applies messages from `sub` to `index` until `done` holds, or panics after 15 s.
async fn apply_until(
    sub: &mut SubSocket,
    index: &PreciseIndex,
    mut done: impl FnMut(&PreciseIndex) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !done(index) {
        let msg = tokio::time::timeout_at(deadline, sub.recv())
            .await
            .expect("timed out waiting for KV events")
            .expect("zmq receive");
        let m = decode_message(&msg.into_vec()).expect("a well-formed event message");
        assert_eq!(
            m.topic.pod_ip(),
            "127.0.0.1",
            "topic names the engine's POD_IP"
        );
        assert_eq!(m.topic.model, "test-model");
        let applied = index.apply(&Arc::from(m.topic.pod.as_str()), m.seq, &m.events);
        assert!(!applied.gap && !applied.restarted, "{applied:?}");
        assert_eq!((applied.unknown_parent, applied.other_block_size), (0, 0));
    }
}

async fn start_sim(extra: Vec<String>) -> Sim {
    let bin = sim_bin();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        Sim::start(&bin, &extra)
    })
    .await
    .expect("sim start")
}

async fn engine_reports_what_the_epp_matches(map_format: bool) {
    let (mut sub, extra) = kv_events::sink(free_port(), map_format).await;
    let sim = start_sim(extra).await;
    let index = PreciseIndex::new(BLOCK, 4096);
    let pod = "127.0.0.1";
    let keys = |text: &str| block_keys(root_key(None), &sim_token_ids(text), BLOCK, 1000);

    // A first prompt: every full block the engine stored matches.
    let first = prompt("alpha", 120);
    let first_keys = keys(&first);
    assert!(first_keys.len() >= 5, "{} blocks", first_keys.len());
    complete(&sim.address(), first.clone()).await;
    apply_until(&mut sub, &index, |i| {
        i.matched_blocks([pod], &first_keys)[0] == first_keys.len()
    })
    .await;

    // A second prompt sharing the first's first 60 words: the engine stores only
    // the new blocks, chained after the shared ones, and the index follows the chain.
    let second = format!(
        "{} then something else entirely, {}",
        &first[..first.find("w60").unwrap_or(0)],
        prompt("beta", 60)
    );
    let second_keys = keys(&second);
    let shared = second_keys
        .iter()
        .zip(&first_keys)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(shared >= 2 && shared < second_keys.len(), "shared {shared}");
    assert_eq!(index.matched_blocks([pod], &second_keys), vec![shared]);
    complete(&sim.address(), second).await;
    apply_until(&mut sub, &index, |i| {
        i.matched_blocks([pod], &second_keys)[0] == second_keys.len()
    })
    .await;
    // Another pod's name matches nothing.
    assert_eq!(index.matched_blocks(["127.0.0.2"], &second_keys), vec![0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_events_in_positional_form_index_what_the_epp_matches() {
    engine_reports_what_the_epp_matches(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_events_in_map_form_index_what_the_epp_matches() {
    engine_reports_what_the_epp_matches(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_follows_a_pod_and_routes_it_precisely_once_events_flow() {
    let events_port = free_port();
    let (forwarder, extra) = kv_events::relay("127.0.0.1", events_port, None).await;
    let sim = start_sim(extra).await;
    let index = Arc::new(PreciseIndex::new(BLOCK, 4096));
    let subscriber =
        KvSubscriber::new(index.clone(), Some(events_port), Arc::new(Telemetry::new()));
    let address: Arc<str> = Arc::from(sim.address().as_str());
    subscriber.follow([address.clone()]);
    assert_eq!(
        subscriber.mode(&address, std::time::Instant::now()),
        Mode::Approximate("no events yet")
    );

    // PUB/SUB drops what is sent before the subscription reaches the publisher:
    // warm up with distinct prompts until the pod's events flow.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while subscriber.mode(&address, std::time::Instant::now()) != Mode::Precise {
        assert!(
            std::time::Instant::now() < deadline,
            "no KV events reached the subscriber"
        );
        complete(&sim.address(), prompt(&format!("warm{i}"), 40)).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(subscriber.flowing(std::time::Instant::now()), (1, 1));

    let text = prompt("gamma", 100);
    let keys = block_keys(root_key(None), &sim_token_ids(&text), BLOCK, 1000);
    complete(&sim.address(), text).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while index.matched_blocks([&*address], &keys)[0] != keys.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the prompt's blocks never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        subscriber.refused(&address).is_empty(),
        "{:?}",
        subscriber.refused(&address)
    );

    // A pod that leaves the pool is unsubscribed and its entries are dropped.
    subscriber.follow(std::iter::empty());
    assert_eq!(index.len_of(&address), 0);
    assert_eq!(
        subscriber.mode(&address, std::time::Instant::now()),
        Mode::Approximate("not followed")
    );
    drop(forwarder);
}
