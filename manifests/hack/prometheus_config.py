"""A plain Prometheus configuration from the chart's prometheus-operator objects.

`helm template` with the PodMonitors, the ServiceMonitor and the PrometheusRule on
gives what prometheus-operator would turn into a Prometheus server's configuration;
this does the same translation for a Prometheus without the operator (the local
stack's, and anyone's who runs Prometheus that way):

* each PodMonitor endpoint becomes a `kubernetes_sd_configs` job of role `pod`, each
  ServiceMonitor endpoint one of role `endpointslice`, with prometheus-operator's
  relabelling: keep the selected objects and the named port, set `namespace`, `pod`,
  `container` (and `service`, `endpoint`), `job`, then the monitor's own relabelings;
* the PrometheusRule's groups become a rule file.

Usage: prometheus_config.py --rendered FILE --out DIR [--kubeconfig FILE]
                            [--scrape-interval 5s]
writes DIR/prometheus.yml and DIR/rules.yml.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

# prometheus-operator's camelCase relabeling fields, in Prometheus' spelling.
RELABEL_FIELDS = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}


def sanitize(label: str) -> str:
    """A Kubernetes label name as Prometheus spells it in __meta_* names."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def relabeling(r: dict) -> dict:
    out = {RELABEL_FIELDS[k]: v for k, v in r.items() if k in RELABEL_FIELDS}
    if "action" in out:
        out["action"] = out["action"].lower()
    return out


def keep_selected(kind: str, match_labels: dict) -> list[dict]:
    """Keep only objects whose labels match, as prometheus-operator does."""
    return [
        {
            "action": "keep",
            "source_labels": [
                f"__meta_kubernetes_{kind}_label_{sanitize(k)}",
                f"__meta_kubernetes_{kind}_labelpresent_{sanitize(k)}",
            ],
            "regex": f"({re.escape(str(v))});true",
        }
        for k, v in sorted(match_labels.items())
    ]


def sd_config(role: str, namespace_selector: dict, own_namespace: str,
              kubeconfig: str | None) -> dict:
    sd: dict = {"role": role}
    if not namespace_selector.get("any"):
        sd["namespaces"] = {"names": namespace_selector.get("matchNames") or [own_namespace]}
    if kubeconfig:
        sd["kubeconfig_file"] = kubeconfig
    return sd


def endpoint_settings(ep: dict, interval: str) -> dict:
    out = {"metrics_path": ep.get("path", "/metrics"), "scrape_interval": interval}
    if ep.get("scheme"):
        out["scheme"] = ep["scheme"]
    return out


def pod_monitor_jobs(obj: dict, interval: str, kubeconfig: str | None) -> list[dict]:
    meta, spec = obj["metadata"], obj["spec"]
    jobs = []
    for i, ep in enumerate(spec.get("podMetricsEndpoints", [])):
        relabel = [
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"],
             "regex": "(Failed|Succeeded)"},
            *keep_selected("pod", spec.get("selector", {}).get("matchLabels", {})),
            {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
             "regex": ep["port"]},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
            {"target_label": "endpoint", "replacement": ep["port"]},
            *(relabeling(r) for r in ep.get("relabelings", [])),
        ]
        jobs.append({
            "job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/{i}",
            "kubernetes_sd_configs": [sd_config(
                "pod", spec.get("namespaceSelector", {}), meta["namespace"], kubeconfig)],
            "relabel_configs": relabel,
            **endpoint_settings(ep, interval),
        })
    return jobs


def service_monitor_jobs(obj: dict, interval: str, kubeconfig: str | None) -> list[dict]:
    meta, spec = obj["metadata"], obj["spec"]
    jobs = []
    for i, ep in enumerate(spec.get("endpoints", [])):
        relabel = [
            *keep_selected("service", spec.get("selector", {}).get("matchLabels", {})),
            {"action": "keep", "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
             "regex": ep["port"]},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
            {"target_label": "endpoint", "replacement": ep["port"]},
            *(relabeling(r) for r in ep.get("relabelings", [])),
        ]
        jobs.append({
            "job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{i}",
            "kubernetes_sd_configs": [sd_config(
                "endpointslice", spec.get("namespaceSelector", {}), meta["namespace"], kubeconfig)],
            "relabel_configs": relabel,
            **endpoint_settings(ep, ep.get("interval", interval)),
        })
    return jobs


def translate(docs: list[dict], interval: str, kubeconfig: str | None) -> tuple[dict, dict]:
    """(prometheus.yml, rules.yml) for the monitors and rules among `docs`."""
    jobs, groups = [], []
    for obj in docs:
        kind = obj.get("kind")
        if kind == "PodMonitor":
            jobs += pod_monitor_jobs(obj, interval, kubeconfig)
        elif kind == "ServiceMonitor":
            jobs += service_monitor_jobs(obj, interval, kubeconfig)
        elif kind == "PrometheusRule":
            groups += obj["spec"]["groups"]
    if not jobs:
        raise ValueError("no PodMonitor or ServiceMonitor in the rendered chart")
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": ["rules.yml"],
        "scrape_configs": jobs,
    }
    return config, {"groups": groups}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rendered", required=True, help="`helm template` output")
    p.add_argument("--out", required=True, help="directory for prometheus.yml and rules.yml")
    p.add_argument("--kubeconfig", help="kubeconfig the service discovery uses")
    p.add_argument("--scrape-interval", default="15s")
    args = p.parse_args(argv)
    docs = [d for d in yaml.safe_load_all(Path(args.rendered).read_text()) if d]
    try:
        config, rules = translate(docs, args.scrape_interval, args.kubeconfig)
    except ValueError as e:
        print(f"prometheus_config: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
