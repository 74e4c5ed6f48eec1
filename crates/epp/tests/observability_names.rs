//! The chart's dashboards and alert rules name only metrics that exist: every
//! `llmd_epp_*` family is one this EndpointPicker registers, every `vllm:*` one is an
//! engine metric it reads. (The operator's `llmd_operator_*` names are checked by the
//! operator's tests.) A renamed metric fails here, not on a dashboard.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use llmd_epp::telemetry::Telemetry;
use regex::Regex;

fn chart() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../../manifests/charts/llmd-operator")
}

/// Every dashboard and the alert rules, as text.
fn sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = chart().join("dashboards");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.push(chart().join("templates/prometheusrule.yaml"));
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        out.push((p.display().to_string(), text));
    }
    assert!(out.len() >= 5, "four dashboards and the rules: {out:?}");
    out
}

/// A sample name's family: without the suffixes Prometheus adds.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count", "_total"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[test]
fn dashboards_and_alerts_name_only_metrics_the_epp_and_the_engines_export() {
    let registered: BTreeSet<String> = Telemetry::new().families.into_iter().collect();
    let epp = Regex::new(r"\bllmd_epp_[a-z_]+").unwrap_or_else(|e| panic!("{e}"));
    let engine = Regex::new(r"vllm:[a-z_:]+").unwrap_or_else(|e| panic!("{e}"));
    let mut seen = 0;
    for (path, text) in sources() {
        for m in epp.find_iter(&text) {
            seen += 1;
            assert!(
                registered.contains(family(m.as_str())),
                "{path} names {}, which llmd-epp does not export ({registered:?})",
                m.as_str()
            );
        }
        for m in engine.find_iter(&text) {
            assert!(
                llmd_api::engine_metrics::READ.contains(&m.as_str()),
                "{path} names {}, not an engine metric llmd-epp reads",
                m.as_str()
            );
        }
    }
    assert!(
        seen > 20,
        "the dashboards query the EPP's metrics ({seen} names)"
    );
}
