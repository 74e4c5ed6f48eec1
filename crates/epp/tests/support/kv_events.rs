//! The engine side of KV events. llm-d-inference-sim can only connect out to one
//! `--zmq-endpoint`, while a vLLM pod binds its events port (`tcp://*:<port>`) for
//! the EPP to dial: [`sink`] is where a simulator sends (to read its events
//! directly), [`relay`] offers them as a pod does (with vLLM's replay endpoint too).

use zeromq::{Socket, SubSocket};

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

/// A relay for a simulator at `ip`: its events on `ip:events_port` and, with
/// `replay_port`, vLLM's replay endpoint on `ip:replay_port`, as a vLLM pod offers
/// them. Returns the relay (it stops when dropped) and the simulator's flags.
pub async fn relay(
    ip: &str,
    events_port: u16,
    replay_port: Option<u16>,
) -> (llmd_kv_relay::Relay, Vec<String>) {
    let bind = |port| std::net::TcpListener::bind((ip, port)).expect("bind a pod port");
    let listeners = llmd_kv_relay::Listeners {
        sink: std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind the sink"),
        events: bind(events_port),
        replay: replay_port.map(bind),
    };
    let relay = llmd_kv_relay::Relay::start(listeners, llmd_kv_relay::DEFAULT_BUFFER)
        .await
        .expect("relay KV events");
    let mut flags = llmd_kv_relay::simulator_flags(&relay.sink_endpoint());
    flags.push("--force-dummy-tokenizer".to_string());
    (relay, flags)
}
