//! The adapter loader, run by the operator next to the tuner (leader only, reading
//! the controller's cache): every engine pod of a deployment with
//! `spec.model.adapters` gets exactly those adapters, through vLLM's runtime LoRA
//! API (`/v1/load_lora_adapter`, `/v1/unload_lora_adapter`, enabled by
//! `VLLM_ALLOW_RUNTIME_LORA_UPDATING`). Adding or removing an adapter therefore
//! restarts no pod.
//!
//! What an engine has loaded is read from its `/v1/models` (an adapter is a model
//! with a `parent`; its `root` is the path it was loaded from, so a changed source
//! is unloaded and loaded again). A pod's readiness gate
//! ([`llmd_api::ADAPTERS_LOADED_CONDITION`]) turns True once every declared adapter
//! is loaded, so a new pod takes traffic only then; it is never turned False again
//! on a serving pod (an adapter added later is routed only to pods that list it,
//! by the EndpointPicker, until every pod has it). Loads and unloads are Events on the
//! deployment (one series per adapter and operation), each failure a Warning once
//! per pod, adapter and message.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use llmd_api::endpoint_picker::selector_string;
use llmd_api::{ADAPTERS_LOADED_CONDITION, LLMDeployment, LoraAdapterSpec, ModelSpec, labels};
use serde::Deserialize;
use serde_json::json;
use tracing::{debug, warn};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::OutcomeLabel;

/// How often a deployment whose engines are not all converged is looked at.
const INTERVAL: Duration = Duration::from_secs(2);
/// How often a converged deployment is looked at without news of a change.
const SETTLED_INTERVAL: Duration = Duration::from_secs(30);
/// How long an engine may take to list its models.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an engine may take to load an adapter (a download from Hugging Face).
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// The engine container's name in model-server pods.
const ENGINE_CONTAINER: &str = "vllm";

/// vLLM's runtime LoRA endpoints.
pub const LOAD_PATH: &str = "/v1/load_lora_adapter";
pub const UNLOAD_PATH: &str = "/v1/unload_lora_adapter";

/// One entry of an engine's `/v1/models`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct ServedModel {
    pub id: String,
    /// Where it was loaded from (an adapter's path).
    #[serde(default)]
    pub root: Option<String>,
    /// The base model, for an adapter; none for the base model itself.
    #[serde(default)]
    pub parent: Option<String>,
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ServedModel>,
}

/// What to do on one engine.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Adapters to unload first: no longer declared, or loaded from another path.
    pub unload: Vec<String>,
    /// Adapters to load: (name, path).
    pub load: Vec<(String, String)>,
}

/// The steps that bring an engine serving `served` to exactly `declared`.
pub fn plan(declared: &[LoraAdapterSpec], served: &[ServedModel]) -> Plan {
    let loaded: BTreeMap<&str, Option<&str>> = served
        .iter()
        .filter(|m| m.parent.is_some())
        .map(|m| (m.id.as_str(), m.root.as_deref()))
        .collect();
    let wanted: BTreeMap<&str, String> = declared
        .iter()
        .map(|a| (a.name.as_str(), ModelSpec::adapter_path(a)))
        .collect();
    let mut plan = Plan::default();
    for (name, root) in &loaded {
        match wanted.get(name) {
            None => plan.unload.push(name.to_string()),
            // An engine that does not say where an adapter came from is trusted.
            Some(path) if root.is_some_and(|r| r != path) => plan.unload.push(name.to_string()),
            Some(_) => {}
        }
    }
    for (name, path) in &wanted {
        if !loaded.contains_key(name) || plan.unload.iter().any(|u| u == name) {
            plan.load.push((name.to_string(), path.to_string()));
        }
    }
    plan
}

