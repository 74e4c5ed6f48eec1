//! What the people running the stack look at, checked on the live stack: the
//! operator installed from the chart (its pod on a live node), a P/D deployment with
//! routing sidecars and precise prefix routing, and a real Prometheus configured from
//! the chart's PodMonitors, ServiceMonitor and PrometheusRule (as `make demo` runs
//! it; promtool checks the configuration and rules first). Every dashboard query,
//! template variable and annotation and every alert rule goes through Prometheus'
//! API: each must evaluate, and each of its selectors must find series, so a renamed
//! metric or a broken relabeling fails the build instead of a dashboard.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use llmd_api::LLMDeployment;
use serde_json::{Value, json};

use super::harness::*;

const RELEASE: &str = "obs";
const NAME: &str = "observed";
const MODEL: &str = "test/model";
/// The labels the chart's monitors give every series a dashboard filters on: a
/// selector still finds series with only these when its other matchers name events
/// that did not happen in the test (an HTTP 5xx).
const IDENTITY: [&str; 4] = ["__name__", "namespace", "llmd_deployment", "llmd_component"];

/// The cluster's Prometheus, as `e2e/hack/prometheus-up.sh` runs it.
struct Prometheus {
    url: String,
    http: reqwest::Client,
}

/// One vector selector of a query: its matchers (name, operator, value).
struct Selector(Vec<(String, String, String)>);

impl Selector {
    /// The selector with the matchers on `keep` labels only.
    fn render(&self, keep: impl Fn(&str) -> bool) -> String {
        let matchers: Vec<String> = self
            .0
            .iter()
            .filter(|(name, _, _)| keep(name))
            .map(|(name, op, value)| format!("{name}{op}{}", json!(value)))
            .collect();
        format!("{{{}}}", matchers.join(", "))
    }
}

impl Prometheus {
    /// Starts (or reconfigures) the cluster's Prometheus for the chart released as
    /// [`RELEASE`] in `namespace`.
    fn up(namespace: &str) -> Prometheus {
        let out = Command::new(repo().join("e2e/hack/prometheus-up.sh"))
            .env("LLMD_PROMETHEUS_RELEASE", RELEASE)
            .env("LLMD_PROMETHEUS_RELEASE_NAMESPACE", namespace)
            .output()
            .expect("prometheus-up.sh runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "prometheus-up.sh failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = stdout
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("LLMD_PROMETHEUS_URL="))
            .unwrap_or_else(|| panic!("prometheus-up.sh printed no URL: {stdout}"))
            .to_string();
        Prometheus {
            url,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        }
    }

    /// `data` of an API answer, or its error.
    async fn api(&self, path: &str, query: Option<&str>) -> Result<Value, String> {
        match query {
            Some(q) => self.api_form(path, &[("query", q)]).await,
            None => self.api_form(path, &[]).await,
        }
    }

    /// `data` of an API answer to `form` (posted; a GET when empty), or its error.
    async fn api_form(&self, path: &str, form: &[(&str, &str)]) -> Result<Value, String> {
        let request = if form.is_empty() {
            self.http.get(format!("{}{path}", self.url))
        } else {
            self.http.post(format!("{}{path}", self.url)).form(form)
        };
        let text = request
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// The active targets in `namespace`: (job, pod, health, last error).
    async fn targets(&self, namespace: &str) -> Vec<(String, String, String, String)> {
        let data = self
            .api("/api/v1/targets?state=active", None)
            .await
            .unwrap_or_default();
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["labels"]["namespace"] == namespace)
            .map(|t| {
                (
                    s(&t["scrapePool"]),
                    s(&t["labels"]["pod"]),
                    s(&t["health"]),
                    s(&t["lastError"]),
                )
            })
            .collect()
    }

