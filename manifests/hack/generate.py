#!/usr/bin/env python3
"""Generate the chart's CRDs and the OLM bundle from the repository's sources.

Sources (never edited here):
  crds/*.yaml                       the CRDs (generated from the Rust types)
  config/rbac/role.yaml             the operator's ClusterRole rules
  config/rbac/leader_election_role.yaml  the leader-election Role rules
  config/samples/*.yaml             the examples (alm-examples)
  manifests/charts/llmd-operator    the operator Deployment and metrics Service,
                                    rendered with `helm template`
  manifests/icon.svg                the icon

Outputs (committed; `--check` fails if they are stale):
  manifests/charts/llmd-operator/crds/*.yaml
  manifests/bundle/manifests/*.yaml (CSV, CRDs, metrics Service)
  manifests/bundle/metadata/annotations.yaml
  manifests/bundle/bundle.Dockerfile
  manifests/charts/llmd-operator/dashboards/*.json and docs/dashboards.md (from dashboards.py)

Usage: generate.py --helm PATH [--check]
"""

from __future__ import annotations

import argparse
import base64
import difflib
import json
import subprocess
import sys
from pathlib import Path

import yaml

import dashboards

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "manifests/charts/llmd-operator"
BUNDLE = ROOT / "manifests/bundle"

PACKAGE = "llmd-operator"
CHANNEL = "alpha"
# The Helm release name and namespace the bundle's Deployment is rendered with: the
# chart's fullname is then just "llmd-operator", as in config/rbac.
RELEASE = "llmd-operator"
NAMESPACE = "llmd-system"
SERVICE_ACCOUNT = "llmd-operator"
# The first release replaces nothing. The next one sets REPLACES to
# "llmd-operator.v0.1.0" (and keeps a skipRange so any older build upgrades).
REPLACES: str | None = None

# Labels of the chart that name Helm; the bundle's objects are managed by OLM.
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")

SPEC_DESCRIPTORS = [
    ("model.name", "Model name", "Name clients send in the OpenAI `model` field.",
     ["urn:alm:descriptor:com.tectonic.ui:text"]),
    ("model.uri", "Model URI", "Where the weights come from: hf://, pvc://, s3:// or oci://.",
     ["urn:alm:descriptor:com.tectonic.ui:text"]),
    ("model.maxModelLen", "Max model length", "Maximum context length in tokens.",
     ["urn:alm:descriptor:com.tectonic.ui:number"]),
    ("prefill.replicas", "Prefill pods", "Prefill pods; omit prefill for aggregated serving.",
     ["urn:alm:descriptor:com.tectonic.ui:podCount"]),
    ("prefill.parallelism.tensor", "Prefill tensor parallelism", "GPUs one prefill replica spans.",
     ["urn:alm:descriptor:com.tectonic.ui:number"]),
    ("decode.replicas", "Decode pods", "Decode pods.",
     ["urn:alm:descriptor:com.tectonic.ui:podCount"]),
    ("decode.parallelism.tensor", "Decode tensor parallelism", "GPUs one decode replica spans.",
     ["urn:alm:descriptor:com.tectonic.ui:number"]),
    ("decode.resources", "Decode resources", "Resources of the decode vLLM container.",
     ["urn:alm:descriptor:com.tectonic.ui:resourceRequirements"]),
    ("engine.image", "vLLM image", "Container image of the vLLM OpenAI server.",
     ["urn:alm:descriptor:com.tectonic.ui:text"]),
    ("kvTransfer.connector", "KV connector", "KV-cache connector between prefill and decode.",
     ["urn:alm:descriptor:com.tectonic.ui:select:Nixl"]),
    ("router.replicas", "EndpointPicker pods", "Number of EndpointPicker pods.",
     ["urn:alm:descriptor:com.tectonic.ui:podCount"]),
    ("router.image", "EndpointPicker image", "Unset means the operator's default.",
     ["urn:alm:descriptor:com.tectonic.ui:text"]),
    ("router.autoTune.enabled", "Auto-tune scorer weights", "Retune scorer weights from live metrics.",
     ["urn:alm:descriptor:com.tectonic.ui:booleanSwitch"]),
    ("inferencePool.enabled", "InferencePool", "Create a Gateway API Inference Extension InferencePool.",
     ["urn:alm:descriptor:com.tectonic.ui:booleanSwitch"]),
]

