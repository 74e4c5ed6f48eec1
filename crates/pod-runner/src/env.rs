//! A container's environment, resolved as the kubelet does: `envFrom` sources in
//! order (later ones win), then `env` in order, each value `$(VAR)`-expanded
//! against what is defined so far; `valueFrom` reads the pod's fields, ConfigMaps,
//! Secrets and (best effort) its resources. `command` and `args` are then expanded
//! with the final environment.
//!
//! Service-link variables (`<SVC>_SERVICE_HOST`, ...) are not added: nothing routes
//! ClusterIPs on the local cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

/// Why a container cannot get its environment (kubelet: CreateContainerConfigError).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    MissingConfigMap(String),
    #[error("secret {0:?} not found")]
    MissingSecret(String),
    #[error("couldn't find key {key} in {kind} {name:?}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("unsupported fieldPath {0:?}")]
    UnsupportedField(String),
}

/// What env resolution reads besides the container.
pub struct EnvInputs<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    /// ConfigMaps and Secrets of the pod's namespace, by name.
    pub config_map: &'a dyn Fn(&str) -> Option<ConfigMap>,
    pub secret: &'a dyn Fn(&str) -> Option<Secret>,
}

/// Environment variables, in definition order, the last definition of a name winning.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnvVars {
    order: Vec<String>,
    values: BTreeMap<String, String>,
}

impl EnvVars {
    pub fn set(&mut self, name: &str, value: String) {
        if self.values.insert(name.to_string(), value).is_none() {
            self.order.push(name.to_string());
        }
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.order
            .iter()
            .filter_map(|n| Some((n.as_str(), self.values.get(n)?.as_str())))
    }
    pub fn map_values(&mut self, f: impl Fn(&str) -> String) {
        for v in self.values.values_mut() {
            *v = f(v);
        }
    }
}

/// Expand `$(VAR)` references: `$$` is a literal `$`, an undefined or malformed
/// reference is left as written (the kubelet's rules).
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut chars = after.chars();
        match chars.next() {
            None => {
                out.push('$');
                rest = "";
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A valid environment variable name (kubelet: C identifier-ish, plus `.` and `-`).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The container's environment.
pub fn resolve(container: &Container, inputs: &EnvInputs<'_>) -> Result<EnvVars, EnvError> {
    let mut env = EnvVars::default();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let mut add = |data: BTreeMap<String, String>| {
            for (k, v) in data {
                let name = format!("{prefix}{k}");
                if valid_name(&name) {
                    env.set(&name, v);
                }
            }
        };
        if let Some(r) = &source.config_map_ref {
            match (inputs.config_map)(&r.name) {
                Some(cm) => add(cm.data.unwrap_or_default()),
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::MissingConfigMap(r.name.clone())),
            }
        }
        if let Some(r) = &source.secret_ref {
            match (inputs.secret)(&r.name) {
                Some(secret) => add(secret_strings(&secret)),
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::MissingSecret(r.name.clone())),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                Some(field_value(&f.field_path, inputs)?)
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match (inputs.config_map)(&r.name) {
                    None if optional => None,
                    None => return Err(EnvError::MissingConfigMap(r.name.clone())),
                    Some(cm) => match cm.data.and_then(|d| d.get(&r.key).cloned()) {
                        None if optional => None,
                        None => {
                            return Err(EnvError::MissingKey {
                                kind: "configmap",
                                name: r.name.clone(),
                                key: r.key.clone(),
                            });
                        }
                        v => v,
                    },
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match (inputs.secret)(&r.name) {
                    None if optional => None,
                    None => return Err(EnvError::MissingSecret(r.name.clone())),
                    Some(s) => match secret_strings(&s).remove(&r.key) {
                        None if optional => None,
                        None => {
                            return Err(EnvError::MissingKey {
                                kind: "secret",
                                name: r.name.clone(),
                                key: r.key.clone(),
                            });
                        }
                        v => v,
                    },
                }
            } else {
                from.resource_field_ref
                    .as_ref()
                    .map(|r| resource_value(container, &r.resource, r.divisor.as_ref()))
            }
        } else {
            let raw = var.value.clone().unwrap_or_default();
            let so_far = env.clone();
            Some(expand(&raw, &|n| so_far.get(n).map(str::to_string)))
        };
        if let Some(value) = value {
            env.set(&var.name, value);
        }
    }
    Ok(env)
}

