//! KV events out of a simulated pod the way a vLLM pod offers them. llm-d runs vLLM
//! with `--kv-events-config` binding `tcp://*:<port>` (and optionally a replay
//! endpoint) and every EndpointPicker replica dials each pod; llm-d-inference-sim
//! can only connect out to one `--zmq-endpoint`. The forwarder binds the ports inside
//! the pod's network namespace (a sink on the pod's own loopback for the simulator,
//! the pod's events port and replay port for everyone else) and relays
//! ([`llmd_kv_relay::Relay`]), until dropped.

use std::net::TcpListener;
use std::path::Path;

use llmd_kv_relay::{DEFAULT_BUFFER, Listeners, Relay};
use nix::sched::{CloneFlags, setns};

use crate::stand_in::KvEventPorts;

pub struct KvForwarder {
    relay: Relay,
}

/// A restarted container's new forwarder may come before the old one has let go
/// of the port: binding is retried this often, 100 ms apart.
const BIND_ATTEMPTS: usize = 30;

impl KvForwarder {
    /// Binds the pod's events port (and replay port) in the namespace at `netns` and
    /// starts relaying what the simulator sends to [`KvForwarder::sink_endpoint`].
    pub async fn start(netns: &Path, ports: KvEventPorts) -> std::io::Result<KvForwarder> {
        let mut attempt = 1;
        let listeners = loop {
            match listeners_in(netns, ports) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < BIND_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        };
        let relay = Relay::start(listeners, DEFAULT_BUFFER).await?;
        Ok(KvForwarder { relay })
    }

    /// The simulator's `--zmq-endpoint` (the pod's loopback).
    pub fn sink_endpoint(&self) -> String {
        self.relay.sink_endpoint()
    }
}

/// A loopback sink and `0.0.0.0:<port>` for events and replay, all bound inside the
/// namespace at `netns`. A socket stays in the namespace it was made in, so a
/// short-lived thread enters the namespace, binds, and ends; the runner's own
/// threads never move.
fn listeners_in(netns: &Path, ports: KvEventPorts) -> std::io::Result<Listeners> {
    let file = std::fs::File::open(netns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                Ok(Listeners {
                    sink: TcpListener::bind(("127.0.0.1", 0))?,
                    events: TcpListener::bind(("0.0.0.0", ports.events))?,
                    replay: ports
                        .replay
                        .map(|port| TcpListener::bind(("0.0.0.0", port)))
                        .transpose()?,
                })
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("network namespace thread panicked")))
    })
}
