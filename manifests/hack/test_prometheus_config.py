#!/usr/bin/env python3
"""Checks of prometheus_config.py: the chart's monitors and rules, translated as
prometheus-operator would (run by `make manifests-test`; HELM names the binary)."""

from __future__ import annotations

import re
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prometheus_config  # noqa: E402
from test_manifests import by_kind, one, render  # noqa: E402

ON = "podMonitors.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true"


def job(config: dict, prefix: str) -> dict:
    found = [j for j in config["scrape_configs"] if j["job_name"].startswith(prefix)]
    assert len(found) == 1, f"one job {prefix}*, got {[j['job_name'] for j in config['scrape_configs']]}"
    return found[0]


def kept(j: dict, meta_label: str) -> list[str]:
    """The regexes of keep rules on a meta label (the first source label)."""
    return [r["regex"] for r in j["relabel_configs"]
            if r.get("action") == "keep" and r["source_labels"][0] == meta_label]


class TranslationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = render(ON, namespace="llmd-system", release="llmd-operator")
        cls.config, cls.rules = prometheus_config.translate(cls.docs, "5s", "/kube/config")

    def test_each_pod_monitor_is_a_pod_job_keeping_its_pods_and_port(self):
        monitors = by_kind(self.docs, "PodMonitor")
        self.assertEqual(len(monitors), 3)
        for m in monitors:
            j = job(self.config, f"podMonitor/llmd-system/{m['metadata']['name']}/")
            sd = j["kubernetes_sd_configs"][0]
            self.assertEqual(sd["role"], "pod")
            self.assertNotIn("namespaces", sd, "namespaceSelector any: every namespace")
            self.assertEqual(sd["kubeconfig_file"], "/kube/config")
            for k, v in m["spec"]["selector"]["matchLabels"].items():
                meta = "__meta_kubernetes_pod_label_" + prometheus_config.sanitize(k)
                self.assertEqual(kept(j, meta), [f"({re.escape(v)});true"], k)
            port = m["spec"]["podMetricsEndpoints"][0]["port"]
            self.assertEqual(kept(j, "__meta_kubernetes_pod_container_port_name"), [port])
            self.assertEqual(j["scrape_interval"], "5s")

    def test_the_monitors_relabelings_come_last_so_dashboards_find_their_labels(self):
        j = job(self.config, "podMonitor/llmd-system/llmd-operator-endpoint-pickers/")
        targets = [r.get("target_label") for r in j["relabel_configs"]]
        self.assertEqual(targets[-2:], ["llmd_deployment", "llmd_component"])
        self.assertLess(targets.index("namespace"), targets.index("llmd_deployment"))
        last = j["relabel_configs"][-1]
        self.assertEqual(last["source_labels"],
                         ["__meta_kubernetes_pod_label_app_kubernetes_io_component"])
        self.assertNotIn("action", last, "replace, Prometheus' default")

    def test_the_service_monitor_is_an_endpointslice_job_in_the_release_namespace(self):
        sm = one(self.docs, "ServiceMonitor")
        j = job(self.config, "serviceMonitor/llmd-system/")
        sd = j["kubernetes_sd_configs"][0]
        self.assertEqual(sd["role"], "endpointslice")
        self.assertEqual(sd["namespaces"], {"names": ["llmd-system"]})
        self.assertEqual(kept(j, "__meta_kubernetes_endpointslice_port_name"), ["metrics"])
        self.assertEqual(j["scrape_interval"], sm["spec"]["endpoints"][0]["interval"])

    def test_the_rules_are_the_prometheus_rule_groups(self):
        rule = one(self.docs, "PrometheusRule")
        self.assertEqual(self.rules, {"groups": rule["spec"]["groups"]})
        self.assertEqual(self.config["rule_files"], ["rules.yml"])
        self.assertTrue(all(r.get("alert") for g in self.rules["groups"] for r in g["rules"]))

    def test_a_chart_rendered_without_monitors_is_refused(self):
        with self.assertRaisesRegex(ValueError, "no PodMonitor or ServiceMonitor"):
            prometheus_config.translate(render(), "5s", None)


if __name__ == "__main__":
    unittest.main()