/// The port the engine's API server listens on: its readiness probe's (`/health`
/// is served there), a port name resolved against the container's ports.
pub fn engine_port(container: &Container) -> Option<i32> {
    let port = container
        .readiness_probe
        .as_ref()?
        .http_get
        .as_ref()?
        .port
        .clone();
    match port {
        IntOrString::Int(n) => Some(n),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// An engine pod the loader can talk to: running, its engine answering `/health`.
struct Engine {
    pod: String,
    url: String,
    /// Its readiness gate is open already.
    gate_open: bool,
    /// What the gate says now (None when unset), to write only changes.
    gate_message: Option<String>,
}

fn engine(pod: &Pod) -> Option<Engine> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ip = status.pod_ip.as_deref()?;
    let engine_ready = status
        .container_statuses
        .iter()
        .flatten()
        .any(|c| c.name == ENGINE_CONTAINER && c.ready);
    if !engine_ready {
        return None;
    }
    let container = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == ENGINE_CONTAINER)?;
    let port = engine_port(container)?;
    let gate = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == ADAPTERS_LOADED_CONDITION);
    Some(Engine {
        pod: pod.name_any(),
        url: format!("http://{ip}:{port}"),
        gate_open: gate.is_some_and(|c| c.status == "True"),
        gate_message: gate.and_then(|c| c.message.clone()),
    })
}

/// What one pass over one engine came to.
struct Outcome {
    pod: String,
    /// Its `/v1/models` answered.
    listed: bool,
    loaded: Vec<String>,
    unloaded: Vec<String>,
    /// (adapter, the engine's answer) per failed step.
    failed: Vec<(String, String)>,
}

/// Failure messages already published, per deployment: (pod, adapter, message).
type Published = HashSet<(String, String, String)>;

/// One deployment's loader state between passes.
#[derive(Default)]
struct Tracked {
    published: Published,
    next_check: Option<Instant>,
    /// The pass under way: a slow load (a download) holds up only its deployment.
    running: Option<JoinHandle<(Published, bool)>>,
}

/// Run until `shutdown` fires. A deployment is looked at when a reconcile says it
/// may have changed ([`Context::adapters_may_have_changed`]), every
/// [`INTERVAL`] while some engine lacks its adapters or its gate, and every
/// [`SETTLED_INTERVAL`] once all are converged.
pub async fn run(
    ctx: Arc<Context>,
    store: Store<LLMDeployment>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tracked: HashMap<ObjectRef<LLMDeployment>, Tracked> = HashMap::new();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = ctx.adapters_wake.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = Instant::now();
        let due = ctx.take_adapters_due();
        let live: Vec<Arc<LLMDeployment>> = store
            .state()
            .into_iter()
            .filter(|ld| ld.metadata.deletion_timestamp.is_none())
            .filter(|ld| !ld.spec.model.adapters.is_empty())
            .collect();
        tracked.retain(|key, t| {
            let keep = live.iter().any(|ld| ObjectRef::from(ld.as_ref()) == *key);
            if !keep && let Some(task) = t.running.take() {
                task.abort();
            }
            keep
        });
        for ld in live {
            let key = ObjectRef::from(ld.as_ref());
            let t = tracked.entry(key.clone()).or_default();
            if let Some(task) = t.running.take_if(|task| task.is_finished()) {
                let (published, converged) = task.await.unwrap_or_default();
                t.published = published;
                t.next_check = Some(
                    now + if converged {
                        SETTLED_INTERVAL
                    } else {
                        INTERVAL
                    },
                );
            }
            let is_due = due.contains(&key) || t.next_check.is_none_or(|at| at <= now);
            if t.running.is_some() || !is_due {
                continue;
            }
            let published = std::mem::take(&mut t.published);
            let ctx = ctx.clone();
            t.running = Some(tokio::spawn(
                async move { pass(&ctx, &ld, published).await },
            ));
        }
    }
}

