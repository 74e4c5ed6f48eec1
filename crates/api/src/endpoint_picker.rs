//! What the operator and the EndpointPicker (`llmd-epp`) agree on: the ports it
//! serves, the headers it reads and writes, its command-line flags (the operator
//! renders them, the EPP parses them) and the selector of the model-server pods it
//! routes to. Written once here so the two sides cannot drift apart.

use std::collections::BTreeMap;

use crate::endpoint_picker_config::CONFIG_KEY;
use crate::{MODEL_SERVER_PORT, labels};

/// Envoy ext-proc gRPC.
pub const EXT_PROC_PORT: u16 = 9002;
/// gRPC health, service [`HEALTH_SERVICE`].
pub const GRPC_HEALTH_PORT: u16 = 9003;
/// The OpenAI-compatible HTTP proxy.
pub const HTTP_PORT: u16 = 8080;
/// Prometheus metrics at `/metrics`.
pub const METRICS_PORT: u16 = 9090;
/// gRPC health service name the EPP answers (the GIE convention).
pub const HEALTH_SERVICE: &str = "inference-extension";
/// Where the `<name>-epp-config` ConfigMap is mounted in the EPP container.
pub const CONFIG_DIR: &str = "/etc/llmd-epp";

/// Request and response headers.
pub mod header {
    /// The endpoint(s) chosen for a request, `ip:port[,ip:port...]` (GIE).
    pub const DESTINATION: &str = "x-gateway-destination-endpoint";
    /// The prefill endpoint of a disaggregated request, `ip:port` (llm-d).
    pub const PREFILLER: &str = "x-prefiller-host-port";
    /// Pins a client to an endpoint when session affinity is on.
    pub const SESSION: &str = "x-session-token";
    /// The request id engines key their KV bookkeeping by. Both legs of a P/D
    /// request carry one id the EPP generated.
    pub const REQUEST_ID: &str = "x-request-id";
    /// The client's own `x-request-id`, passed on beside the EPP's for tracing.
    pub const CLIENT_REQUEST_ID: &str = "x-client-request-id";
    /// Response of a disaggregated request: the one request id both legs carried
    /// (what the engines' logs and KV bookkeeping know the request by).
    pub const PD_REQUEST_ID: &str = "x-llmd-pd-request-id";
    /// Asks for the reasons of a routing decision (request, value `true`), and
    /// carries them (response, compact JSON of at most 4 KiB: the winners and the
    /// best other candidates with each scorer's score and weight, and the P/D
    /// decision's inputs). Debugging aid; costs nothing when not asked for.
    pub const EXPLAIN: &str = "x-llmd-explain";
    /// A request's TTFT objective in milliseconds (llm-d's name; the older
    /// `x-slo-ttft-ms` is accepted too).
    pub const SLO_TTFT_MS: &str = "x-llm-d-slo-ttft-ms";
    /// A request's inter-token (time per output token) objective in milliseconds.
    pub const SLO_TPOT_MS: &str = "x-llm-d-slo-tpot-ms";
    pub const LEGACY_SLO_TTFT_MS: &str = "x-slo-ttft-ms";
    pub const LEGACY_SLO_TPOT_MS: &str = "x-slo-tpot-ms";
    /// Response: the TTFT the chosen endpoint's latency model predicted, in ms
    /// (answers carrying an objective, or an explanation).
    pub const PREDICTED_TTFT_MS: &str = "x-llmd-predicted-ttft-ms";
    /// Response: the TTFT this request saw through the EPP's proxy, in ms
    /// (non-streamed answers to requests carrying an objective).
    pub const OBSERVED_TTFT_MS: &str = "x-llmd-observed-ttft-ms";
    /// Response: the mean time between tokens the chosen decode endpoint's model
    /// predicted, in ms (answers to requests carrying a TPOT objective).
    pub const PREDICTED_TPOT_MS: &str = "x-llmd-predicted-tpot-ms";
    /// Response: `ttft`, `tpot` or `ttft,tpot`: the objectives no endpoint was
    /// predicted to meet (the request went to the best predicted).
    pub const SLO_PREDICTED_MISS: &str = "x-llmd-slo-predicted-miss";
}

