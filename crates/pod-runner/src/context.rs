//! What a pod's containers are started from: the runner-wide pieces ([`Shared`])
//! and one pod's sandbox, volumes and credentials ([`PodContext`]), which turn a
//! container spec into a [`LaunchSpec`] or into the reason it cannot start yet.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::watch;

use crate::config::{Config, RunKind};
use crate::env::{self, EnvInputs};
use crate::events::Events;
use crate::files;
use crate::network::{IpAllocator, Network, Sandbox};
use crate::probe::Prober;
use crate::process::LaunchSpec;
use crate::stand_in;
use crate::token::{self, TokenCache};
use crate::volumes::{self, MountMap, TokenKey, VolumeInputs};

/// Runner-wide state every pod uses.
pub struct Shared {
    pub client: kube::Client,
    pub config: Config,
    pub network: Network,
    pub ips: std::sync::Mutex<IpAllocator>,
    pub events: Events,
    pub config_maps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
    /// Bumped whenever a ConfigMap or Secret changes.
    pub config_changes: watch::Receiver<u64>,
    pub prober: Prober,
}

impl Shared {
    /// The node address pods see (the bridge gateway).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.config.network.gateway()
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.config.state_dir.join("pods")
    }

    pub fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        self.config_maps
            .get(&ObjectRef::new(name).within(namespace))
            .map(|cm| (*cm).clone())
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.secrets
            .get(&ObjectRef::new(name).within(namespace))
            .map(|s| (*s).clone())
    }
}

/// Why a container cannot start yet: its waiting reason, a message, and the
/// reason of the Warning Event that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub reason: &'static str,
    pub event_reason: &'static str,
    pub message: String,
}

