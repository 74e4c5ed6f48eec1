//! The engine side of KV events. llm-d-inference-sim can only connect out to one
//! `--zmq-endpoint`, while a vLLM pod binds its events port (`tcp://*:<port>`) for
//! the EPP to dial: [`sink`] is where a simulator sends, [`republish`] binds the
//! pod's port and forwards what the sink receives.

use zeromq::{PubSocket, Socket, SocketRecv, SocketSend, SubSocket};

/// A SUB socket bound on `127.0.0.1:port` and subscribed to every engine topic,
/// and the simulator flags that make it publish there (`map_format`: vLLM PR
/// #42892's map encoding, else positional arrays).
pub async fn sink(port: u16, map_format: bool) -> (SubSocket, Vec<String>) {
    let mut sub = SubSocket::new();
    sub.bind(&format!("tcp://127.0.0.1:{port}"))
        .await
        .expect("bind the simulator's event sink");
    sub.subscribe("kv@").await.expect("subscribe");
    let mut flags = vec![
        "--zmq-endpoint".to_string(),
        format!("tcp://127.0.0.1:{port}"),
        "--force-dummy-tokenizer".to_string(),
    ];
    if map_format {
        flags.push("--use-vllm-map-event-format".to_string());
    }
    (sub, flags)
}

/// Binds a PUB socket at `at` and republishes what `from` receives, until aborted.
pub async fn republish(mut from: SubSocket, at: &str) -> tokio::task::JoinHandle<()> {
    let mut to = PubSocket::new();
    to.bind(at).await.expect("bind the pod's events port");
    tokio::spawn(async move {
        while let Ok(msg) = from.recv().await {
            if to.send(msg).await.is_err() {
                break;
            }
        }
    })
}
