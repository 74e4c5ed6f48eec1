//! Keeping what was rendered: a model-server workload (StatefulSet or
//! LeaderWorkerSet) keeps the pod template it was created with until the parts of
//! the spec that shape its pods change, so upgrading the operator (a new default
//! image, flag or security setting) does not roll every GPU pod.
//!
//! Each workload carries two annotations: the hash of the pod-shaping part of the
//! spec it was rendered from ([`INPUTS_HASH`]) and that rendering itself, compressed
//! ([`RENDERED`]). When a reconcile renders the same inputs differently from what
//! the workload holds, the rendering held is kept and the difference reported (in
//! `status.rendering` and an Event); changing the spec, or annotating the
//! LLMDeployment with [`OPT_IN`]`: latest`, renders afresh. A workload from before
//! these annotations keeps its live pod template the same way.

use std::io::{Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use llmd_api::LLMDeploymentSpec;
use llmd_api::content_hash::content_hash;
use llmd_api::leader_worker_set::LeaderWorkerSet;
use serde_json::Value;

/// Hash of the pod-shaping part of the spec a workload was rendered from.
pub const INPUTS_HASH: &str = "llmd.dev/pod-inputs-hash";
/// The pod template(s) the workload was rendered with (gzip, base64).
pub const RENDERED: &str = "llmd.dev/rendered-pod-template";
/// On an LLMDeployment, `latest`: always render with this operator's rendering.
pub const OPT_IN: &str = "llmd.dev/rendering";
pub const OPT_IN_LATEST: &str = "latest";

/// Fields of the spec that never reach a model-server pod: changing them is not a
/// reason to re-render one.
const NOT_POD_SHAPING: [&[&str]; 12] = [
    &["prefill", "replicas"],
    &["decode", "replicas"],
    &["prefill", "autoscaling"],
    &["decode", "autoscaling"],
    &["router", "scorers"],
    &["router", "autoTune"],
    &["router", "disaggregation"],
    &["router", "slo"],
    &["router", "replicas"],
    &["router", "resources"],
    &["inferencePool"],
    &["networkPolicy"],
];

/// The hash of what shapes the model-server pods: `spec` and the KV-transfer
/// fabric they load (`kv_hash`, the hash of its ConfigMap). A changed fabric always
/// renders afresh: pods on one fabric must not carry another's compatibility label.
pub fn pod_inputs_hash(spec: &LLMDeploymentSpec, kv_hash: Option<&str>) -> String {
    let mut value = serde_json::to_value(spec).unwrap_or(Value::Null);
    for path in NOT_POD_SHAPING {
        remove_path(&mut value, path);
    }
    let inputs = serde_json::json!({ "spec": value, "kvTransfer": kv_hash });
    content_hash(inputs.to_string().as_bytes())
}

fn remove_path(value: &mut Value, path: &[&str]) {
    match path {
        [] => {}
        [last] => {
            if let Some(map) = value.as_object_mut() {
                map.remove(*last);
            }
        }
        [first, rest @ ..] => {
            if let Some(inner) = value.get_mut(*first) {
                remove_path(inner, rest);
            }
        }
    }
}

/// A workload whose pod template(s) the operator renders.
pub trait Rendered: kube::Resource<DynamicType = ()> {
    /// The pod template(s), as JSON.
    fn templates(&self) -> Value;
    fn set_templates(&mut self, templates: Value) -> bool;
}

impl Rendered for StatefulSet {
    fn templates(&self) -> Value {
        self.spec
            .as_ref()
            .and_then(|s| serde_json::to_value(&s.template).ok())
            .unwrap_or(Value::Null)
    }

    fn set_templates(&mut self, templates: Value) -> bool {
        match (self.spec.as_mut(), serde_json::from_value(templates)) {
            (Some(spec), Ok(template)) => {
                spec.template = template;
                true
            }
            _ => false,
        }
    }
}

impl Rendered for LeaderWorkerSet {
    fn templates(&self) -> Value {
        let t = &self.spec.leader_worker_template;
        serde_json::json!({ "leader": t.leader_template, "worker": t.worker_template })
    }

    fn set_templates(&mut self, templates: Value) -> bool {
        let leader = serde_json::from_value(templates["leader"].clone());
        let worker = serde_json::from_value(templates["worker"].clone());
        match (leader, worker) {
            (Ok(leader), Ok(worker)) => {
                let t = &mut self.spec.leader_worker_template;
                t.leader_template = leader;
                t.worker_template = worker;
                true
            }
            _ => false,
        }
    }
}

fn encode(value: &Value) -> String {
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    // Writing to memory cannot fail.
    let _ = gz.write_all(value.to_string().as_bytes());
    STANDARD.encode(gz.finish().unwrap_or_default())
}

fn decode(text: &str) -> Option<Value> {
    let bytes = STANDARD.decode(text).ok()?;
    let mut json = String::new();
    GzDecoder::new(bytes.as_slice())
        .read_to_string(&mut json)
        .ok()?;
    serde_json::from_str(&json).ok()
}

/// Stamps a freshly built workload with its inputs and its rendering.
pub fn stamp<W: Rendered>(workload: &mut W, inputs_hash: &str) {
    let rendered = encode(&workload.templates());
    let annotations = workload.annotations_mut();
    annotations.insert(INPUTS_HASH.to_string(), inputs_hash.to_string());
    annotations.insert(RENDERED.to_string(), rendered);
}

/// A workload that keeps the rendering it was created with.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    /// `Kind/name`.
    pub workload: String,
    /// Where this operator's rendering differs (a few JSON paths).
    pub differences: Vec<String>,
}