/// One pass over a deployment's engines: the failures published so far, and
/// whether every engine holds exactly the declared adapters with its gate open.
async fn pass(ctx: &Context, ld: &LLMDeployment, mut published: Published) -> (Published, bool) {
    let pods = match pods(ctx, ld).await {
        Ok(pods) => pods,
        Err(e) => {
            warn!(name = %ld.name_any(), error = %e, "listing engine pods for their adapters failed");
            return (published, false);
        }
    };
    let engines: Vec<Engine> = pods.iter().filter_map(engine).collect();
    // A pod whose engine is not up yet is not converged.
    let mut converged = engines.len() == pods.len();
    let live: HashSet<&str> = engines.iter().map(|e| e.pod.as_str()).collect();
    published.retain(|(pod, _, _)| live.contains(pod.as_str()));
    let outcomes = join_all(engines.iter().map(|e| converge(ctx, ld, e))).await;
    for (engine, outcome) in engines.iter().zip(&outcomes) {
        converged &= engine.gate_open
            && outcome.listed
            && outcome.loaded.is_empty()
            && outcome.unloaded.is_empty()
            && outcome.failed.is_empty();
        report(ctx, ld, outcome, &mut published).await;
    }
    (published, converged)
}

/// The deployment's model-server pods (every role).
async fn pods(ctx: &Context, ld: &LLMDeployment) -> Result<Vec<Pod>> {
    let namespace = ld.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = selector_string(&BTreeMap::from([
        (labels::INSTANCE.to_string(), ld.name_any()),
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (labels::INFERENCE_SERVING.to_string(), "true".to_string()),
    ]));
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list engine pods", e))?;
    Ok(list.items)
}

/// Brings one engine to the declared adapters and opens its gate once it has them.
async fn converge(ctx: &Context, ld: &LLMDeployment, engine: &Engine) -> Outcome {
    let mut outcome = Outcome {
        pod: engine.pod.clone(),
        listed: false,
        loaded: Vec::new(),
        unloaded: Vec::new(),
        failed: Vec::new(),
    };
    let declared = &ld.spec.model.adapters;
    let served = match list_models(ctx, &engine.url).await {
        Ok(served) => served,
        Err(e) => {
            debug!(pod = %engine.pod, error = %e, "reading an engine's models failed");
            return outcome;
        }
    };
    outcome.listed = true;
    let steps = plan(declared, &served);
    for name in &steps.unload {
        match post(ctx, &engine.url, UNLOAD_PATH, json!({ "lora_name": name })).await {
            Ok(()) => outcome.unloaded.push(name.clone()),
            Err(e) => outcome.failed.push((name.clone(), e)),
        }
    }
    for (name, path) in &steps.load {
        let body = json!({ "lora_name": name, "lora_path": path });
        match post(ctx, &engine.url, LOAD_PATH, body).await {
            Ok(()) => outcome.loaded.push(name.clone()),
            Err(e) => outcome.failed.push((name.clone(), e)),
        }
    }
    let ready = outcome.failed.is_empty();
    if !engine.gate_open {
        let message = gate_message(declared.len(), &outcome.failed);
        if (ready || engine.gate_message.as_deref() != Some(message.as_str()))
            && let Err(e) = set_gate(ctx, ld, &engine.pod, ready, &message).await
        {
            warn!(pod = %engine.pod, error = %e, "setting the adapters-loaded condition failed");
        }
    }
    outcome
}

/// The readiness gate's message.
fn gate_message(declared: usize, failed: &[(String, String)]) -> String {
    match failed.first() {
        None => format!("{declared} adapter(s) loaded"),
        Some((name, why)) => format!(
            "adapter {name} failed to load: {why}{}",
            if failed.len() > 1 {
                format!(" (and {} more)", failed.len() - 1)
            } else {
                String::new()
            }
        ),
    }
}