/// The directory of a pod's state: `<ns>_<name>_<uid>` (keyed by UID, since a
/// StatefulSet pod comes back with the same name and a new UID).
pub fn pod_dir_name(pod: &Pod) -> String {
    format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

struct Materialised {
    tokens: TokenCache,
}

/// One pod's sandbox, volumes and credentials, shared by its containers.
pub struct PodContext {
    pub shared: Arc<Shared>,
    pub dir: PathBuf,
    pub sandbox: Sandbox,
    pub pod: watch::Receiver<Arc<Pod>>,
    /// The pod gets API credentials (automountServiceAccountToken).
    pub automount: bool,
    state: tokio::sync::Mutex<Materialised>,
}

/// Where a container writes its termination message unless it says otherwise.
const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Where in-cluster clients look for service-account credentials.
const IN_CLUSTER_CREDENTIALS: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl PodContext {
    pub fn new(
        shared: Arc<Shared>,
        dir: PathBuf,
        sandbox: Sandbox,
        pod: watch::Receiver<Arc<Pod>>,
        automount: bool,
    ) -> Self {
        Self {
            shared,
            dir,
            sandbox,
            pod,
            automount,
            state: tokio::sync::Mutex::new(Materialised {
                tokens: TokenCache::default(),
            }),
        }
    }

    pub fn pod(&self) -> Arc<Pod> {
        self.pod.borrow().clone()
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A kubeconfig for a container that mounts service-account credentials at
    /// the in-cluster path, reading the token from that mount (refreshed with the
    /// pod's volumes); `None` without such a mount.
    fn mounted_credentials(
        &self,
        container: &Container,
        mounts: &MountMap,
        namespace: &str,
    ) -> Option<PathBuf> {
        let in_container = format!("{IN_CLUSTER_CREDENTIALS}/token");
        let token = mounts.rewrite(&in_container);
        if token == in_container {
            return None;
        }
        let api = &self.shared.config.api_server;
        let text = token::kubeconfig(&api.url(), &api.ca_file, Path::new(&token), namespace);
        let path = self.dir.join(format!("{}.kubeconfig", container.name));
        match files::write_if_changed(&path, text.as_bytes()) {
            Ok(_) => Some(path),
            Err(e) => {
                tracing::warn!(error = %e, container = %container.name, "cannot write the container's kubeconfig");
                None
            }
        }
    }

    pub fn token_path(&self) -> PathBuf {
        self.dir.join("serviceaccount/token")
    }

    pub fn log_path(&self, container: &str) -> PathBuf {
        self.dir.join(format!("{container}.log"))
    }

    pub fn pid_path(&self, container: &str) -> PathBuf {
        self.dir.join(format!("{container}.pid"))
    }

    /// Get or refresh the pod's tokens, rewrite its kubeconfig and volumes from
    /// the current ConfigMaps and Secrets; returns each volume's directory.
    pub async fn refresh(&self) -> Result<BTreeMap<String, PathBuf>, Blocked> {
        let mut state = self.state.lock().await;
        let pod = self.pod();
        let mut keys = volumes::token_keys(&pod);
        if self.automount {
            keys.insert(token::kubeconfig_token_key());
        }
        for key in state.tokens.due(&keys, Instant::now()) {
            match token::request(&self.shared.client, &pod, &key).await {
                Ok(issued) => state.tokens.insert(key, issued),
                Err(e) if state.tokens.get(&key).is_some() => {
                    tracing::warn!(error = %e, "token refresh failed; keeping the current token");
                }
                Err(e) => {
                    return Err(Blocked {
                        reason: "ContainerCreating",
                        event_reason: "FailedMount",
                        message: format!(
                            "cannot get a token for service account {:?}: {e}",
                            token::service_account(&pod)
                        ),
                    });
                }
            }
        }
        let io_blocked = |e: std::io::Error| Blocked {
            reason: "ContainerCreating",
            event_reason: "FailedMount",
            message: format!("cannot write the pod's credentials: {e}"),
        };
        if self.automount
            && let Some(jwt) = state.tokens.get(&token::kubeconfig_token_key())
        {
            files::write_if_changed(&self.token_path(), jwt.as_bytes()).map_err(io_blocked)?;
            let api = &self.shared.config.api_server;
            let text = token::kubeconfig(
                &api.url(),
                &api.ca_file,
                &self.token_path(),
                pod.metadata.namespace.as_deref().unwrap_or("default"),
            );
            files::write_if_changed(&self.kubeconfig_path(), text.as_bytes())
                .map_err(io_blocked)?;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let config_map = |name: &str| self.shared.config_map(&namespace, name);
        let secret = |name: &str| self.shared.secret(&namespace, name);
        let token = |key: &TokenKey| state.tokens.get(key);
        let inputs = VolumeInputs {
            env: self.env_inputs(&pod, &config_map, &secret),
            token: &token,
        };
        volumes::materialise(&pod, &self.dir.join("volumes"), &inputs).map_err(|e| Blocked {
            reason: "ContainerCreating",
            event_reason: "FailedMount",
            message: e.to_string(),
        })
    }

    fn env_inputs<'a>(
        &self,
        pod: &'a Pod,
        config_map: &'a dyn Fn(&str) -> Option<ConfigMap>,
        secret: &'a dyn Fn(&str) -> Option<Secret>,
    ) -> EnvInputs<'a> {
        EnvInputs {
            pod,
            pod_ip: Some(self.sandbox.ip.to_string()),
            host_ip: Some(self.shared.host_ip().to_string()),
            config_map,
            secret,
        }
    }

    /// How to start `container` now, or why it cannot start yet.
    pub async fn launch(&self, container: &Container) -> Result<(LaunchSpec, RunKind), Blocked> {
        let volume_dirs = self.refresh().await?;
        let pod = self.pod();
        let image = container.image.clone().unwrap_or_default();
        let rule = stand_in::rule_for(&self.shared.config, &image).map_err(|e| Blocked {
            reason: "NoLocalStandIn",
            event_reason: "NoLocalStandIn",
            message: e.to_string(),
        })?;
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let config_map = |name: &str| self.shared.config_map(&namespace, name);
        let secret = |name: &str| self.shared.secret(&namespace, name);
        let inputs = self.env_inputs(&pod, &config_map, &secret);
        let mut env = env::resolve(container, &inputs).map_err(|e| Blocked {
            reason: "CreateContainerConfigError",
            event_reason: "Failed",
            message: format!("Error: {e}"),
        })?;
        let mut mounts = MountMap::new(container, &volume_dirs);
        // The termination message file the kubelet would mount.
        let termination_log = self.dir.join(format!("{}.termination-log", container.name));
        let _ = std::fs::remove_file(&termination_log);
        mounts.add_file(
            container
                .termination_message_path
                .as_deref()
                .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH),
            termination_log.clone(),
        );
        let command = mounts.rewrite_all(&env::expand_all(
            container.command.as_deref().unwrap_or_default(),
            &env,
        ));
        let args = mounts.rewrite_all(&env::expand_all(
            container.args.as_deref().unwrap_or_default(),
            &env,
        ));
        env.map_values(|v| mounts.rewrite(v));
        let program = stand_in::program(rule, &image, &command, &args).map_err(|e| Blocked {
            reason: "CreateContainerError",
            event_reason: "Failed",
            message: e.to_string(),
        })?;
        if !program.binary.is_file() {
            return Err(Blocked {
                reason: "CreateContainerError",
                event_reason: "Failed",
                message: format!(
                    "local program {} for image {image:?} does not exist",
                    program.binary.display()
                ),
            });
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let home = self.dir.join("home");
        let _ = std::fs::create_dir_all(&home);
        let mut vars = env::EnvVars::default();
        vars.set("PATH", DEFAULT_PATH.into());
        vars.set("HOSTNAME", name.clone());
        vars.set("HOME", home.display().to_string());
        for (k, v) in env.iter() {
            vars.set(k, v.to_string());
        }
        if program.kind == RunKind::Simulator {
            // The simulator names the pod in x-inference-pod/-namespace headers and
            // needs its address for KV-cache events.
            vars.set("POD_NAME", name);
            vars.set("POD_NAMESPACE", namespace.clone());
            vars.set("POD_IP", self.sandbox.ip.to_string());
        }
        if self.automount && !env.contains("KUBECONFIG") {
            vars.set("KUBECONFIG", self.kubeconfig_path().display().to_string());
        } else if program.kind == RunKind::Binary
            && !env.contains("KUBECONFIG")
            && let Some(path) = self.mounted_credentials(container, &mounts, &namespace)
        {
            // A container that mounts a token where in-cluster clients look for
            // one (the pod has no automounted token): its own kubeconfig.
            vars.set("KUBECONFIG", path.display().to_string());
        }
        let cwd = container
            .working_dir
            .as_deref()
            .map(|w| PathBuf::from(mounts.rewrite(w)))
            .filter(|p| p.is_dir())
            .unwrap_or(home);
        let spec = LaunchSpec {
            program: program.binary,
            args: program.args,
            env: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd,
            netns: self.sandbox.netns_path(),
            log: self.log_path(&container.name),
            pid_file: self.pid_path(&container.name),
            notes: program.notes,
            kv_events: program.kv_events,
            termination_log,
        };
        Ok((spec, program.kind))
    }

    /// Remove what the pod had on disk except its logs (kept for post-mortems
    /// until the cluster is torn down).
    pub fn remove_files(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                continue;
            }
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}
