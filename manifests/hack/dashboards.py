"""The Grafana dashboards the chart ships, generated from one description each
(`make manifests` writes them to manifests/charts/llmd-operator/dashboards/).

Every query selects series by the labels the chart's PodMonitors attach
(`llmd_deployment` from the pod's app.kubernetes.io/instance, `llmd_component` from
app.kubernetes.io/component, and Prometheus' own `namespace` and `pod`), so one
`deployment` variable filters every panel. Metric names are checked against what the
binaries export by tests in the epp and operator crates.
"""

from __future__ import annotations

import json

EPP = 'namespace="$namespace", llmd_deployment="$deployment", llmd_component="endpoint-picker"'
ENGINE = 'namespace="$namespace", llmd_deployment="$deployment", llmd_component=~"decode|prefill"'
# P/D legs run by the EndpointPicker's proxy (llmd_epp_pd_*) and the decode pods'
# routing sidecars (llmd_sidecar_pd_*): one family name pattern, both sources.
PD = 'namespace="$namespace", llmd_deployment="$deployment"'
RATE = "$__rate_interval"


def quantiles(metric: str, selector: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"p{int(q * 100)}",
        )
        for q in (0.5, 0.9, 0.99)
    ]


def mean(metric: str, selector: str, by: str = "") -> str:
    group = f" by ({by})" if by else ""
    return (
        f"sum{group} (rate({metric}_sum{{{selector}}}[{RATE}])) / "
        f"sum{group} (rate({metric}_count{{{selector}}}[{RATE}]))"
    )


# (title, unit, [(expr, legend)], description)
FLEET = [
    ("Requests per second", "reqps", [
        (f"sum by (frontend) (rate(llmd_epp_request_duration_seconds_count{{{EPP}}}[{RATE}]))", "{{frontend}}"),
    ], "Requests the EndpointPicker answered, per front end (proxy or ext-proc)."),
    ("Time to first token", "s", quantiles("llmd_epp_time_to_first_token_seconds", EPP),
     "As the client sees it through the EndpointPicker, both front ends."),
    ("Inter-token latency", "s", quantiles("llmd_epp_inter_token_latency_seconds", EPP),
     "Time between streamed chunks (about one token each)."),
    ("Errors per second", "reqps", [
        (f'sum by (code) (rate(llmd_epp_proxy_requests_total{{{EPP}, code=~"5.."}}[{RATE}]))', "HTTP {{code}}"),
        (f"sum (rate(llmd_epp_requests_shed_total{{{EPP}}}[{RATE}]))", "shed (429)"),
        (f"sum (rate(llmd_epp_no_endpoint_total{{{EPP}}}[{RATE}]))", "no endpoint"),
        (f'sum by (stage, cause) (rate({{__name__=~"llmd_(epp|sidecar)_pd_failures_total", {PD}}}[{RATE}]))', "P/D {{stage}}: {{cause}}"),
    ], "Server errors, requests shed at the admission limit, requests no pod could serve, failed P/D legs."),
    ("Model-server pods in the pool", "short", [
        (f"max by (role) (llmd_epp_endpoints{{{EPP}}})", "{{role}}"),
    ], "Pods the EndpointPicker routes to, per role."),
]

LOAD = [
    ("Waiting requests per pod", "short", [
        (f"max by (pod) (vllm:num_requests_waiting{{{ENGINE}}})", "{{pod}}"),
    ], "The engine's queue."),
    ("Running requests per pod", "short", [
        (f"max by (pod) (vllm:num_requests_running{{{ENGINE}}})", "{{pod}}"),
    ], "Requests the engine is decoding or prefilling."),
    ("KV-cache use per pod", "percentunit", [
        (f"max by (pod) (vllm:kv_cache_usage_perc{{{ENGINE}}})", "{{pod}}"),
    ], "Share of the engine's KV-cache blocks in use."),
    ("Prefix-cache hit ratio per pod", "percentunit", [
        (
            f'sum by (pod) (rate({{__name__=~"vllm:prefix_cache_hits(_total)?", {ENGINE}}}[{RATE}])) / '
            f'sum by (pod) (rate({{__name__=~"vllm:prefix_cache_queries(_total)?", {ENGINE}}}[{RATE}]))',
            "{{pod}}",
        ),
    ], "Prompt tokens the engine found cached (vLLM's counters, with or without the _total suffix)."),
    ("Waiting requests per pod, as the EndpointPicker sees them", "short", [
        (f"max by (endpoint) (llmd_epp_endpoint_waiting_requests{{{EPP}}})", "{{endpoint}}"),
    ], "From the EndpointPicker's last scrape of each pod (what its queue scorer reads)."),
]