async fn list_models(ctx: &Context, base: &str) -> std::result::Result<Vec<ServedModel>, String> {
    let response = ctx
        .http
        .get(format!("{base}/v1/models"))
        .timeout(LIST_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("/v1/models answered {}", response.status()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    let list: ModelList = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(list.data)
}

/// A POST to the engine; its error text (vLLM's `message`) on failure.
async fn post(
    ctx: &Context,
    base: &str,
    path: &str,
    body: serde_json::Value,
) -> std::result::Result<(), String> {
    let response = ctx
        .http
        .post(format!("{base}{path}"))
        .timeout(LOAD_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(format!("{status}: {}", engine_message(&text)))
}

/// vLLM's error `message` when the body is its error JSON, else the body (cut short).
fn engine_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.get("message")
            .or_else(|| v.get("error").and_then(|e| e.get("message")))
            .and_then(|m| m.as_str())
    });
    let text = message.unwrap_or(body).trim();
    text.chars().take(300).collect()
}

/// Sets the pod's adapters-loaded condition (merged by type, so the kubelet's
/// conditions stay).
async fn set_gate(
    ctx: &Context,
    ld: &LLMDeployment,
    pod: &str,
    loaded: bool,
    message: &str,
) -> Result<()> {
    let namespace = ld.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"status": {"conditions": [{
        "type": ADAPTERS_LOADED_CONDITION,
        "status": if loaded { "True" } else { "False" },
        "reason": if loaded { "AdaptersLoaded" } else { "AdapterLoadFailed" },
        "message": message,
        "lastTransitionTime": now,
    }]}});
    api.patch_status(pod, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(|e| Error::kube("set a pod's adapters-loaded condition", e))?;
    Ok(())
}

fn count(ctx: &Context, outcome: &'static str, n: usize) {
    ctx.metrics
        .adapter_operations
        .get_or_create(&OutcomeLabel { outcome })
        .inc_by(n as u64);
}

