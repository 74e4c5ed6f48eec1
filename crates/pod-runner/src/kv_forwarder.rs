//! KV events out of a simulated pod the way a vLLM pod offers them. llm-d runs vLLM
//! with `--kv-events-config` binding `tcp://*:<port>` and every EndpointPicker
//! replica dials each pod; llm-d-inference-sim can only connect out to one
//! `--zmq-endpoint`. The forwarder binds both ends inside the pod's network
//! namespace (a sink on the pod's own loopback for the simulator, and the pod's
//! events port for everyone else) and republishes every message, until dropped.

use std::net::TcpListener;
use std::path::Path;

use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;
use zeromq::{PubSocket, Socket, SocketRecv, SocketSend, SubSocket};

pub struct KvForwarder {
    stop: Option<oneshot::Sender<()>>,
    sink_port: u16,
}

/// A restarted container's new forwarder may come before the old one has let go
/// of the port: binding is retried this often, 100 ms apart.
const BIND_ATTEMPTS: usize = 30;

fn io_error(e: zeromq::ZmqError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl KvForwarder {
    /// Binds the pod's events `port` in the namespace at `netns` and starts
    /// forwarding what the simulator sends to [`KvForwarder::sink_endpoint`].
    pub async fn start(netns: &Path, port: u16) -> std::io::Result<KvForwarder> {
        let mut attempt = 1;
        let (sink, public) = loop {
            match listeners_in(netns, port) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < BIND_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        };
        let sink_port = sink.local_addr()?.port();
        let mut from = SubSocket::new();
        from.bind_listener(sink).await.map_err(io_error)?;
        from.subscribe("").await.map_err(io_error)?;
        let mut to = PubSocket::new();
        to.bind_listener(public).await.map_err(io_error)?;
        let (stop, mut stopped) = oneshot::channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    msg = from.recv() => {
                        let Ok(msg) = msg else { break };
                        if to.send(msg).await.is_err() {
                            break;
                        }
                    }
                }
            }
            // Let go of both ports now, so a restarted container can bind them.
            let _ = to.unbind_all().await;
            let _ = from.unbind_all().await;
        });
        Ok(KvForwarder {
            stop: Some(stop),
            sink_port,
        })
    }

    /// The simulator's `--zmq-endpoint` (the pod's loopback).
    pub fn sink_endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.sink_port)
    }
}

impl Drop for KvForwarder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A loopback sink and `0.0.0.0:port`, both bound inside the namespace at `netns`.
/// A socket stays in the namespace it was made in, so a short-lived thread enters
/// the namespace, binds, and ends; the runner's own threads never move.
fn listeners_in(netns: &Path, port: u16) -> std::io::Result<(TcpListener, TcpListener)> {
    let file = std::fs::File::open(netns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                let sink = TcpListener::bind(("127.0.0.1", 0))?;
                let public = TcpListener::bind(("0.0.0.0", port))?;
                Ok((sink, public))
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("network namespace thread panicked")))
    })
}
