//! The Helm chart on the real control plane: `helm install` creates the operator's
//! objects, the chart's RBAC is enough to run the operator (a local process with a
//! token of the chart's ServiceAccount reconciles a sample to Ready and leads on a
//! Lease in the release namespace), and `helm uninstall` leaves none of them behind
//! while the CRD stays.
//!
//! There is no kubelet: kwok marks the chart's pod Ready but nothing runs in it, so
//! the real reconcile is done by the local process with the ServiceAccount's token.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use llmd_api::LLMDeployment;
use serde_json::json;

use super::harness::*;

const RELEASE: &str = "llmd-e2e";
/// The chart's fullname for RELEASE: every object of the release is named this.
const FULLNAME: &str = "llmd-e2e-llmd-operator";
const CRD: &str = "llmdeployments.llmd.dev";

fn chart() -> PathBuf {
    repo().join("manifests/charts/llmd-operator")
}

fn helm(args: &[&str]) -> Output {
    Command::new(bin("helm"))
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("helm runs")
}

fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kubectl with another kubeconfig (the ServiceAccount's).
fn kubectl_as(config: &Path, args: &[&str]) -> Output {
    Command::new(bin("kubectl"))
        .args(args)
        .env("KUBECONFIG", config)
        .output()
        .expect("kubectl runs")
}

/// `kubectl auth can-i` as the ServiceAccount: "yes" or "no".
fn can_i(config: &Path, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&kubectl_as(config, &all).stdout)
        .trim()
        .to_string()
}

/// A kubeconfig for the same API server and CA as the admin one, authenticating
/// with a token of the ServiceAccount `sa` in `namespace`.
fn service_account_kubeconfig(namespace: &str, sa: &str) -> PathBuf {
    let view = |path: &str| {
        kubectl_ok(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "--flatten",
            "-o",
            &format!("jsonpath={{.clusters[0].cluster.{path}}}"),
        ])
    };
    let server = view("server");
    let ca = view("certificate-authority-data");
    assert!(
        !server.is_empty() && !ca.is_empty(),
        "admin kubeconfig has a server and a CA"
    );
    let token = kubectl_ok(&["create", "token", sa, "-n", namespace, "--duration", "1h"]);
    let token = token.trim();
    assert!(!token.is_empty(), "a token for {namespace}/{sa}");
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {sa}\n  user:\n    token: {token}\ncontexts:\n- name: {sa}\n  context:\n    cluster: e2e\n    user: {sa}\n    namespace: {namespace}\ncurrent-context: {sa}\n"
    );
    let dir = repo().join("target/e2e-logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    let path = dir.join(format!("{namespace}-{sa}.kubeconfig"));
    std::fs::write(&path, config).expect("write kubeconfig");
    path
}

/// Names of the objects of `kind` labelled as this release's (namespaced or not).
fn release_objects(kind: &str, namespace: Option<&str>) -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let mut args = vec!["get", kind, "-l", &selector, "-o", "name"];
    if let Some(ns) = namespace {
        args.extend_from_slice(&["-n", ns]);
    }
    kubectl_ok(&args)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The chart's objects: kind, name suffix after FULLNAME, namespaced.
const OBJECTS: [(&str, &str, bool); 7] = [
    ("serviceaccount", "", true),
    ("deployment", "", true),
    ("service", "-metrics", true),
    ("role", "-leader-election", true),
    ("rolebinding", "-leader-election", true),
    ("clusterrole", "", false),
    ("clusterrolebinding", "", false),
];

/// Whether the chart object `kind` named FULLNAME + `suffix` exists.
fn exists(kind: &str, suffix: &str, namespace: Option<&str>) -> bool {
    let name = format!("{FULLNAME}{suffix}");
    let mut args = vec!["get", kind, &name, "--ignore-not-found", "-o", "name"];
    if let Some(ns) = namespace {
        args.extend_from_slice(&["-n", ns]);
    }
    !kubectl_ok(&args).trim().is_empty()
}

