//! `llmd-bench-scale`: how the operator copes with many LLMDeployments. It creates
//! `--deployments` of them at once in a namespace the operator watches (on a
//! cluster of fake GPU nodes), then measures, from a watch of LLMDeployments:
//!
//! - **children applied**: when each deployment first has a status for its
//!   generation (the reconcile writes status after applying every child): what the
//!   operator alone takes;
//! - **Ready**: when each is Ready (also bounded by the controller-manager, the
//!   scheduler and kwok, which create and run the pods);
//! - the operator's **peak RSS** (VmHWM of `--operator-pid`);
//! - **writes to converge**: server-side applies per child object (1.0 when every
//!   child was written exactly once) and status writes per deployment, from the
//!   operator's metrics;
//! - a **quiet minute**: writes during `--quiet-seconds` once everything is Ready
//!   (0 expected);
//! - **where the CPU went** until all were Ready: the machine's busy share and the
//!   CPU seconds of the operator and of each control-plane process (found by name),
//!   which say whether the run is bounded by the machine or by the operator. Run it
//!   alone: another cluster's processes would be counted too.
//!
//! Run by `make bench-scale` (see e2e/hack/bench-scale.sh).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use llmd_api::LLMDeployment;
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(
    name = "llmd-bench-scale",
    about = "The operator under many LLMDeployments"
)]
struct Args {
    /// LLMDeployments to create.
    #[arg(long, default_value_t = 1000)]
    deployments: usize,
    /// Namespace the operator watches.
    #[arg(long, default_value = "bench-scale")]
    namespace: String,
    /// The operator's process (for its peak RSS).
    #[arg(long)]
    operator_pid: u32,
    /// The operator's metrics endpoint, e.g. http://127.0.0.1:9100/metrics.
    #[arg(long)]
    operator_metrics: String,
    /// How long to wait for every deployment to be Ready, seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// The quiet window after everything is Ready, seconds.
    #[arg(long, default_value_t = 60)]
    quiet_seconds: u64,
    /// Creations in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// When each deployment reached each milestone, seconds from the start.
#[derive(Default)]
struct Milestones {
    applied: HashMap<String, f64>,
    ready: HashMap<String, f64>,
}

fn manifest(name: &str) -> LLMDeployment {
    let yaml = format!(
        "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: {name}\nspec:\n  model:\n    name: test/model\n    uri: hf://test/model\n  decode:\n    replicas: 2\n  router:\n    replicas: 1\n"
    );
    // A literal that always parses.
    serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("bench manifest: {e}"))
}

fn observed(ld: &LLMDeployment) -> (bool, bool) {
    let generation = ld.metadata.generation;
    let Some(status) = ld.status.as_ref() else {
        return (false, false);
    };
    let applied = status.observed_generation.is_some() && status.observed_generation == generation;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True" && c.observed_generation == generation);
    (applied, ready)
}

/// Sum of every sample of `name` in a Prometheus page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(url: &str) -> Result<String, String> {
    reqwest::get(url)
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())
}

/// The process's peak resident set, MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .status()
        .ok()?;
    Some(status.vmhwm? as f64 / 1024.0)
}

/// Processes whose CPU time is reported: their name (as the kernel keeps it, at
/// most 15 bytes) and how the table names them.
const CONTROL_PLANE: [(&str, &str); 5] = [
    ("kube-apiserver", "kube-apiserver"),
    ("etcd", "etcd"),
    ("kube-controller", "controller-manager"),
    ("kube-scheduler", "scheduler"),
    ("kwok", "kwok"),
];

/// CPU time used so far: the machine's busy and total time, and each reported
/// process's, seconds.
#[derive(Default)]
struct CpuSample {
    busy: f64,
    total: f64,
    by_process: BTreeMap<&'static str, f64>,
}