/// Turns `desired` (this operator's rendering) back into what `live` holds when
/// both come from the same inputs and the renderings differ; says so. Nothing is
/// kept when the inputs changed, or `live` says nothing of how it was rendered
/// and has no template to keep.
pub fn keep<W: Rendered>(desired: &mut W, live: &W) -> Option<Kept> {
    let inputs = desired.annotations().get(INPUTS_HASH)?.clone();
    let live_annotations = live.annotations();
    let held = match live_annotations.get(INPUTS_HASH) {
        // Rendered from these inputs by some operator: its rendering.
        Some(h) if *h == inputs => decode(live_annotations.get(RENDERED)?)?,
        Some(_) => return None,
        // From before renderings were recorded: the live template is what runs.
        None => live.templates(),
    };
    let fresh = desired.templates();
    if held.is_null() || held == fresh {
        return None;
    }
    let mut differences = Vec::new();
    differing_paths(&held, &fresh, "", &mut differences);
    if !desired.set_templates(held.clone()) {
        return None;
    }
    desired
        .annotations_mut()
        .insert(RENDERED.to_string(), encode(&held));
    Some(Kept {
        workload: format!("{}/{}", W::kind(&()), desired.name_any()),
        differences,
    })
}

/// At most this many paths are named.
const MAX_PATHS: usize = 6;

