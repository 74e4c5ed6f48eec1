//! Writes of one object: server-side apply of a desired child, deletion of one that
//! is no longer desired.
//!
//! A child is applied only when it differs from what is live, so a reconcile that
//! changes nothing writes nothing. "Differs" means either the hash of the desired
//! object (kept in an annotation) changed, which catches fields the spec dropped, or a
//! field we set no longer has our value, which catches edits by someone else.
//!
//! Only objects this LLMDeployment controls are written or deleted. Server-side apply
//! with force would take over any object of the same name (a user's ConfigMap, another
//! operator's Service), so an object in the way is reported as a [`Conflict`] and left
//! alone; so is one with our labels but no owner reference, which may be a deleted
//! deployment's child awaiting garbage collection or somebody's copy. (An object
//! created between our read and our write is still taken over; the window is one
//! round trip.)

use std::fmt::{self, Debug};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, GetParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use llmd_api::content_hash::content_hash;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result, is_refusal};
use crate::leader_election::ensure_leading;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "llmd-operator";
/// Annotation with the hash of the desired object last applied.
pub const APPLIED_HASH: &str = "llmd.dev/applied-hash";

/// Is every field of `desired` present in `live` with the same value? Maps may have
/// extra keys in `live` (defaults, other managers); lists must match item by item.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| is_subset(dv, lv))),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        _ => desired == live,
    }
}

/// Hash of a desired object's JSON.
pub fn hash(desired: &Value) -> String {
    content_hash(desired.to_string().as_bytes())
}

/// Does `live` already carry `desired`?
pub fn up_to_date(desired: &Value, desired_hash: &str, live: &Value) -> bool {
    let live_hash = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(APPLIED_HASH))
        .and_then(Value::as_str);
    live_hash == Some(desired_hash) && is_subset(desired, live)
}

/// What happened to one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Applied,
}

/// An object with a child's name that this LLMDeployment does not control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub kind: String,
    pub name: String,
    /// Its controller, as `Kind/name (uid ...)`; `None` when nothing controls it.
    pub controller: Option<String>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.controller {
            Some(controller) => write!(
                f,
                "{} {} is controlled by {controller}",
                self.kind, self.name
            ),
            None => write!(f, "{} {} has no controller", self.kind, self.name),
        }
    }
}

/// Who controls an existing object, as far as this LLMDeployment is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Its controller owner reference is this LLMDeployment's UID.
    Ours,
    /// Anything else; the controller, if any, as `Kind/name (uid ...)`.
    Foreign(Option<String>),
}

/// Does the LLMDeployment with `owner_uid` control the object with `meta`? Labels
/// do not count, nor does a reference that is not the controller one.
pub fn control(meta: &ObjectMeta, owner_uid: &str) -> Control {
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    match controller {
        Some(r) if r.uid == owner_uid => Control::Ours,
        Some(r) => Control::Foreign(Some(format!("{}/{} (uid {})", r.kind, r.name, r.uid))),
        None => Control::Foreign(None),
    }
}

/// A child as the apply step left it.
#[derive(Clone, Debug)]
pub enum Ensured<K> {
    /// Ours, and as desired; the live object.
    Live(K, Outcome),
    /// Someone else's object has the name: not written.
    Conflict(Conflict),
}

impl<K> Ensured<K> {
    pub fn map<T>(self, f: impl FnOnce(K) -> T) -> Ensured<T> {
        match self {
            Ensured::Live(live, outcome) => Ensured::Live(f(live), outcome),
            Ensured::Conflict(c) => Ensured::Conflict(c),
        }
    }
}

/// Bring one child of the LLMDeployment with `owner_uid` to its desired state, unless
/// an object of its name exists that it does not control.
pub async fn ensure<K>(client: &Client, owner_uid: &str, desired: &K) -> Result<Ensured<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let (ensured, ()) = ensure_adjusted(client, owner_uid, desired, |_, _| ()).await?;
    Ok(ensured)
}

/// [`ensure`], with `adjust` given the live object (when there is one we control)
/// to change what is desired before it is compared and applied; returns what
/// `adjust` said.
pub async fn ensure_adjusted<K, R: Default>(
    client: &Client,
    owner_uid: &str,
    desired: &K,
    adjust: impl FnOnce(&K, &mut K) -> R,
) -> Result<(Ensured<K>, R)>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let kind = K::kind(&());
    let name = desired.name_any();
    let namespace = desired
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let live = get_if_served(&api, &name)
        .await
        .map_err(|e| Error::kube(format!("get {kind} {name}"), e))?;
    let mut desired = desired.clone();
    let mut said = R::default();
    if let Some(live) = &live {
        if let Control::Foreign(controller) = control(live.meta(), owner_uid) {
            let conflict = Conflict {
                kind: kind.to_string(),
                name,
                controller,
            };
            return Ok((Ensured::Conflict(conflict), said));
        }
        said = adjust(live, &mut desired);
    }
    let desired_json = serde_json::to_value(&desired).map_err(|e| Error::Serialize {
        what: "child object",
        message: e.to_string(),
    })?;
    let desired_hash = hash(&desired_json);
    if let Some(live) = live {
        let live_json = serde_json::to_value(&live).map_err(|e| Error::Serialize {
            what: "live object",
            message: e.to_string(),
        })?;
        if up_to_date(&desired_json, &desired_hash, &live_json) {
            return Ok((Ensured::Live(live, Outcome::Unchanged), said));
        }
    }
    let mut body = desired;
    body.annotations_mut()
        .insert(APPLIED_HASH.to_string(), desired_hash);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    ensure_leading()?;
    match api.patch(&name, &params, &Patch::Apply(&body)).await {
        Ok(applied) => Ok((Ensured::Live(applied, Outcome::Applied), said)),
        Err(e) if is_refusal(&e) => Err(Error::Refused {
            kind: kind.to_string(),
            name,
            source: Box::new(e),
        }),
        Err(e) => Err(Error::kube(format!("apply {kind} {name}"), e)),
    }
}

