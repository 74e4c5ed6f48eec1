//! Writes of one object: server-side apply of a desired child, deletion of one that
//! is no longer desired.
//!
//! A child is applied only when it differs from what is live, so a reconcile that
//! changes nothing writes nothing. "Differs" means either the hash of the desired
//! object (kept in an annotation) changed, which catches fields the spec dropped, or a
//! field we set no longer has our value, which catches edits by someone else.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, is_refusal};

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
    hex::encode(Sha256::digest(desired.to_string().as_bytes()))[..16].to_string()
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

/// Bring one child to its desired state; returns the live object.
pub async fn ensure<K>(client: &Client, desired: &K) -> Result<(K, Outcome)>
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
    let desired_json = serde_json::to_value(desired).map_err(|e| Error::Serialize {
        what: "child object",
        message: e.to_string(),
    })?;
    let desired_hash = hash(&desired_json);
    let live = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("get {kind} {name}"), e))?;
    if let Some(live) = live {
        let live_json = serde_json::to_value(&live).map_err(|e| Error::Serialize {
            what: "live object",
            message: e.to_string(),
        })?;
        if up_to_date(&desired_json, &desired_hash, &live_json) {
            return Ok((live, Outcome::Unchanged));
        }
    }
    let mut body = desired.clone();
    body.annotations_mut()
        .insert(APPLIED_HASH.to_string(), desired_hash);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&name, &params, &Patch::Apply(&body)).await {
        Ok(applied) => Ok((applied, Outcome::Applied)),
        Err(e) if is_refusal(&e) => Err(Error::Refused {
            kind: kind.to_string(),
            name,
            source: Box::new(e),
        }),
        Err(e) => Err(Error::kube(format!("apply {kind} {name}"), e)),
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
    let Some(live) = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("get {kind} {name}"), e))?
    else {
        return Ok(false);
    };
    let controlled = live
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid);
    if !controlled || live.meta().deletion_timestamp.is_some() {
        return Ok(false);
    }
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