/// `command` and `args` expanded with the final environment.
pub fn expand_all(words: &[String], env: &EnvVars) -> Vec<String> {
    words
        .iter()
        .map(|w| expand(w, &|n| env.get(n).map(str::to_string)))
        .collect()
}

fn secret_strings(secret: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// A downward-API field of the pod (env and downwardAPI volumes).
pub fn field_value(path: &str, inputs: &EnvInputs<'_>) -> Result<String, EnvError> {
    let pod = inputs.pod;
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => inputs.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => inputs.host_ip.clone().unwrap_or_default(),
        _ => {
            if let Some(k) = subscript("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = subscript("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(EnvError::UnsupportedField(path.to_string()));
            }
        }
    };
    Ok(value)
}

/// `k="v"` lines, as the downward API writes labels and annotations.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `limits.cpu`, `requests.memory`, ... divided by the divisor and rounded up, as
/// the kubelet does; an absent limit falls back to the request, else 0 (the
/// kubelet would use node allocatable).
pub fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> String {
    let res = container.resources.as_ref();
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let pick = |list: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| { list.and_then(|l| l.get(name)).and_then(|q| quantity(&q.0)) };
    let limits = res.and_then(|r| r.limits.as_ref());
    let requests = res.and_then(|r| r.requests.as_ref());
    let value = match kind {
        "requests" => pick(requests),
        _ => pick(limits).or_else(|| pick(requests)),
    }
    .unwrap_or(0.0);
    let divisor = divisor
        .and_then(|d| quantity(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    format!("{}", (value / divisor).ceil() as i64)
}

/// A Kubernetes quantity as a number (`500m` = 0.5, `1Gi` = 2^30).
pub fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (num, suffix) = text.split_at(split);
    let num: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        _ => return None,
    };
    Some(num * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, ResourceFieldSelector, ResourceRequirements,
        SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |n| map.get(n).cloned()
    }

    #[test]
    fn expansion_follows_the_kubelet_rules() {
        let l = lookup(&[("A", "1"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &l), "1-two");
        assert_eq!(expand("$$(A)", &l), "$(A)");
        assert_eq!(expand("$$$(A)", &l), "$1");
        assert_eq!(expand("$(UNDEFINED)", &l), "$(UNDEFINED)");
        assert_eq!(expand("$(A", &l), "$(A");
        assert_eq!(expand("cost $5 $", &l), "cost $5 $");
        assert_eq!(expand("é$(A)ü", &l), "é1ü");
        assert_eq!(expand("", &l), "");
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..EnvVar::default()
        }
    }

    fn from(source: EnvVarSource, name: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(source),
            ..EnvVar::default()
        }
    }

    fn pod() -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("p-0".into());
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.uid = Some("u1".into());
        pod.metadata.labels = Some(BTreeMap::from([("app".into(), "x".into())]));
        pod.spec = Some(PodSpec {
            node_name: Some("live-gpu-0".into()),
            ..PodSpec::default()
        });
        pod
    }

    fn config_maps(name: &str) -> Option<ConfigMap> {
        (name == "kv").then(|| ConfigMap {
            data: Some(BTreeMap::from([
                (
                    "LLMD_KV_TRANSFER_CONFIG".into(),
                    r#"{"kv_connector":"NixlConnector"}"#.into(),
                ),
                ("SHARED".into(), "from-cm".into()),
                ("bad name".into(), "skipped".into()),
            ])),
            ..ConfigMap::default()
        })
    }

    fn secrets(name: &str) -> Option<Secret> {
        (name == "s").then(|| Secret {
            data: Some(BTreeMap::from([(
                "token".into(),
                k8s_openapi::ByteString(b"t0k".to_vec()),
            )])),
            ..Secret::default()
        })
    }

    fn resolve_with(container: &Container, pod: &Pod) -> Result<EnvVars, EnvError> {
        resolve(
            container,
            &EnvInputs {
                pod,
                pod_ip: Some("10.213.0.5".into()),
                host_ip: Some("10.213.0.1".into()),
                config_map: &config_maps,
                secret: &secrets,
            },
        )
    }

    #[test]
    fn env_from_then_env_with_expansion_against_earlier_vars() {
        let pod = pod();
        let container = Container {
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "kv".into(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]),
            env: Some(vec![
                var("SHARED", "from-env"),
                var("X", "$(SHARED)/$(LATER)"),
                var("LATER", "l"),
                from(
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            ..ObjectFieldSelector::default()
                        }),
                        ..EnvVarSource::default()
                    },
                    "VLLM_NIXL_SIDE_CHANNEL_HOST",
                ),
            ]),
            args: Some(vec![
                "--kv-transfer-config".into(),
                "$(LLMD_KV_TRANSFER_CONFIG)".into(),
            ]),
            ..Container::default()
        };
        let env = resolve_with(&container, &pod).expect("resolves");
        assert_eq!(env.get("SHARED"), Some("from-env"), "env overrides envFrom");
        assert_eq!(env.get("X"), Some("from-env/$(LATER)"), "only earlier vars");
        assert_eq!(env.get("VLLM_NIXL_SIDE_CHANNEL_HOST"), Some("10.213.0.5"));
        assert!(!env.contains("bad name"));
        let args = expand_all(container.args.as_deref().unwrap_or_default(), &env);
        assert_eq!(args[1], r#"{"kv_connector":"NixlConnector"}"#);
    }

    #[test]
    fn later_env_from_sources_win_and_prefixes_apply() {
        let pod = pod();
        let source = |prefix: Option<&str>| EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "kv".into(),
                optional: None,
            }),
            prefix: prefix.map(str::to_string),
            ..EnvFromSource::default()
        };
        let container = Container {
            env_from: Some(vec![source(Some("P_")), source(None)]),
            ..Container::default()
        };
        let env = resolve_with(&container, &pod).expect("ok");
        assert_eq!(env.get("P_SHARED"), Some("from-cm"));
        assert_eq!(env.get("SHARED"), Some("from-cm"));
    }

    #[test]
    fn missing_config_is_an_error_unless_optional() {
        let pod = pod();
        let missing = |optional| Container {
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "nope".into(),
                    optional,
                }),
                ..EnvFromSource::default()
            }]),
            ..Container::default()
        };
        assert_eq!(
            resolve_with(&missing(None), &pod),
            Err(EnvError::MissingConfigMap("nope".into()))
        );
        assert!(resolve_with(&missing(Some(true)), &pod).is_ok());
        let key = Container {
            env: Some(vec![from(
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "kv".into(),
                        key: "absent".into(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                },
                "V",
            )]),
            ..Container::default()
        };
        assert!(matches!(
            resolve_with(&key, &pod),
            Err(EnvError::MissingKey { .. })
        ));
    }

    #[test]
    fn field_refs_secrets_and_resources_resolve() {
        let pod = pod();
        let field = |path: &str| EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        };
        let container = Container {
            env: Some(vec![
                from(field("metadata.name"), "NAME"),
                from(field("metadata.labels['app']"), "APP"),
                from(field("spec.nodeName"), "NODE"),
                from(field("spec.serviceAccountName"), "SA"),
                from(
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "s".into(),
                            key: "token".into(),
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    },
                    "TOKEN",
                ),
                from(
                    EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "limits.memory".into(),
                            divisor: Some(Quantity("1Mi".into())),
                            ..ResourceFieldSelector::default()
                        }),
                        ..EnvVarSource::default()
                    },
                    "MEM_MI",
                ),
            ]),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([("memory".into(), Quantity("1Gi".into()))])),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        };
        let env = resolve_with(&container, &pod).expect("ok");
        assert_eq!(env.get("NAME"), Some("p-0"));
        assert_eq!(env.get("APP"), Some("x"));
        assert_eq!(env.get("NODE"), Some("live-gpu-0"));
        assert_eq!(env.get("SA"), Some("default"));
        assert_eq!(env.get("TOKEN"), Some("t0k"));
        assert_eq!(env.get("MEM_MI"), Some("1024"));
        let bad = Container {
            env: Some(vec![from(field("spec.bogus"), "B")]),
            ..Container::default()
        };
        assert!(matches!(
            resolve_with(&bad, &pod),
            Err(EnvError::UnsupportedField(_))
        ));
    }

    #[test]
    fn quantities_parse_with_suffixes() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("1Ki"), Some(1024.0));
        assert_eq!(quantity("x"), None);
    }
}
