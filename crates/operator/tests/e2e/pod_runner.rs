//! Live nodes: pods of an opted-in namespace run as real processes under
//! llmd-pod-runner, one network namespace per pod, and Ready tells the truth.
//! Each test has its own live namespace.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use llmd_api::LLMDeployment;

use super::harness::*;

/// A vLLM container as the operator writes one: flags the simulator does not
/// know, a named-port readiness probe, an env var from the downward API.
fn vllm_container(model: &str) -> String {
    format!(
        r#"
      - name: vllm
        image: vllm/vllm-openai:v0.11.0
        args: ["--model", "{model}", "--port", "8000", "--tensor-parallel-size", "1", "--max-model-len", "4096", "--enable-prefix-caching"]
        env:
        - name: VLLM_NIXL_SIDE_CHANNEL_HOST
          valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
        ports: [{{name: http, containerPort: 8000}}]
        resources: {{limits: {{nvidia.com/gpu: "1"}}, requests: {{nvidia.com/gpu: "1"}}}}
        readinessProbe: {{httpGet: {{path: /health, port: http}}, periodSeconds: 5}}
        startupProbe: {{httpGet: {{path: /health, port: http}}, periodSeconds: 10, failureThreshold: 360}}"#
    )
}

/// A vLLM pod publishing KV events as llm-d configures it: bound on the pod's port
/// 5556, for routers to dial.
const KV_EVENTS_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: events, labels: {app: events}}
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: vllm
    image: vllm/vllm-openai:v0.11.0
    args: ["--model", "test/model", "--port", "8000", "--kv-events-config", '{"enable_kv_cache_events":true,"publisher":"zmq","endpoint":"tcp://*:5556","topic":"kv@$(POD_IP):8000@test/model"}']
    env:
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    ports: [{name: http, containerPort: 8000}, {name: kv-events, containerPort: 5556}]
    readinessProbe: {httpGet: {path: /health, port: http}, periodSeconds: 1}
"#;

/// A StatefulSet `sim` of `replicas` simulated vLLM pods and its headless Service.
fn model_server_set(replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: sim}}
spec:
  clusterIP: None
  selector: {{app: sim}}
  ports: [{{name: http, port: 8000, targetPort: http}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: sim}}
spec:
  replicas: {replicas}
  serviceName: sim
  podManagementPolicy: Parallel
  selector: {{matchLabels: {{app: sim}}}}
  template:
    metadata: {{labels: {{app: sim}}}}
    spec:
      terminationGracePeriodSeconds: 20
      containers:{}
"#,
        vllm_container("test/model")
    )
}

fn bare_pod(name: &str, image: &str) -> String {
    let container = if image.starts_with("vllm/") {
        vllm_container("test/model")
    } else {
        format!("\n      - name: main\n        image: {image}")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:\n      terminationGracePeriodSeconds: 20\n      containers:{container}\n"
    )
}