    /// The label sets of every series matching `selector` with a sample in the last
    /// `seconds` (a target's failed scrape marks its series stale, which hides them
    /// from an instant query but not from this).
    async fn series(&self, selector: &str, seconds: u64) -> Result<Vec<Value>, String> {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs()
            .saturating_sub(seconds);
        let data = self
            .api_form(
                "/api/v1/series",
                &[("match[]", selector), ("start", &start.to_string())],
            )
            .await?;
        data.as_array()
            .cloned()
            .ok_or_else(|| format!("series: not a list: {data}"))
    }

    /// The series an instant query returns.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", Some(expr)).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Every vector selector of `expr`, from Prometheus' own parser.
    async fn selectors(&self, expr: &str) -> Result<Vec<Selector>, String> {
        fn walk(node: &Value, out: &mut Vec<Selector>) {
            match node {
                Value::Object(map) => {
                    if matches!(
                        map.get("type").and_then(Value::as_str),
                        Some("vectorSelector" | "matrixSelector")
                    ) {
                        let matchers = map["matchers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|m| {
                                let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                                (s("name"), s("type"), s("value"))
                            })
                            .collect();
                        out.push(Selector(matchers));
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let ast = self.api("/api/v1/parse_query", Some(expr)).await?;
        let mut out = Vec::new();
        walk(&ast, &mut out);
        Ok(out)
    }

    /// What is wrong with `expr` on the live stack: it does not evaluate, or one of
    /// its selectors finds no series (with every matcher, then with the identity
    /// labels alone). Counts the selectors that matched only by identity.
    async fn problems(&self, what: &str, expr: &str, loose: &mut usize) -> Vec<String> {
        if let Err(e) = self.query(expr).await {
            return vec![format!("{what}: `{expr}` does not evaluate: {e}")];
        }
        let selectors = match self.selectors(expr).await {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => return vec![format!("{what}: `{expr}` selects nothing")],
            Err(e) => return vec![format!("{what}: `{expr}` does not parse: {e}")],
        };
        let mut out = Vec::new();
        for s in selectors {
            let strict = s.render(|_| true);
            if !self.query(&strict).await.unwrap_or_default().is_empty() {
                continue;
            }
            let identity = s.render(|name| IDENTITY.contains(&name));
            if self.query(&identity).await.unwrap_or_default().is_empty() {
                out.push(format!("{what}: no series for {strict} (nor {identity})"));
            } else {
                *loose += 1;
            }
        }
        out
    }
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join("manifests/charts/llmd-operator/dashboards");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the chart's dashboards")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read dashboard");
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            (
                name.unwrap_or_default(),
                serde_json::from_str(&text).expect("dashboard JSON"),
            )
        })
        .collect()
}

/// Every query of a dashboard, named: panel targets, annotations, and the
/// `label_values(selector, label)` template variables as (selector, label).
fn dashboard_queries(file: &str, d: &Value) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for panel in d["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let what = format!(
                    "{file} panel \"{}\"",
                    panel["title"].as_str().unwrap_or("?")
                );
                out.push((what, expr.to_string(), None));
            }
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            let what = format!(
                "{file} annotation \"{}\"",
                a["name"].as_str().unwrap_or("?")
            );
            out.push((what, expr.to_string(), None));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let Some(def) = v["definition"].as_str() else {
            continue;
        };
        let (selector, label) = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .and_then(|s| s.rsplit_once(','))
            .unwrap_or_else(|| {
                panic!("{file}: variable {def} is not label_values(selector, label)")
            });
        let what = format!("{file} variable ${}", v["name"].as_str().unwrap_or("?"));
        out.push((
            what,
            selector.trim().to_string(),
            Some(label.trim().to_string()),
        ));
    }
    out
}

/// A dashboard query as Grafana sends it for this deployment.
fn substitute(expr: &str, namespace: &str) -> String {
    let out = expr
        .replace("$__rate_interval", "1m")
        .replace("$namespace", namespace)
        .replace("$deployment", NAME);
    assert!(!out.contains('$'), "a dashboard variable left in {out}");
    out
}

async fn pods(namespace: &str, labels: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client().await, namespace);
    api.list(&ListParams::default().labels(labels))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(is_pod_ready)
        .collect()
}