impl CpuSample {
    fn take(operator_pid: u32) -> CpuSample {
        use procfs::CurrentSI;
        let tick = 1.0 / procfs::ticks_per_second() as f64;
        let mut sample = CpuSample::default();
        if let Ok(stats) = procfs::KernelStats::current() {
            let t = &stats.total;
            let idle = t.idle + t.iowait.unwrap_or(0);
            let busy = t.user
                + t.nice
                + t.system
                + t.irq.unwrap_or(0)
                + t.softirq.unwrap_or(0)
                + t.steal.unwrap_or(0);
            sample.busy = busy as f64 * tick;
            sample.total = (busy + idle) as f64 * tick;
        }
        let Ok(processes) = procfs::process::all_processes() else {
            return sample;
        };
        for stat in processes.flatten().filter_map(|p| p.stat().ok()) {
            let name = if u32::try_from(stat.pid).ok() == Some(operator_pid) {
                Some("operator")
            } else {
                CONTROL_PLANE
                    .iter()
                    .find(|(comm, _)| stat.comm == *comm)
                    .map(|(_, name)| *name)
            };
            if let Some(name) = name {
                *sample.by_process.entry(name).or_default() +=
                    (stat.utime + stat.stime) as f64 * tick;
            }
        }
        sample
    }

    /// What was used from `earlier` to this sample.
    fn since(&self, earlier: &CpuSample) -> CpuSample {
        CpuSample {
            busy: self.busy - earlier.busy,
            total: self.total - earlier.total,
            by_process: self
                .by_process
                .iter()
                .map(|(name, s)| (*name, s - earlier.by_process.get(name).unwrap_or(&0.0)))
                .collect(),
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Objects of kind `K` the operator manages in `ns`.
async fn managed<K>(client: &Client, ns: &str) -> Result<usize, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=llmd-operator");
    Ok(Api::<K>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
        .items
        .len())
}

/// Child objects in the namespace (every kind an aggregated deployment owns).
async fn count_children(client: &Client, ns: &str) -> Result<usize, kube::Error> {
    Ok(managed::<StatefulSet>(client, ns).await?
        + managed::<Deployment>(client, ns).await?
        + managed::<Service>(client, ns).await?
        + managed::<ConfigMap>(client, ns).await?
        + managed::<ServiceAccount>(client, ns).await?
        + managed::<Role>(client, ns).await?
        + managed::<RoleBinding>(client, ns).await?
        + managed::<PodDisruptionBudget>(client, ns).await?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(ok) => {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("llmd-bench-scale: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<bool, String> {
    let client = Client::try_default().await.map_err(|e| e.to_string())?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(args.namespace.clone());
    let _ = namespaces.create(&PostParams::default(), &ns).await;
    let lds: Api<LLMDeployment> = Api::namespaced(client.clone(), &args.namespace);
    let before = metrics(&args.operator_metrics).await?;

    let start = Instant::now();
    let cpu_at_start = CpuSample::take(args.operator_pid);
    let milestones = Arc::new(Mutex::new(Milestones::default()));
    // The watch records milestones as they come.
    let watch = {
        let (lds, milestones) = (lds.clone(), milestones.clone());
        tokio::spawn(async move {
            let mut events = watcher(lds, watcher::Config::default()).boxed();
            while let Ok(Some(event)) = events.try_next().await {
                let objects = match event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![o],
                    _ => continue,
                };
                let now = start.elapsed().as_secs_f64();
                let mut m = milestones.lock().await;
                for ld in objects {
                    let name = ld.metadata.name.clone().unwrap_or_default();
                    let (applied, ready) = observed(&ld);
                    if applied {
                        m.applied.entry(name.clone()).or_insert(now);
                    }
                    if ready {
                        m.ready.entry(name).or_insert(now);
                    }
                }
            }
        })
    };
    let names: Vec<String> = (0..args.deployments)
        .map(|i| format!("llm-{i:04}"))
        .collect();
    let created: Vec<Result<(), String>> = stream::iter(names.clone())
        .map(|name| {
            let lds = lds.clone();
            async move {
                lds.create(&PostParams::default(), &manifest(&name))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("create {name}: {e}"))
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    if let Some(Err(e)) = created.iter().find(|r| r.is_err()) {
        return Err(e.clone());
    }
    let created_in = start.elapsed().as_secs_f64();
    eprintln!(
        "created {} LLMDeployments in {created_in:.1} s",
        args.deployments
    );
    let deadline = start + Duration::from_secs(args.timeout);
    let mut peak_rss = 0.0f64;
    let mut last_report = Instant::now();
    loop {
        if let Some(rss) = peak_rss_mib(args.operator_pid) {
            peak_rss = peak_rss.max(rss);
        }
        let (applied, ready) = {
            let m = milestones.lock().await;
            (m.applied.len(), m.ready.len())
        };
        if last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "{:.0} s: {applied} applied, {ready} Ready",
                start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if ready >= args.deployments {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("timed out: {applied} applied, {ready} Ready");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu = CpuSample::take(args.operator_pid).since(&cpu_at_start);
    let start_to_ready = start.elapsed().as_secs_f64();
    let converged = metrics(&args.operator_metrics).await?;
    let children = count_children(&client, &args.namespace)
        .await
        .map_err(|e| e.to_string())?;
    // The last deployments' final status writes land just after they turn Ready:
    // the quiet window starts once the write counters held still for 5 s.
    let writes = |page: &str| {
        metric(page, "llmd_operator_child_applies_total")
            + metric(page, "llmd_operator_status_writes_total")
    };
    let mut settled_page = converged.clone();
    let mut still_since = Instant::now();
    let settle_deadline = Instant::now() + Duration::from_secs(60);
    while still_since.elapsed() < Duration::from_secs(5) && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let page = metrics(&args.operator_metrics).await?;
        if writes(&page) != writes(&settled_page) {
            still_since = Instant::now();
        }
        settled_page = page;
    }
    let settling_writes = writes(&settled_page) - writes(&converged);
    // The quiet window.
    tokio::time::sleep(Duration::from_secs(args.quiet_seconds)).await;
    let quiet = metrics(&args.operator_metrics).await?;
    if let Some(rss) = peak_rss_mib(args.operator_pid) {
        peak_rss = peak_rss.max(rss);
    }
    watch.abort();

    let m = milestones.lock().await;
    let mut applied: Vec<f64> = m.applied.values().copied().collect();
    let mut ready: Vec<f64> = m.ready.values().copied().collect();
    applied.sort_by(f64::total_cmp);
    ready.sort_by(f64::total_cmp);
    let delta = |after: &str, before: &str, name: &str| metric(after, name) - metric(before, name);
    let applies = delta(&converged, &before, "llmd_operator_child_applies_total");
    let status_writes = delta(&converged, &before, "llmd_operator_status_writes_total");
    let quiet_writes = writes(&quiet) - writes(&settled_page);
    let n = args.deployments as f64;
    let all_ready = ready.len() == args.deployments;
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| deployments created | {} in {created_in:.1} s |",
        args.deployments
    );
    // Seconds after creation, sorted: p50, p99 and when the last one got there.
    let timing = |what: &str, times: &[f64]| {
        let all = if times.len() == args.deployments {
            format!("{:.1} s", times.last().copied().unwrap_or(f64::NAN))
        } else {
            format!("{} of {} only", times.len(), args.deployments)
        };
        println!(
            "| {what} | p50 {:.1} s, p99 {:.1} s, all {all} |",
            percentile(times, 0.5),
            percentile(times, 0.99),
        );
    };
    timing("children applied (operator)", &applied);
    timing("Ready (with controllers, scheduler, kwok)", &ready);
    println!("| operator peak RSS | {peak_rss:.0} MiB |");
    println!(
        "| child applies per child object | {:.2} ({applies:.0} applies, {children} objects) |",
        if children > 0 {
            applies / children as f64
        } else {
            f64::NAN
        }
    );
    println!(
        "| status writes per deployment | {:.2} |",
        status_writes / n
    );
    println!("| writes after all Ready, settling | {settling_writes:.0} |");
    println!(
        "| writes in a quiet {} s after that | {quiet_writes:.0} |",
        args.quiet_seconds
    );
    let cores = cpu.total / start_to_ready.max(f64::EPSILON);
    println!(
        "| CPU until all Ready | {:.0}% busy of {cores:.0} cores over {start_to_ready:.0} s |",
        100.0 * cpu.busy / cpu.total.max(f64::EPSILON)
    );
    let by_process: Vec<String> = cpu
        .by_process
        .iter()
        .map(|(name, seconds)| format!("{name} {seconds:.0} s"))
        .collect();
    println!("| CPU seconds by process | {} |", by_process.join(", "));
    Ok(all_ready)
}
