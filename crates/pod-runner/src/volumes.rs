//! Pod volumes as plain directories under the pod's state directory, and the
//! rewriting of container paths into them.
//!
//! Processes share the host's filesystem (there is no mount namespace), so a
//! container's `/etc/llmd-epp/config.yaml` cannot be mounted where it asks: the
//! volume is written to `<pod dir>/volumes/<name>/` and every argument or env value
//! that starts with a volumeMount's `mountPath` is rewritten to point there.
//! ConfigMap, Secret, projected and downwardAPI volumes are rewritten when their
//! sources change, each file atomically (write and rename), so a process polling
//! a file sees the old or the new content. PVC, image, hostPath and other
//! volumes become empty directories.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};

use crate::env::{self, EnvInputs};
use crate::files;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume:?}: configmap {name:?} not found")]
    MissingConfigMap { volume: String, name: String },
    #[error("volume {volume:?}: secret {name:?} not found")]
    MissingSecret { volume: String, name: String },
    #[error("volume {volume:?}: key {key:?} not found in {name:?}")]
    MissingKey {
        volume: String,
        name: String,
        key: String,
    },
    #[error("volume {volume:?}: no service account token yet")]
    TokenPending { volume: String },
    #[error("volume {volume:?}: {message}")]
    Field { volume: String, message: String },
    #[error("volume {volume:?}: {message}")]
    Io { volume: String, message: String },
}

/// A projected service-account token a pod's volumes ask for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenKey {
    pub audience: Option<String>,
    pub expiration_seconds: i64,
}

/// What volume contents are made from.
pub struct VolumeInputs<'a> {
    pub env: EnvInputs<'a>,
    pub token: &'a dyn Fn(&TokenKey) -> Option<String>,
}

/// One file of a volume: path relative to the volume and content.
type Files = Vec<(String, Vec<u8>, u32)>;

/// The tokens the pod's projected volumes need.
pub fn token_keys(pod: &Pod) -> BTreeSet<TokenKey> {
    volumes(pod)
        .iter()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .map(|t| TokenKey {
            audience: t.audience.clone().filter(|a| !a.is_empty()),
            expiration_seconds: t.expiration_seconds.unwrap_or(3600).max(600),
        })
        .collect()
}

fn volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
}

fn key_files(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
    missing: impl Fn(String) -> VolumeError,
) -> Result<Files, VolumeError> {
    match items {
        None => Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), mode))
            .collect()),
        Some(items) => {
            let mut out = Vec::new();
            for item in items {
                match data.get(&item.key) {
                    Some(v) => out.push((
                        item.path.clone(),
                        v.clone(),
                        item.mode.map_or(mode, |m| m as u32),
                    )),
                    None if optional => {}
                    None => return Err(missing(item.key.clone())),
                }
            }
            Ok(out)
        }
    }
}

fn config_map_bytes(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    data
}

fn secret_bytes(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn downward_files(
    volume: &str,
    items: &[DownwardAPIVolumeFile],
    mode: u32,
    pod: &Pod,
    inputs: &VolumeInputs<'_>,
) -> Result<Files, VolumeError> {
    let mut out = Vec::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            env::field_value(&f.field_path, &inputs.env).map_err(|e| VolumeError::Field {
                volume: volume.to_string(),
                message: e.to_string(),
            })?
        } else if let Some(r) = &item.resource_field_ref {
            let container = pod
                .spec
                .as_ref()
                .and_then(|s| {
                    s.containers
                        .iter()
                        .find(|c| Some(&c.name) == r.container_name.as_ref())
                        .or(s.containers.first())
                })
                .cloned()
                .unwrap_or_default();
            env::resource_value(&container, &r.resource, r.divisor.as_ref())
        } else {
            continue;
        };
        out.push((
            item.path.clone(),
            value.into_bytes(),
            item.mode.map_or(mode, |m| m as u32),
        ));
    }
    Ok(out)
}