ROUTING = [
    ("Decisions per pod", "reqps", [
        (f"sum by (endpoint, profile) (rate(llmd_epp_scheduling_decisions_total{{{EPP}}}[{RATE}]))", "{{endpoint}} ({{profile}})"),
    ], "Where requests went, per scheduling profile."),
    ("Prefill/decode split", "reqps", [
        (f"sum by (outcome) (rate(llmd_epp_pd_decisions_total{{{EPP}}}[{RATE}]))", "{{outcome}}"),
    ], "Requests split into prefill + decode, and served aggregated."),
    ("P/D legs", "s", [
        (f'histogram_quantile(0.9, sum by (le, leg) (rate({{__name__=~"llmd_(epp|sidecar)_pd_leg_duration_seconds_bucket", {PD}}}[{RATE}])))', "p90 {{leg}}"),
        (f'histogram_quantile(0.5, sum by (le, leg) (rate({{__name__=~"llmd_(epp|sidecar)_pd_leg_duration_seconds_bucket", {PD}}}[{RATE}])))', "p50 {{leg}}"),
    ], "Prefill leg until the prefiller's answer; decode leg until the first byte of the decode answer (the KV pull and the first token). From the EndpointPicker's proxy and the decode pods' routing sidecars."),
    ("Share of the winner's score per scorer", "percentunit", [
        (mean("llmd_epp_winner_scorer_share", EPP, "scorer"), "{{scorer}}"),
    ], "What each scorer contributed to the chosen pod's total (weight x score / total)."),
    ("Weights in force", "short", [
        (f"max by (profile, scorer) (llmd_epp_scorer_weight{{{EPP}}})", "{{scorer}} ({{profile}})"),
    ], "Scorer weights of the config in force; the tuner's changes appear as steps (annotated)."),
    ("Prefix match", "percentunit", [
        (mean("llmd_epp_prefix_match_ratio", EPP), "prompt blocks held by the chosen pod"),
    ], "Share of each prompt's blocks the chosen pod held."),
    ("Pods routed from their own KV events", "short", [
        (f"sum by (pod) (llmd_epp_endpoint_prefix_precise{{{EPP}}})", "{{pod}}"),
    ], "Precise prefix mode: per EndpointPicker replica, pods whose events flow."),
    ("TTFT prediction error", "percentunit", quantiles("llmd_epp_ttft_prediction_error_ratio", EPP),
     "|predicted - observed| / observed of each TTFT the latency models predicted."),
    ("Requests predicted to miss their TTFT objective", "reqps", [
        (f"sum by (objective) (rate(llmd_epp_slo_predicted_misses_total{{{EPP}}}[{RATE}]))", "{{objective}}"),
        (f"sum by (header) (rate(llmd_epp_slo_headers_invalid_total{{{EPP}}}[{RATE}]))", "ignored: {{header}}"),
    ], "Requests no pod was predicted to serve within their objective (served anyway), and objective headers ignored as not a number."),
]

OPERATOR_SEL = 'namespace="$namespace"'
OPERATOR = [
    ("Reconciles per second", "ops", [
        (f"sum (rate(llmd_operator_reconciles_total{{{OPERATOR_SEL}}}[{RATE}]))", "reconciles"),
        (f"sum by (category) (rate(llmd_operator_reconcile_errors_total{{{OPERATOR_SEL}}}[{RATE}]))", "errors: {{category}}"),
    ], "Reconciles run and failed, by error category."),
    ("Reconcile duration", "s", quantiles("llmd_operator_reconcile_duration_seconds", OPERATOR_SEL),
     "Time one reconcile took."),
    ("Leader", "short", [
        (f"max by (pod) (llmd_operator_leader{{{OPERATOR_SEL}}})", "{{pod}}"),
    ], "1 for the replica holding the leader lease."),
    ("Tuner verdicts", "short", [
        (f"sum by (outcome) (increase(llmd_operator_tuner_verdicts_total{{{OPERATOR_SEL}}}[{RATE}]))", "{{outcome}}"),
    ], "Tuning experiments ended, by outcome, all deployments."),
    ("Writes", "ops", [
        (f"sum (rate(llmd_operator_status_writes_total{{{OPERATOR_SEL}}}[{RATE}]))", "status writes"),
        (f"sum by (kind) (rate(llmd_operator_child_applies_total{{{OPERATOR_SEL}}}[{RATE}]))", "applies: {{kind}}"),
    ], "Status writes and server-side applies of children."),
]


