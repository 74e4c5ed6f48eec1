//! Built-in autoscaling on the live stack: decode pods that queue requests (one
//! sequence at a time) scale up under a surge sent through the EndpointPicker pod and
//! back down after it, and prefill pods on time to first token the same way; the
//! decisions in `status.autoscaling` and in `kubectl describe`, the spec untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use llmd_api::{LLMDeployment, RoleScaling};
use serde_json::json;

use super::harness::*;

const NAME: &str = "elastic";
const MODEL: &str = "test/model";

fn decision(ld: &LLMDeployment) -> Option<RoleScaling> {
    ld.status.as_ref()?.autoscaling.as_ref()?.decode.clone()
}

fn prefill_decision(ld: &LLMDeployment) -> Option<RoleScaling> {
    ld.status.as_ref()?.autoscaling.as_ref()?.prefill.clone()
}

async fn epp_ip(pods: &Api<Pod>, name: &str) -> String {
    let list = pods
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={name},app.kubernetes.io/component=endpoint-picker"
        )))
        .await
        .expect("list pods");
    pod_ip(
        list.items
            .iter()
            .find(|p| is_pod_ready(p))
            .expect("a Ready EndpointPicker pod"),
    )
}

async fn ready_pods(pods: &Api<Pod>, name: &str, role: &str) -> usize {
    pods.list(&ListParams::default().labels(&format!(
        "app.kubernetes.io/instance={name},llm-d.ai/role={role}"
    )))
    .await
    .map(|l| {
        l.items
            .iter()
            .filter(|p| is_pod_ready(p) && p.metadata.deletion_timestamp.is_none())
            .count()
    })
    .unwrap_or(0)
}

/// `clients` clients sending completions (`prompt(client, n)`) back to back through
/// the EPP pod.
fn surge(
    epp: &str,
    clients: usize,
    prompt: fn(usize, usize) -> String,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..clients)
        .map(|c| {
            let (epp, stop) = (epp.to_string(), stop.clone());
            tokio::spawn(async move {
                let http = pod_http();
                let mut served = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"model": MODEL, "prompt": prompt(c, served),
                                      "max_tokens": 60, "ignore_eos": true});
                    let ok = http
                        .post(format!("http://{epp}:8080/v1/completions"))
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    served += usize::from(ok);
                }
                served
            })
        })
        .collect()
}

/// A namespace on live nodes with its own operator and one Ready LLMDeployment.
struct Stack {
    ns: TestNamespace,
    _operator: Operator,
    lds: Api<LLMDeployment>,
    pods: Api<Pod>,
}

