//! KV events from the bench's simulators, offered as a vLLM pod offers them.
//! llm-d-inference-sim only connects out to one `--zmq-endpoint`, while a vLLM pod
//! binds its events port for the EndpointPicker to dial; so each simulator gets a
//! relay ([`llmd_kv_relay::Relay`]): a sink it publishes to, and the fleet's events
//! port bound on the simulator's own loopback address.

use std::net::TcpListener;

use llmd_kv_relay::{Listeners, Relay};

/// Binds the sink on a free loopback port and the pod side on `ip:events_port`.
/// Returns the relay (it stops when dropped) and the simulator flags that make it
/// publish to the sink.
pub async fn start(ip: &str, events_port: u16) -> Result<(Relay, Vec<String>), String> {
    let bind =
        |at: (&str, u16)| TcpListener::bind(at).map_err(|e| format!("bind {}:{}: {e}", at.0, at.1));
    let listeners = Listeners {
        sink: bind(("127.0.0.1", 0))?,
        events: bind((ip, events_port))?,
        replay: None,
    };
    let relay = Relay::start(listeners, llmd_kv_relay::DEFAULT_BUFFER)
        .await
        .map_err(|e| format!("relay KV events at {ip}:{events_port}: {e}"))?;
    let flags = llmd_kv_relay::simulator_flags(&relay.sink_endpoint());
    Ok((relay, flags))
}
