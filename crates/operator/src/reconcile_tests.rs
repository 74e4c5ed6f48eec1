//! The reconcile against a scripted in-memory API (tower-test mock): the exact calls
//! it makes on a first run, on a settled run, on drift, on a removed role and with an
//! object that is not ours in the way of a child.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use llmd_api::LLMDeployment;
use serde_json::{Value, json};

use crate::build::tests::{AGGREGATED, PD_NIXL, sample};
use crate::context::Context;
use crate::metrics::Metrics;
use crate::reconcile::reconcile;

/// A tiny API server: objects by path, every call recorded as "METHOD path".
#[derive(Default)]
struct FakeApi {
    objects: Mutex<BTreeMap<String, Value>>,
    calls: Mutex<Vec<String>>,
}

impl FakeApi {
    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().expect("lock"))
    }

    /// Writes other than events (events are asserted on their own).
    fn writes(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| !c.starts_with("GET ") && !c.contains("/events"))
            .collect()
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().expect("lock").get(path).cloned()
    }

    fn edit(&self, path: &str, edit: impl FnOnce(&mut Value)) {
        let mut objects = self.objects.lock().expect("lock");
        edit(objects.get_mut(path).expect("object exists"));
    }

    fn respond(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> (StatusCode, Value) {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("{method} {path}"));
        let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
        let mut objects = self.objects.lock().expect("lock");
        match *method {
            Method::GET if path == "/apis/inference.networking.k8s.io/v1" => {
                (StatusCode::NOT_FOUND, not_found)
            }
            Method::GET if path.ends_with("/pods") => {
                assert!(
                    query.contains("labelSelector"),
                    "pods are listed by selector"
                );
                (
                    StatusCode::OK,
                    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}),
                )
            }
            Method::GET => match objects.get(path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => (StatusCode::NOT_FOUND, not_found),
            },
            Method::PATCH => {
                let patch: Value = serde_json::from_slice(body).expect("patch is JSON");
                if let Some(parent) = path.strip_suffix("/status") {
                    let object = objects.get_mut(parent).expect("status of a known object");
                    object["status"] = patch["status"].clone();
                    (StatusCode::OK, object.clone())
                } else {
                    objects.insert(path.to_string(), patch.clone());
                    (StatusCode::OK, patch)
                }
            }
            Method::DELETE => match objects.remove(path) {
                Some(object) => (StatusCode::OK, object),
                None => (StatusCode::NOT_FOUND, not_found),
            },
            Method::POST => (
                StatusCode::CREATED,
                serde_json::from_slice(body).unwrap_or(Value::Null),
            ),
            _ => (StatusCode::METHOD_NOT_ALLOWED, not_found),
        }
    }
}

fn client(fake: Arc<FakeApi>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("body");
            let (status, value) = fake.respond(
                &parts.method,
                parts.uri.path(),
                parts.uri.query().unwrap_or(""),
                &bytes,
            );
            let response = Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&value).expect("json")))
                .expect("response");
            send.send_response(response);
        }
    });
    Client::new(service, "default")
}

const LD_PATH: &str = "/apis/llmd.dev/v1alpha1/namespaces/inference/llmdeployments";

/// Store the LLMDeployment in the fake and return the fake and a context.
fn setup(yaml: &str) -> (Arc<FakeApi>, Arc<Context>, String) {
    let fake = Arc::new(FakeApi::default());
    let ld = sample(yaml);
    let path = format!("{LD_PATH}/{}", ld.metadata.name.clone().expect("name"));
    fake.objects
        .lock()
        .expect("lock")
        .insert(path.clone(), serde_json::to_value(&ld).expect("json"));
    let ctx = Arc::new(Context::new(
        client(fake.clone()),
        Arc::new(Metrics::default()),
        None,
        crate::build::EndpointPickerDefaults::default(),
    ));
    (fake, ctx, path)
}

async fn run(fake: &FakeApi, ctx: &Arc<Context>, path: &str) {
    let ld: LLMDeployment = serde_json::from_value(fake.get(path).expect("ld")).expect("ld parses");
    reconcile(Arc::new(ld), ctx.clone())
        .await
        .expect("reconcile succeeds");
}