async fn start(namespace: &str, name: &str, manifest: &str) -> Stack {
    install_crds().await;
    let ns = TestNamespace::create_live(namespace).await;
    let operator = Operator::start(&ns.name, "op", &[]);
    let applied = apply_yaml(&ns.name, manifest);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let client = client().await;
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &ns.name);
    wait_for_ld(&lds, name, Duration::from_secs(120), "Ready", is_ready).await;
    Stack {
        pods: Api::namespaced(client, &ns.name),
        ns,
        _operator: operator,
        lds,
    }
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn decode_scales_up_under_a_surge_and_back_down_after_it_with_the_reasons_in_describe() {
    let manifest = format!(
        "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: {NAME}\nspec:\n  model:\n    name: {MODEL}\n    uri: hf://{MODEL}\n  decode:\n    replicas: 1\n    args: [--max-num-seqs, \"1\"]\n    autoscaling:\n      minReplicas: 1\n      maxReplicas: 3\n      target: {{waitingPerPod: 1}}\n      intervalSeconds: 5\n      scaleDownStabilizationSeconds: 15\n"
    );
    let stack = start("e2e-autoscaling", NAME, &manifest).await;
    let (lds, pods) = (&stack.lds, &stack.pods);
    let sets: Api<StatefulSet> = Api::namespaced(client().await, &stack.ns.name);
    // Calm: the autoscaler holds one pod and says why.
    let calm = wait_for_ld(
        lds,
        NAME,
        Duration::from_secs(30),
        "a first autoscaling decision",
        |ld| decision(ld).is_some_and(|d| d.replicas == 1),
    )
    .await;
    eprintln!("calm: {:?}", decision(&calm));

    // A surge: six clients against one engine that runs one sequence at a time.
    let epp = epp_ip(pods, NAME).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = surge(
        &epp,
        6,
        |c, n| format!("client {c} request {n}"),
        stop.clone(),
    );
    let up = wait_for_ld(
        lds,
        NAME,
        Duration::from_secs(60),
        "decode scaled up",
        |ld| decision(ld).is_some_and(|d| d.replicas >= 2),
    )
    .await;
    let up = decision(&up).expect("a decision");
    assert!(up.reason.contains("scaled up from 1 to"), "{up:?}");
    assert!(
        up.observed
            .as_deref()
            .is_some_and(|o| o.contains("waiting requests per pod")),
        "{up:?}"
    );
    let ld = lds.get(NAME).await.expect("get");
    assert_eq!(ld.spec.decode.replicas, 1, "the spec is left alone");
    wait_until(Duration::from_secs(60), "the new decode pods Ready", || {
        let pods = pods.clone();
        let want = up.replicas as usize;
        async move { (ready_pods(&pods, NAME, "decode").await >= want).then_some(()) }
    })
    .await;

    // Calm again: down after the 15 s window, to minReplicas.
    stop.store(true, Ordering::Relaxed);
    let mut served = 0;
    for c in clients {
        served += c.await.expect("client");
    }
    assert!(served > 20, "the surge was served: {served} requests");
    let down = wait_for_ld(
        lds,
        NAME,
        Duration::from_secs(90),
        "decode scaled back down",
        |ld| decision(ld).is_some_and(|d| d.replicas == 1),
    )
    .await;
    let down = decision(&down).expect("a decision");
    assert!(down.reason.contains("scaled down from"), "{down:?}");
    assert!(down.last_scale_time.is_some(), "{down:?}");
    wait_until(
        Duration::from_secs(30),
        "the StatefulSet back to one pod",
        || {
            let sets = sets.clone();
            async move {
                let s = sets.get(&format!("{NAME}-decode")).await.ok()?;
                (s.spec?.replicas == Some(1)).then_some(())
            }
        },
    )
    .await;
    let described = kubectl_ok(&["describe", "llmd", NAME, "-n", &stack.ns.name]);
    for needle in ["ScaledUp", "ScaledDown", "decode: scaled up from 1 to"] {
        assert!(described.contains(needle), "{needle} in:\n{described}");
    }
    eprintln!("up: {}\ndown: {}", up.reason, down.reason);
}

/// A long prompt no engine has cached: split into a prefill and a decode leg.
fn long_prompt(client: usize, n: usize) -> String {
    (0..50)
        .map(|i| format!("clause {i} of contract {n} for client {client} applies"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn prefill_scales_on_time_to_first_token_and_back_down() {
    const PD: &str = "elastic-pd";
    let manifest = format!(
        "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: {PD}\nspec:\n  model:\n    name: {MODEL}\n    uri: hf://{MODEL}\n  prefill:\n    replicas: 1\n    args: [--max-num-seqs, \"1\"]\n    autoscaling:\n      maxReplicas: 2\n      target: {{ttftMs: 100}}\n      intervalSeconds: 5\n      scaleDownStabilizationSeconds: 10\n  decode:\n    replicas: 1\n  router:\n    disaggregation:\n      nonCachedTokens: 64\n"
    );
    let stack = start("e2e-autoscaling-pd", PD, &manifest).await;
    let (lds, pods) = (&stack.lds, &stack.pods);
    let epp = epp_ip(pods, PD).await;
    wait_for_epp_config(lds, PD, &epp).await;

    // Long uncached prompts, prefilled one at a time: TTFT far above 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = surge(&epp, 4, long_prompt, stop.clone());
    let up = wait_for_ld(
        lds,
        PD,
        Duration::from_secs(60),
        "prefill scaled up",
        |ld| prefill_decision(ld).is_some_and(|d| d.replicas == 2),
    )
    .await;
    let up = prefill_decision(&up).expect("a decision");
    assert!(
        up.reason.contains("scaled up from 1 to 2 pods: TTFT"),
        "{up:?}"
    );
    wait_until(
        Duration::from_secs(60),
        "the second prefill pod Ready",
        || {
            let pods = pods.clone();
            async move { (ready_pods(&pods, PD, "prefill").await == 2).then_some(()) }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    // No requests: no time to first token to hold up, down to one after the window.
    let down = wait_for_ld(
        lds,
        PD,
        Duration::from_secs(60),
        "prefill scaled down",
        |ld| prefill_decision(ld).is_some_and(|d| d.replicas == 1),
    )
    .await;
    let down = prefill_decision(&down).expect("a decision");
    assert!(
        down.reason.contains("scaled down from 2 to 1 pod"),
        "{down:?}"
    );
    assert!(
        decision(&lds.get(PD).await.expect("get")).is_none(),
        "decode is not autoscaled: no decision for it"
    );
    eprintln!("prefill up: {}\nprefill down: {}", up.reason, down.reason);
}
