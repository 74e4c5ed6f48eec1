//! The EndpointPicker as the operator deploys it: `llmd-epp` run with the exact
//! arguments of the `<name>-epp` Deployment (addresses moved to free local ports,
//! the config file taken from `<name>-epp-config`) discovers the model-server pods
//! through the API server and routes a request to one of them.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::ListParams;
use llmd_api::LLMDeployment;

use super::harness::*;

struct Epp(Child);

impl Drop for Epp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn deployed_endpoint_picker_discovers_pods_and_routes_to_them() {
    install_crds().await;
    model_server_on_pod_ips().await;
    let ns = TestNamespace::create("e2e-epp").await;
    let _operator = Operator::start(&ns.name, "op", &[]);
    assert!(
        apply_yaml(&ns.name, &small_spec("routed", 0, 2))
            .status
            .success()
    );
    let client = client().await;
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    wait_for_ld(&lds, "routed", Duration::from_secs(120), "Ready", is_ready).await;

    // The operator's EPP config and arguments.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let config = cms.get("routed-epp-config").await.expect("EPP config");
    let dir = repo().join("target/e2e-logs");
    std::fs::create_dir_all(&dir).expect("dir");
    let config_path = dir.join(format!("{}-epp-config.yaml", ns.name));
    std::fs::write(&config_path, &config.data.expect("data")["config.yaml"]).expect("write config");
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .get("routed-epp")
        .await
        .expect("EPP Deployment");
    let args = deployment
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .expect("args");
    let proxy_port = free_port();
    let metrics_port = free_port();
    let mut local_args = Vec::new();
    for pair in args.chunks(2) {
        let value = match pair[0].as_str() {
            "--config-file" => config_path.display().to_string(),
            "--proxy-addr" => format!("127.0.0.1:{proxy_port}"),
            "--metrics-addr" => format!("127.0.0.1:{metrics_port}"),
            "--grpc-addr" | "--grpc-health-addr" => format!("127.0.0.1:{}", free_port()),
            _ => pair.get(1).cloned().unwrap_or_default(),
        };
        local_args.extend([pair[0].clone(), value]);
    }
    let epp_bin = Path::new(env!("CARGO_BIN_EXE_llmd-operator")).with_file_name("llmd-epp");
    assert!(
        epp_bin.is_file(),
        "{} missing: make e2e builds it",
        epp_bin.display()
    );
    let log = std::fs::File::create(dir.join(format!("{}-llmd-epp.log", ns.name))).expect("log");
    let _epp = Epp(Command::new(&epp_bin)
        .args(&local_args)
        .env("KUBECONFIG", kubeconfig())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("llmd-epp starts"));

    // It finds both decode pods through the API.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod_endpoints: BTreeSet<String> = pods
        .list(&ListParams::default().labels("llm-d.ai/role=decode"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter_map(|p| Some(format!("{}:8000", p.status?.pod_ip?)))
        .collect();
    assert_eq!(pod_endpoints.len(), 2);
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    wait_until(Duration::from_secs(30), "llmd-epp sees 2 endpoints", || {
        let url = metrics_url.clone();
        async move {
            let text = reqwest::get(url).await.ok()?.text().await.ok()?;
            let total: f64 = text
                .lines()
                .filter(|l| l.starts_with("llmd_epp_endpoints"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .sum();
            (total == 2.0).then_some(())
        }
    })
    .await;

    // A request through its proxy lands on one of the pods.
    let http = reqwest::Client::new();
    let response = http
        .post(format!("http://127.0.0.1:{proxy_port}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(r#"{"model":"test/model","max_tokens":4,"messages":[{"role":"user","content":"hello"}]}"#)
        .send()
        .await
        .expect("proxy answers");
    assert_eq!(response.status(), 200);
    let destination = response
        .headers()
        .get("x-gateway-destination-endpoint")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .expect("destination header");
    assert!(
        pod_endpoints.contains(&destination),
        "{destination} not in {pod_endpoints:?}"
    );
    let body = response.text().await.expect("body");
    assert!(body.contains("choices"), "{body}");
}
