//! Shared pieces of the e2e tests: the cluster from the environment, kubectl, a
//! namespace per test, an operator process per test, and condition polling.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use llmd_api::LLMDeployment;
use llmd_api::inference_pool::InferencePool;
use tokio::sync::OnceCell;

/// Root of the repository: of the checkout cargo runs in (read at run time, as
/// a test binary built in a shared target directory may have been compiled in
/// another checkout).
pub fn repo() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../..")
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the e2e tests with `make e2e` (it starts a local cluster)")
    })
}

/// The kubeconfig of the cluster under test.
pub fn kubeconfig() -> PathBuf {
    PathBuf::from(required_env("KUBECONFIG"))
}

/// kubectl and friends, as built for the cluster.
pub fn bin(name: &str) -> PathBuf {
    PathBuf::from(required_env("LLMD_BIN_DIR")).join(name)
}

/// Run kubectl against the cluster; returns the whole output.
pub fn kubectl(args: &[&str]) -> Output {
    Command::new(bin("kubectl"))
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("kubectl runs")
}

/// Run kubectl and insist it succeeds; returns stdout.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kubectl apply of YAML text.
pub fn apply_yaml(namespace: &str, yaml: &str) -> Output {
    let mut child = Command::new(bin("kubectl"))
        .args(["apply", "-n", namespace, "-f", "-"])
        .env("KUBECONFIG", kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(stdin) = child.stdin.as_mut() {
        use std::io::Write;
        stdin.write_all(yaml.as_bytes()).expect("write manifest");
    }
    child.wait_with_output().expect("kubectl finishes")
}

pub async fn client() -> Client {
    Client::try_default()
        .await
        .expect("kube client from KUBECONFIG")
}

static CRDS: OnceCell<()> = OnceCell::const_new();

/// Install the CRDs once per test run and wait until they are served: ours, and an
/// InferencePool CRD (Gateway API Inference Extension) generated from our
/// InferencePool type, standing in for the upstream one, which cannot be fetched
/// here. Installed up front so that every test sees the same cluster.
pub async fn install_crds() {
    CRDS.get_or_init(|| async {
        let crds = repo().join("crds");
        kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crds.to_str().expect("utf-8 path"),
        ]);
        let mut pool_crd = InferencePool::crd();
        // *.k8s.io groups need an API review reference, as the upstream CRD has.
        pool_crd.metadata.annotations = Some(
            [(
                "api-approved.kubernetes.io".to_string(),
                "https://github.com/kubernetes-sigs/gateway-api-inference-extension/pull/1173"
                    .to_string(),
            )]
            .into(),
        );
        Api::<CustomResourceDefinition>::all(client().await)
            .patch(
                "inferencepools.inference.networking.k8s.io",
                &PatchParams::apply("llmd-e2e").force(),
                &Patch::Apply(pool_crd),
            )
            .await
            .expect("install the InferencePool CRD");
        let client = client().await;
        let lds: Api<LLMDeployment> = Api::all(client.clone());
        let pools: Api<InferencePool> = Api::all(client);
        wait_until(
            Duration::from_secs(30),
            "LLMDeployments and InferencePools served",
            || {
                let (lds, pools) = (lds.clone(), pools.clone());
                async move {
                    lds.list(&Default::default()).await.ok()?;
                    pools.list(&Default::default()).await.ok().map(|_| ())
                }
            },
        )
        .await;
    })
    .await;
}

/// A namespace for one test, deleted when the test ends.
pub struct TestNamespace {
    pub name: String,
}

/// Namespace annotations that put every pod of the namespace on the live nodes
/// (llmd-pod-runner runs them as processes): the API server's PodNodeSelector and
/// PodTolerationRestriction admission plugins add the node selector and the
/// toleration of the live nodes' taint (what e2e/hack/live-namespace.sh sets).
pub const LIVE_NAMESPACE_ANNOTATIONS: [(&str, &str); 2] = [
    (
        "scheduler.alpha.kubernetes.io/node-selector",
        "llmd.dev/live=true",
    ),
    (
        "scheduler.alpha.kubernetes.io/defaultTolerations",
        r#"[{"key":"llmd.dev/live","operator":"Exists","effect":"NoSchedule"}]"#,
    ),
];