#[tokio::test]
async fn first_reconcile_applies_every_child_then_status() {
    let (fake, ctx, path) = setup(AGGREGATED);
    run(&fake, &ctx, &path).await;
    let ns = "/namespaces/inference";
    let applies: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("PATCH") || c.starts_with("DELETE"))
        .collect();
    assert_eq!(
        applies,
        [
            format!("PATCH /api/v1{ns}/services/llama-aggregated-decode"),
            format!("PATCH /apis/apps/v1{ns}/statefulsets/llama-aggregated-decode"),
            format!("PATCH /apis/policy/v1{ns}/poddisruptionbudgets/llama-aggregated-decode"),
            format!("PATCH /api/v1{ns}/serviceaccounts/llama-aggregated-epp"),
            format!("PATCH /apis/rbac.authorization.k8s.io/v1{ns}/roles/llama-aggregated-epp"),
            format!(
                "PATCH /apis/rbac.authorization.k8s.io/v1{ns}/rolebindings/llama-aggregated-epp"
            ),
            format!("PATCH /api/v1{ns}/configmaps/llama-aggregated-epp-config"),
            format!("PATCH /api/v1{ns}/services/llama-aggregated-epp"),
            format!("PATCH /apis/apps/v1{ns}/deployments/llama-aggregated-epp"),
            format!("PATCH /apis/policy/v1{ns}/poddisruptionbudgets/llama-aggregated-epp"),
            format!("PATCH {path}/status"),
        ]
    );
    let ld = fake.get(&path).expect("ld");
    let status = &ld["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["decode"]["ready"], "0/4");
    assert_eq!(
        status["router"]["endpoint"],
        "http://llama-aggregated-epp.inference.svc:8080"
    );
    assert_eq!(status["router"]["inferencePool"], "CRDNotInstalled");
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types, llmd_api::conditions::ALL);
    let sts = fake
        .get(&format!(
            "/apis/apps/v1{ns}/statefulsets/llama-aggregated-decode"
        ))
        .expect("sts");
    assert!(sts["metadata"]["annotations"][crate::apply::object::APPLIED_HASH].is_string());
}

#[tokio::test]
async fn settled_reconcile_writes_nothing() {
    let (fake, ctx, path) = setup(AGGREGATED);
    run(&fake, &ctx, &path).await;
    fake.calls();
    run(&fake, &ctx, &path).await;
    let calls = fake.calls();
    let writes: Vec<&String> = calls.iter().filter(|c| !c.starts_with("GET ")).collect();
    assert!(writes.is_empty(), "a settled reconcile wrote {writes:?}");
}

#[tokio::test]
async fn edited_child_field_is_restored() {
    let (fake, ctx, path) = setup(AGGREGATED);
    run(&fake, &ctx, &path).await;
    let sts_path = "/apis/apps/v1/namespaces/inference/statefulsets/llama-aggregated-decode";
    fake.edit(sts_path, |sts| sts["spec"]["replicas"] = json!(1));
    fake.calls();
    run(&fake, &ctx, &path).await;
    assert_eq!(fake.writes(), [format!("PATCH {sts_path}")]);
    assert_eq!(fake.get(sts_path).expect("sts")["spec"]["replicas"], 4);
}