/// The files of a volume, or `None` for a plain (empty) directory.
pub fn volume_files(
    volume: &Volume,
    pod: &Pod,
    inputs: &VolumeInputs<'_>,
) -> Result<Option<Files>, VolumeError> {
    let name = volume.name.clone();
    let missing_key = |cm: &str| {
        let (name, cm) = (name.clone(), cm.to_string());
        move |key| VolumeError::MissingKey {
            volume: name.clone(),
            name: cm.clone(),
            key,
        }
    };
    if let Some(src) = &volume.config_map {
        let mode = src.default_mode.map_or(0o644, |m| m as u32);
        let optional = src.optional == Some(true);
        return match (inputs.env.config_map)(&src.name) {
            Some(cm) => key_files(
                &config_map_bytes(&cm),
                src.items.as_deref(),
                mode,
                optional,
                missing_key(&src.name),
            )
            .map(Some),
            None if optional => Ok(Some(Vec::new())),
            None => Err(VolumeError::MissingConfigMap {
                volume: name,
                name: src.name.clone(),
            }),
        };
    }
    if let Some(src) = &volume.secret {
        let mode = src.default_mode.map_or(0o644, |m| m as u32);
        let optional = src.optional == Some(true);
        let secret_name = src.secret_name.clone().unwrap_or_default();
        return match (inputs.env.secret)(&secret_name) {
            Some(s) => key_files(
                &secret_bytes(&s),
                src.items.as_deref(),
                mode,
                optional,
                missing_key(&secret_name),
            )
            .map(Some),
            None if optional => Ok(Some(Vec::new())),
            None => Err(VolumeError::MissingSecret {
                volume: name,
                name: secret_name,
            }),
        };
    }
    if let Some(src) = &volume.downward_api {
        let mode = src.default_mode.map_or(0o644, |m| m as u32);
        let items = src.items.as_deref().unwrap_or_default();
        return downward_files(&name, items, mode, pod, inputs).map(Some);
    }
    if let Some(src) = &volume.projected {
        let mode = src.default_mode.map_or(0o644, |m| m as u32);
        let mut out = Vec::new();
        for source in src.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let optional = cm.optional == Some(true);
                match (inputs.env.config_map)(&cm.name) {
                    Some(found) => out.extend(key_files(
                        &config_map_bytes(&found),
                        cm.items.as_deref(),
                        mode,
                        optional,
                        missing_key(&cm.name),
                    )?),
                    None if optional => {}
                    None => {
                        return Err(VolumeError::MissingConfigMap {
                            volume: name,
                            name: cm.name.clone(),
                        });
                    }
                }
            }
            if let Some(s) = &source.secret {
                let optional = s.optional == Some(true);
                match (inputs.env.secret)(&s.name) {
                    Some(found) => out.extend(key_files(
                        &secret_bytes(&found),
                        s.items.as_deref(),
                        mode,
                        optional,
                        missing_key(&s.name),
                    )?),
                    None if optional => {}
                    None => {
                        return Err(VolumeError::MissingSecret {
                            volume: name,
                            name: s.name.clone(),
                        });
                    }
                }
            }
            if let Some(d) = &source.downward_api {
                let items = d.items.as_deref().unwrap_or_default();
                out.extend(downward_files(&name, items, mode, pod, inputs)?);
            }
            if let Some(t) = &source.service_account_token {
                let key = TokenKey {
                    audience: t.audience.clone().filter(|a| !a.is_empty()),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600).max(600),
                };
                let token = (inputs.token)(&key).ok_or_else(|| VolumeError::TokenPending {
                    volume: name.clone(),
                })?;
                out.push((t.path.clone(), token.into_bytes(), 0o600));
            }
        }
        return Ok(Some(out));
    }
    Ok(None)
}

/// Write every volume of the pod under `root` (one directory each); returns the
/// directory of each volume by name. Files whose content is unchanged are not
/// touched; files a source no longer has are removed.
pub fn materialise(
    pod: &Pod,
    root: &Path,
    inputs: &VolumeInputs<'_>,
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let mut dirs = BTreeMap::new();
    for volume in volumes(pod) {
        let dir = root.join(&volume.name);
        let io = |e: std::io::Error| VolumeError::Io {
            volume: volume.name.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        if let Some(files) = volume_files(volume, pod, inputs)? {
            sync_dir(&dir, &files).map_err(io)?;
        }
        dirs.insert(volume.name.clone(), dir);
    }
    Ok(dirs)
}

/// Make `dir` hold exactly `files` (relative paths must stay inside it).
fn sync_dir(dir: &Path, files: &Files) -> std::io::Result<()> {
    let mut wanted = BTreeSet::new();
    for (rel, data, mode) in files {
        let rel = Path::new(rel);
        if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
            continue;
        }
        let path = dir.join(rel);
        files::write_if_changed(&path, data)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
        wanted.insert(path);
    }
    remove_unwanted(dir, &wanted)
}

