//! The whole stack live: an LLMDeployment in a live namespace, every pod a real
//! process at its own pod IP (llm-d-inference-sim for the engine pods, llmd-epp for
//! the EndpointPicker pod), and requests sent to the EndpointPicker pod as a client
//! in the cluster would. Nothing is shared between pods.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use llmd_api::LLMDeployment;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::harness::*;

const MODEL: &str = "test/model";

/// An LLMDeployment running in its own live namespace with its own operator.
pub(super) struct LiveStack {
    ns: TestNamespace,
    pub(super) name: &'static str,
    pub(super) lds: Api<LLMDeployment>,
    pub(super) pods: Api<Pod>,
    _operator: Operator,
}

impl LiveStack {
    pub(super) async fn start(namespace: &str, name: &'static str, manifest: &str) -> LiveStack {
        install_crds().await;
        let ns = TestNamespace::create_live(namespace).await;
        let operator = Operator::start(&ns.name, "op", &[]);
        let out = apply_yaml(&ns.name, manifest);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let client = client().await;
        let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
        wait_for_ld(&lds, name, Duration::from_secs(120), "Ready", is_ready).await;
        let stack = LiveStack {
            pods: Api::namespaced(client, &ns.name),
            ns,
            name,
            lds,
            _operator: operator,
        };
        stack.wait_for_epp_endpoints().await;
        stack.wait_for_epp_config().await;
        stack
    }

    pub(super) fn namespace(&self) -> &str {
        &self.ns.name
    }

    /// Until the EPP pod runs the config the status says is in force (splitting
    /// requests once the KV fabric is proven).
    async fn wait_for_epp_config(&self) {
        wait_for_epp_config(&self.lds, self.name, &self.epp_ip().await).await;
    }

    /// Ready pods with `labels`.
    async fn ready_pods(&self, labels: &str) -> Vec<Pod> {
        self.pods
            .list(&ListParams::default().labels(labels))
            .await
            .expect("list pods")
            .items
            .into_iter()
            .filter(|p| is_pod_ready(p) && p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    pub(super) async fn role(&self, role: &str) -> Vec<Pod> {
        self.ready_pods(&format!(
            "app.kubernetes.io/instance={},llm-d.ai/role={role}",
            self.name
        ))
        .await
    }

    /// The Ready EndpointPicker replicas.
    async fn epp_pods(&self) -> Vec<Pod> {
        self.ready_pods(&format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component=endpoint-picker",
            self.name
        ))
        .await
    }

    async fn epp_pod(&self) -> Pod {
        self.epp_pods()
            .await
            .into_iter()
            .next()
            .expect("a Ready EndpointPicker pod")
    }

    pub(super) async fn epp_ip(&self) -> String {
        pod_ip(&self.epp_pod().await)
    }

    /// Until the EPP pod routes to every Ready model-server pod.
    pub(super) async fn wait_for_epp_endpoints(&self) {
        let want = self
            .ready_pods(&format!(
                "app.kubernetes.io/instance={},llm-d.ai/inference-serving=true",
                self.name
            ))
            .await
            .len() as f64;
        let metrics = format!("http://{}:9090/metrics", self.epp_ip().await);
        wait_until(
            Duration::from_secs(30),
            "the EPP pod sees every model server",
            || {
                let url = metrics.clone();
                async move {
                    let text = pod_http().get(url).send().await.ok()?.text().await.ok()?;
                    (sum_metric(&text, "llmd_epp_endpoints") == want).then_some(())
                }
            },
        )
        .await;
    }

    pub(super) async fn patch_spec(&self, spec: Value) {
        self.lds
            .patch(
                self.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": spec })),
            )
            .await
            .expect("patch the LLMDeployment");
    }
}

pub(super) fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().expect("pod name")
}

/// The sum of every sample of `name` (all label sets) in a Prometheus page.
fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// A model server's own count of requests it completed.
async fn served_count(pod: &Pod) -> f64 {
    let url = format!("http://{}:8000/metrics", pod_ip(pod));
    let text = pod_http()
        .get(url)
        .send()
        .await
        .expect("engine metrics")
        .text()
        .await
        .expect("text");
    sum_metric(&text, "vllm:request_success_total")
}

/// A completion through the EPP pod's proxy.
async fn complete(epp_ip: &str, prompt: &str, max_tokens: u32) -> reqwest::Response {
    pod_http()
        .post(format!("http://{epp_ip}:8080/v1/completions"))
        .header("content-type", "application/json")
        .body(json!({"model": MODEL, "prompt": prompt, "max_tokens": max_tokens}).to_string())
        .send()
        .await
        .expect("the EPP pod answers")
}

pub(super) fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A tenant's prompt: a long shared context, then a short question.
fn tenant_prompt(tenant: usize, question: usize) -> String {
    let context: Vec<String> = (0..80)
        .map(|i| format!("tenant {tenant} policy clause {i} applies"))
        .collect();
    format!("{} Question {question}?", context.join(" "))
}

/// Three clients sending `prompt(worker, n)` back to back through the EPP pod.
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(epp: &str, prompt: fn(usize, usize) -> String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..3)
            .map(|worker| {
                let (stop, epp) = (stop.clone(), epp.to_string());
                tokio::spawn(async move {
                    let mut q = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let _ = complete(&epp, &prompt(worker, q), 8).await;
                        q += 1;
                    }
                })
            })
            .collect();
        Load { stop, workers }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
    }
}

