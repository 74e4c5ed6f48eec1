//! What the vLLM version an image runs allows, read from its tag. vLLM 0.33
//! deprecates `kv_role: kv_both` for the NixlConnector in favour of `kv_producer`
//! (prefill) and `kv_consumer` (decode), and transfers KV between tensor-parallel
//! sizes in both directions when the larger is a multiple of the smaller; older
//! versions required decode TP >= prefill TP.

use crate::images::DEFAULT_ENGINE_IMAGE;

/// A vLLM version, (major, minor, patch).
pub type Version = (u32, u32, u32);

/// The first version with per-role NIXL roles and TP mismatch in both directions.
pub const PER_ROLE_SINCE: Version = (0, 33, 0);

/// The version in an image tag such as `vllm/vllm-openai:v0.33.0` (or `0.33.0`,
/// `v0.33.0-cu128`); `None` for `latest`, a digest or a custom tag.
pub fn of_image(image: &str) -> Option<Version> {
    let (_, tag) = image.rsplit_once(':')?;
    if tag.contains('/') || image.contains('@') {
        return None;
    }
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    let core = tag.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().unwrap_or(Some(0))?,
    ))
}

/// The version the operator assumes for an image: its tag's, else the default
/// image's (an untagged or custom build is taken to be current).
pub fn assumed(image: &str) -> Version {
    of_image(image)
        .or_else(|| of_image(DEFAULT_ENGINE_IMAGE))
        .unwrap_or(PER_ROLE_SINCE)
}

/// Whether prefill and decode pods take `kv_producer` / `kv_consumer`.
pub fn per_role_nixl(version: Version) -> bool {
    version >= PER_ROLE_SINCE
}

/// Why a prefill/decode tensor-parallel pair cannot transfer KV on `version`, if
/// it cannot.
pub fn tensor_parallel_problem(version: Version, prefill: i32, decode: i32) -> Option<String> {
    let (small, large) = (prefill.min(decode).max(1), prefill.max(decode));
    let v = format!("vLLM {}.{}.{}", version.0, version.1, version.2);
    if large % small != 0 {
        return Some(format!(
            "spec.prefill.parallelism.tensor ({prefill}) and spec.decode.parallelism.tensor \
             ({decode}): {v} transfers KV only when the larger is a multiple of the smaller"
        ));
    }
    if !per_role_nixl(version) && decode < prefill {
        return Some(format!(
            "spec.decode.parallelism.tensor ({decode}) is below spec.prefill.parallelism.tensor \
             ({prefill}): {v} needs decode TP >= prefill TP (0.33 lifts this)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_tags_and_unknown_tags_say_so() {
        assert_eq!(of_image("vllm/vllm-openai:v0.33.0"), Some((0, 33, 0)));
        assert_eq!(
            of_image("registry:5000/vllm:0.11.2-cu128"),
            Some((0, 11, 2))
        );
        assert_eq!(of_image("vllm/vllm-openai:v0.9"), Some((0, 9, 0)));
        assert_eq!(of_image("vllm/vllm-openai:latest"), None);
        assert_eq!(of_image("vllm/vllm-openai"), None);
        assert_eq!(of_image("vllm@sha256:abcd"), None);
        assert_eq!(assumed("my/custom-build:nightly"), (0, 33, 0));
    }

    #[test]
    fn roles_and_tensor_parallel_rules_follow_the_version() {
        assert!(per_role_nixl((0, 33, 0)) && per_role_nixl((1, 0, 0)));
        assert!(!per_role_nixl((0, 11, 0)));
        assert_eq!(tensor_parallel_problem((0, 33, 0), 4, 2), None);
        assert!(
            tensor_parallel_problem((0, 11, 0), 4, 2)
                .is_some_and(|p| p.contains("needs decode TP >= prefill TP"))
        );
        assert_eq!(tensor_parallel_problem((0, 11, 0), 2, 4), None);
        assert!(
            tensor_parallel_problem((0, 33, 0), 3, 2)
                .is_some_and(|p| p.contains("multiple of the smaller"))
        );
    }
}