/// Events, one series per adapter and operation (its count is the engines it was
/// done on), and a Warning per new failure naming the pod.
async fn report(ctx: &Context, ld: &LLMDeployment, outcome: &Outcome, published: &mut Published) {
    let done = [
        ("AdapterLoaded", "loaded into", &outcome.loaded),
        ("AdapterUnloaded", "unloaded from", &outcome.unloaded),
    ];
    for (reason, verb, names) in done {
        for name in names.iter() {
            debug!(name = %ld.name_any(), pod = %outcome.pod, adapter = %name, "adapter {verb} a running engine");
            ctx.publish(
                ld,
                Event {
                    type_: EventType::Normal,
                    reason: reason.into(),
                    note: Some(format!(
                        "adapter {name} {verb} running engines (no pod restarted); pod {} first",
                        outcome.pod
                    )),
                    action: name.clone(),
                    secondary: None,
                },
            )
            .await;
        }
    }
    count(ctx, "loaded", outcome.loaded.len());
    count(ctx, "unloaded", outcome.unloaded.len());
    for (adapter, why) in &outcome.failed {
        count(ctx, "failed", 1);
        if !published.insert((outcome.pod.clone(), adapter.clone(), why.clone())) {
            continue;
        }
        warn!(name = %ld.name_any(), pod = %outcome.pod, adapter, error = %why, "adapter failed to load");
        ctx.publish(
            ld,
            Event {
                type_: EventType::Warning,
                reason: "AdapterLoadFailed".into(),
                note: Some(format!("adapter {adapter} on pod {}: {why}", outcome.pod)),
                action: adapter.clone(),
                secondary: None,
            },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, Probe};

    fn adapter(name: &str, source: &str) -> LoraAdapterSpec {
        LoraAdapterSpec {
            name: name.into(),
            source: source.into(),
        }
    }

    fn served(id: &str, root: &str, parent: Option<&str>) -> ServedModel {
        ServedModel {
            id: id.into(),
            root: Some(root.into()),
            parent: parent.map(str::to_string),
        }
    }

    #[test]
    fn a_fresh_engine_loads_every_declared_adapter() {
        let declared = [
            adapter("sql", "hf://org/sql"),
            adapter("chat", "hf://org/chat"),
        ];
        let base = [served("base", "base", None)];
        assert_eq!(
            plan(&declared, &base),
            Plan {
                unload: vec![],
                load: vec![
                    ("chat".into(), "org/chat".into()),
                    ("sql".into(), "org/sql".into())
                ],
            }
        );
    }

    #[test]
    fn a_converged_engine_needs_nothing_and_the_base_model_is_never_unloaded() {
        let declared = [adapter("sql", "hf://org/sql")];
        let engine = [
            served("base", "base", None),
            served("sql", "org/sql", Some("base")),
        ];
        assert_eq!(plan(&declared, &engine), Plan::default());
        // An engine that does not report roots is taken at its word.
        let no_root = [ServedModel {
            id: "sql".into(),
            root: None,
            parent: Some("base".into()),
        }];
        assert_eq!(plan(&declared, &no_root), Plan::default());
    }

    #[test]
    fn removed_adapters_are_unloaded_and_a_changed_source_is_reloaded() {
        let declared = [adapter("sql", "hf://org/sql-v2")];
        let engine = [
            served("base", "base", None),
            served("sql", "org/sql", Some("base")),
            served("old", "org/old", Some("base")),
        ];
        assert_eq!(
            plan(&declared, &engine),
            Plan {
                unload: vec!["old".into(), "sql".into()],
                load: vec![("sql".into(), "org/sql-v2".into())],
            }
        );
    }

    #[test]
    fn a_pvc_adapter_loads_from_its_claims_mount() {
        let declared = [adapter("fin", "pvc://adapters/fin/v3/")];
        assert_eq!(
            plan(&declared, &[served("base", "base", None)]).load,
            [("fin".to_string(), "/adapters/adapters/fin/v3".to_string())]
        );
        let engine = [served("fin", "/adapters/adapters/fin/v3", Some("base"))];
        assert_eq!(plan(&declared, &engine), Plan::default());
    }

    #[test]
    fn the_engine_port_is_where_its_health_probe_goes() {
        let mut c = Container {
            name: ENGINE_CONTAINER.into(),
            ports: Some(vec![
                ContainerPort {
                    name: Some("nixl".into()),
                    container_port: 5600,
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some("engine".into()),
                    container_port: 8200,
                    ..ContainerPort::default()
                },
            ]),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/health".into()),
                    port: IntOrString::String("engine".into()),
                    ..HTTPGetAction::default()
                }),
                ..Probe::default()
            }),
            ..Container::default()
        };
        assert_eq!(engine_port(&c), Some(8200));
        if let Some(get) = c.readiness_probe.as_mut().and_then(|p| p.http_get.as_mut()) {
            get.port = IntOrString::Int(8000);
        }
        assert_eq!(engine_port(&c), Some(8000));
        c.readiness_probe = None;
        assert_eq!(engine_port(&c), None);
    }

    #[test]
    fn failures_name_the_adapter_and_the_engines_words() {
        assert_eq!(gate_message(2, &[]), "2 adapter(s) loaded");
        let failed = [
            ("sql".to_string(), "404 Not Found: no such repo".to_string()),
            ("chat".to_string(), "timed out".to_string()),
        ];
        assert_eq!(
            gate_message(2, &failed),
            "adapter sql failed to load: 404 Not Found: no such repo (and 1 more)"
        );
        assert_eq!(
            engine_message(
                r#"{"object":"error","message":"The lora adapter 'sql' has already been loaded.","type":"InvalidUserInput","code":400}"#
            ),
            "The lora adapter 'sql' has already been loaded."
        );
        assert_eq!(
            engine_message(r#"{"error":{"message":"bad path"}}"#),
            "bad path"
        );
        assert_eq!(engine_message("plain text\n"), "plain text");
    }

    #[test]
    fn the_runtime_lora_endpoints_are_in_the_engine_contract() {
        let contract = include_str!("build/engine_contract.yaml");
        for path in [LOAD_PATH, UNLOAD_PATH] {
            assert!(contract.contains(&format!("name: {path}")), "{path}");
        }
    }
}