STATUS_DESCRIPTORS = [
    ("conditions", "Conditions", "Ready, PrefillReady, DecodeReady, KVTransferReady, "
     "EndpointPickerReady, Progressing, Degraded.", ["urn:alm:descriptor:io.kubernetes.conditions"]),
    ("prefill.ready", "Prefill", "Ready/desired prefill pods.", ["urn:alm:descriptor:text"]),
    ("decode.ready", "Decode", "Ready/desired decode pods.", ["urn:alm:descriptor:text"]),
    ("router.endpoint", "Router endpoint", "In-cluster OpenAI-compatible endpoint.",
     ["urn:alm:descriptor:org.w3:link"]),
    ("router.inferencePool", "InferencePool", "Whether an InferencePool exists.",
     ["urn:alm:descriptor:text"]),
    ("observedGeneration", "Observed generation", "The generation this status describes.",
     ["urn:alm:descriptor:text"]),
]

OWNED_RESOURCES = [
    ("StatefulSet", "v1"), ("Deployment", "v1"), ("Service", "v1"), ("ConfigMap", "v1"),
    ("ServiceAccount", "v1"), ("Role", "v1"), ("RoleBinding", "v1"), ("InferencePool", "v1"),
]

DESCRIPTION = """\
llmd-operator turns one `LLMDeployment` into a complete [llm-d](https://llm-d.ai) style
LLM inference stack:

* separate **prefill** and **decode** vLLM StatefulSets on GPU nodes (or aggregated
  serving with decode pods only);
* one shared **NIXL KV-cache transfer fabric** both roles load;
* an **EndpointPicker** that routes each request by prefix-cache locality, queue
  depth and KV-cache load, splitting long uncached prompts into prefill + decode;
* a Gateway API Inference Extension `InferencePool` when that CRD is installed.

Every child is server-side applied and owned by its LLMDeployment; edits and
deletions are repaired, and a reconcile that finds nothing to change writes nothing.
Status conditions (`Ready`, `PrefillReady`, `DecodeReady`, `KVTransferReady`,
`EndpointPickerReady`, `Progressing`, `Degraded`) say what is missing and why.

Invalid specs are refused at admission by schema bounds and CEL rules that name the
field. The operator exposes Prometheus metrics on :8080 and `/healthz`, `/readyz` on
:8081, and elects a leader on a Lease in its own namespace.
"""


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, stable key order, no aliases."""

    def ignore_aliases(self, data):  # noqa: D401 - yaml API
        return True


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(obj) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def load(path: Path):
    return yaml.safe_load(path.read_text())


def load_all(text: str):
    return [d for d in yaml.safe_load_all(text) if d]


def render_chart(helm: str) -> list[dict]:
    out = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE],
        check=True, capture_output=True, text=True,
    ).stdout
    return load_all(out)


def strip_helm_labels(meta: dict) -> None:
    for key in HELM_LABELS:
        (meta.get("labels") or {}).pop(key, None)


def find(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        raise SystemExit(f"generate: expected one {kind} in the chart, found {len(found)}")
    return found[0]


def schema_has(schema: dict, path: str) -> bool:
    node = schema
    for part in path.split("."):
        node = (node.get("properties") or {}).get(part)
        if node is None:
            return False
    return True


def descriptors(rows, schema: dict, where: str) -> list[dict]:
    out = []
    for path, name, desc, xds in rows:
        if not schema_has(schema, path):
            raise SystemExit(f"generate: descriptor {where}.{path} is not in the CRD schema")
        out.append({"path": path, "displayName": name, "description": desc, "x-descriptors": xds})
    return out


def crd_files() -> list[Path]:
    return sorted((ROOT / "crds").glob("*.yaml"))


def csv(helm_docs: list[dict], version: str) -> dict:
    deployment = find(helm_docs, "Deployment")
    dep_spec = deployment["spec"]
    strip_helm_labels(dep_spec["template"]["metadata"])
    if dep_spec["template"]["spec"]["serviceAccountName"] != SERVICE_ACCOUNT:
        raise SystemExit("generate: the chart's ServiceAccount is not " + SERVICE_ACCOUNT)
    container = dep_spec["template"]["spec"]["containers"][0]
    # OLM scopes the operator to the OperatorGroup's target namespace (empty: all).
    env = container.setdefault("env", [])
    if not any(e.get("name") == "LLMD_WATCH_NAMESPACE" for e in env):
        env.append({"name": "LLMD_WATCH_NAMESPACE", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['olm.targetNamespaces']"}}})
    operator_image = container["image"]
    epp_image = next(a.split("=", 1)[1] for a in container["args"]
                     if a.startswith("--default-epp-image="))

    cluster_rules = load(ROOT / "config/rbac/role.yaml")["rules"]
    lease_rules = load(ROOT / "config/rbac/leader_election_role.yaml")["rules"]
    examples = [load(p) for p in sorted((ROOT / "config/samples").glob("*.yaml"))]

    owned = []
    for path in crd_files():
        crd = load(path)
        for v in crd["spec"]["versions"]:
            if not v.get("served"):
                continue
            schema = v["schema"]["openAPIV3Schema"]["properties"]
            kind = crd["spec"]["names"]["kind"]
            owned.append({
                "name": crd["metadata"]["name"],
                "version": v["name"],
                "kind": kind,
                "displayName": "LLM Deployment" if kind == "LLMDeployment" else kind,
                "description": "A model served by prefill/decode vLLM pods, a KV-cache "
                               "transfer fabric and an EndpointPicker.",
                "resources": [{"kind": k, "version": rv, "name": ""} for k, rv in OWNED_RESOURCES],
                "specDescriptors": descriptors(SPEC_DESCRIPTORS, schema["spec"], "spec"),
                "statusDescriptors": descriptors(STATUS_DESCRIPTORS, schema["status"], "status"),
            })

    icon = base64.b64encode((ROOT / "manifests/icon.svg").read_bytes()).decode()
    annotations = {
        "alm-examples": json.dumps(examples, indent=2),
        "capabilities": "Basic Install",
        "categories": "AI/Machine Learning",
        "containerImage": operator_image,
        "description": "Serve LLMs with llm-d style prefill/decode disaggregation, "
                       "a NIXL KV-cache fabric and a cache-aware EndpointPicker.",
        "olm.skipRange": f"<{version}",
        "operatorframework.io/suggested-namespace": NAMESPACE,
        "repository": "https://github.com/llmd-dev/llmd-operator",
        "support": "llmd-dev",
    }
    spec = {
        "displayName": "llmd-operator",
        "description": DESCRIPTION,
        "version": version,
    }
    if REPLACES:
        spec["replaces"] = REPLACES
    spec.update({
        "maturity": "alpha",
        "minKubeVersion": "1.30.0",
        "provider": {"name": "llmd-dev", "url": "https://github.com/llmd-dev/llmd-operator"},
        "maintainers": [{"name": "llmd-dev", "email": "maintainers@llmd.dev"}],
        "links": [{"name": "Source", "url": "https://github.com/llmd-dev/llmd-operator"},
                  {"name": "llm-d", "url": "https://llm-d.ai"}],
        "keywords": ["llm", "inference", "vllm", "llm-d", "gpu", "disaggregation"],
        "icon": [{"base64data": icon, "mediatype": "image/svg+xml"}],
        "labels": {"operatorframework.io/arch.amd64": "supported",
                   "operatorframework.io/arch.arm64": "supported",
                   "operatorframework.io/os.linux": "supported"},
        "installModes": [
            {"type": "OwnNamespace", "supported": True},
            {"type": "SingleNamespace", "supported": True},
            {"type": "MultiNamespace", "supported": False},
            {"type": "AllNamespaces", "supported": True},
        ],
        "customresourcedefinitions": {"owned": owned},
        "install": {
            "strategy": "deployment",
            "spec": {
                "deployments": [{
                    "name": deployment["metadata"]["name"],
                    "label": {k: v for k, v in deployment["metadata"]["labels"].items()
                              if k not in HELM_LABELS},
                    "spec": dep_spec,
                }],
                # Everything the operator touches is namespaced: no clusterPermissions.
                # OLM grants `permissions` in the OperatorGroup's target namespaces
                # (cluster-wide only for AllNamespaces), so OwnNamespace and
                # SingleNamespace installs get no cluster-scoped rights.
                "permissions": [{"serviceAccountName": SERVICE_ACCOUNT,
                                 "rules": cluster_rules + lease_rules}],
            },
        },
        "relatedImages": [
            {"name": "llmd-operator", "image": operator_image},
            {"name": "llmd-epp", "image": epp_image},
        ],
    })
    return {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {"name": f"{PACKAGE}.v{version}", "annotations": annotations},
        "spec": spec,
    }


BUNDLE_ANNOTATIONS = {
    "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
    "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
    "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
    "operators.operatorframework.io.bundle.package.v1": PACKAGE,
    "operators.operatorframework.io.bundle.channels.v1": CHANNEL,
    "operators.operatorframework.io.bundle.channel.default.v1": CHANNEL,
}

HEADER = "# Generated by manifests/hack/generate.py (make manifests); do not edit.\n"


def outputs(helm: str) -> dict[Path, str]:
    chart = load(CHART / "Chart.yaml")
    version = str(chart["appVersion"])
    docs = render_chart(helm)
    out: dict[Path, str] = {}
    for path in crd_files():
        text = path.read_text()
        out[CHART / "crds" / path.name] = text
        out[BUNDLE / "manifests" / path.name] = text

    service = find(docs, "Service")
    service["metadata"].pop("namespace", None)
    strip_helm_labels(service["metadata"])
    out[BUNDLE / "manifests" / f"{service['metadata']['name']}_v1_service.yaml"] = HEADER + dump(service)
    out[BUNDLE / "manifests" / f"{PACKAGE}.clusterserviceversion.yaml"] = HEADER + dump(csv(docs, version))
    out[BUNDLE / "metadata/annotations.yaml"] = HEADER + dump({"annotations": BUNDLE_ANNOTATIONS})
    for name, text in dashboards.files().items():
        out[CHART / "dashboards" / name] = text
    out[ROOT / "docs/dashboards.md"] = dashboards.markdown()
    labels = "".join(f"LABEL {k}={v}\n" for k, v in BUNDLE_ANNOTATIONS.items())
    out[BUNDLE / "bundle.Dockerfile"] = (
        "# Generated by manifests/hack/generate.py (make manifests); do not edit.\n"
        "# Build from manifests/bundle: docker build -f bundle.Dockerfile -t <registry>/llmd-operator-bundle:v"
        f"{version} .\n"
        "FROM scratch\n\n" + labels + "\nCOPY manifests /manifests/\nCOPY metadata /metadata/\n"
    )
    return out


def generated_dirs() -> list[Path]:
    return [CHART / "crds", CHART / "dashboards", BUNDLE / "manifests", BUNDLE / "metadata"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--helm", required=True, help="helm binary")
    ap.add_argument("--check", action="store_true", help="fail if the committed outputs are stale")
    args = ap.parse_args()
    want = outputs(args.helm)
    # Files in the generated directories that the generator no longer writes.
    stale = [p for d in generated_dirs() if d.is_dir() for p in sorted(d.iterdir())
             if p.is_file() and p not in want]
    if args.check:
        bad = 0
        for path, text in want.items():
            have = path.read_text() if path.exists() else ""
            if have != text:
                bad += 1
                rel = path.relative_to(ROOT)
                sys.stdout.writelines(difflib.unified_diff(
                    have.splitlines(True), text.splitlines(True), f"a/{rel}", f"b/{rel}", n=2))
        for path in stale:
            bad += 1
            print(f"stale generated file: {path.relative_to(ROOT)}")
        if bad:
            print(f"generate --check: {bad} file(s) out of date; run `make manifests`", file=sys.stderr)
            return 1
        print(f"generate --check: {len(want)} generated files up to date")
        return 0
    for path in stale:
        path.unlink()
    for path, text in want.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
