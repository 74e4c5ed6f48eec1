//! A bench simulator offers its KV events on its own loopback address, as a vLLM pod
//! offers them on its IP: a SUB socket dialing that address receives them.

use std::path::PathBuf;
use std::time::Duration;

use llmd_loadgen::fleet::{self, KvEvents, SimModel};
use zeromq::{Socket, SocketRecv, SubSocket};

fn sim_bin() -> PathBuf {
    let bin = std::env::var_os("LLMD_SIM_BIN")
        .map(PathBuf::from)
        .expect("LLMD_SIM_BIN names llm-d-inference-sim (make tools)");
    assert!(bin.is_file(), "{} is missing", bin.display());
    bin
}

const MODEL: SimModel = SimModel {
    prefill_overhead: "1ms",
    prefill_per_token: "10us",
    inter_token: "1ms",
    max_num_seqs: 4,
    kv_cache_blocks: 256,
    kv_transfer_per_token: "1us",
};

#[tokio::test]
async fn each_simulator_publishes_its_kv_events_at_its_own_address() {
    let client = reqwest::Client::new();
    let port = fleet::free_port().expect("a free port");
    let sims = fleet::start_fleet(&sim_bin(), &MODEL, 2, &client, KvEvents::On { port })
        .await
        .expect("the fleet starts");
    for sim in &sims {
        let ip = sim.address.split(':').next().expect("ip:port");
        let mut sub = SubSocket::new();
        sub.connect(&format!("tcp://{ip}:{port}"))
            .await
            .expect("dial the pod's events port");
        sub.subscribe("kv@").await.expect("subscribe");
        let topic = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                // PUB/SUB drops what precedes the subscription: ask until one arrives.
                let body = serde_json::json!({
                    "model": "bench-model",
                    "prompt": "a prompt long enough to fill a block or two of sixteen tokens each, then some more words",
                    "max_tokens": 1,
                });
                client
                    .post(format!("http://{}/v1/completions", sim.address))
                    .json(&body)
                    .send()
                    .await
                    .expect("the sim answers");
                if let Ok(Ok(message)) =
                    tokio::time::timeout(Duration::from_millis(300), sub.recv()).await
                {
                    let frames = message.into_vec();
                    return String::from_utf8_lossy(&frames[0]).to_string();
                }
            }
        })
        .await
        .expect("an event within 20 s");
        // The simulator's topic is `kv@<POD_IP>@<model>` (vLLM's adds the port).
        assert!(topic.starts_with(&format!("kv@{ip}@")), "{topic}");
    }
}
