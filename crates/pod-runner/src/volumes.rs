//! Pod volumes as plain directories under the pod's state directory: what a
//! volume's contents are made from, and writing them there.
//!
//! Processes share the host's filesystem (there is no mount namespace), so a
//! container's `/etc/llmd-epp/config.yaml` cannot be mounted where it asks: the
//! volume is written to `<pod dir>/volumes/<name>/` and every argument or env value
//! that starts with a volumeMount's `mountPath` is rewritten to point there
//! ([`MountMap`], in [`mount_paths`]). What each kind of volume holds is in
//! [`sources`]. ConfigMap, Secret, projected and downwardAPI volumes are rewritten
//! when their sources change, each file atomically (write and rename), so a process
//! polling a file sees the old or the new content. PVC, image, hostPath and other
//! volumes become empty directories.

mod mount_paths;
mod sources;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, Volume};

use crate::env::EnvInputs;
use crate::files;
pub use mount_paths::MountMap;
use sources::{Files, volume_files};

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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIProjection,
        DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, PodSpec, ProjectedVolumeSource,
        Secret, ServiceAccountTokenProjection, VolumeProjection,
    };

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