async fn one_pod_ip(namespace: &str, labels: &str) -> String {
    let found = pods(namespace, labels).await;
    pod_ip(
        found
            .first()
            .unwrap_or_else(|| panic!("a Ready pod with {labels}")),
    )
}

/// Traffic on every path a dashboard shows: streamed and whole completions through
/// the EndpointPicker (long ones split into prefill and decode), one with a TTFT
/// objective, and one sent to a decode pod's sidecar as a Gateway would. Returns the
/// number of requests the EndpointPicker answered.
async fn drive_traffic(namespace: &str, round: usize) -> usize {
    let epp = one_pod_ip(
        namespace,
        &format!("app.kubernetes.io/instance={NAME},app.kubernetes.io/component=endpoint-picker"),
    )
    .await;
    let decode = one_pod_ip(
        namespace,
        &format!("app.kubernetes.io/instance={NAME},llm-d.ai/role=decode"),
    )
    .await;
    let prefill = one_pod_ip(
        namespace,
        &format!("app.kubernetes.io/instance={NAME},llm-d.ai/role=prefill"),
    )
    .await;
    let long = |i: usize| {
        let clauses: Vec<String> = (0..60)
            .map(|c| format!("clause {c} of contract {i} in round {round} applies"))
            .collect();
        clauses.join(" ")
    };
    let http = pod_http();
    let send = |url: String, body: Value, headers: Vec<(&'static str, String)>| {
        let mut r = http.post(url).header("content-type", "application/json");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        async move {
            let response = r.body(body.to_string()).send().await.expect("an answer");
            assert_eq!(response.status(), 200);
            response.bytes().await.expect("the whole answer");
        }
    };
    let completions = format!("http://{epp}:8080/v1/completions");
    for i in 0..6 {
        let body = json!({"model": MODEL, "prompt": format!("short question {i} of round {round}"), "max_tokens": 6, "stream": true});
        send(
            completions.clone(),
            body,
            vec![("x-llm-d-slo-ttft-ms", "2000".into())],
        )
        .await;
    }
    for i in 0..3 {
        let body = json!({"model": MODEL, "prompt": long(i), "max_tokens": 4});
        send(completions.clone(), body, vec![]).await;
    }
    let body = json!({"model": MODEL, "prompt": long(9), "max_tokens": 4});
    send(
        format!("http://{decode}:8000/v1/completions"),
        body,
        vec![("x-prefiller-host-port", format!("{prefill}:8000"))],
    )
    .await;
    9
}

