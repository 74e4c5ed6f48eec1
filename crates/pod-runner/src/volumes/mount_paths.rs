//! Mount-path rewriting: a container's paths under a volumeMount's `mountPath`
//! turned into the volume's directory, since nothing is mounted and processes
//! share the host's filesystem. Kept apart from writing the volumes: it only
//! needs each volume's directory, not its contents.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Container;

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

    /// One file the runner provides at `container_path` (a termination log).
    pub fn add_file(&mut self, container_path: &str, host: PathBuf) {
        self.entries
            .push((container_path.trim_end_matches('/').to_string(), host));
        self.entries
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
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
    use k8s_openapi::api::core::v1::VolumeMount;

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
}