#[tokio::test]
async fn removing_prefill_deletes_its_stateful_set_service_and_fabric() {
    let (fake, ctx, path) = setup(PD_NIXL);
    run(&fake, &ctx, &path).await;
    let ns = "/namespaces/inference";
    assert!(
        fake.get(&format!("/apis/apps/v1{ns}/statefulsets/llama-pd-prefill"))
            .is_some()
    );
    fake.edit(&path, |ld| {
        ld["spec"].as_object_mut().expect("spec").remove("prefill");
        ld["spec"]["kvTransfer"]
            .as_object_mut()
            .expect("kv")
            .remove("connector");
        ld["metadata"]["generation"] = json!(2);
    });
    fake.calls();
    run(&fake, &ctx, &path).await;
    let writes = fake.writes();
    for deleted in [
        format!("DELETE /apis/apps/v1{ns}/statefulsets/llama-pd-prefill"),
        format!("DELETE /api/v1{ns}/services/llama-pd-prefill"),
        format!("DELETE /api/v1{ns}/configmaps/llama-pd-kv-transfer"),
    ] {
        assert!(
            writes.contains(&deleted),
            "{deleted} missing from {writes:?}"
        );
    }
    // Decode pods drop the NIXL config, so the StatefulSet is re-applied.
    assert!(writes.contains(&format!(
        "PATCH /apis/apps/v1{ns}/statefulsets/llama-pd-decode"
    )));
    let status = fake.get(&path).expect("ld")["status"].clone();
    assert!(
        status.get("prefill").is_none(),
        "prefill status removed: {status}"
    );
    assert_eq!(status["observedGeneration"], 2);
}

#[tokio::test]
async fn invalid_spec_is_reported_without_applying() {
    let (fake, ctx, path) = setup(AGGREGATED);
    fake.edit(&path, |ld| {
        ld["spec"]["decode"]["resources"] = json!({"limits": {"nvidia.com/gpu": "1"}});
    });
    run(&fake, &ctx, &path).await;
    let writes = fake.writes();
    assert_eq!(
        writes.iter().filter(|w| w.starts_with("PATCH")).count(),
        1,
        "{writes:?}"
    );
    let ld = fake.get(&path).expect("ld");
    let degraded = ld["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Degraded")
        .cloned()
        .expect("Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "InvalidSpec");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap_or("")
            .contains("spec.decode.resources.limits")
    );
}

const NS: &str = "/namespaces/inference";

fn epp_config_path() -> String {
    format!("/api/v1{NS}/configmaps/llama-aggregated-epp-config")
}

/// An object someone else made, at `path`, with extra `metadata`.
fn foreign(fake: &FakeApi, path: &str, kind: &str, metadata: Value) -> Value {
    let name = path.rsplit('/').next().expect("name");
    let mut object = json!({
        "apiVersion": if kind == "StatefulSet" { "apps/v1" } else { "v1" },
        "kind": kind,
        "metadata": {"name": name, "namespace": "inference", "resourceVersion": "7"},
        "data": {"written-by": "someone else"},
    });
    if let (Some(meta), Some(extra)) = (object["metadata"].as_object_mut(), metadata.as_object()) {
        meta.extend(extra.clone());
    }
    fake.objects
        .lock()
        .expect("lock")
        .insert(path.to_string(), object.clone());
    object
}

fn condition(fake: &FakeApi, path: &str, type_: &str) -> Value {
    fake.get(path).expect("ld")["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
        .expect("condition")
}

#[tokio::test]
async fn an_object_in_the_way_is_left_alone_and_reported_while_the_others_are_applied() {
    let (fake, ctx, path) = setup(AGGREGATED);
    let config = epp_config_path();
    let theirs = foreign(&fake, &config, "ConfigMap", json!({}));
    let ld: LLMDeployment = serde_json::from_value(fake.get(&path).expect("ld")).expect("ld");
    let action = reconcile(Arc::new(ld), ctx.clone())
        .await
        .expect("a conflict is reported, not an error");
    let writes = fake.writes();
    assert!(
        !writes
            .iter()
            .any(|w| w.ends_with("/configmaps/llama-aggregated-epp-config")),
        "wrote the object in the way: {writes:?}"
    );
    assert_eq!(
        writes.iter().filter(|w| w.starts_with("PATCH")).count(),
        10,
        "the nine other children and the status: {writes:?}"
    );
    assert_eq!(fake.get(&config), Some(theirs), "left as it was");
    let degraded = condition(&fake, &path, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "ChildConflict");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap_or("")
            .contains("ConfigMap llama-aggregated-epp-config has no controller"),
        "{degraded}"
    );
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(10)),
        "nothing watches the object in the way, so the deployment is looked at again"
    );
}