/// The number of series `expr` counts (0 when there are none).
async fn count(prometheus: &Prometheus, expr: &str) -> f64 {
    let series = prometheus.query(expr).await.unwrap_or_default();
    series
        .first()
        .and_then(|s| s["value"][1].as_str()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn prometheus_scrapes_the_live_stack_and_every_dashboard_query_and_alert_finds_series() {
    install_crds().await;
    let ns = TestNamespace::create_live("e2e-observability").await;
    install_chart_operator(RELEASE, &ns.name, "120s");
    let manifest = format!(
        "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: {NAME}\nspec:\n  model:\n    name: {MODEL}\n    uri: hf://{MODEL}\n  prefill:\n    replicas: 1\n  decode:\n    replicas: 1\n  router:\n    prefixCache: {{mode: Precise}}\n    disaggregation:\n      nonCachedTokens: 64\n"
    );
    let applied = apply_yaml(&ns.name, &manifest);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let lds: Api<LLMDeployment> = Api::namespaced(client().await, &ns.name);
    wait_for_ld(&lds, NAME, Duration::from_secs(180), "Ready", is_ready).await;

    let prometheus = Prometheus::up(&ns.name);
    // Every pod the monitors select is a healthy target (engines behind the decode
    // pod's sidecar included: their /metrics arrives gzipped through it).
    let deadline = Instant::now() + Duration::from_secs(60);
    let targets = loop {
        let targets = prometheus.targets(&ns.name).await;
        let jobs: std::collections::BTreeSet<&str> = targets.iter().map(|t| t.0.as_str()).collect();
        if jobs.len() == 4 && targets.iter().all(|t| t.2 == "up") {
            break targets.len();
        }
        assert!(
            Instant::now() < deadline,
            "every pod the chart's monitors select is scraped and up: {targets:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "Prometheus at {} scrapes {targets} targets in 4 jobs",
        prometheus.url
    );

    let mut answered = drive_traffic(&ns.name, 1).await;

    // Until every query and rule checks out (scrapes and rule evaluations run every
    // 5 s); then the last round's findings are the verdict.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut problems = Vec::new();
        let (mut checked, mut loose) = (0, 0);
        for (file, d) in dashboards() {
            for (what, expr, label) in dashboard_queries(&file, &d) {
                checked += 1;
                let expr = substitute(&expr, &ns.name);
                problems.extend(prometheus.problems(&what, &expr, &mut loose).await);
                if let Some(label) = label {
                    let series = prometheus.query(&expr).await.unwrap_or_default();
                    if !series
                        .iter()
                        .any(|s| s["metric"][label.as_str()].is_string())
                    {
                        problems.push(format!("{what}: no series of {expr} has label {label}"));
                    }
                }
            }
        }
        let rules = prometheus.api("/api/v1/rules", None).await.expect("rules");
        let mut rule_count = 0;
        for group in rules["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                rule_count += 1;
                let what = format!("rule {}", rule["name"].as_str().unwrap_or("?"));
                if rule["health"] != "ok" {
                    problems.push(format!(
                        "{what}: health {} {}",
                        rule["health"], rule["lastError"]
                    ));
                }
                let expr = rule["query"].as_str().unwrap_or_default();
                problems.extend(prometheus.problems(&what, expr, &mut loose).await);
            }
        }
        assert!(
            rule_count >= 7,
            "the chart's alert rules are loaded: {rules}"
        );
        if problems.is_empty() {
            eprintln!(
                "{checked} dashboard queries and {rule_count} alert rules evaluate and find series \
                 ({loose} selectors only by their identity labels)"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dashboard queries or alert rules without series on the live stack:\n{}",
            problems.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Label cardinality is per pod, never per request: the same traffic again, with
    // new prompts and request ids, brings no new label value once it is scraped. (It
    // may bring a new series: a pod first chosen for a profile in round two, say.)
    let ours = format!("{{namespace=\"{}\", __name__=~\"llmd_.+\"}}", ns.name);
    let label_values = |series: Vec<Value>| -> BTreeSet<(String, String)> {
        series
            .iter()
            .filter_map(Value::as_object)
            .flatten()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect()
    };
    let before = prometheus.series(&ours, 60).await.expect("our series");
    let (series_before, before) = (before.len(), label_values(before));
    answered += drive_traffic(&ns.name, 2).await;
    let scraped = format!(
        "sum(llmd_epp_request_duration_seconds_count{{namespace=\"{}\"}}) >= {answered}",
        ns.name
    );
    wait_until(Duration::from_secs(30), "the second round scraped", || {
        let (p, q) = (&prometheus, scraped.clone());
        async move { (count(p, &q).await > 0.0).then_some(()) }
    })
    .await;
    let after = prometheus.series(&ours, 60).await.expect("our series");
    let (series_after, after) = (after.len(), label_values(after));
    assert!(
        series_before > 50,
        "our series are scraped: {series_before}"
    );
    let new: Vec<_> = after.difference(&before).collect();
    assert!(
        new.is_empty(),
        "a second round of requests brought new label values to {ours}: {new:?}"
    );
    eprintln!(
        "{series_before} series of ours with {} label values; after a second round of \
         requests {series_after} series, no new label value",
        before.len()
    );

    helm_ok(&["uninstall", RELEASE, "--namespace", &ns.name, "--wait"]);
}
