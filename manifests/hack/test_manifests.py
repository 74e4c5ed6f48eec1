#!/usr/bin/env python3
"""Checks of the Helm chart and the OLM bundle against their sources.

Run by `make manifests-test` (python3 -m unittest, stdlib + PyYAML). Env:
  HELM             helm binary (required)
  OPERATOR_VERIFY  operator-framework's operator-verify (optional: skipped if unset)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import unittest
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate  # noqa: E402

ROOT = generate.ROOT
CHART = generate.CHART
BUNDLE = generate.BUNDLE
HELM = os.environ.get("HELM", "helm")
CSV_PATH = BUNDLE / "manifests/llmd-operator.clusterserviceversion.yaml"


def load(path: Path):
    return yaml.safe_load(path.read_text())


def rust_const(name: str) -> str:
    text = (ROOT / "crates/api/src/images.rs").read_text()
    m = re.search(rf'pub const {name}: &str = "([^"]+)";', text)
    assert m, f"{name} not found in crates/api/src/images.rs"
    return m.group(1)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check)


def render(*sets: str, namespace: str = "llmd-system", release: str = "rel") -> list[dict]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def arg(c: dict, flag: str) -> str | None:
    for a in c["args"]:
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


class Generated(unittest.TestCase):
    def test_outputs_are_up_to_date(self):
        """Chart CRDs and the bundle are what `make manifests` generates now."""
        r = subprocess.run([sys.executable, str(HERE / "generate.py"), "--helm", HELM, "--check"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_crds_are_byte_identical_copies(self):
        sources = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
        self.assertTrue(sources)
        for target in (CHART / "crds", BUNDLE / "manifests"):
            for name in sources:
                self.assertEqual((target / name).read_bytes(), (ROOT / "crds" / name).read_bytes(),
                                 f"{target / name} differs from crds/{name}: run make manifests")
        self.assertEqual(sorted(p.name for p in (CHART / "crds").iterdir()), sources)


class Chart(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = render()

    def test_lint(self):
        for sets in ([], ["replicas=3", "watchNamespace=apps", "serviceMonitor.enabled=true",
                          "logFormat=json", "epp.resources.requests.cpu=200m",
                          "podMonitors.enabled=true", "dashboards.enabled=true",
                          "prometheusRule.enabled=true"]):
            args = ["lint", "--strict", str(CHART)]
            for s in sets:
                args += ["--set", s]
            r = helm(*args, check=False)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_objects(self):
        kinds = sorted(d["kind"] for d in self.docs)
        self.assertEqual(kinds, ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role",
                                 "RoleBinding", "Service", "ServiceAccount"])
        for d in self.docs:
            if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
                self.assertEqual(d["metadata"]["namespace"], "llmd-system", d["kind"])

    def test_cluster_role_rules_are_config_rbac(self):
        want = load(ROOT / "config/rbac/role.yaml")["rules"]
        self.assertEqual(one(self.docs, "ClusterRole")["rules"], want)

    def test_leader_election_role_rules_are_config_rbac(self):
        want = load(ROOT / "config/rbac/leader_election_role.yaml")["rules"]
        self.assertEqual(one(self.docs, "Role")["rules"], want)

    def test_bindings_name_the_service_account(self):
        sa = one(self.docs, "ServiceAccount")["metadata"]["name"]
        for kind in ("ClusterRoleBinding", "RoleBinding"):
            b = one(self.docs, kind)
            self.assertEqual(b["subjects"], [{"kind": "ServiceAccount", "name": sa,
                                              "namespace": "llmd-system"}])
        self.assertEqual(one(self.docs, "ClusterRoleBinding")["roleRef"]["name"],
                         one(self.docs, "ClusterRole")["metadata"]["name"])
        self.assertEqual(one(self.docs, "RoleBinding")["roleRef"]["name"],
                         one(self.docs, "Role")["metadata"]["name"])
        pod = one(self.docs, "Deployment")["spec"]["template"]["spec"]
        self.assertEqual(pod["serviceAccountName"], sa)

    def test_images_are_the_rust_defaults(self):
        c = container(self.docs)
        self.assertEqual(c["image"], rust_const("OPERATOR_IMAGE"))
        self.assertEqual(arg(c, "--default-epp-image"), rust_const("DEFAULT_EPP_IMAGE"))
        chart = load(CHART / "Chart.yaml")
        self.assertEqual(chart["version"], "0.1.0")
        self.assertEqual(str(chart["appVersion"]), rust_const("OPERATOR_IMAGE").rsplit(":", 1)[1])

    def test_deployment_is_hardened_and_probed(self):
        dep = one(self.docs, "Deployment")
        pod = dep["spec"]["template"]["spec"]
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertEqual(pod["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
        c = container(self.docs)
        sc = c["securityContext"]
        self.assertIs(sc["readOnlyRootFilesystem"], True)
        self.assertIs(sc["allowPrivilegeEscalation"], False)
        self.assertEqual(sc["capabilities"], {"drop": ["ALL"]})
        self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "health"})
        self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "health"})
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(ports, {"metrics": 8080, "health": 8081})
        self.assertIn("requests", c["resources"])
        env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c["env"]}
        self.assertEqual(env["POD_NAMESPACE"], "metadata.namespace")
        self.assertEqual(env["POD_NAME"], "metadata.name")
        self.assertEqual(arg(c, "--leader-election-namespace"), "$(POD_NAMESPACE)")
        self.assertEqual(c["args"][0], "run")

    def test_leader_election_follows_values(self):
        self.assertEqual(arg(container(self.docs), "--leader-elect"), "true")
        self.assertEqual(arg(container(render("leaderElection.enabled=false")), "--leader-elect"), "false")
        self.assertEqual(arg(container(render("replicas=3")), "--leader-elect"), "true")
        r = helm("template", "rel", str(CHART), "--set", "replicas=2",
                 "--set", "leaderElection.enabled=false", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("needs replicas: 1", r.stderr)

    def test_values_reach_the_flags(self):
        docs = render("logFormat=json", "epp.image=example.com/epp:1",
                      "epp.resources.requests.cpu=200m", "image.tag=9.9.9",
                      "watchNamespace=apps", "replicas=2")
        c = container(docs)
        self.assertEqual(arg(c, "--log-format"), "json")
        self.assertEqual(arg(c, "--default-epp-image"), "example.com/epp:1")
        self.assertEqual(json.loads(arg(c, "--default-epp-resources")), {"requests": {"cpu": "200m"}})
        self.assertEqual(arg(c, "--namespace"), "apps")
        self.assertEqual(c["image"], "ghcr.io/llmd-dev/llmd-operator:9.9.9")
        self.assertEqual(one(docs, "Deployment")["spec"]["replicas"], 2)
        self.assertIsNone(arg(container(self.docs), "--default-epp-resources"))
        self.assertIsNone(arg(container(self.docs), "--namespace"))

    def test_watch_namespace_binds_the_cluster_role_in_that_namespace_only(self):
        docs = render("watchNamespace=apps")
        self.assertEqual(by_kind(docs, "ClusterRoleBinding"), [])
        bindings = {b["metadata"]["namespace"]: b for b in by_kind(docs, "RoleBinding")}
        self.assertEqual(sorted(bindings), ["apps", "llmd-system"])
        self.assertEqual(bindings["apps"]["roleRef"]["kind"], "ClusterRole")

    def test_metrics_service_and_service_monitor(self):
        svc = one(self.docs, "Service")
        self.assertEqual(svc["spec"]["ports"][0]["targetPort"], "metrics")
        labels = one(self.docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(set(svc["spec"]["selector"].items()) <= set(labels.items()))
        self.assertEqual(by_kind(self.docs, "ServiceMonitor"), [])
        sm = one(render("serviceMonitor.enabled=true"), "ServiceMonitor")
        self.assertEqual(sm["spec"]["endpoints"][0]["port"], "metrics")
        self.assertEqual(by_kind(render("metrics.service.enabled=false"), "Service"), [])

    def test_observability_is_off_by_default_and_renders_when_asked(self):
        for kind in ("PodMonitor", "PrometheusRule", "ConfigMap"):
            self.assertEqual(by_kind(self.docs, kind), [], kind)
        docs = render("podMonitors.enabled=true", "dashboards.enabled=true",
                      "prometheusRule.enabled=true", "watchNamespace=apps")
        monitors = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "PodMonitor")}
        self.assertEqual(sorted(monitors), ["rel-llmd-operator-endpoint-pickers",
                                            "rel-llmd-operator-model-servers",
                                            "rel-llmd-operator-routing-sidecars"])
        for spec in monitors.values():
            self.assertEqual(spec["namespaceSelector"], {"matchNames": ["apps"]})
            targets = [r["targetLabel"] for r in spec["podMetricsEndpoints"][0]["relabelings"]]
            self.assertEqual(targets, ["llmd_deployment", "llmd_component"])
        self.assertEqual(monitors["rel-llmd-operator-endpoint-pickers"]["podMetricsEndpoints"][0]["port"],
                         "metrics")
        self.assertEqual(monitors["rel-llmd-operator-model-servers"]["podMetricsEndpoints"][0]["port"],
                         "http")
        self.assertEqual(monitors["rel-llmd-operator-routing-sidecars"]["podMetricsEndpoints"][0]["port"],
                         "sidecar-metrics")

        dashboards = {}
        for cm in by_kind(docs, "ConfigMap"):
            self.assertEqual(cm["metadata"]["labels"]["grafana_dashboard"], "1")
            (name, text), = cm["data"].items()
            dashboards[name] = json.loads(text)
        self.assertEqual(sorted(dashboards), ["llmd-fleet.json", "llmd-model-servers.json",
                                              "llmd-operator.json", "llmd-routing.json"])
        for name, model in dashboards.items():
            variables = [v["name"] for v in model["templating"]["list"]]
            if name != "llmd-operator.json":
                self.assertIn("deployment", variables, name)
            for panel in model["panels"]:
                self.assertTrue(panel["targets"], panel["title"])
                for target in panel["targets"]:
                    if name != "llmd-operator.json":
                        self.assertIn('llmd_deployment="$deployment"', target["expr"], panel["title"])

        rule = one(docs, "PrometheusRule")
        alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
        self.assertEqual(sorted(a["alert"] for a in alerts), [
            "LLMDAdapterLoadFailing", "LLMDEndpointPickerShedding", "LLMDEnginesNotScraped",
            "LLMDKVFabricProbeFailed",
            "LLMDKVTransferFailing",
            "LLMDNoServingPods", "LLMDPreciseRoutingDegraded", "LLMDReconcileErrors",
            "LLMDTunerRollingBackRepeatedly"])
        runbook = (ROOT / "docs/observability.md").read_text()
        for a in alerts:
            self.assertTrue(a["annotations"]["summary"], a["alert"])
            anchor = a["annotations"]["runbook_url"].rsplit("#", 1)[1]
            self.assertEqual(anchor, a["alert"].lower())
            self.assertIn(f"### {a['alert']}", runbook, "a runbook section per alert")

    def test_values_schema_refuses_bad_values(self):
        for bad in ("logFormat=xml", "replicas=-1", "image.pullPolicy=Sometimes",
                    "leaderElection.enabled=maybe"):
            r = helm("template", "rel", str(CHART), "--set", bad, check=False)
            self.assertNotEqual(r.returncode, 0, bad)
            self.assertIn("values don't meet the specifications of the schema", r.stderr, bad)

    def test_scheduling_values(self):
        docs = render("nodeSelector.role=ops", "tolerations[0].key=dedicated",
                      "tolerations[0].operator=Exists")
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        self.assertEqual(pod["nodeSelector"], {"role": "ops"})
        self.assertEqual(pod["tolerations"], [{"key": "dedicated", "operator": "Exists"}])

    def test_crds_are_installed_by_the_chart(self):
        out = helm("template", "rel", str(CHART), "--include-crds").stdout
        kinds = [d["kind"] for d in yaml.safe_load_all(out) if d]
        self.assertIn("CustomResourceDefinition", kinds)


class Bundle(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.csv = load(CSV_PATH)
        cls.strategy = cls.csv["spec"]["install"]["spec"]

    def test_structure(self):
        files = sorted(str(p.relative_to(BUNDLE)) for p in BUNDLE.rglob("*") if p.is_file())
        self.assertIn("bundle.Dockerfile", files)
        self.assertIn("metadata/annotations.yaml", files)
        self.assertIn("manifests/llmd-operator.clusterserviceversion.yaml", files)
        for f in files:
            self.assertTrue(f == "bundle.Dockerfile" or f.startswith(("manifests/", "metadata/")), f)
        ann = load(BUNDLE / "metadata/annotations.yaml")["annotations"]
        self.assertEqual(ann["operators.operatorframework.io.bundle.mediatype.v1"], "registry+v1")
        self.assertEqual(ann["operators.operatorframework.io.bundle.manifests.v1"], "manifests/")
        self.assertEqual(ann["operators.operatorframework.io.bundle.metadata.v1"], "metadata/")
        self.assertEqual(ann["operators.operatorframework.io.bundle.package.v1"], "llmd-operator")
        self.assertEqual(ann["operators.operatorframework.io.bundle.channels.v1"], "alpha")
        self.assertEqual(ann["operators.operatorframework.io.bundle.channel.default.v1"], "alpha")
        docker = (BUNDLE / "bundle.Dockerfile").read_text()
        labels = dict(line[len("LABEL "):].split("=", 1) for line in docker.splitlines()
                      if line.startswith("LABEL "))
        self.assertEqual(labels, ann, "bundle.Dockerfile labels differ from metadata/annotations.yaml")
        self.assertIn("COPY manifests /manifests/", docker)
        self.assertIn("COPY metadata /metadata/", docker)
        for p in (BUNDLE / "manifests").iterdir():
            doc = load(p)
            self.assertIn("kind", doc, p)
            self.assertNotIn("namespace", doc["metadata"], f"{p}: OLM sets the namespace")

    def test_csv_identity(self):
        chart = load(CHART / "Chart.yaml")
        spec = self.csv["spec"]
        self.assertEqual(self.csv["apiVersion"], "operators.coreos.com/v1alpha1")
        self.assertEqual(self.csv["metadata"]["name"], f"llmd-operator.v{chart['appVersion']}")
        self.assertEqual(spec["version"], str(chart["appVersion"]))
        self.assertEqual(spec["maturity"], "alpha")
        self.assertTrue(spec["description"].strip())
        self.assertEqual(spec["icon"][0]["mediatype"], "image/svg+xml")
        self.assertIn(b"<svg", __import__("base64").b64decode(spec["icon"][0]["base64data"]))
        # The first version replaces nothing; a later one names an older CSV of this package.
        if "replaces" in spec:
            m = re.fullmatch(r"llmd-operator\.v(\d+)\.(\d+)\.(\d+)", spec["replaces"])
            self.assertTrue(m, spec["replaces"])
            self.assertLess(tuple(map(int, m.groups())), tuple(map(int, spec["version"].split("."))))
        self.assertEqual(self.csv["metadata"]["annotations"]["olm.skipRange"], f"<{spec['version']}")
        modes = {m["type"]: m["supported"] for m in spec["installModes"]}
        self.assertEqual(modes, {"AllNamespaces": True, "OwnNamespace": True,
                                 "SingleNamespace": True, "MultiNamespace": False})

    def test_alm_examples_are_the_samples(self):
        examples = json.loads(self.csv["metadata"]["annotations"]["alm-examples"])
        samples = [load(p) for p in sorted((ROOT / "config/samples").glob("*.yaml"))]
        self.assertEqual(examples, samples)

    def test_owned_crds_match_the_crd_manifests(self):
        owned = self.csv["spec"]["customresourcedefinitions"]["owned"]
        crds = [load(p) for p in sorted((ROOT / "crds").glob("*.yaml"))]
        want = {(c["metadata"]["name"], v["name"], c["spec"]["names"]["kind"])
                for c in crds for v in c["spec"]["versions"] if v["served"]}
        self.assertEqual({(o["name"], o["version"], o["kind"]) for o in owned}, want)
        for o in owned:
            crd = next(c for c in crds if c["metadata"]["name"] == o["name"])
            version = next(v for v in crd["spec"]["versions"] if v["name"] == o["version"])
            props = version["schema"]["openAPIV3Schema"]["properties"]
            self.assertTrue(o["specDescriptors"] and o["statusDescriptors"])
            for key, root in (("specDescriptors", props["spec"]), ("statusDescriptors", props["status"])):
                for d in o[key]:
                    self.assertTrue(generate.schema_has(root, d["path"]), f"{key} {d['path']}")
                    self.assertTrue(d["x-descriptors"])

    def test_permissions_are_config_rbac(self):
        role = load(ROOT / "config/rbac/role.yaml")["rules"]
        lease = load(ROOT / "config/rbac/leader_election_role.yaml")["rules"]
        # No cluster-scoped rights: OLM scopes `permissions` to the target namespaces.
        self.assertNotIn("clusterPermissions", self.strategy)
        self.assertEqual(self.strategy["permissions"],
                         [{"serviceAccountName": "llmd-operator", "rules": role + lease}])
        for rule in role + lease:
            for resource in rule["resources"]:
                self.assertNotIn(resource, ("nodes", "namespaces", "customresourcedefinitions",
                                            "clusterroles", "clusterrolebindings"))

    def test_deployment_is_the_charts(self):
        self.assertEqual(self.csv["spec"]["install"]["strategy"], "deployment")
        [dep] = self.strategy["deployments"]
        chart_dep = one(render(release="llmd-operator"), "Deployment")
        chart_spec = chart_dep["spec"]
        for label in generate.HELM_LABELS:
            chart_spec["template"]["metadata"]["labels"].pop(label)
        # The one addition: OLM's target namespaces become the watch namespace.
        chart_spec["template"]["spec"]["containers"][0]["env"].append(
            {"name": "LLMD_WATCH_NAMESPACE", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['olm.targetNamespaces']"}}})
        self.assertEqual(dep["name"], chart_dep["metadata"]["name"])
        self.assertEqual(dep["spec"], chart_spec)
        pod = dep["spec"]["template"]["spec"]
        self.assertEqual(pod["serviceAccountName"], "llmd-operator")
        c = pod["containers"][0]
        self.assertEqual(c["image"], rust_const("OPERATOR_IMAGE"))
        self.assertEqual(arg(c, "--default-epp-image"), rust_const("DEFAULT_EPP_IMAGE"))
        self.assertEqual(self.csv["metadata"]["annotations"]["containerImage"], rust_const("OPERATOR_IMAGE"))
        related = {r["image"] for r in self.csv["spec"]["relatedImages"]}
        self.assertEqual(related, {rust_const("OPERATOR_IMAGE"), rust_const("DEFAULT_EPP_IMAGE")})
        for label in dep["spec"]["template"]["metadata"]["labels"]:
            self.assertNotIn(label, generate.HELM_LABELS)

    @unittest.skipUnless(os.environ.get("OPERATOR_VERIFY"), "OPERATOR_VERIFY not set")
    def test_operator_framework_validator(self):
        r = subprocess.run([os.environ["OPERATOR_VERIFY"], "manifests", "--object_validate", str(BUNDLE)],
                           capture_output=True, text=True)
        out = r.stdout + r.stderr
        # operator-verify logs errors and still exits 0; fatal load errors exit 1.
        errors = [line for line in out.splitlines() if re.search(r"level=(error|fatal)", line)]
        self.assertEqual((r.returncode, errors), (0, []), out)
        if out.strip():
            print("\noperator-verify:\n" + out, file=sys.stderr)


class Dockerfiles(unittest.TestCase):
    """They cannot be built here (no Docker engine): check their shape."""

    def check(self, package: str, image_const: str):
        text = (ROOT / f"crates/{package.removeprefix('llmd-')}/Dockerfile").read_text()
        froms = re.findall(r"^FROM (\S+)", text, re.M)
        self.assertEqual(froms, ["rust:1.95", "gcr.io/distroless/cc-debian12:nonroot"])
        self.assertIn(f"cargo build --release --locked -p {package} --bin {package}", text)
        self.assertRegex(text, r"(?m)^USER 65532:65532$")
        self.assertIn(f'ENTRYPOINT ["/usr/local/bin/{package}"]', text)
        self.assertIn(f"-t {rust_const(image_const)} .", text)
        members = load_toml_members()
        self.assertIn(f"crates/{package.removeprefix('llmd-')}", members)

    def test_operator(self):
        self.check("llmd-operator", "OPERATOR_IMAGE")

    def test_epp(self):
        self.check("llmd-epp", "DEFAULT_EPP_IMAGE")

    def test_context_excludes_build_output(self):
        self.assertIn("target/", (ROOT / ".dockerignore").read_text().split())


def load_toml_members() -> list[str]:
    """Workspace members from Cargo.toml (a `crates/*` glob expanded)."""
    text = (ROOT / "Cargo.toml").read_text()
    m = re.search(r"members\s*=\s*\[([^\]]*)\]", text)
    assert m, "workspace members in Cargo.toml"
    out = []
    for pat in re.findall(r'"([^"]+)"', m.group(1)):
        out += [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob(pat)) if (p / "Cargo.toml").exists()]
    return out


if __name__ == "__main__":
    unittest.main()