#[tokio::test]
async fn a_labelled_copy_or_a_deleted_namesakes_child_is_not_adopted() {
    let (fake, ctx, path) = setup(AGGREGATED);
    let service = format!("/api/v1{NS}/services/llama-aggregated-decode");
    let labelled = json!({"labels": {"app.kubernetes.io/managed-by": "llmd-operator",
                                     "app.kubernetes.io/instance": "llama-aggregated"}});
    foreign(&fake, &service, "Service", labelled);
    let sts = format!("/apis/apps/v1{NS}/statefulsets/llama-aggregated-decode");
    let namesake = json!({"ownerReferences": [{"apiVersion": "llmd.dev/v1alpha1",
        "kind": "LLMDeployment", "name": "llama-aggregated", "uid": "deleted-uid",
        "controller": true}]});
    foreign(&fake, &sts, "StatefulSet", namesake);
    run(&fake, &ctx, &path).await;
    let writes = fake.writes();
    assert!(!writes.contains(&format!("PATCH {service}")), "{writes:?}");
    assert!(!writes.contains(&format!("PATCH {sts}")), "{writes:?}");
    let degraded = condition(&fake, &path, "Degraded");
    let message = degraded["message"].as_str().unwrap_or("");
    assert!(
        message.contains("Service llama-aggregated-decode has no controller"),
        "{message}"
    );
    assert!(
        message.contains(
            "StatefulSet llama-aggregated-decode is controlled by LLMDeployment/llama-aggregated (uid deleted-uid)"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn once_the_object_in_the_way_is_gone_ours_is_created_and_degraded_clears() {
    let (fake, ctx, path) = setup(AGGREGATED);
    let config = epp_config_path();
    foreign(&fake, &config, "ConfigMap", json!({}));
    run(&fake, &ctx, &path).await;
    assert_eq!(condition(&fake, &path, "Degraded")["status"], "True");
    fake.objects.lock().expect("lock").remove(&config);
    fake.calls();
    run(&fake, &ctx, &path).await;
    assert!(fake.writes().contains(&format!("PATCH {config}")));
    let ours = fake.get(&config).expect("created");
    assert_eq!(
        ours["metadata"]["ownerReferences"][0]["uid"],
        "5f0c6a2e-0000-4000-8000-000000000001"
    );
    let degraded = condition(&fake, &path, "Degraded");
    assert_eq!(degraded["status"], "False");
    assert_eq!(degraded["reason"], "AsExpected");
}

#[tokio::test]
async fn an_unwanted_object_we_do_not_control_is_not_deleted() {
    let (fake, ctx, path) = setup(AGGREGATED);
    // Aggregated serving has no KV fabric: ours would be pruned, this one is not ours.
    let kv = format!("/api/v1{NS}/configmaps/llama-aggregated-kv-transfer");
    foreign(&fake, &kv, "ConfigMap", json!({}));
    run(&fake, &ctx, &path).await;
    assert!(!fake.writes().iter().any(|w| w.starts_with("DELETE")));
    assert!(fake.get(&kv).is_some());
}

#[tokio::test]
async fn an_autoscaled_role_follows_the_decision_in_status_and_the_reconcile_leaves_it_be() {
    let (fake, ctx, path) = setup(AGGREGATED);
    fake.edit(&path, |ld| {
        ld["spec"]["decode"]["autoscaling"] =
            json!({"maxReplicas": 8, "target": {"waitingPerPod": 2}});
        ld["status"] = json!({"autoscaling": {"decode": {
            "replicas": 6, "reason": "scaled up from 4 to 6 pods"
        }}});
    });
    run(&fake, &ctx, &path).await;
    let sts = fake
        .get("/apis/apps/v1/namespaces/inference/statefulsets/llama-aggregated-decode")
        .expect("sts");
    assert_eq!(sts["spec"]["replicas"], 6, "the decision, not spec's 4");
    // The reconcile's own status apply names no autoscaling field: it belongs to the
    // autoscaler's field manager (this fake replaces status with what is applied).
    let ld = fake.get(&path).expect("ld");
    assert!(ld["status"]["autoscaling"].is_null(), "{}", ld["status"]);
    assert_eq!(ld["spec"]["decode"]["replicas"], 4, "spec is never written");
}