/// The live pod network (e.g. `10.213.0.0/16`); fails the test, never skips it,
/// when the cluster runs without live nodes.
pub fn live_cidr() -> String {
    std::env::var("LLMD_LIVE_CIDR").unwrap_or_else(|_| {
        panic!(
            "the cluster has no live nodes (LLMD_LIVE_NODES=0, or not started as root): \
             data-plane tests need llmd-pod-runner; run `make e2e` as root"
        )
    })
}

/// llmd-pod-runner's state dir: `pods/<ns>_<pod>_<uid>/<container>.{log,pid}`.
pub fn pod_runner_state() -> PathBuf {
    live_cidr();
    PathBuf::from(required_env("LLMD_POD_RUNNER_STATE"))
}

/// The directory llmd-pod-runner keeps a pod's files and logs in.
pub fn live_pod_dir(namespace: &str, name: &str, uid: &str) -> PathBuf {
    pod_runner_state().join(format!("pods/{namespace}_{name}_{uid}"))
}

/// The pid of a live pod's container process, from the runner's pid file.
pub fn live_pid(namespace: &str, name: &str, uid: &str, container: &str) -> Option<i32> {
    let text = std::fs::read_to_string(
        live_pod_dir(namespace, name, uid).join(format!("{container}.pid")),
    )
    .ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Whether a process runs (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// The network namespaces on this machine.
pub fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

impl TestNamespace {
    pub async fn create(name: &str) -> Self {
        Self::create_with(name, &[]).await
    }

    /// A namespace whose pods all run on the live nodes (see
    /// [`LIVE_NAMESPACE_ANNOTATIONS`]).
    pub async fn create_live(name: &str) -> Self {
        live_cidr();
        Self::create_with(name, &LIVE_NAMESPACE_ANNOTATIONS).await
    }

    async fn create_with(name: &str, annotations: &[(&str, &str)]) -> Self {
        let api: Api<Namespace> = Api::all(client().await);
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.to_string());
        if !annotations.is_empty() {
            ns.metadata.annotations = Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        // A namespace left from an aborted run is deleted first.
        if api.get_opt(name).await.expect("get namespace").is_some() {
            let _ = api.delete(name, &DeleteParams::default()).await;
            let api2 = api.clone();
            wait_until(Duration::from_secs(120), "old namespace gone", || {
                let api = api2.clone();
                async move {
                    api.get_opt(name)
                        .await
                        .ok()
                        .flatten()
                        .is_none()
                        .then_some(())
                }
            })
            .await;
        }
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        Self {
            name: name.to_string(),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An `llmd-operator run` process scoped to one namespace; killed when dropped.
pub struct Operator {
    child: Child,
    pub name: String,
    pub metrics_port: u16,
}

impl Operator {
    /// Start an operator for `namespace` with its lease in that namespace.
    pub fn start(namespace: &str, name: &str, extra: &[&str]) -> Self {
        Self::start_with(namespace, name, namespace, &kubeconfig(), extra)
    }

    /// Start an operator for `namespace` with its lease in `lease_namespace`, talking
    /// to the API server with the credentials in `kubeconfig`.
    pub fn start_with(
        namespace: &str,
        name: &str,
        lease_namespace: &str,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> Self {
        let metrics_port = free_port();
        let health_port = free_port();
        let logs = repo().join("target/e2e-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{namespace}-{name}.log")))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_llmd-operator"))
            .args([
                "run",
                "--namespace",
                namespace,
                "--leader-election-namespace",
                lease_namespace,
                "--identity",
                name,
                "--metrics-addr",
                &format!("127.0.0.1:{metrics_port}"),
                "--health-addr",
                &format!("127.0.0.1:{health_port}"),
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("operator starts");
        // Registered with the cluster so that cluster-down stops it if this test dies.
        if let Ok(dir) = std::env::var("LLMD_CLUSTER_DIR") {
            let _ = std::fs::write(
                Path::new(&dir).join(format!("pids/operator-{namespace}-{name}.pid")),
                child.id().to_string(),
            );
        }
        Self {
            child,
            name: name.to_string(),
            metrics_port,
        }
    }

    /// The operator's Prometheus metrics.
    pub async fn metrics(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        reqwest::get(url).await.ok()?.text().await.ok()
    }

    /// A counter or gauge value from /metrics.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics().await?;
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    /// Send signal `name` ("STOP", "CONT", ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {} failed", self.name);
    }

    /// The exit status, once the process has exited on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "operator {} exited with {status}",
                    self.name
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("operator {} did not stop within 30s of SIGTERM", self.name);
    }

    /// SIGKILL: a crash, no lease release.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `check` until it returns `Some`, or panic naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The status of condition `type_` of an LLMDeployment ("True", "False" or absent).
pub fn condition<'a>(
    ld: &'a LLMDeployment,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    ld.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Wait until the LLMDeployment `name` satisfies `ok`; returns it.
pub async fn wait_for_ld(
    api: &Api<LLMDeployment>,
    name: &str,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&LLMDeployment) -> bool,
) -> LLMDeployment {
    let mut last = None;
    let found = tokio::time::timeout(timeout, async {
        loop {
            if let Ok(ld) = api.get(name).await {
                if ok(&ld) {
                    return ld;
                }
                last = Some(ld);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    match found {
        Ok(ld) => ld,
        Err(_) => panic!(
            "timed out after {timeout:?} waiting for {name}: {what}; last status: {:#?}",
            last.and_then(|l| l.status)
        ),
    }
}

/// Ready=True with observedGeneration equal to the generation.
pub fn is_ready(ld: &LLMDeployment) -> bool {
    let generation = ld.metadata.generation;
    condition(ld, "Ready")
        .is_some_and(|c| c.status == "True" && c.observed_generation == generation)
        && ld.status.as_ref().and_then(|s| s.observed_generation) == generation
}

/// A small LLMDeployment for tests: `decode` pods of one GPU, optional prefill.
pub fn small_spec(name: &str, prefill: i32, decode: i32) -> String {
    let prefill = if prefill > 0 {
        format!("  prefill:\n    replicas: {prefill}\n")
    } else {
        String::new()
    };
    format!(
        "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: {name}\nspec:\n  model:\n    name: test/model\n    uri: hf://test/model\n{prefill}  decode:\n    replicas: {decode}\n"
    )
}

/// A client for pod IPs: never through a proxy (they are local), 30 s at most.
pub fn pod_http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// The pod's Ready condition is True.
pub fn is_pod_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn pod_ip(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP")
}

pub fn uid(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    pod.metadata.uid.clone().expect("uid")
}

/// Restarts of all the pod's containers.
pub fn restart_count(pod: &k8s_openapi::api::core::v1::Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// Until the EndpointPicker pod at `epp_ip` runs the config whose hash the
/// LLMDeployment's status names (splitting long prompts once the KV fabric is
/// proven). Nothing to wait for while status names none.
pub async fn wait_for_epp_config(lds: &Api<LLMDeployment>, name: &str, epp_ip: &str) {
    let ld = lds.get(name).await.expect("get");
    let Some(hash) = ld
        .status
        .and_then(|s| s.routing)
        .and_then(|r| r.config_hash)
    else {
        return;
    };
    let url = format!("http://{epp_ip}:9090/metrics");
    wait_until(
        Duration::from_secs(30),
        "the EPP pod runs the config in status",
        || {
            let (url, hash) = (url.clone(), hash.clone());
            async move {
                let text = pod_http().get(url).send().await.ok()?.text().await.ok()?;
                text.lines()
                    .any(|l| {
                        l.starts_with("llmd_epp_config_info")
                            && l.contains(&hash)
                            && l.ends_with(" 1")
                    })
                    .then_some(())
            }
        },
    )
    .await;
}

/// helm with the cluster's kubeconfig; panics with its output on failure.
pub fn helm_ok(args: &[&str]) {
    let out = Command::new(bin("helm"))
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `helm install` of the chart as `release` into `namespace`, the operator watching
/// only that namespace; waits (up to `timeout`, e.g. "90s") for its pod to be Ready.
pub fn install_chart_operator(release: &str, namespace: &str, timeout: &str) {
    let chart = repo().join("manifests/charts/llmd-operator");
    helm_ok(&[
        "install",
        release,
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        namespace,
        "--set",
        &format!("watchNamespace={namespace}"),
        "--wait",
        "--timeout",
        timeout,
    ]);
}