/// Names of the EPP's command-line flags (without the leading `--`).
pub mod flag {
    pub const STATIC_ENDPOINTS: &str = "static-endpoints";
    pub const POOL_NAME: &str = "pool-name";
    pub const POOL_NAMESPACE: &str = "pool-namespace";
    pub const SELECTOR: &str = "selector";
    pub const TARGET_PORT: &str = "target-port";
    pub const CONFIG_FILE: &str = "config-file";
    pub const CONFIG_MAP: &str = "config-map";
    pub const PROXY_ADDR: &str = "proxy-addr";
    pub const GRPC_ADDR: &str = "grpc-addr";
    pub const GRPC_HEALTH_ADDR: &str = "grpc-health-addr";
    pub const METRICS_ADDR: &str = "metrics-addr";
    pub const LOG_FORMAT: &str = "log-format";
    pub const KV_EVENTS_PORT: &str = "kv-events-port";
}

/// Labels that select the model-server pods of one LLMDeployment: the EPP's pool,
/// the InferencePool's selector, and the pods the tuner reads.
pub fn model_server_selector(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::INSTANCE.to_string(), instance.to_string()),
        (labels::INFERENCE_SERVING.to_string(), "true".to_string()),
    ])
}

/// A label map as a selector string, `k=v,k2=v2`.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The arguments the operator gives `llmd-epp` in an LLMDeployment's pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub pool_name: String,
    pub pool_namespace: String,
    pub selector: String,
    pub target_port: u16,
    pub config_file: String,
    pub config_map: String,
    pub proxy_addr: String,
    pub grpc_addr: String,
    pub grpc_health_addr: String,
    pub metrics_addr: String,
    pub log_format: String,
    /// Each model server's KV-events port, for precise prefix routing.
    pub kv_events_port: Option<u16>,
}

impl Args {
    /// The arguments for the pool of LLMDeployment `name` in `namespace`: every
    /// server on its standard port on all interfaces, the config from its ConfigMap
    /// `config_map` (watched through the API, the mounted file standing in), JSON
    /// logs.
    pub fn for_pool(name: &str, namespace: &str, config_map: &str) -> Args {
        let any = |port: u16| format!("0.0.0.0:{port}");
        Args {
            pool_name: name.to_string(),
            pool_namespace: namespace.to_string(),
            selector: selector_string(&model_server_selector(name)),
            target_port: MODEL_SERVER_PORT as u16,
            config_file: format!("{CONFIG_DIR}/{CONFIG_KEY}"),
            config_map: config_map.to_string(),
            proxy_addr: any(HTTP_PORT),
            grpc_addr: any(EXT_PROC_PORT),
            grpc_health_addr: any(GRPC_HEALTH_PORT),
            metrics_addr: any(METRICS_PORT),
            log_format: "json".to_string(),
            kv_events_port: None,
        }
    }

    /// Routes by the KV-cache events every model server publishes on `port`.
    pub fn with_kv_events(mut self, port: u16) -> Args {
        self.kv_events_port = Some(port);
        self
    }

    /// As a command line: `--flag value` pairs.
    pub fn render(&self) -> Vec<String> {
        let pairs = [
            (flag::POOL_NAME, self.pool_name.clone()),
            (flag::POOL_NAMESPACE, self.pool_namespace.clone()),
            (flag::SELECTOR, self.selector.clone()),
            (flag::TARGET_PORT, self.target_port.to_string()),
            (flag::CONFIG_FILE, self.config_file.clone()),
            (flag::CONFIG_MAP, self.config_map.clone()),
            (flag::PROXY_ADDR, self.proxy_addr.clone()),
            (flag::GRPC_ADDR, self.grpc_addr.clone()),
            (flag::GRPC_HEALTH_ADDR, self.grpc_health_addr.clone()),
            (flag::METRICS_ADDR, self.metrics_addr.clone()),
            (flag::LOG_FORMAT, self.log_format.clone()),
        ];
        let kv_events = self
            .kv_events_port
            .map(|port| (flag::KV_EVENTS_PORT, port.to_string()));
        pairs
            .into_iter()
            .chain(kv_events)
            .flat_map(|(flag, value)| [format!("--{flag}"), value])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_selector_names_the_instance_and_serving_pods() {
        assert_eq!(
            selector_string(&model_server_selector("llama")),
            "app.kubernetes.io/instance=llama,llm-d.ai/inference-serving=true"
        );
    }

    #[test]
    fn args_render_as_flag_value_pairs() {
        let args = Args::for_pool("llama", "ns", "llama-epp-config").render();
        assert_eq!(args.len(), 22);
        assert_eq!(args[0..2], ["--pool-name", "llama"]);
        assert_eq!(args[8..10], ["--config-file", "/etc/llmd-epp/config.yaml"]);
        let precise = Args::for_pool("llama", "ns", "c")
            .with_kv_events(5556)
            .render();
        assert_eq!(precise[22..], ["--kv-events-port", "5556"]);
    }
}