/// The object, or `None` when it does not exist or its kind is not served (the
/// API server answers a kind it does not know with a bare `404 page not found`).
/// (An object created between this read and a write is still taken over, as with
/// any read; the window is the cache's lag plus one round trip.)
pub async fn get_if_served<K>(
    api: &Api<K>,
    name: &str,
) -> std::result::Result<Option<K>, kube::Error>
where
    K: Clone + DeserializeOwned + Debug,
{
    // From the API server's watch cache: a reconcile follows the watch events of
    // that same cache, so it is never older than what triggered us, and it spares
    // etcd a read per child.
    match api.get_with(name, &GetParams::any()).await {
        Ok(object) => Ok(Some(object)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Delete a child that is no longer desired, if it exists and this LLMDeployment
/// controls it. Returns whether a delete was sent.
pub async fn remove<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<bool>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let kind = K::kind(&());
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let Some(live) = get_if_served(&api, name)
        .await
        .map_err(|e| Error::kube(format!("get {kind} {name}"), e))?
    else {
        return Ok(false);
    };
    if control(live.meta(), owner_uid) != Control::Ours || live.meta().deletion_timestamp.is_some()
    {
        return Ok(false);
    }
    ensure_leading()?;
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(Error::kube(format!("delete {kind} {name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_allows_extra_map_keys_but_not_changed_values() {
        let desired = json!({"spec": {"replicas": 2, "template": {"labels": {"a": "1"}}}});
        let live = json!({"spec": {"replicas": 2, "revisionHistoryLimit": 10,
                                   "template": {"labels": {"a": "1", "b": "2"}}}});
        assert!(is_subset(&desired, &live));
        let edited = json!({"spec": {"replicas": 5, "template": {"labels": {"a": "1"}}}});
        assert!(!is_subset(&desired, &edited));
        let missing = json!({"spec": {"template": {"labels": {"a": "1"}}}});
        assert!(!is_subset(&desired, &missing));
    }

    #[test]
    fn subset_compares_lists_item_by_item() {
        let desired = json!({"ports": [{"name": "http", "port": 8000}]});
        assert!(is_subset(
            &desired,
            &json!({"ports": [{"name": "http", "port": 8000, "protocol": "TCP"}]})
        ));
        assert!(!is_subset(&desired, &json!({"ports": []})));
        assert!(!is_subset(
            &desired,
            &json!({"ports": [{"name": "http", "port": 8000}, {"name": "x"}]})
        ));
        assert!(is_subset(&json!({"w": 3}), &json!({"w": 3.0})));
    }

    fn meta(owner_references: Value) -> ObjectMeta {
        serde_json::from_value(json!({"name": "x", "ownerReferences": owner_references}))
            .expect("meta")
    }

    fn reference(kind: &str, name: &str, uid: &str, controller: Option<bool>) -> Value {
        json!({"apiVersion": "v1", "kind": kind, "name": name, "uid": uid, "controller": controller})
    }

    #[test]
    fn only_a_controller_reference_to_our_uid_makes_an_object_ours() {
        let ours = reference("LLMDeployment", "llama", "u1", Some(true));
        assert_eq!(control(&meta(json!([ours])), "u1"), Control::Ours);
        assert_eq!(
            control(&ObjectMeta::default(), "u1"),
            Control::Foreign(None)
        );
        // A plain (non-controller) reference to us is not control.
        let plain = reference("LLMDeployment", "llama", "u1", None);
        assert_eq!(control(&meta(json!([plain])), "u1"), Control::Foreign(None));
        // A deleted namesake's child, awaiting garbage collection.
        let old = reference("LLMDeployment", "llama", "u0", Some(true));
        assert_eq!(
            control(&meta(json!([old])), "u1"),
            Control::Foreign(Some("LLMDeployment/llama (uid u0)".into()))
        );
        let other = reference("Gateway", "edge", "g1", Some(true));
        let not_controller = reference("LLMDeployment", "llama", "u1", Some(false));
        let both = json!([not_controller, other]);
        assert_eq!(
            control(&meta(both), "u1"),
            Control::Foreign(Some("Gateway/edge (uid g1)".into()))
        );
    }

    #[test]
    fn a_conflict_names_the_object_and_its_controller() {
        let mut c = Conflict {
            kind: "ConfigMap".into(),
            name: "llama-epp-config".into(),
            controller: None,
        };
        assert_eq!(
            c.to_string(),
            "ConfigMap llama-epp-config has no controller"
        );
        c.controller = Some("Gateway/edge (uid g1)".into());
        assert_eq!(
            c.to_string(),
            "ConfigMap llama-epp-config is controlled by Gateway/edge (uid g1)"
        );
    }

    #[test]
    fn up_to_date_needs_matching_hash_so_dropped_fields_are_reapplied() {
        let desired = json!({"metadata": {"name": "x"}, "data": {"a": "1"}});
        let h = hash(&desired);
        let live = json!({"metadata": {"name": "x", "annotations": {APPLIED_HASH: h.clone()}},
                          "data": {"a": "1", "dropped": "2"}});
        assert!(up_to_date(&desired, &h, &live));
        let without_dropped = json!({"metadata": {"name": "x"}, "data": {"a": "1"}, "extra": 1});
        assert!(!up_to_date(
            &without_dropped,
            &hash(&without_dropped),
            &live
        ));
    }
}