fn apply_ok(namespace: &str, yaml: &str) {
    let out = apply_yaml(namespace, yaml);
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn wait_pod(pods: &Api<Pod>, name: &str, what: &str, ok: impl Fn(&Pod) -> bool) -> Pod {
    wait_until(Duration::from_secs(60), what, || {
        let pods = pods.clone();
        let ok = &ok;
        async move { pods.get(name).await.ok().filter(|p| ok(p)) }
    })
    .await
}

/// `a.b.c.d` inside `a.b.0.0/16`.
fn in_cidr(ip: &str, cidr: &str) -> bool {
    let prefix: Vec<&str> = cidr.split('.').take(2).collect();
    let parts: Vec<&str> = ip.split('.').take(2).collect();
    prefix == parts
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn vllm_pod_on_a_live_node_serves_at_its_pod_ip_and_gets_endpoints() {
    let ns = TestNamespace::create_live("e2e-live-serve").await;
    let pods: Api<Pod> = Api::namespaced(client().await, &ns.name);
    let created = Instant::now();
    apply_ok(&ns.name, &model_server_set(1));
    let pod = wait_pod(&pods, "sim-0", "sim-0 Ready", is_pod_ready).await;
    eprintln!("sim-0: created to Ready in {:?}", created.elapsed());
    let spec = pod.spec.clone().expect("spec");
    let node = spec.node_name.clone().unwrap_or_default();
    assert!(
        node.starts_with("live-"),
        "scheduled on a live node, not {node}"
    );
    // Injected by the admission plugins from the namespace's annotations.
    assert_eq!(
        spec.node_selector
            .as_ref()
            .and_then(|s| s.get("llmd.dev/live"))
            .map(String::as_str),
        Some("true")
    );
    assert!(
        spec.tolerations.iter().flatten().any(|t| {
            t.key.as_deref() == Some("llmd.dev/live") && t.effect.as_deref() == Some("NoSchedule")
        }),
        "{:?}",
        spec.tolerations
    );
    let ip = pod_ip(&pod);
    let parsed: std::net::Ipv4Addr = ip.parse().expect("IPv4");
    assert!(!parsed.is_loopback(), "{ip} is loopback");
    assert!(in_cidr(&ip, &live_cidr()), "{ip} in {}", live_cidr());
    let log = std::fs::read_to_string(live_pod_dir(&ns.name, "sim-0", &uid(&pod)).join("vllm.log"))
        .expect("container log");
    assert!(
        log.contains("dropped: --tensor-parallel-size 1, --enable-prefix-caching"),
        "the log lists the dropped vLLM flags: {log}"
    );

    let response = pod_http()
        .post(format!("http://{ip}:8000/v1/completions"))
        .header("content-type", "application/json")
        .body(r#"{"model":"test/model","prompt":"hello there","max_tokens":3}"#)
        .send()
        .await
        .expect("the pod answers at its IP");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-inference-pod")
            .and_then(|v| v.to_str().ok()),
        Some("sim-0")
    );
    assert_eq!(
        response
            .headers()
            .get("x-inference-namespace")
            .and_then(|v| v.to_str().ok()),
        Some(ns.name.as_str())
    );

    let slices: Api<EndpointSlice> = Api::namespaced(client().await, &ns.name);
    wait_until(
        Duration::from_secs(30),
        "the Service's EndpointSlice lists the pod IP",
        || {
            let (slices, ip) = (slices.clone(), ip.clone());
            async move {
                let list = slices
                    .list(&ListParams::default().labels("kubernetes.io/service-name=sim"))
                    .await
                    .ok()?;
                list.items
                    .iter()
                    .flat_map(|s| s.endpoints.iter())
                    .any(|e| {
                        e.addresses.contains(&ip)
                            && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
                    })
                    .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn killed_model_server_is_not_ready_within_two_seconds_then_restarted() {
    let ns = TestNamespace::create_live("e2e-live-restart").await;
    let pods: Api<Pod> = Api::namespaced(client().await, &ns.name);
    apply_ok(&ns.name, &model_server_set(1));
    let pod = wait_pod(&pods, "sim-0", "sim-0 Ready", is_pod_ready).await;
    assert_eq!(restart_count(&pod), 0);
    let pid = live_pid(&ns.name, "sim-0", &uid(&pod), "vllm").expect("pid file");
    assert!(process_alive(pid));

    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    loop {
        let pod = pods.get("sim-0").await.expect("pod");
        if !is_pod_ready(&pod) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "sim-0 still Ready {:?} after its process was killed",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("sim-0: NotReady {:?} after SIGKILL", killed.elapsed());
    let pod = wait_pod(&pods, "sim-0", "sim-0 Ready again", is_pod_ready).await;
    eprintln!("sim-0: Ready again {:?} after SIGKILL", killed.elapsed());
    assert_eq!(restart_count(&pod), 1, "restartCount counts the crash");
    let last = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    assert_eq!(
        last,
        Some(137),
        "lastState.terminated has the SIGKILL exit code"
    );
    let new_pid = live_pid(&ns.name, "sim-0", &uid(&pod), "vllm").expect("pid file");
    assert_ne!(new_pid, pid);
    assert!(process_alive(new_pid));
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn deleted_pod_gets_sigterm_and_its_network_is_removed() {
    let ns = TestNamespace::create_live("e2e-live-delete").await;
    let pods: Api<Pod> = Api::namespaced(client().await, &ns.name);
    apply_ok(&ns.name, &bare_pod("victim", "vllm/vllm-openai:v0.11.0"));
    let pod = wait_pod(&pods, "victim", "victim Ready", is_pod_ready).await;
    let uid = uid(&pod);
    let pid = live_pid(&ns.name, "victim", &uid, "vllm").expect("pid file");
    let netns = format!(
        "{}-{uid}",
        std::env::var("LLMD_LIVE_PREFIX").expect("LLMD_LIVE_PREFIX")
    );
    assert!(
        netns_list().contains(&netns),
        "{netns} exists while the pod runs"
    );

    pods.delete("victim", &DeleteParams::default())
        .await
        .expect("delete");
    wait_until(
        Duration::from_secs(30),
        "the runner finalises the deletion",
        || {
            let pods = pods.clone();
            async move {
                pods.get_opt("victim")
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await;
    assert!(!process_alive(pid), "process {pid} is gone");
    assert!(!netns_list().contains(&netns), "{netns} removed");
    let dir = live_pod_dir(&ns.name, "victim", &uid);
    let log = std::fs::read_to_string(dir.join("vllm.log")).expect("the log is kept");
    assert!(
        log.contains("Shutdown signal received"),
        "the simulator saw SIGTERM and shut down gracefully:\n{log}"
    );
    assert!(!dir.join("volumes").exists() && !dir.join("kubeconfig").exists());
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn unknown_image_gets_a_warning_event_and_other_pods_keep_running() {
    let ns = TestNamespace::create_live("e2e-live-unknown").await;
    let pods: Api<Pod> = Api::namespaced(client().await, &ns.name);
    let image = "registry.example/no-such-image:1";
    apply_ok(&ns.name, &bare_pod("stranger", image));
    apply_ok(&ns.name, &bare_pod("neighbour", "vllm/vllm-openai:v0.11.0"));

    let events: Api<Event> = Api::namespaced(client().await, &ns.name);
    let note = wait_until(
        Duration::from_secs(30),
        "a Warning event naming the image",
        || {
            let events = events.clone();
            async move {
                events
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter(|e| e.type_.as_deref() == Some("Warning"))
                    .filter(|e| {
                        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("stranger")
                    })
                    .find_map(|e| e.note.filter(|n| n.contains(image)))
            }
        },
    )
    .await;
    eprintln!("event: {note}");
    let stranger = wait_pod(&pods, "stranger", "stranger waiting NoLocalStandIn", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
            == Some("NoLocalStandIn")
    })
    .await;
    assert!(!is_pod_ready(&stranger));

    let neighbour = wait_pod(&pods, "neighbour", "neighbour Ready", is_pod_ready).await;
    let health = pod_http()
        .get(format!("http://{}:8000/health", pod_ip(&neighbour)))
        .send()
        .await
        .expect("neighbour answers");
    assert_eq!(health.status(), 200);
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn pods_outside_live_namespaces_stay_on_kwok_nodes() {
    live_cidr();
    let ns = TestNamespace::create("e2e-not-live").await;
    let pods: Api<Pod> = Api::namespaced(client().await, &ns.name);
    apply_ok(&ns.name, &bare_pod("fake", "vllm/vllm-openai:v0.11.0"));
    let pod = wait_pod(&pods, "fake", "fake Running on a kwok node", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    assert!(!node.starts_with("live-"), "{node} is a live node");
    assert!(
        pod_ip(&pod).starts_with("127."),
        "kwok's loopback range: {}",
        pod_ip(&pod)
    );
    let tolerates_live = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key.as_deref() == Some("llmd.dev/live")));
    assert!(
        !tolerates_live,
        "no live toleration outside live namespaces"
    );
    let runner_dirs: Vec<String> = std::fs::read_dir(pod_runner_state().join("pods"))
        .expect("runner state")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !runner_dirs.iter().any(|d| d.ends_with(&uid(&pod))),
        "the runner does not run it"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn endpoint_picker_pod_discovers_model_servers_with_its_service_account() {
    install_crds().await;
    let ns = TestNamespace::create_live("e2e-live-epp").await;
    let _operator = Operator::start(&ns.name, "op", &[]);
    apply_ok(&ns.name, &small_spec("live", 0, 2));
    let client = client().await;
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    // Ready now means every pod really answers its probes.
    wait_for_ld(&lds, "live", Duration::from_secs(120), "Ready", is_ready).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let decode: BTreeSet<String> = pods
        .list(&ListParams::default().labels("llm-d.ai/role=decode"))
        .await
        .expect("pods")
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(decode.len(), 2);
    let epp = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=endpoint-picker"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .next()
        .expect("the EPP pod");
    let epp_name = epp.metadata.name.clone().expect("name");
    let kubeconfig =
        std::fs::read_to_string(live_pod_dir(&ns.name, &epp_name, &uid(&epp)).join("kubeconfig"))
            .expect("the EPP pod's kubeconfig");
    assert!(kubeconfig.contains("tokenFile"), "{kubeconfig}");
    assert!(!kubeconfig.contains("client-certificate"), "{kubeconfig}");

    // It listed the decode pods through the API, as its ServiceAccount.
    let ip = pod_ip(&epp);
    let metrics = format!("http://{ip}:9090/metrics");
    wait_until(
        Duration::from_secs(30),
        "the EPP pod sees 2 endpoints",
        || {
            let url = metrics.clone();
            async move {
                let text = pod_http().get(url).send().await.ok()?.text().await.ok()?;
                let total: f64 = text
                    .lines()
                    .filter(|l| l.starts_with("llmd_epp_endpoints"))
                    .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                    .sum();
                (total == 2.0).then_some(())
            }
        },
    )
    .await;

    // And routes a request from its pod to a decode pod over the pod network.
    let response = pod_http()
        .post(format!("http://{ip}:8080/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(r#"{"model":"test/model","max_tokens":4,"messages":[{"role":"user","content":"hello"}]}"#)
        .send()
        .await
        .expect("the EPP proxy answers");
    assert_eq!(response.status(), 200);
    let served_by = response
        .headers()
        .get("x-inference-pod")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .expect("x-inference-pod");
    assert!(decode.contains(&served_by), "{served_by} not in {decode:?}");

    // A weight change reaches the mounted config file in place; the EPP applies it
    // without a restart.
    let reloads = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("llmd_epp_config_reloads_total{outcome=\"applied\"}"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = reloads(
        &pod_http()
            .get(&metrics)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text"),
    );
    let patch = serde_json::json!({"spec": {"router": {"scorers": {"queue": 7}}}});
    lds.patch(
        "live",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .expect("patch scorers");
    wait_until(
        Duration::from_secs(30),
        "the EPP pod applies the new config",
        || {
            let url = metrics.clone();
            async move {
                let text = pod_http().get(url).send().await.ok()?.text().await.ok()?;
                (reloads(&text) > before).then_some(())
            }
        },
    )
    .await;
    let epp_now = pods.get(&epp_name).await.expect("EPP pod");
    assert_eq!(restart_count(&epp_now), 0, "applied live, not by a restart");
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn missing_config_map_blocks_the_container_until_it_exists() {
    let ns = TestNamespace::create_live("e2e-live-config").await;
    let pods: Api<Pod> = Api::namespaced(client().await, &ns.name);
    let pod = r#"apiVersion: v1
kind: Pod
metadata: {name: configured}
spec:
  containers:
  - name: vllm
    image: vllm/vllm-openai:v0.11.0
    args: ["--model", "$(MODEL)", "--port", "8000"]
    envFrom: [{configMapRef: {name: engine}}]
    readinessProbe: {tcpSocket: {port: 8000}}
"#;
    apply_ok(&ns.name, pod);
    let waiting_reason = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
    };
    wait_pod(
        &pods,
        "configured",
        "waiting with CreateContainerConfigError",
        |p| waiting_reason(p).as_deref() == Some("CreateContainerConfigError"),
    )
    .await;
    apply_ok(
        &ns.name,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: engine}\ndata: {MODEL: from/configmap}\n",
    );
    let ready = wait_pod(
        &pods,
        "configured",
        "Ready once the ConfigMap exists",
        is_pod_ready,
    )
    .await;
    let models = pod_http()
        .get(format!("http://{}:8000/v1/models", pod_ip(&ready)))
        .send()
        .await
        .expect("models")
        .text()
        .await
        .expect("text");
    assert!(
        models.contains("from/configmap"),
        "$(MODEL) expanded from envFrom: {models}"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn run_to_completion_pods_end_succeeded_or_failed() {
    let ns = TestNamespace::create_live("e2e-live-job").await;
    // `llmd-operator crd` prints the CRD and exits 0: a Job that completes.
    let job = r#"apiVersion: batch/v1
kind: Job
metadata: {name: print-crd}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      containers:
      - name: operator
        image: ghcr.io/llmd-dev/llmd-operator:0.1.0
        args: [crd]
"#;
    apply_ok(&ns.name, job);
    let failing = "apiVersion: v1\nkind: Pod\nmetadata: {name: bad-flag}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: operator\n    image: ghcr.io/llmd-dev/llmd-operator:0.1.0\n    args: [--no-such-flag]\n";
    apply_ok(&ns.name, failing);

    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client().await, &ns.name);
    wait_until(Duration::from_secs(60), "Job print-crd succeeded", || {
        let jobs = jobs.clone();
        async move {
            let job = jobs.get("print-crd").await.ok()?;
            (job.status?.succeeded? == 1).then_some(())
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client().await, &ns.name);
    let pod = pods
        .list(&ListParams::default().labels("job-name=print-crd"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .next()
        .expect("the Job's pod");
    let status = pod.status.clone().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    let terminated = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .expect("terminated");
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed"))
    );
    let name = pod.metadata.name.clone().expect("name");
    let log =
        std::fs::read_to_string(live_pod_dir(&ns.name, &name, &uid(&pod)).join("operator.log"))
            .expect("log");
    assert!(log.contains("kind: CustomResourceDefinition"), "{log}");
    assert!(
        !live_pod_dir(&ns.name, &name, &uid(&pod))
            .join("kubeconfig")
            .exists(),
        "automountServiceAccountToken: false gives no credentials"
    );

    let bad = wait_pod(&pods, "bad-flag", "bad-flag Failed", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await;
    assert_eq!(restart_count(&bad), 0, "restartPolicy Never: not restarted");
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn chart_operator_pod_reconciles_with_the_charts_rbac() {
    install_crds().await;
    let ns = TestNamespace::create_live("e2e-live-chart").await;
    let release = "live-e2e";
    // The operator pod itself runs llmd-operator as the chart's ServiceAccount;
    // --wait holds until its readiness probe (/readyz) passes.
    install_chart_operator(release, &ns.name, "90s");
    apply_ok(&ns.name, &small_spec("by-pod", 0, 1));
    let lds: Api<LLMDeployment> = Api::namespaced(client().await, &ns.name);
    let result = tokio::spawn({
        let lds = lds.clone();
        async move {
            wait_for_ld(&lds, "by-pod", Duration::from_secs(120), "Ready", is_ready).await;
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client().await, &ns.name);
    let operator = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=llmd-operator"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .next()
        .expect("the operator pod");
    let log = std::fs::read_to_string(
        live_pod_dir(
            &ns.name,
            operator.metadata.name.as_deref().unwrap_or_default(),
            &uid(&operator),
        )
        .join("operator.log"),
    )
    .unwrap_or_default();
    helm_ok(&["uninstall", release, "--namespace", &ns.name, "--wait"]);
    assert!(
        result.is_ok(),
        "the operator pod did not reconcile; its log:\n{log}"
    );
    assert!(log.contains("became leader"), "{log}");
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn simulated_vllm_pod_offers_kv_events_on_the_port_vllm_would_bind() {
    use zeromq::{Socket, SocketRecv, SubSocket};
    let ns = TestNamespace::create_live("e2e-live-kv-events").await;
    let pods: Api<Pod> = Api::namespaced(client().await, &ns.name);
    apply_ok(&ns.name, KV_EVENTS_POD);
    let pod = wait_pod(&pods, "events", "events Ready", is_pod_ready).await;
    let ip = pod_ip(&pod);
    let mut sub = SubSocket::new();
    sub.connect(&format!("tcp://{ip}:5556"))
        .await
        .expect("the pod's events port accepts");
    sub.subscribe("kv@").await.expect("subscribe");
    // PUB/SUB drops what precedes the subscription: send distinct prompts until
    // one's events arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0;
    let frames = loop {
        assert!(Instant::now() < deadline, "no KV events from {ip}:5556");
        attempt += 1;
        let prompt = format!("attempt {attempt} {}", "words to fill blocks ".repeat(10));
        let response = pod_http()
            .post(format!("http://{ip}:8000/v1/completions"))
            .header("content-type", "application/json")
            .body(
                serde_json::json!({"model": "test/model", "prompt": prompt, "max_tokens": 1})
                    .to_string(),
            )
            .send()
            .await
            .expect("the pod answers");
        assert_eq!(response.status(), 200);
        if let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(1500), sub.recv()).await {
            break msg.into_vec();
        }
    };
    assert_eq!(frames.len(), 3, "[topic, sequence, payload]");
    let topic = String::from_utf8_lossy(&frames[0]);
    assert!(
        topic.starts_with(&format!("kv@{ip}")),
        "topic {topic} names the pod IP"
    );
    assert_eq!(frames[1].len(), 8, "8-byte sequence");
    let log =
        std::fs::read_to_string(live_pod_dir(&ns.name, "events", &uid(&pod)).join("vllm.log"))
            .expect("container log");
    assert!(log.contains("--use-vllm-map-event-format"), "{log}");
}