/// Kinds swept by label after uninstall (namespaced, then cluster-scoped).
const SWEEP_NAMESPACED: [&str; 6] = [
    "serviceaccounts",
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "deployments.apps",
    "services",
    "pods",
];
const SWEEP_CLUSTER: [&str; 2] = [
    "clusterroles.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
];

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn helm_chart_rbac_runs_the_operator_and_uninstall_leaves_nothing() {
    // The suite's CRDs are installed first (other tests need them whatever this one
    // does). The chart's crds/ is a byte copy of crds/ (make manifests-test), so
    // `helm install` exactly as the README says finds the CRD present and leaves it
    // alone, as Helm does on any cluster that already has it.
    install_crds().await;
    let system = TestNamespace::create("e2e-helm-system").await;
    let apps = TestNamespace::create("e2e-helm-apps").await;
    let client = client().await;

    let chart = chart();
    helm_ok(&[
        "install",
        RELEASE,
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        &system.name,
        "--wait",
        "--timeout",
        "120s",
    ]);

    // Every object of the chart exists, named after the release.
    for (kind, suffix, namespaced) in OBJECTS {
        let ns = namespaced.then_some(system.name.as_str());
        assert!(
            exists(kind, suffix, ns),
            "{kind} {FULLNAME}{suffix} installed"
        );
    }
    kubectl_ok(&["get", "crd", CRD]);

    // The ServiceAccount's credentials: allowed exactly what the chart granted.
    let sa_config = service_account_kubeconfig(&system.name, FULLNAME);
    assert_eq!(
        can_i(
            &sa_config,
            &["create", "leases.coordination.k8s.io", "-n", &system.name]
        ),
        "yes"
    );
    assert_eq!(
        can_i(
            &sa_config,
            &["create", "leases.coordination.k8s.io", "-n", &apps.name]
        ),
        "no",
        "the lease Role is only in the release namespace"
    );
    assert_eq!(
        can_i(
            &sa_config,
            &["patch", "statefulsets.apps", "-n", &apps.name]
        ),
        "yes"
    );
    assert_eq!(can_i(&sa_config, &["delete", "nodes"]), "no");
    assert_eq!(
        can_i(&sa_config, &["get", "secrets", "-n", &apps.name]),
        "no"
    );

    // The operator as that ServiceAccount, leading on a Lease in the release
    // namespace, reconciles a sample to Ready.
    let operator = Operator::start_with(&apps.name, "helm-sa", &system.name, &sa_config, &[]);
    assert!(
        apply_yaml(&apps.name, &small_spec("helmed", 1, 1))
            .status
            .success()
    );
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &apps.name);
    wait_for_ld(
        &lds,
        "helmed",
        Duration::from_secs(120),
        "Ready under the chart's RBAC",
        is_ready,
    )
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &system.name);
    let holder = leases
        .get("llmd-operator-leader")
        .await
        .expect("leader lease in the release namespace")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("helm-sa"));
    assert_eq!(
        operator.metric("llmd_operator_leader").await,
        Some(1.0),
        "the operator leads"
    );
    operator.stop();

    // helm upgrade to one watched namespace: the ClusterRole is then bound there by a
    // RoleBinding only, and that is enough for an operator scoped to it.
    helm_ok(&[
        "upgrade",
        RELEASE,
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        &system.name,
        "--reuse-values",
        "--set",
        &format!("watchNamespace={}", apps.name),
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert!(!exists("clusterrolebinding", "", None));
    assert!(exists("rolebinding", "", Some(&apps.name)));
    assert_eq!(
        can_i(
            &sa_config,
            &["patch", "statefulsets.apps", "-n", &apps.name]
        ),
        "yes"
    );
    assert_eq!(
        can_i(
            &sa_config,
            &["patch", "statefulsets.apps", "-n", &system.name]
        ),
        "no",
        "no grant outside the watched namespace"
    );
    let operator = Operator::start_with(&apps.name, "helm-sa", &system.name, &sa_config, &[]);
    lds.patch(
        "helmed",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"decode": {"replicas": 2}}})),
    )
    .await
    .expect("scale decode");
    let ld = wait_for_ld(
        &lds,
        "helmed",
        Duration::from_secs(120),
        "Ready at 2 decode pods with a RoleBinding only",
        |ld| {
            is_ready(ld)
                && ld
                    .status
                    .as_ref()
                    .and_then(|s| s.decode.as_ref())
                    .is_some_and(|d| d.ready_replicas == 2)
        },
    )
    .await;
    assert_eq!(ld.metadata.generation, Some(2));
    operator.stop();

    // Uninstall: no object of the release is left; the CRD and the user's
    // LLMDeployments stay.
    helm_ok(&[
        "uninstall",
        RELEASE,
        "--namespace",
        &system.name,
        "--wait",
        "--timeout",
        "120s",
    ]);
    for (kind, suffix, namespaced) in OBJECTS {
        let ns = namespaced.then_some(system.name.as_str());
        assert!(
            !exists(kind, suffix, ns),
            "{kind} {FULLNAME}{suffix} left behind"
        );
    }
    assert!(
        !exists("rolebinding", "", Some(&apps.name)),
        "RoleBinding in the watched namespace left behind"
    );
    wait_until(
        Duration::from_secs(60),
        "nothing labelled with the release left (pods included)",
        || {
            let system = system.name.clone();
            async move {
                let left: Vec<String> = SWEEP_NAMESPACED
                    .iter()
                    .flat_map(|k| release_objects(k, Some(&system)))
                    .chain(SWEEP_CLUSTER.iter().flat_map(|k| release_objects(k, None)))
                    .collect();
                left.is_empty().then_some(())
            }
        },
    )
    .await;
    assert!(
        helm(&["status", RELEASE, "--namespace", &system.name])
            .status
            .code()
            != Some(0),
        "the release is gone"
    );
    kubectl_ok(&["get", "crd", CRD]);
    assert!(
        lds.get_opt("helmed").await.expect("get").is_some(),
        "uninstalling the operator keeps LLMDeployments"
    );
}
