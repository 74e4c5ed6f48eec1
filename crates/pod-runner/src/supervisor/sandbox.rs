//! The pod's sandbox, as the kubelet calls it: its address (its status.podIP if
//! it has one, so a recreated sandbox keeps it) and its network namespace, made
//! with retries before any container starts, and released with the pod's files
//! when the pod is finished or goes away.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{PodMsg, Supervisor, is_deleting};
use crate::context::PodContext;

impl Supervisor {
    /// Allocate the pod's address (its status.podIP if it has one) and make its
    /// network, retrying on failure. Returns a message that ends the pod early.
    pub(super) async fn make_sandbox(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<PodMsg>,
    ) -> Option<PodMsg> {
        let preferred: Option<Ipv4Addr> = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let mut delay = Duration::from_secs(1);
        loop {
            let ip = self
                .shared
                .ips
                .lock()
                .map_err(|_| "IP allocator poisoned".to_string())
                .and_then(|mut a| a.allocate(&self.uid, preferred).map_err(|e| e.to_string()));
            let result = match ip {
                Ok(ip) => self
                    .shared
                    .network
                    .create_sandbox(&self.uid, ip)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match result {
                Ok(sandbox) => {
                    tracing::info!(pod = %self.name(), ip = %sandbox.ip, netns = %sandbox.netns, "sandbox ready");
                    self.sandbox = Some(sandbox);
                    return None;
                }
                Err(e) => {
                    tracing::warn!(pod = %self.name(), error = %e, "cannot create the pod network");
                    self.shared.events.warning(
                        &self.pod,
                        "FailedCreatePodSandBox",
                        "CreateSandbox",
                        format!("Failed to create pod network: {e}"),
                    );
                    self.write_status().await;
                }
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(PodMsg::Update(pod)) => {
                        self.pod = pod;
                        if is_deleting(&self.pod) {
                            return Some(PodMsg::Update(self.pod.clone()));
                        }
                    }
                    Some(other) => return Some(other),
                    None => return Some(PodMsg::Shutdown),
                },
                _ = tokio::time::sleep(delay) => delay = (delay * 2).min(Duration::from_secs(30)),
            }
        }
    }

    pub(super) async fn teardown(&mut self, ctx: &Arc<PodContext>) {
        if let Some(sandbox) = self.sandbox.take() {
            if let Err(e) = self.shared.network.destroy_sandbox(&sandbox).await {
                tracing::warn!(pod = %self.name(), error = %e, "cannot remove the pod network");
            }
            if let Ok(mut ips) = self.shared.ips.lock() {
                let _ = ips.release(&self.uid);
            }
        }
        ctx.remove_files();
    }
}
