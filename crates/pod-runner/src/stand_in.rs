//! What runs for a container: the local program its image maps to (the image
//! table of the config), with its arguments. For the vLLM engine image the
//! arguments are translated into llm-d-inference-sim's by [`vllm_flags`].

mod vllm_flags;

use crate::config::{Config, ImageRule, RunKind};
pub use vllm_flags::KvEventPorts;
use vllm_flags::{TranslateError, translate_vllm};

/// The local program of a container and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub binary: std::path::PathBuf,
    pub args: Vec<String>,
    pub kind: RunKind,
    /// Lines for the container's log: what was dropped from its command line.
    pub notes: Vec<String>,
    /// The pod port the engine would bind for KV events, which the runner binds
    /// and forwards to (the simulator only connects out).
    pub kv_events: Option<KvEventPorts>,
}

#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    #[error("image {0:?} has no local stand-in")]
    NoStandIn(String),
    #[error("cannot translate the vLLM arguments of image {image:?}: {source}")]
    Translate {
        image: String,
        source: TranslateError,
    },
}

/// The rule for `image` or why there is none.
pub fn rule_for<'a>(config: &'a Config, image: &str) -> Result<&'a ImageRule, StandInError> {
    config
        .image_rule(image)
        .ok_or_else(|| StandInError::NoStandIn(image.to_string()))
}

/// The program for a container whose `command`/`args` are already expanded and
/// path-rewritten.
pub fn program(
    rule: &ImageRule,
    image: &str,
    command: &[String],
    args: &[String],
) -> Result<Program, StandInError> {
    // Another of the image's programs, named by the container's command (the
    // engine image's python3 for the fabric probe): run as it is.
    if let Some(binary) = command.first().and_then(|c| rule.commands.get(c)) {
        let mut all: Vec<String> = command.iter().skip(1).cloned().collect();
        all.extend(args.iter().cloned());
        return Ok(Program {
            binary: binary.clone(),
            args: all,
            kind: RunKind::Binary,
            notes: Vec::new(),
            kv_events: None,
        });
    }
    match rule.run {
        RunKind::Simulator => {
            let t = translate_vllm(command, args, &rule.extra_args).map_err(|source| {
                StandInError::Translate {
                    image: image.to_string(),
                    source,
                }
            })?;
            let mut notes = Vec::new();
            if !t.dropped.is_empty() {
                notes.push(format!(
                    "vLLM flags with no simulator equivalent, dropped: {}",
                    t.dropped.join(", ")
                ));
            }
            if !t.unknown.is_empty() {
                notes.push(format!(
                    "unknown vLLM arguments, dropped: {}",
                    t.unknown.join(", ")
                ));
            }
            Ok(Program {
                binary: rule.binary.clone(),
                args: t.args,
                kind: rule.run,
                notes,
                kv_events: t.kv_events,
            })
        }
        RunKind::Binary => {
            // The image's entrypoint is our binary: a container `command` replaces
            // it, so its first word is the program and the rest come before args.
            let mut all: Vec<String> = command.iter().skip(1).cloned().collect();
            all.extend(args.iter().cloned());
            Ok(Program {
                binary: rule.binary.clone(),
                args: all,
                kind: rule.run,
                notes: Vec::new(),
                kv_events: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn binary_images_keep_their_arguments() {
        let rule = ImageRule {
            repositories: s(&["x"]),
            run: RunKind::Binary,
            binary: "/bin/epp".into(),
            extra_args: vec![],
            commands: [(
                "/usr/local/bin/llmd-sidecar".to_string(),
                "/bin/sidecar".into(),
            )]
            .into(),
        };
        let p = program(&rule, "x", &s(&["/llmd-epp", "--a"]), &s(&["--b", "c"])).expect("ok");
        assert_eq!(p.args, s(&["--a", "--b", "c"]));
        assert_eq!(p.binary, std::path::PathBuf::from("/bin/epp"));
        let p = program(&rule, "x", &[], &s(&["run", "--x=1"])).expect("ok");
        assert_eq!(p.args, s(&["run", "--x=1"]));
        let p = program(
            &rule,
            "x",
            &s(&["/usr/local/bin/llmd-sidecar"]),
            &s(&["--port=8000"]),
        )
        .expect("ok");
        assert_eq!(p.binary, std::path::PathBuf::from("/bin/sidecar"));
        assert_eq!(p.args, s(&["--port=8000"]));
        // The engine image's other programs run as they are, not as the simulator.
        let engine = ImageRule {
            repositories: s(&["vllm/vllm-openai"]),
            run: RunKind::Simulator,
            binary: "/bin/sim".into(),
            extra_args: vec![],
            commands: [("python3".to_string(), "/venv/bin/python3".into())].into(),
        };
        let p = program(
            &engine,
            "vllm/vllm-openai",
            &s(&["python3", "/probe.py"]),
            &s(&["send"]),
        )
        .expect("ok");
        assert_eq!(p.binary, std::path::PathBuf::from("/venv/bin/python3"));
        assert_eq!(
            (p.kind, p.args),
            (RunKind::Binary, s(&["/probe.py", "send"]))
        );
    }
}