fn remove_unwanted(dir: &Path, wanted: &BTreeSet<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            remove_unwanted(&path, wanted)?;
        } else if !wanted.contains(&path) {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Container paths -> materialised paths, longest mount path first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountMap {
    entries: Vec<(String, PathBuf)>,
}

impl MountMap {
    /// The container's volumeMounts resolved against the volume directories
    /// (`subPath` included). Mounts of unknown volumes are ignored.
    pub fn new(container: &Container, volume_dirs: &BTreeMap<String, PathBuf>) -> Self {
        let mut entries: Vec<(String, PathBuf)> = container
            .volume_mounts
            .iter()
            .flatten()
            .filter_map(|m| {
                let dir = volume_dirs.get(&m.name)?;
                let dir = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    Some(sub) => dir.join(sub),
                    None => dir.clone(),
                };
                let path = m.mount_path.trim_end_matches('/').to_string();
                (!path.is_empty()).then_some((path, dir))
            })
            .collect();
        entries.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Self { entries }
    }

    fn rewrite_path(&self, word: &str) -> Option<String> {
        self.entries.iter().find_map(|(mount, dir)| {
            let rest = word.strip_prefix(mount.as_str())?;
            if rest.is_empty() || rest.starts_with('/') {
                Some(format!("{}{rest}", dir.display()))
            } else {
                None
            }
        })
    }

    /// A word that starts with a mount path (or a `--flag=value` whose value
    /// does) with the mount path replaced by the volume's directory.
    pub fn rewrite(&self, word: &str) -> String {
        if let Some(p) = self.rewrite_path(word) {
            return p;
        }
        if word.starts_with('-')
            && let Some((flag, value)) = word.split_once('=')
            && let Some(p) = self.rewrite_path(value)
        {
            return format!("{flag}={p}");
        }
        word.to_string()
    }

    pub fn rewrite_all(&self, words: &[String]) -> Vec<String> {
        words.iter().map(|w| self.rewrite(w)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIProjection, ObjectFieldSelector,
        PodSpec, ProjectedVolumeSource, ServiceAccountTokenProjection, VolumeMount,
        VolumeProjection,
    };

    fn mounts(list: &[(&str, &str, Option<&str>)]) -> Container {
        Container {
            volume_mounts: Some(
                list.iter()
                    .map(|(name, path, sub)| VolumeMount {
                        name: name.to_string(),
                        mount_path: path.to_string(),
                        sub_path: sub.map(str::to_string),
                        ..VolumeMount::default()
                    })
                    .collect(),
            ),
            ..Container::default()
        }
    }

    fn dirs() -> BTreeMap<String, PathBuf> {
        BTreeMap::from([
            ("config".into(), PathBuf::from("/s/v/config")),
            ("cache".into(), PathBuf::from("/s/v/cache")),
            ("models".into(), PathBuf::from("/s/v/models")),
        ])
    }

    #[test]
    fn arguments_under_a_mount_path_are_rewritten() {
        let map = MountMap::new(
            &mounts(&[
                ("config", "/etc/llmd-epp", None),
                ("cache", "/cache", None),
                ("models", "/cache/models/", Some("llama")),
            ]),
            &dirs(),
        );
        assert_eq!(
            map.rewrite("/etc/llmd-epp/config.yaml"),
            "/s/v/config/config.yaml"
        );
        assert_eq!(map.rewrite("/etc/llmd-epp"), "/s/v/config");
        assert_eq!(
            map.rewrite("/etc/llmd-eppx/a"),
            "/etc/llmd-eppx/a",
            "not a prefix match"
        );
        assert_eq!(
            map.rewrite("--config-file=/etc/llmd-epp/c.yaml"),
            "--config-file=/s/v/config/c.yaml"
        );
        assert_eq!(map.rewrite("/cache/huggingface"), "/s/v/cache/huggingface");
        assert_eq!(
            map.rewrite("/cache/models/x"),
            "/s/v/models/llama/x",
            "longest mount path wins, subPath applies"
        );
        assert_eq!(map.rewrite("--port=8000"), "--port=8000");
        assert_eq!(
            map.rewrite("relative/etc/llmd-epp"),
            "relative/etc/llmd-epp"
        );
    }

    fn pod_with(volumes: Vec<Volume>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        pod.metadata.namespace = Some("ns".into());
        pod.spec = Some(PodSpec {
            volumes: Some(volumes),
            ..PodSpec::default()
        });
        pod
    }

    fn cm(name: &str) -> Option<ConfigMap> {
        (name == "epp-config").then(|| ConfigMap {
            data: Some(BTreeMap::from([
                ("config.yaml".into(), "weights: 1".into()),
                ("other".into(), "x".into()),
            ])),
            ..ConfigMap::default()
        })
    }

    fn no_secret(_: &str) -> Option<Secret> {
        None
    }

    fn materialise_with(
        pod: &Pod,
        root: &Path,
        token: Option<&str>,
    ) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
        let token_fn = |_: &TokenKey| token.map(str::to_string);
        materialise(
            pod,
            root,
            &VolumeInputs {
                env: EnvInputs {
                    pod,
                    pod_ip: None,
                    host_ip: None,
                    config_map: &cm,
                    secret: &no_secret,
                },
                token: &token_fn,
            },
        )
    }

    fn config_map_volume(
        name: &str,
        items: Option<Vec<KeyToPath>>,
        optional: Option<bool>,
    ) -> Volume {
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.into(),
                items,
                optional,
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }
    }

    #[test]
    fn config_map_volumes_hold_every_key_or_the_chosen_items() {
        let dir = tempfile::tempdir().expect("dir");
        let pod = pod_with(vec![config_map_volume("epp-config", None, None)]);
        let dirs = materialise_with(&pod, dir.path(), None).expect("ok");
        let config = &dirs["config"];
        assert_eq!(
            std::fs::read_to_string(config.join("config.yaml")).expect("file"),
            "weights: 1"
        );
        assert!(config.join("other").exists());

        let items = vec![KeyToPath {
            key: "config.yaml".into(),
            path: "sub/c.yaml".into(),
            mode: None,
        }];
        let pod = pod_with(vec![config_map_volume("epp-config", Some(items), None)]);
        materialise_with(&pod, dir.path(), None).expect("ok");
        assert!(config.join("sub/c.yaml").exists());
        assert!(
            !config.join("other").exists(),
            "keys no longer projected are removed"
        );
    }

    #[test]
    fn a_missing_config_map_blocks_unless_optional() {
        let dir = tempfile::tempdir().expect("dir");
        let pod = pod_with(vec![config_map_volume("absent", None, None)]);
        assert!(matches!(
            materialise_with(&pod, dir.path(), None),
            Err(VolumeError::MissingConfigMap { .. })
        ));
        let pod = pod_with(vec![config_map_volume("absent", None, Some(true))]);
        assert!(materialise_with(&pod, dir.path(), None).is_ok());
    }

    #[test]
    fn projected_service_account_volume_has_token_ca_and_namespace() {
        let dir = tempfile::tempdir().expect("dir");
        let volume = Volume {
            name: "kube-api-access".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![
                    VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            path: "token".into(),
                            expiration_seconds: Some(3607),
                            ..ServiceAccountTokenProjection::default()
                        }),
                        ..VolumeProjection::default()
                    },
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "epp-config".into(),
                            items: Some(vec![KeyToPath {
                                key: "other".into(),
                                path: "ca.crt".into(),
                                mode: None,
                            }]),
                            optional: None,
                        }),
                        ..VolumeProjection::default()
                    },
                    VolumeProjection {
                        downward_api: Some(DownwardAPIProjection {
                            items: Some(vec![DownwardAPIVolumeFile {
                                path: "namespace".into(),
                                field_ref: Some(ObjectFieldSelector {
                                    field_path: "metadata.namespace".into(),
                                    ..ObjectFieldSelector::default()
                                }),
                                ..DownwardAPIVolumeFile::default()
                            }]),
                        }),
                        ..VolumeProjection::default()
                    },
                ]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        };
        let pod = pod_with(vec![volume]);
        assert_eq!(
            token_keys(&pod).into_iter().collect::<Vec<_>>(),
            vec![TokenKey {
                audience: None,
                expiration_seconds: 3607
            }]
        );
        assert!(matches!(
            materialise_with(&pod, dir.path(), None),
            Err(VolumeError::TokenPending { .. })
        ));
        let dirs = materialise_with(&pod, dir.path(), Some("jwt")).expect("ok");
        let d = &dirs["kube-api-access"];
        assert_eq!(
            std::fs::read_to_string(d.join("token")).expect("token"),
            "jwt"
        );
        assert_eq!(std::fs::read_to_string(d.join("ca.crt")).expect("ca"), "x");
        assert_eq!(
            std::fs::read_to_string(d.join("namespace")).expect("ns"),
            "ns"
        );
    }

    #[test]
    fn other_volume_kinds_are_empty_directories() {
        let dir = tempfile::tempdir().expect("dir");
        let pod = pod_with(vec![Volume {
            name: "model".into(),
            persistent_volume_claim: Some(Default::default()),
            ..Volume::default()
        }]);
        let dirs = materialise_with(&pod, dir.path(), None).expect("ok");
        assert!(dirs["model"].is_dir());
    }
}