fn manifest(name: &str, prefill: u32, decode: u32, router: &str) -> String {
    let prefill = if prefill > 0 {
        format!("  prefill:\n    replicas: {prefill}\n")
    } else {
        String::new()
    };
    format!(
        "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: {name}\nspec:\n  model:\n    name: {MODEL}\n    uri: hf://{MODEL}\n{prefill}  decode:\n    replicas: {decode}\n  router:\n{router}"
    )
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn requests_spread_over_decode_pods_and_a_tenant_sticks_to_one() {
    let stack = LiveStack::start(
        "e2e-dp-routing",
        "spread",
        &manifest("spread", 0, 3, "    replicas: 1\n"),
    )
    .await;
    let epp = stack.epp_ip().await;
    let decode: BTreeSet<String> = stack.role("decode").await.iter().map(pod_name).collect();
    assert_eq!(decode.len(), 3);

    let mut served = BTreeSet::new();
    for i in 0..24 {
        let r = complete(
            &epp,
            &format!("unrelated question number {i} about topic {i}"),
            4,
        )
        .await;
        assert_eq!(r.status(), 200);
        let pod = header(&r, "x-inference-pod").expect("x-inference-pod");
        assert!(decode.contains(&pod), "{pod} is not a decode pod");
        served.insert(pod);
    }
    assert!(
        served.len() >= 2,
        "unrelated requests reach at least 2 decode pods: {served:?}"
    );

    let first = complete(&epp, &tenant_prompt(1, 0), 4).await;
    let home = header(&first, "x-inference-pod").expect("x-inference-pod");
    for q in 1..8 {
        let r = complete(&epp, &tenant_prompt(1, q), 4).await;
        assert_eq!(
            header(&r, "x-inference-pod").as_deref(),
            Some(home.as_str()),
            "the tenant's question {q} goes where its context is cached"
        );
    }
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn a_long_prompt_is_prefilled_on_a_prefill_pod_and_decoded_on_a_decode_pod() {
    let stack = LiveStack::start(
        "e2e-dp-pd",
        "split",
        &manifest(
            "split",
            1,
            1,
            "    disaggregation:\n      nonCachedTokens: 64\n",
        ),
    )
    .await;
    let epp = stack.epp_ip().await;
    let prefill = stack.role("prefill").await.remove(0);
    let decode = stack.role("decode").await.remove(0);
    let (p0, d0) = (served_count(&prefill).await, served_count(&decode).await);

    let short = complete(&epp, "hello there", 4).await;
    assert_eq!(short.status(), 200);
    assert_eq!(
        header(&short, "x-prefiller-host-port"),
        None,
        "short: not split"
    );

    let long = complete(&epp, &tenant_prompt(9, 0), 4).await;
    assert_eq!(long.status(), 200);
    assert_eq!(
        header(&long, "x-prefiller-host-port"),
        Some(format!("{}:8000", pod_ip(&prefill))),
        "the long prompt names its prefill pod"
    );
    assert_eq!(
        header(&long, "x-inference-pod"),
        Some(pod_name(&decode)),
        "and is decoded on the decode pod"
    );
    // Each engine counts its own leg: the prefill pod one request, the decode pod two
    // (the short one and the long one's decode leg).
    assert_eq!(served_count(&prefill).await - p0, 1.0);
    assert_eq!(served_count(&decode).await - d0, 2.0);
}

/// Streams a completion of `tokens` tokens; returns (status, serving pod, body).
async fn stream(epp: String, prompt: String, tokens: u32) -> (u16, Option<String>, String) {
    let response = pod_http()
        .post(format!("http://{epp}:8080/v1/completions"))
        .header("content-type", "application/json")
        .body(
            json!({"model": MODEL, "prompt": prompt, "max_tokens": tokens,
                      "stream": true, "ignore_eos": true})
            .to_string(),
        )
        .send()
        .await;
    match response {
        Ok(r) => {
            let status = r.status().as_u16();
            let pod = header(&r, "x-inference-pod");
            (status, pod, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, None, e.to_string()),
    }
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn scaling_decode_adds_a_pod_that_gets_traffic_and_removes_one_after_its_requests() {
    let stack = LiveStack::start(
        "e2e-dp-scale",
        "scaled",
        &manifest("scaled", 0, 1, "    replicas: 1\n"),
    )
    .await;
    let epp = stack.epp_ip().await;

    let scaled_up = Instant::now();
    stack.patch_spec(json!({"decode": {"replicas": 2}})).await;
    let new_pod = "scaled-decode-1";
    let mut i = 0;
    loop {
        let r = complete(&epp, &format!("fresh question {i}"), 2).await;
        assert_eq!(r.status(), 200);
        if header(&r, "x-inference-pod").as_deref() == Some(new_pod) {
            break;
        }
        assert!(
            scaled_up.elapsed() < Duration::from_secs(30),
            "the new decode pod got no traffic within 30 s of the scale-up"
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Streams in flight on both pods, then scale down: every stream completes.
    let streams: Vec<_> = (0..6)
        .map(|k| tokio::spawn(stream(epp.clone(), format!("a long story number {k}"), 400)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.patch_spec(json!({"decode": {"replicas": 1}})).await;
    let mut on_removed = 0;
    for s in streams {
        let (status, pod, body) = s.await.expect("stream task");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("data: [DONE]"), "stream cut short: {body}");
        if pod.as_deref() == Some(new_pod) {
            on_removed += 1;
        }
    }
    assert!(
        on_removed > 0,
        "some of the streams ran on the pod that was removed"
    );
    wait_until(
        Duration::from_secs(60),
        "the removed pod is gone",
        || async {
            stack
                .pods
                .get_opt(new_pod)
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
}

/// One request of a steady client: when it was sent, its status (0: no answer)
/// and the pod that served it.
#[derive(Debug)]
struct Sent {
    at: Instant,
    status: u16,
    pod: Option<String>,
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn a_killed_model_server_is_routed_around_and_comes_back() {
    let stack = LiveStack::start(
        "e2e-dp-kill",
        "sturdy",
        &manifest("sturdy", 0, 2, "    replicas: 1\n"),
    )
    .await;
    let epp = stack.epp_ip().await;
    let victim = stack.pods.get("sturdy-decode-1").await.expect("decode pod");
    let uid = victim.metadata.uid.clone().expect("uid");
    let pid = live_pid(&stack.ns.name, "sturdy-decode-1", &uid, "vllm").expect("its pid");

    // A steady client: one request after another, each recorded.
    let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let client =
        tokio::spawn({
            let (log, stop, epp) = (log.clone(), stop.clone(), epp.clone());
            async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let r = pod_http()
                    .post(format!("http://{epp}:8080/v1/completions"))
                    .header("content-type", "application/json")
        .body(json!({"model": MODEL, "prompt": format!("steady {i}"), "max_tokens": 2}).to_string())
                    .send()
                    .await;
                    let (status, pod) = match r {
                        Ok(r) => (r.status().as_u16(), header(&r, "x-inference-pod")),
                        Err(_) => (0, None),
                    };
                    log.lock().await.push(Sent {
                        at: sent,
                        status,
                        pod,
                    });
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = format!("http://{epp}:9090/metrics");
    let endpoints = || {
        let url = metrics.clone();
        async move {
            let text = pod_http().get(url).send().await.ok()?.text().await.ok()?;
            Some(sum_metric(&text, "llmd_epp_endpoints"))
        }
    };
    let killed = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let pods = stack.pods.clone();
    let not_ready = tokio::spawn(async move {
        wait_until(
            Duration::from_secs(2),
            "the killed pod NotReady within 2 s",
            || async {
                let pod = pods.get("sturdy-decode-1").await.ok()?;
                (!is_pod_ready(&pod)).then_some(())
            },
        )
        .await
    });
    // The EPP drops it (the pod turned NotReady) within 5 s of the kill...
    let dropped = wait_until(
        Duration::from_secs(5),
        "the EPP stops choosing the killed pod within 5 s",
        || async { (endpoints().await? == 1.0).then(Instant::now) },
    )
    .await;
    not_ready.await.expect("NotReady within 2 s");
    // ...and takes it back once the runner restarted it and it is Ready again.
    let back = wait_until(Duration::from_secs(30), "the pod Ready again", || async {
        let pod = stack.pods.get("sturdy-decode-1").await.ok()?;
        is_pod_ready(&pod).then_some(pod)
    })
    .await;
    assert_eq!(restart_count(&back), 1, "the restart is counted");
    let readded = wait_until(
        Duration::from_secs(10),
        "the EPP routes to it again",
        || async { (endpoints().await? == 2.0).then(Instant::now) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    client.await.expect("client task");

    let log = log.lock().await;
    let failed: Vec<_> = log.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.len() <= 1,
        "only a request in flight on the killed pod may fail: {failed:?}"
    );
    assert!(
        dropped > killed && readded > dropped,
        "out of the pool after the kill, back after the restart"
    );
    let taken_over = log
        .iter()
        .filter(|s| s.at > killed && s.pod.as_deref() == Some("sturdy-decode-0"))
        .count();
    assert!(
        taken_over > 10,
        "the other pod took the traffic: {taken_over} requests"
    );
}

/// The weights in force on the EPP pod, decode profile, by scorer.
async fn weights_in_force(epp: &str) -> Option<(BTreeMap<String, f64>, String)> {
    let text = pod_http()
        .get(format!("http://{epp}:9090/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut weights = BTreeMap::new();
    let mut hash = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("llmd_epp_scorer_weight{")
            && rest.contains("profile=\"decode\"")
        {
            let scorer = rest.split("scorer=\"").nth(1)?.split('"').next()?;
            let value: f64 = line.split_whitespace().last()?.parse().ok()?;
            weights.insert(scorer.to_string(), value);
        }
        if let Some(rest) = line.strip_prefix("llmd_epp_config_info{hash=\"") {
            hash = rest.split('"').next().map(str::to_string);
        }
    }
    Some((weights, hash?))
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn the_tuner_retunes_under_a_skewed_load_and_the_epp_runs_its_weights_at_once() {
    let stack = LiveStack::start(
        "e2e-dp-tuner",
        "tuned",
        &manifest(
            "tuned",
            0,
            2,
            "    autoTune:\n      enabled: true\n      interval: 5s\n",
        ),
    )
    .await;
    let epp_pod = stack.epp_pod().await;
    let epp = pod_ip(&epp_pod);
    let spec_weights = BTreeMap::from([
        ("kv-cache-utilization-scorer".to_string(), 2.0),
        ("prefix-cache-scorer".to_string(), 3.0),
        ("queue-scorer".to_string(), 2.0),
    ]);

    // A hot tenant: its requests share a long context, several at a time.
    let load = Load::start(&epp, |worker, q| tenant_prompt(1, worker * 1000 + q));

    // Each time status.routing changes, the EPP must run it within 5 s (the tuner may
    // change the weights again a round later; each change gets its own 5 s).
    let started = Instant::now();
    let mut last: Option<(Instant, BTreeMap<String, f64>, String)> = None;
    let mut seen = None;
    let in_force = loop {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the tuner did not change the weights in 90 s"
        );
        let routing = stack
            .lds
            .get(stack.name)
            .await
            .ok()
            .and_then(|ld| ld.status?.routing);
        if let Some(routing) = routing {
            let active: BTreeMap<String, f64> = routing
                .weights
                .iter()
                .filter(|(_, w)| **w > 0.0)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            let hash = routing.config_hash.unwrap_or_default();
            let changed = last
                .as_ref()
                .is_none_or(|(_, w, h)| *w != active || *h != hash);
            if active != spec_weights && changed {
                last = Some((Instant::now(), active, hash));
            }
        }
        if let Some((changed_at, want, hash)) = &last {
            let running = weights_in_force(&epp).await;
            if running
                .as_ref()
                .is_some_and(|(w, h)| w == want && h == hash)
            {
                break want.clone();
            }
            assert!(
                changed_at.elapsed() <= Duration::from_secs(5),
                "the EPP does not run status.routing's weights 5 s after they changed: \
                 status has {want:?} ({hash}); the EPP runs {running:?} (before: {seen:?})"
            );
            seen = running;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    load.stop().await;
    assert_ne!(in_force, spec_weights, "retuned");
    let epp_now = stack.pods.get(&pod_name(&epp_pod)).await.expect("EPP pod");
    assert_eq!(restart_count(&epp_now), 0, "applied live, no restart");

    // autoTune off: the tuner's history and incumbent go (server-side apply keeps
    // what another field manager wrote unless it gives it up), and the spec's
    // weights are in force.
    stack
        .patch_spec(json!({"router": {"autoTune": {"enabled": false}}}))
        .await;
    let ld = wait_for_ld(
        &stack.lds,
        stack.name,
        Duration::from_secs(30),
        "static weights, the tuner's record cleared",
        |ld| {
            ld.status
                .as_ref()
                .and_then(|s| s.routing.as_ref())
                .is_some_and(|r| {
                    r.history.is_empty()
                        && r.incumbent.is_none()
                        && r.reason.as_deref() == Some("static weights from spec.router.scorers")
                })
        },
    )
    .await;
    let routing = ld.status.and_then(|s| s.routing).expect("status.routing");
    assert_eq!(
        routing.weights.get("queue-scorer").copied(),
        Some(2.0),
        "the spec's weights: {routing:?}"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn the_tuner_explains_its_verdicts_in_kubectl_describe_and_a_pick_is_explained_on_request() {
    let stack = LiveStack::start(
        "e2e-dp-explain",
        "explained",
        &manifest(
            "explained",
            0,
            2,
            "    autoTune:\n      enabled: true\n      interval: 5s\n",
        ),
    )
    .await;
    let epp = stack.epp_ip().await;

    // One request explained on demand: the pick, its scores, the runners-up.
    let explained = pod_http()
        .post(format!("http://{epp}:8080/v1/completions"))
        .header("content-type", "application/json")
        .header("x-llmd-explain", "true")
        .body(json!({"model": MODEL, "prompt": tenant_prompt(3, 0), "max_tokens": 2}).to_string())
        .send()
        .await
        .expect("the EPP pod answers");
    assert_eq!(explained.status(), 200);
    let destination = header(&explained, "x-gateway-destination-endpoint").expect("destination");
    let explanation: Value =
        serde_json::from_str(&header(&explained, "x-llmd-explain").expect("x-llmd-explain"))
            .expect("JSON");
    assert_eq!(explanation["decode"]["endpoint"], json!(destination));
    assert_eq!(
        explanation["decode"]["scores"]["prefix-cache-scorer"]["weight"],
        json!(3.0)
    );
    assert!(
        explanation["decodeCandidates"]
            .as_array()
            .is_some_and(|c| c.len() == 1),
        "the other decode pod is the runner-up: {explanation}"
    );
    assert!(
        explanation["decode"]["predictedTtftMs"].as_f64().is_some(),
        "the winner's predicted TTFT: {explanation}"
    );

    // A request with a TTFT objective is answered with its predicted and observed TTFT.
    let with_slo = pod_http()
        .post(format!("http://{epp}:8080/v1/completions"))
        .header("content-type", "application/json")
        .header("x-llm-d-slo-ttft-ms", "10000")
        .body(json!({"model": MODEL, "prompt": tenant_prompt(4, 0), "max_tokens": 2}).to_string())
        .send()
        .await
        .expect("the EPP pod answers");
    assert_eq!(with_slo.status(), 200);
    let ms = |name: &str| {
        header(&with_slo, name)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name}: {:?}", with_slo.headers()))
    };
    let (predicted, observed) = (
        ms("x-llmd-predicted-ttft-ms"),
        ms("x-llmd-observed-ttft-ms"),
    );
    assert!(
        predicted > 0.0 && observed > 0.0,
        "{predicted} / {observed}"
    );
    assert_eq!(header(&with_slo, "x-llmd-slo-predicted-miss"), None);

    // Traffic, until an experiment ends: its verdict, in numbers, in kubectl describe.
    let load = Load::start(&epp, |worker, q| tenant_prompt(worker % 2, q));
    let verdict = wait_until(
        Duration::from_secs(150),
        "an experiment's verdict in status.routing.history",
        || async {
            let ld = stack.lds.get(stack.name).await.ok()?;
            ld.status?.routing?.history.last().cloned()
        },
    )
    .await;
    load.stop().await;
    assert!(
        verdict.reason.contains("TTFT mean") && verdict.reason.contains("requests"),
        "{verdict:?}"
    );
    let described = kubectl_ok(&["describe", "llmd", stack.name, "-n", &stack.ns.name]);
    assert!(
        described.contains(&verdict.reason),
        "kubectl describe shows the verdict {:?}:\n{described}",
        verdict.reason
    );
    let events = kubectl_ok(&[
        "get",
        "events",
        "-n",
        &stack.ns.name,
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(
        ["WeightsTuned", "TuningRolledBack", "TuningAbandoned"]
            .iter()
            .any(|r| events.contains(r)),
        "{events}"
    );
}

/// The value of `name{endpoint="<endpoint>"}` in a Prometheus page (0 if absent).
fn endpoint_metric(text: &str, name: &str, endpoint: &str) -> f64 {
    let prefix = format!("{name}{{endpoint=\"{endpoint}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_of(epp_ip: &str) -> String {
    let url = format!("http://{epp_ip}:9090/metrics");
    match pod_http().get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A completion straight to a model server, bypassing every EndpointPicker.
async fn complete_on(pod: &Pod, prompt: &str) {
    let r = pod_http()
        .post(format!("http://{}:8000/v1/completions", pod_ip(pod)))
        .header("content-type", "application/json")
        .body(json!({"model": MODEL, "prompt": prompt, "max_tokens": 1}).to_string())
        .send()
        .await
        .expect("the engine answers");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn precise_prefix_routing_follows_the_engines_own_kv_events_on_every_epp_replica() {
    let stack = LiveStack::start(
        "e2e-dp-precise",
        "precise",
        &manifest(
            "precise",
            0,
            2,
            "    replicas: 2\n    prefixCache: {mode: Precise}\n",
        ),
    )
    .await;
    let decode = stack.role("decode").await;
    assert_eq!(decode.len(), 2);
    let epps: Vec<String> = stack.epp_pods().await.iter().map(pod_ip).collect();
    assert_eq!(epps.len(), 2, "two EndpointPicker replicas");

    // Each replica dials every engine's events port; PUB/SUB drops what precedes a
    // subscription, so warm the engines until both replicas route both precisely.
    let mut warm = 0;
    wait_until(
        Duration::from_secs(60),
        "KV events from both engines on both replicas",
        || {
            warm += 1;
            let (decode, epps, warm) = (decode.clone(), epps.clone(), warm);
            async move {
                for pod in &decode {
                    complete_on(
                        pod,
                        &format!("warm-up {warm} {}", "filler words ".repeat(12)),
                    )
                    .await;
                }
                for epp in &epps {
                    let text = metrics_of(epp).await;
                    if sum_metric(&text, "llmd_epp_endpoint_prefix_precise") != 2.0 {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;

    // Each tenant's context goes straight to one engine, never through an EPP: only
    // that engine's events can tell the replicas where it is.
    for (tenant, holder) in [(11, &decode[1]), (12, &decode[0])] {
        let endpoint = format!("{}:8000", pod_ip(holder));
        let mut before = Vec::new();
        for epp in &epps {
            let text = metrics_of(epp).await;
            before.push(endpoint_metric(
                &text,
                "llmd_epp_kv_events_messages_total",
                &endpoint,
            ));
        }
        complete_on(holder, &tenant_prompt(tenant, 0)).await;
        for (epp, before) in epps.iter().zip(before) {
            wait_until(
                Duration::from_secs(10),
                "the engine's events on the replica",
                || {
                    let (epp, endpoint) = (epp.clone(), endpoint.clone());
                    async move {
                        let text = metrics_of(&epp).await;
                        let now =
                            endpoint_metric(&text, "llmd_epp_kv_events_messages_total", &endpoint);
                        (now > before).then_some(())
                    }
                },
            )
            .await;
        }
        for epp in &epps {
            for q in 1..4 {
                let r = complete(epp, &tenant_prompt(tenant, q), 2).await;
                assert_eq!(r.status(), 200);
                assert_eq!(
                    header(&r, "x-inference-pod"),
                    Some(pod_name(holder)),
                    "tenant {tenant} question {q} through replica {epp}"
                );
            }
        }
    }

    // The operator asks every replica the same and says it where users look.
    wait_for_ld(
        &stack.lds,
        stack.name,
        Duration::from_secs(60),
        "KV events counted in EndpointPickerReady",
        |ld| {
            condition(ld, "EndpointPickerReady").is_some_and(|c| {
                c.status == "True"
                    && c.message.contains(
                        "precise prefix routing: KV events flowing from 2 of 2 model-server \
                         pods on every EndpointPicker replica",
                    )
            })
        },
    )
    .await;
    // Every prompt was tokenized by the engines themselves (their /tokenize).
    for epp in &epps {
        let text = metrics_of(epp).await;
        let tokenized = sum_metric(
            &text,
            "llmd_epp_engine_tokenize_total{outcome=\"tokenized\"}",
        ) + sum_metric(&text, "llmd_epp_engine_tokenize_total{outcome=\"cached\"}");
        assert!(
            tokenized >= 6.0,
            "replica {epp}: {tokenized} prompts tokenized by an engine"
        );
    }

    // A replica that restarts rebuilds what it knew from the engines' replay
    // endpoints: it routes a tenant whose context it never heard of live, with no
    // warm-up (its events went by before the new replica existed).
    let names: Vec<String> = stack
        .epp_pods()
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    stack
        .pods
        .delete(&names[0], &Default::default())
        .await
        .expect("delete a replica's pod");
    let fresh = wait_until(
        Duration::from_secs(60),
        "a new EndpointPicker replica",
        || {
            let (stack, names) = (&stack, &names);
            async move {
                stack
                    .epp_pods()
                    .await
                    .into_iter()
                    .find(|p| p.metadata.name.as_ref().is_some_and(|n| !names.contains(n)))
                    .map(|p| pod_ip(&p))
            }
        },
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "the new replica caught up from both engines' replay",
        || {
            let fresh = fresh.clone();
            async move {
                let text = metrics_of(&fresh).await;
                let replayed = sum_metric(&text, "llmd_epp_kv_events_replayed_total");
                let precise = sum_metric(&text, "llmd_epp_endpoint_prefix_precise");
                (replayed > 0.0 && precise == 2.0).then_some(())
            }
        },
    )
    .await;
    for (tenant, holder) in [(11, &decode[1]), (12, &decode[0])] {
        for q in 4..7 {
            let r = complete(&fresh, &tenant_prompt(tenant, q), 2).await;
            assert_eq!(r.status(), 200);
            assert_eq!(
                header(&r, "x-inference-pod"),
                Some(pod_name(holder)),
                "tenant {tenant} question {q} through the restarted replica"
            );
        }
    }
}

/// One ext-proc exchange as an Envoy gateway runs it: the request's headers and
/// body go to the EndpointPicker, which answers with the headers to set (the
/// destination endpoint and, for a split request, the prefiller).
async fn ask_epp_as_a_gateway(epp_ip: &str, body: &Value) -> BTreeMap<String, String> {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
    use envoy_types::pb::envoy::service::ext_proc::v3::{
        HttpBody, HttpHeaders, ProcessingRequest, processing_request, processing_response,
    };
    let header = |k: &str, v: &str| HeaderValue {
        key: k.into(),
        raw_value: v.as_bytes().to_vec(),
        ..Default::default()
    };
    let messages = vec![
        ProcessingRequest {
            request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![
                        header(":path", "/v1/completions"),
                        header(":method", "POST"),
                        // A client's own prefiller is never passed on.
                        header("x-prefiller-host-port", "169.254.169.254:80"),
                    ],
                }),
                ..Default::default()
            })),
            ..Default::default()
        },
        ProcessingRequest {
            request: Some(processing_request::Request::RequestBody(HttpBody {
                body: body.to_string().into_bytes(),
                end_of_stream: true,
                ..Default::default()
            })),
            ..Default::default()
        },
    ];
    let mut client = ExternalProcessorClient::connect(format!("http://{epp_ip}:9002"))
        .await
        .expect("connect to the EndpointPicker's ext-proc port");
    let mut stream = client
        .process(tokio_stream::iter(messages))
        .await
        .expect("ext-proc stream")
        .into_inner();
    let mut set = BTreeMap::new();
    let mut removed = Vec::new();
    for _ in 0..2 {
        let Ok(Some(m)) = stream.message().await else {
            break;
        };
        let common = match m.response {
            Some(processing_response::Response::RequestHeaders(h)) => h.response,
            Some(processing_response::Response::RequestBody(b)) => b.response,
            _ => None,
        };
        if let Some(mutation) = common.and_then(|c| c.header_mutation) {
            for h in mutation.set_headers.into_iter().filter_map(|o| o.header) {
                let value = String::from_utf8_lossy(&h.raw_value).into_owned();
                set.insert(h.key, value);
            }
            removed.extend(mutation.remove_headers);
        }
    }
    assert!(
        removed.iter().any(|h| h == "x-prefiller-host-port") || {
            set.get("x-prefiller-host-port")
                .is_some_and(|v| v != "169.254.169.254:80")
        },
        "the client's prefiller header is dropped or replaced: {set:?} {removed:?}"
    );
    set
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn behind_a_gateway_the_decode_pods_sidecar_runs_the_prefill_leg_on_the_prefill_pod() {
    let manifest = format!(
        "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: gw\nspec:\n  model:\n    name: {MODEL}\n    uri: hf://{MODEL}\n  engine:\n    args: [--enable-request-id-headers, --enable-log-requests]\n  prefill:\n    replicas: 1\n  decode:\n    replicas: 1\n  router:\n    disaggregation:\n      nonCachedTokens: 64\n"
    );
    let stack = LiveStack::start("e2e-dp-gateway", "gw", &manifest).await;
    let epp = stack.epp_ip().await;
    let prefill = stack.role("prefill").await.remove(0);
    let decode = stack.role("decode").await.remove(0);
    let (p0, d0) = (served_count(&prefill).await, served_count(&decode).await);

    // The gateway asks the EndpointPicker where the request goes... A prefill pod
    // whose metrics are not fresh yet is no candidate (the EPP then serves whole),
    // so ask until it splits, each time with a prompt no pod has cached.
    let mut tenant = 100;
    let (body, headers) = wait_until(
        Duration::from_secs(15),
        "the EndpointPicker splits a long uncached prompt",
        || {
            tenant += 1;
            let body = json!({"model": MODEL, "prompt": tenant_prompt(tenant, 0), "max_tokens": 4, "ignore_eos": true});
            let epp = epp.clone();
            async move {
                let headers = ask_epp_as_a_gateway(&epp, &body).await;
                headers
                    .contains_key("x-prefiller-host-port")
                    .then_some((body, headers))
            }
        },
    )
    .await;
    let destination = headers
        .get("x-gateway-destination-endpoint")
        .cloned()
        .expect("a destination");
    assert_eq!(destination, format!("{}:8000", pod_ip(&decode)));
    let prefiller = headers
        .get("x-prefiller-host-port")
        .cloned()
        .expect("a long prompt is split");
    assert_eq!(prefiller, format!("{}:8000", pod_ip(&prefill)));

    // ...and sends it there with the headers it was given: the decode pod's sidecar.
    let response = pod_http()
        .post(format!("http://{destination}/v1/completions"))
        .header("x-prefiller-host-port", &prefiller)
        .header("x-request-id", "client-gw-1")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("the decode pod answers");
    assert_eq!(response.status(), 200);
    let id = header(&response, "x-llmd-pd-request-id").expect("the legs' request id");
    assert_eq!(
        header(&response, "x-request-id").as_deref(),
        Some(id.as_str()),
        "the decode engine served the leg under that id"
    );
    assert_eq!(
        header(&response, "x-inference-pod"),
        Some(pod_name(&decode))
    );
    assert_eq!(served_count(&prefill).await - p0, 1.0, "one prefill leg");
    assert_eq!(served_count(&decode).await - d0, 1.0, "one decode leg");
    // The prefill engine logged the same id on its leg.
    let log = live_pod_dir(
        &stack.ns.name,
        &pod_name(&prefill),
        prefill.metadata.uid.as_deref().expect("uid"),
    )
    .join("vllm.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.lines()
            .any(|l| l.contains(&id) && l.contains("do_remote_decode")),
        "the prefill pod's log names the leg's id {id}: {} ends with {}",
        log.display(),
        &text[text.len().saturating_sub(3000)..]
    );

    // Addresses outside the pool are refused without being contacted.
    for outside in [format!("{epp}:8080"), format!("{}:5600", pod_ip(&prefill))] {
        let refused = pod_http()
            .post(format!("http://{destination}/v1/completions"))
            .header("x-prefiller-host-port", &outside)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("the decode pod answers");
        assert_eq!(refused.status(), 403, "{outside}");
        let error: Value = serde_json::from_str(&refused.text().await.unwrap_or_default())
            .expect("an OpenAI error");
        assert_eq!(error["error"]["type"], "prefiller_not_allowed", "{error}");
    }
    assert_eq!(
        served_count(&prefill).await - p0,
        1.0,
        "nothing more prefilled"
    );
    let metrics = pod_http()
        .get(format!("http://{}:9095/metrics", pod_ip(&decode)))
        .send()
        .await
        .expect("sidecar metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(
        sum_metric(&metrics, "llmd_sidecar_pd_splits_total"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sum_metric(&metrics, "llmd_sidecar_pd_failures_total"),
        2.0,
        "the two refusals, counted: {metrics}"
    );
}

/// What one request through the EPP saw: its status, the prefill and decode
/// endpoints named in the answer, and the body of a failure.
struct Outcome {
    status: u16,
    prefiller: Option<String>,
    destination: Option<String>,
    error: String,
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn an_engine_upgrade_of_a_p_d_deployment_fails_no_request_and_never_pairs_old_with_new() {
    let stack = LiveStack::start(
        "e2e-dp-upgrade",
        "upgrade",
        // Four decode pods roll one after another while the one prefill pod is
        // replaced at once; the test holds the roll half way (below), so old
        // decode engines run beside a new prefill engine for as long as it takes.
        &manifest(
            "upgrade",
            1,
            4,
            "    disaggregation:\n      nonCachedTokens: 64\n",
        ),
    )
    .await;
    let epp = stack.epp_ip().await;
    let selector = format!("app.kubernetes.io/instance={}", stack.name);
    let compat = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("llmd.dev/kv-compatibility"))
            .cloned()
    };
    let old = compat(&stack.role("prefill").await[0]).expect("labelled");

    // Every pod address seen during the run, with its KV-compatibility value.
    let stop = Arc::new(AtomicBool::new(false));
    let labels: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
    let watcher = {
        let (pods, stop, labels, selector) = (
            stack.pods.clone(),
            stop.clone(),
            labels.clone(),
            selector.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                    let mut seen = labels.lock().await;
                    for p in &list.items {
                        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
                        if let (Some(ip), Some(value)) = (ip, compat(p)) {
                            seen.entry(format!("{ip}:8000")).or_default().insert(value);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // Clients sending prompts no engine holds (each one would be split).
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let clients: Vec<_> = (0..4)
        .map(|worker| {
            let (stop, outcomes, epp) = (stop.clone(), outcomes.clone(), epp.clone());
            tokio::spawn(async move {
                let mut q = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = complete(&epp, &tenant_prompt(1000 + worker * 10_000 + q, q), 4).await;
                    let outcome = Outcome {
                        status: r.status().as_u16(),
                        prefiller: header(&r, "x-prefiller-host-port"),
                        destination: header(&r, "x-gateway-destination-endpoint"),
                        error: if r.status().is_success() {
                            String::new()
                        } else {
                            r.text().await.unwrap_or_default()
                        },
                    };
                    outcomes.lock().await.push(outcome);
                    q += 1;
                }
            })
        })
        .collect();
    let splits_with = |value: String| {
        let (outcomes, labels) = (outcomes.clone(), labels.clone());
        move || {
            let (outcomes, labels, value) = (outcomes.clone(), labels.clone(), value.clone());
            async move {
                let labels = labels.lock().await;
                let n = outcomes
                    .lock()
                    .await
                    .iter()
                    .filter_map(|o| o.prefiller.as_ref())
                    .filter(|p| labels.get(*p).is_some_and(|v| v.contains(&value)))
                    .count();
                (n >= 3).then_some(())
            }
        }
    };
    wait_until(
        Duration::from_secs(60),
        "splits on the old engines",
        splits_with(old.clone()),
    )
    .await;

    // Half the decode pods stay on the old engine until a request has met the
    // mixed fleet (a partition, as an administrator would pause a roll; the
    // operator leaves the field to whoever set it).
    let decode_set: Api<StatefulSet> = Api::namespaced(client().await, stack.namespace());
    let hold_roll = |partition: i32| {
        let decode_set = decode_set.clone();
        let name = format!("{}-decode", stack.name);
        async move {
            let strategy = json!({"spec": {"updateStrategy": {
                "type": "RollingUpdate", "rollingUpdate": {"partition": partition}}}});
            decode_set
                .patch(&name, &PatchParams::default(), &Patch::Merge(&strategy))
                .await
                .expect("set the decode StatefulSet's partition");
        }
    };
    hold_roll(2).await;
    stack
        .patch_spec(json!({"engine": {"image": "vllm/vllm-openai:v0.33.1"}}))
        .await;
    // Requests the decider splits are served whole for want of a compatible
    // prefill pod while old decode engines run beside the new prefill engine.
    let metrics_url = format!("http://{epp}:9090/metrics");
    wait_until(
        Duration::from_secs(120),
        "a request meets the mixed fleet",
        || {
            let url = metrics_url.clone();
            async move {
                let text = pod_http().get(url).send().await.ok()?.text().await.ok()?;
                let unpaired: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains("aggregated_no_kv_compatible_prefill"))
                    .collect();
                (sum_metric(&unpaired.join("\n"), "llmd_epp_pd_decisions_total") > 0.0)
                    .then_some(())
            }
        },
    )
    .await;
    hold_roll(0).await;
    let new = wait_until(
        Duration::from_secs(240),
        "every engine pod replaced and Ready",
        || async {
            let pods = stack.ready_pods(&selector).await;
            let engines: Vec<&Pod> = pods.iter().filter(|p| compat(p).is_some()).collect();
            let values: BTreeSet<String> = engines.iter().filter_map(|p| compat(p)).collect();
            let all = stack
                .pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            let terminating = all
                .items
                .iter()
                .any(|p| p.metadata.deletion_timestamp.is_some());
            (engines.len() == 5 && values.len() == 1 && !values.contains(&old) && !terminating)
                .then(|| values.into_iter().next())
                .flatten()
        },
    )
    .await;
    stack.wait_for_epp_endpoints().await;
    wait_until(
        Duration::from_secs(60),
        "splits on the new engines",
        splits_with(new.clone()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let _ = watcher.await;

    let outcomes = outcomes.lock().await;
    let labels = labels.lock().await;
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status != 200)
        .map(|o| format!("{} {}", o.status, o.error))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the upgrade: {failed:?}",
        failed.len(),
        outcomes.len()
    );
    let mut pairs = 0;
    for o in outcomes.iter() {
        let (Some(p), Some(d)) = (&o.prefiller, &o.destination) else {
            continue;
        };
        let (pl, dl) = (labels.get(p), labels.get(d));
        assert!(
            pl.is_some_and(|v| v.len() == 1) && pl == dl,
            "a mixed pair: prefill {p} {pl:?}, decode {d} {dl:?}"
        );
        pairs += 1;
    }
    assert!(pairs >= 6, "{pairs} split requests of {}", outcomes.len());
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn a_real_nixl_transfer_proves_the_kv_fabric_and_a_failed_one_stops_splitting() {
    let stack = LiveStack::start(
        "e2e-dp-fabric",
        "fabric",
        &manifest(
            "fabric",
            1,
            1,
            "    disaggregation:\n      nonCachedTokens: 64\n",
        ),
    )
    .await;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> =
        Api::namespaced(client().await, &stack.ns.name);
    let prefill = stack.role("prefill").await.remove(0);
    let decode = stack.role("decode").await.remove(0);
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .expect("node")
    };

    // Ready includes the fabric proven by the probe Jobs, beside the two roles' pods.
    let ld = stack.lds.get(stack.name).await.expect("get");
    let kv = condition(&ld, "KVTransferReady").expect("KVTransferReady");
    assert_eq!(
        (kv.status.as_str(), kv.reason.as_str()),
        ("True", "KVTransferProven")
    );
    let expected = format!(
        "NIXL wrote 64 MiB from node {} to node {} in ",
        node(&decode),
        node(&prefill)
    );
    assert!(kv.message.starts_with(&expected), "{}", kv.message);
    assert!(kv.message.contains(" GB/s)"), "{}", kv.message);
    let probed = ld
        .status
        .as_ref()
        .and_then(|s| s.kv_transfer.clone())
        .expect("status.kvTransfer");
    assert!(probed.proven && probed.gb_per_second.is_some_and(|g| g > 0.0));
    assert!(
        jobs.list(&ListParams::default())
            .await
            .expect("jobs")
            .items
            .is_empty(),
        "a finished probe leaves no Job behind"
    );
    let epp = stack.epp_ip().await;
    let long = complete(&epp, &tenant_prompt(21, 0), 4).await;
    assert!(
        header(&long, "x-prefiller-host-port").is_some(),
        "proven: split"
    );

    // A transport this machine does not have (RDMA): the engines roll onto the new
    // fabric, the probe fails naming the cause, and requests are served whole.
    stack
        .patch_spec(json!({"kvTransfer": {"ucx": {"transports": "rc"}}}))
        .await;
    let ld = wait_for_ld(
        &stack.lds,
        stack.name,
        Duration::from_secs(180),
        "KVTransferReady False from the probe",
        |ld| {
            condition(ld, "KVTransferReady")
                .is_some_and(|c| c.status == "False" && c.reason == "KVTransferProbeFailed")
        },
    )
    .await;
    let kv = condition(&ld, "KVTransferReady").expect("KVTransferReady");
    assert!(
        kv.message.contains("UCX transport unavailable")
            && kv.message.contains("serves whole requests"),
        "{}",
        kv.message
    );
    assert!(!is_ready(&ld));
    stack.wait_for_epp_endpoints().await;
    // The EndpointPicker has the config without the prefill profile in force.
    stack.wait_for_epp_config().await;
    let prefill = stack.role("prefill").await.remove(0);
    let before = served_count(&prefill).await;
    let long = complete(&epp, &tenant_prompt(22, 0), 4).await;
    assert_eq!(long.status(), 200);
    assert_eq!(header(&long, "x-prefiller-host-port"), None, "not split");
    assert_eq!(
        served_count(&prefill).await,
        before,
        "the prefill pod idles"
    );
}
