//! The runner's YAML config: which nodes it registers, the pod network, how images
//! map to local programs, and the timing knobs of probes, restarts and shutdown.
//!
//! cluster-up writes it; everything the runner does that depends on the cluster
//! (addresses, paths to binaries) comes from here, so the runner itself holds no
//! knowledge of the local cluster's layout.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::network::Cidr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Where pod directories (volumes, logs, pid files), IP allocations and the
    /// per-pod kubeconfigs live.
    pub state_dir: PathBuf,
    /// How processes in pods reach the API server.
    pub api_server: ApiServer,
    pub network: NetworkConfig,
    /// The nodes this runner registers and runs the pods of.
    pub nodes: Vec<NodeConfig>,
    /// Image -> local program, first match wins.
    #[serde(default)]
    pub images: Vec<ImageRule>,
    #[serde(default)]
    pub probes: ProbeTiming,
    #[serde(default)]
    pub restart_backoff: BackoffConfig,
    /// How long a pod's processes get after SIGTERM when the runner itself stops.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_millis: u64,
}

fn default_shutdown_grace_ms() -> u64 {
    3000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServer {
    /// Host (an address reachable from the pod network, normally the bridge
    /// gateway) and port of kube-apiserver.
    pub host: String,
    pub port: u16,
    /// CA bundle that signed the API server's certificate.
    pub ca_file: PathBuf,
}

impl ApiServer {
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkConfig {
    /// Linux bridge the pods' veths attach to; created (with the gateway address)
    /// if missing, and then removed again when the runner stops.
    pub bridge: String,
    /// Prefix of every network namespace (`<prefix>-<pod uid>`) and host-side veth
    /// (`<prefix>v<hex>`) the runner makes, so leftovers of one cluster can be
    /// found and removed without touching another's.
    pub link_prefix: String,
    /// Pod addresses; the first host address is the gateway on the bridge.
    pub cidr: Cidr,
}

impl NetworkConfig {
    pub fn gateway(&self) -> Ipv4Addr {
        self.cidr.nth(1)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Capacity, also reported as allocatable (e.g. cpu, memory, pods, nvidia.com/gpu).
    pub capacity: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<TaintConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaintConfig {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    pub effect: String,
}

/// How the containers of one image run.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageRule {
    /// Image repositories this rule matches (tag and digest ignored; `docker.io/`
    /// and `docker.io/library/` prefixes are optional).
    pub repositories: Vec<String>,
    pub run: RunKind,
    /// Absolute path of the local program.
    pub binary: PathBuf,
    /// Arguments added before the container's own (simulator only); a flag the
    /// container sets itself wins.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// The image's other programs: a container whose `command` names one of these
    /// (e.g. the engine image's `python3`) runs the local program given for it,
    /// with its arguments as they are.
    #[serde(default)]
    pub commands: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunKind {
    /// llm-d-inference-sim with the container's vLLM arguments translated.
    Simulator,
    /// The program with the container's arguments as they are.
    Binary,
}

/// Probe timing. Readiness decides what the rest of the cluster sees, so its period
/// is capped; probes that have not succeeded yet are repeated faster, so a pod
/// turns Ready soon after its server listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeTiming {
    /// Upper bound of readiness and startup probe periods.
    #[serde(default = "default_period_cap")]
    pub period_cap_millis: u64,
    /// Period of a readiness or startup probe whose last result was a failure.
    #[serde(default = "default_retry_period")]
    pub retry_period_millis: u64,
}

fn default_period_cap() -> u64 {
    1000
}
fn default_retry_period() -> u64 {
    200
}

impl Default for ProbeTiming {
    fn default() -> Self {
        Self {
            period_cap_millis: default_period_cap(),
            retry_period_millis: default_retry_period(),
        }
    }
}

impl ProbeTiming {
    pub fn period_cap(&self) -> Duration {
        Duration::from_millis(self.period_cap_millis)
    }
    pub fn retry_period(&self) -> Duration {
        Duration::from_millis(self.retry_period_millis.min(self.period_cap_millis))
    }
}

/// Restart backoff of crashed containers.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(default = "default_initial")]
    pub initial_millis: u64,
    #[serde(default = "default_max")]
    pub max_millis: u64,
    /// A container that ran this long before exiting starts over at `initial`.
    #[serde(default = "default_reset")]
    pub reset_after_millis: u64,
}

fn default_initial() -> u64 {
    1000
}
fn default_max() -> u64 {
    30_000
}
fn default_reset() -> u64 {
    60_000
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_millis: default_initial(),
            max_millis: default_max(),
            reset_after_millis: default_reset(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config: Config = serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !self.state_dir.is_absolute() {
            return invalid(format!(
                "stateDir {} is not absolute",
                self.state_dir.display()
            ));
        }
        if self.nodes.is_empty() {
            return invalid("no nodes".into());
        }
        let net = &self.network;
        if net.bridge.is_empty() || net.bridge.len() > 15 {
            return invalid(format!(
                "bridge name {:?} must have 1-15 characters",
                net.bridge
            ));
        }
        // veth names are <prefix>v<4 hex digits for a /16>; Linux allows 15 bytes.
        let hex = net.cidr.host_hex_width();
        if net.link_prefix.is_empty() || net.link_prefix.len() + 1 + hex > 15 {
            return invalid(format!(
                "linkPrefix {:?} is too long for veth names in {} (at most {} characters)",
                net.link_prefix,
                net.cidr,
                15usize.saturating_sub(1 + hex)
            ));
        }
        if net.cidr.prefix_len() > 30 {
            return invalid(format!("cidr {} has no room for pods", net.cidr));
        }
        for rule in &self.images {
            if !rule.binary.is_absolute() {
                return invalid(format!(
                    "image binary {} is not absolute",
                    rule.binary.display()
                ));
            }
        }
        if self.restart_backoff.initial_millis == 0
            || self.restart_backoff.max_millis < self.restart_backoff.initial_millis
        {
            return invalid("restartBackoff: need 0 < initialMillis <= maxMillis".into());
        }
        if self.probes.period_cap_millis == 0 || self.probes.retry_period_millis == 0 {
            return invalid("probes: periods must be positive".into());
        }
        Ok(())
    }

    /// The rule for an image, if it has a local stand-in.
    pub fn image_rule(&self, image: &str) -> Option<&ImageRule> {
        let repo = repository(image);
        self.images
            .iter()
            .find(|r| r.repositories.iter().any(|m| normalise(m) == repo))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_millis)
    }
}

/// The repository part of an image reference, without tag, digest and the implied
/// Docker Hub registry.
pub fn repository(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A tag is after the last ':' that follows the last '/' (a ':' before it is a
    // registry port).
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let repo = match without_digest[last_slash..].rfind(':') {
        Some(i) => &without_digest[..last_slash + i],
        None => without_digest,
    };
    normalise(repo)
}

fn normalise(repo: &str) -> String {
    let repo = repo
        .strip_prefix("docker.io/library/")
        .or_else(|| repo.strip_prefix("docker.io/"))
        .or_else(|| repo.strip_prefix("index.docker.io/"))
        .unwrap_or(repo);
    repo.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_strips_tag_digest_and_docker_hub() {
        assert_eq!(repository("vllm/vllm-openai:v0.11.0"), "vllm/vllm-openai");
        assert_eq!(repository("docker.io/vllm/vllm-openai"), "vllm/vllm-openai");
        assert_eq!(
            repository("ghcr.io/llmd-dev/llmd-epp:0.1.0@sha256:abc"),
            "ghcr.io/llmd-dev/llmd-epp"
        );
        assert_eq!(
            repository("registry.local:5000/team/img:1"),
            "registry.local:5000/team/img"
        );
        assert_eq!(
            repository("registry.local:5000/img"),
            "registry.local:5000/img"
        );
        assert_eq!(repository("docker.io/library/busybox:1"), "busybox");
    }

    fn sample() -> &'static str {
        r#"
stateDir: /tmp/runner
apiServer: {host: 10.213.0.1, port: 6443, caFile: /tmp/ca.crt}
network: {bridge: llmd213br, linkPrefix: llmd213, cidr: 10.213.0.0/16}
nodes:
- name: live-cpu-0
  capacity: {cpu: "8", pods: "110"}
images:
- repositories: [vllm/vllm-openai]
  run: simulator
  binary: /bin/sim
  extraArgs: [--enable-kvcache]
- repositories: [ghcr.io/llmd-dev/llmd-epp]
  run: binary
  binary: /bin/epp
"#
    }

    #[test]
    fn config_parses_and_matches_images_by_repository() {
        let config: Config = serde_yaml::from_str(sample()).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.network.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        let rule = config.image_rule("vllm/vllm-openai:latest").expect("vllm");
        assert_eq!(rule.run, RunKind::Simulator);
        assert!(
            config
                .image_rule("ghcr.io/llmd-dev/llmd-epp:0.1.0")
                .is_some()
        );
        assert!(config.image_rule("busybox").is_none());
        assert_eq!(config.probes.period_cap(), Duration::from_secs(1));
    }

    #[test]
    fn config_refuses_a_link_prefix_that_makes_veth_names_too_long() {
        let text = sample().replace("linkPrefix: llmd213", "linkPrefix: llmd-too-long");
        let config: Config = serde_yaml::from_str(&text).expect("parses");
        assert!(config.validate().is_err());
    }
}
