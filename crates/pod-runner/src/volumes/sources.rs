//! What each kind of volume holds, as files: configMap and secret keys (all, or
//! the chosen items), downwardAPI fields, and the projected mix of those with a
//! service-account token. Pure: the API objects and the token come in through
//! [`VolumeInputs`]; writing the files is [`super::materialise`]'s job.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};

use super::{TokenKey, VolumeError, VolumeInputs};
use crate::env;

/// One file of a volume: path relative to the volume and content.
pub(super) type Files = Vec<(String, Vec<u8>, u32)>;

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