def datasource_var() -> dict:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"}


def query_var(name: str, label: str, query: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "definition": query,
        "query": {"query": query, "refId": name},
        "refresh": 2,
        "sort": 1,
    }


def deployment_vars() -> list[dict]:
    return [
        datasource_var(),
        query_var("namespace", "Namespace", "label_values(llmd_epp_config_info, namespace)"),
        query_var(
            "deployment",
            "LLMDeployment",
            'label_values(llmd_epp_config_info{namespace="$namespace"}, llmd_deployment)',
        ),
    ]


def tuner_annotation() -> dict:
    expr = (
        f'sum (increase(llmd_epp_config_reloads_total{{{EPP}, outcome="applied"}}[1m])) > 0'
    )
    return {
        "name": "Config applied (tuner or spec change)",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "enable": True,
        "iconColor": "orange",
        "expr": expr,
        "step": "1m",
        "titleFormat": "EndpointPickerConfig applied",
    }


def dashboard(uid: str, title: str, panels: list, variables: list[dict],
              annotations: list[dict]) -> dict:
    out = []
    for i, (panel_title, unit, targets, description) in enumerate(panels):
        out.append({
            "id": i + 1,
            "type": "timeseries",
            "title": panel_title,
            "description": description,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [
                {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend}
                for j, (expr, legend) in enumerate(targets)
            ],
        })
    return {
        "uid": uid,
        "title": title,
        "tags": ["llmd"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": annotations},
        "panels": out,
    }


def dashboards() -> dict[str, dict]:
    per_deployment = deployment_vars()
    operator_vars = [
        datasource_var(),
        query_var("namespace", "Operator namespace",
                  "label_values(llmd_operator_reconciles_total, namespace)"),
    ]
    return {
        "llmd-fleet.json": dashboard("llmd-fleet", "llmd / Fleet", FLEET, per_deployment, []),
        "llmd-model-servers.json": dashboard(
            "llmd-model-servers", "llmd / Model servers", LOAD, per_deployment, []),
        "llmd-routing.json": dashboard(
            "llmd-routing", "llmd / Routing", ROUTING, per_deployment, [tuner_annotation()]),
        "llmd-operator.json": dashboard("llmd-operator", "llmd / Operator", OPERATOR, operator_vars, []),
    }


def files() -> dict[str, str]:
    """File name to JSON text."""
    return {name: json.dumps(model, indent=2) + "\n" for name, model in dashboards().items()}


def markdown() -> str:
    """docs/dashboards.md: every dashboard's panels and queries."""
    lines = [
        "# Dashboards: panels and queries",
        "",
        "Generated by `make manifests` from `manifests/hack/dashboards.py`; do not edit.",
        "The chart ships them as ConfigMaps (`dashboards.enabled`); see",
        "[observability.md](observability.md) for the labels they select by.",
    ]
    for name, model in dashboards().items():
        variables = ", ".join(f"`{v['name']}`" for v in model["templating"]["list"])
        lines += ["", f"## {model['title']} (`{name}`)", "", f"Variables: {variables}."]
        for a in model["annotations"]["list"]:
            lines += ["", f"Annotation *{a['name']}*: `{a['expr']}`"]
        for panel in model["panels"]:
            lines += ["", f"### {panel['title']}", "", panel["description"], ""]
            for t in panel["targets"]:
                lines.append(f"- `{t['legendFormat']}`: `{t['expr']}`")
    return "\n".join(lines) + "\n"