/// JSON paths where `a` and `b` differ, containers and volumes named by name.
fn differing_paths(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    if out.len() >= MAX_PATHS || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                differing_paths(va, vb, &join(at, k), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                let label = va["name"]
                    .as_str()
                    .map_or_else(|| i.to_string(), str::to_string);
                differing_paths(va, vb, &format!("{at}[{label}]"), out);
            }
        }
        _ => out.push(at.to_string()),
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::{PD_NIXL, sample};
    use crate::build::{BuildOptions, Owner, build};

    fn decode_set(spec: &LLMDeploymentSpec, options: &BuildOptions) -> StatefulSet {
        let ld = sample(PD_NIXL);
        let owner = Owner::of(&ld).expect("owner");
        build(&owner, spec, options)
            .decode
            .stateful_set()
            .expect("a StatefulSet")
            .clone()
    }

    fn with_image(image: &str) -> BuildOptions {
        BuildOptions {
            epp_defaults: crate::build::EndpointPickerDefaults {
                image: image.into(),
                resources: None,
            },
            ..BuildOptions::default()
        }
    }

    #[test]
    fn replicas_weights_and_autoscaling_do_not_shape_pods_the_engine_does() {
        let spec = sample(PD_NIXL).spec;
        let base = pod_inputs_hash(&spec, Some("fabric-1"));
        let mut other = spec.clone();
        other.decode.replicas += 3;
        other.router.scorers.queue = 9.0;
        other.router.replicas = 3;
        assert_eq!(pod_inputs_hash(&other, Some("fabric-1")), base);
        assert_ne!(pod_inputs_hash(&other, Some("fabric-2")), base);
        other.engine.args.push("--enforce-eager".into());
        assert_ne!(pod_inputs_hash(&other, Some("fabric-1")), base);
    }

    #[test]
    fn a_new_default_keeps_the_rendering_the_workload_has_until_the_spec_changes() {
        let spec = sample(PD_NIXL).spec;
        // Rendered by an operator whose default sidecar image was old:1.
        let live = decode_set(&spec, &with_image("old:1"));
        assert!(live.annotations().contains_key(INPUTS_HASH));
        // This operator's default is new:2: the live rendering is kept.
        let mut desired = decode_set(&spec, &with_image("new:2"));
        let kept = keep(&mut desired, &live).expect("kept");
        assert_eq!(desired.spec, live.spec);
        assert_eq!(desired.annotations(), live.annotations());
        assert_eq!(kept.workload, "StatefulSet/llama-pd-decode");
        assert_eq!(kept.differences, ["spec.containers[routing-sidecar].image"]);
        // Same rendering: nothing to keep.
        let mut same = decode_set(&spec, &with_image("old:1"));
        assert_eq!(keep(&mut same, &live), None);
        // A spec change that shapes pods: rendered afresh, new default included.
        let mut changed = spec.clone();
        changed.engine.args.push("--enforce-eager".into());
        let mut fresh = decode_set(&changed, &with_image("new:2"));
        let before = fresh.clone();
        assert_eq!(keep(&mut fresh, &live), None);
        assert_eq!(fresh, before);
        // One that does not (replicas): still kept, with the new count.
        let mut scaled = spec.clone();
        scaled.decode.replicas = 5;
        let mut desired = decode_set(&scaled, &with_image("new:2"));
        assert!(keep(&mut desired, &live).is_some());
        assert_eq!(desired.spec.as_ref().and_then(|s| s.replicas), Some(5));
        assert_eq!(
            desired.spec.as_ref().map(|s| &s.template),
            live.spec.as_ref().map(|s| &s.template)
        );
    }

    #[test]
    fn a_workload_from_before_renderings_were_recorded_keeps_its_live_template() {
        let spec = sample(PD_NIXL).spec;
        let mut old = decode_set(&spec, &with_image("old:1"));
        old.annotations_mut().remove(INPUTS_HASH);
        old.annotations_mut().remove(RENDERED);
        let mut desired = decode_set(&spec, &with_image("new:2"));
        assert!(keep(&mut desired, &old).is_some());
        assert_eq!(
            desired.spec.as_ref().map(|s| &s.template),
            old.spec.as_ref().map(|s| &s.template)
        );
        // Recorded from now on, so the next reconcile finds the same rendering.
        let recorded = decode(&desired.annotations()[RENDERED]).expect("decodes");
        assert_eq!(recorded, old.templates());
    }

    #[test]
    fn renderings_round_trip_and_garbage_is_not_kept() {
        let spec = sample(PD_NIXL).spec;
        let live = decode_set(&spec, &with_image("old:1"));
        assert_eq!(
            decode(&live.annotations()[RENDERED]),
            Some(live.templates())
        );
        let mut broken = live.clone();
        broken
            .annotations_mut()
            .insert(RENDERED.into(), "not base64 gzip".into());
        let mut desired = decode_set(&spec, &with_image("new:2"));
        assert_eq!(keep(&mut desired, &broken), None);
    }
}
