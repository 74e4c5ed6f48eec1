//! KV events from the bench's simulators, offered as a vLLM pod offers them.
//! llm-d-inference-sim only connects out to one `--zmq-endpoint`, while a vLLM pod
//! binds its events port for the EndpointPicker to dial; so each simulator gets a
//! sink (a SUB socket it publishes to) and a PUB socket bound on the simulator's own
//! loopback address at the fleet's events port, forwarding what the sink receives.

use tokio::task::JoinHandle;
use zeromq::{PubSocket, Socket, SocketRecv, SocketSend, SubSocket};

/// One simulator's forwarder; stops when dropped.
pub struct Forwarder {
    task: JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds the sink on `127.0.0.1:sink_port` and the pod side on `ip:events_port`.
/// Returns the forwarder and the simulator flags that make it publish to the sink
/// (vLLM's map encoding, one event per message).
pub async fn start(
    sink_port: u16,
    ip: &str,
    events_port: u16,
) -> Result<(Forwarder, Vec<String>), String> {
    let sink_at = format!("tcp://127.0.0.1:{sink_port}");
    let mut sink = SubSocket::new();
    sink.bind(&sink_at)
        .await
        .map_err(|e| format!("bind {sink_at}: {e}"))?;
    sink.subscribe("kv@")
        .await
        .map_err(|e| format!("subscribe {sink_at}: {e}"))?;
    let pod_at = format!("tcp://{ip}:{events_port}");
    let mut publisher = PubSocket::new();
    publisher
        .bind(&pod_at)
        .await
        .map_err(|e| format!("bind {pod_at}: {e}"))?;
    let task = tokio::spawn(async move {
        while let Ok(message) = sink.recv().await {
            if publisher.send(message).await.is_err() {
                break;
            }
        }
    });
    let flags = vec![
        "--zmq-endpoint".to_string(),
        sink_at,
        "--use-vllm-map-event-format".to_string(),
        // vLLM publishes every engine step; the simulator holds events for up to a
        // second unless each is its own batch.
        "--event-batch-size".to_string(),
        "1".to_string(),
    ];
    Ok((Forwarder { task }, flags))
}
