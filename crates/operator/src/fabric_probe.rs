//! Drives the KV fabric probe of one deployment, a step per reconcile: once per
//! fabric config (and reprobe request) it starts the server Job beside a prefill
//! pod, then the sender Job beside a decode pod aimed at the server pod, reads the
//! result from the pods' termination messages and removes the Jobs. Serving never
//! waits on it: until the fabric is proven the EndpointPicker serves whole requests.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, ResourceExt};
use llmd_api::{KvTransferStatus, LLMDeployment, labels};

use crate::apply::FIELD_MANAGER;
use crate::build::Owner;
use crate::build::fabric_probe::{self, Finished, Side};
use crate::context::Context;
use crate::error::{Error, Result};

/// Where the probe of the current fabric stands.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Probe {
    /// No NIXL fabric: nothing to prove.
    #[default]
    NotRequired,
    /// Under way: what it is doing or waiting for.
    Probing(String),
    /// Finished, now or in an earlier reconcile, for the current key.
    Done(KvTransferStatus),
}

impl Probe {
    /// The fabric is proven for the current config, or there is none to prove.
    pub fn allows_splitting(&self) -> bool {
        match self {
            Probe::NotRequired => true,
            Probe::Probing(_) => false,
            Probe::Done(s) => s.proven,
        }
    }
}

/// The probe key of a deployment's current fabric, `None` without NIXL.
pub fn current_key(ld: &LLMDeployment) -> Option<String> {
    let hash = fabric_probe::fabric_hash(&ld.spec)?;
    let reprobe = ld
        .annotations()
        .get(labels::REPROBE_FABRIC)
        .map(String::as_str);
    Some(fabric_probe::probe_key(&hash, reprobe))
}

/// Whether the EndpointPicker may split requests: there is no fabric to prove, or
/// the current one is proven.
pub fn splitting_allowed(ld: &LLMDeployment) -> bool {
    current_key(ld).is_none() || recorded(ld).is_some_and(|s| s.proven)
}

/// The last result, when it is for the current fabric.
pub fn recorded(ld: &LLMDeployment) -> Option<&KvTransferStatus> {
    let key = current_key(ld)?;
    ld.status
        .as_ref()?
        .kv_transfer
        .as_ref()
        .filter(|s| s.probed == key)
}

fn kube_err(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |e| Error::kube(what, e)
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Removes the probe's Jobs (and their pods) and its script: a finished probe
/// leaves nothing behind (its result is in status).
async fn clean_up(ctx: &Context, owner: &Owner) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for side in [Side::Server, Side::Sender] {
        let name = fabric_probe::job_name(owner, side);
        match jobs.delete(&name, &params).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("delete Job {name}"), e)),
        }
    }
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let name = fabric_probe::config_map_name(owner);
    match cms.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if not_found(&e) => {}
        Err(e) => return Err(Error::kube(format!("delete ConfigMap {name}"), e)),
    }
    Ok(())
}

/// The Job of `side` for `key`: created when missing, replaced when it probes an
/// older key. `None` while an old one is being removed.
async fn ensure_job(
    ctx: &Context,
    owner: &Owner,
    ld: &LLMDeployment,
    side: Side,
    key: &str,
    target: Option<&str>,
) -> Result<Option<Job>> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let name = fabric_probe::job_name(owner, side);
    let existing = jobs
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("read Job {name}")))?;
    let want = fabric_probe::key_label(key);
    match existing {
        Some(job) if job.labels().get(labels::FABRIC_PROBE_KEY) == Some(&want) => Ok(Some(job)),
        Some(job) => {
            if job.metadata.deletion_timestamp.is_none() {
                let params = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..DeleteParams::default()
                };
                jobs.delete(&name, &params)
                    .await
                    .map_err(kube_err(format!("delete Job {name}")))?;
            }
            Ok(None)
        }
        None => {
            let job = fabric_probe::job(owner, &ld.spec, side, key, target);
            let created = jobs
                .create(&PostParams::default(), &job)
                .await
                .map_err(kube_err(format!("create Job {name}")))?;
            Ok(Some(created))
        }
    }
}

/// The newest pod of a probe Job.
async fn pod_of(ctx: &Context, owner: &Owner, side: Side, key: &str) -> Result<Option<Pod>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let selector = format!(
        "{}={},{}={},{}={}",
        labels::INSTANCE,
        owner.name,
        labels::FABRIC_PROBE,
        match side {
            Side::Server => "server",
            Side::Sender => "sender",
        },
        labels::FABRIC_PROBE_KEY,
        fabric_probe::key_label(key)
    );
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_err("list fabric probe pods".into()))?;
    Ok(list
        .items
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone()))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// The termination message and exit code of a finished pod's container.
fn finished(pod: &Pod) -> (Option<&str>, i32) {
    let terminated = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    match terminated {
        Some(t) => (t.message.as_deref(), t.exit_code),
        None => (None, if phase(pod) == "Succeeded" { 0 } else { 1 }),
    }
}

/// Why a pod has not run yet (the scheduler's message), if it says.
fn waiting_reason(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
        .and_then(|c| c.message.clone())
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// Why a Job failed, when it did.
fn job_failure(job: &Job) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Advances the probe of `ld` by one step.
pub async fn advance(ctx: &Context, owner: &Owner, ld: &LLMDeployment) -> Result<Probe> {
    let Some(key) = current_key(ld) else {
        // A fabric switched off after a probe: its objects go (once: the status
        // forgets the result).
        if ld.status.as_ref().is_some_and(|s| s.kv_transfer.is_some()) {
            clean_up(ctx, owner).await?;
        }
        return Ok(Probe::NotRequired);
    };
    if let Some(done) = recorded(ld) {
        return Ok(Probe::Done(done.clone()));
    }
    let probe = step(ctx, owner, ld, &key).await?;
    if let Probe::Done(result) = &probe {
        tracing::info!(
            name = %owner.name, namespace = %owner.namespace, proven = result.proven,
            "KV fabric probe finished: {}", result.message
        );
        ctx.metrics
            .fabric_probes
            .get_or_create(&crate::metrics::OutcomeLabel {
                outcome: crate::metrics::probe_outcome(result.proven),
            })
            .inc();
        clean_up(ctx, owner).await?;
    }
    Ok(probe)
}

/// One step of a probe not finished before: start what is missing, or read what
/// finished.
async fn step(ctx: &Context, owner: &Owner, ld: &LLMDeployment, key: &str) -> Result<Probe> {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let cm = fabric_probe::config_map(owner);
    cms.patch(
        &fabric_probe::config_map_name(owner),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await
    .map_err(kube_err("apply the fabric probe ConfigMap".into()))?;

    let Some(server_job) = ensure_job(ctx, owner, ld, Side::Server, key, None).await? else {
        return Ok(Probe::Probing(
            "replacing the probe of an earlier fabric".into(),
        ));
    };
    let done = |side, f: Finished<'_>| Probe::Done(fabric_probe::result(key, side, &f, &now()));
    // A Job that failed without a pod telling why (deadline, pod deleted).
    let job_failed = |side, job: &Job| {
        job_failure(job).map(|why| {
            let f = Finished {
                message: Some(why.as_str()),
                exit_code: 1,
                ..Finished::default()
            };
            done(side, f)
        })
    };
    let Some(server) = pod_of(ctx, owner, Side::Server, key).await? else {
        if let Some(result) = job_failed(Side::Server, &server_job) {
            return Ok(result);
        }
        return Ok(Probe::Probing(
            "starting the probe server beside a prefill pod".into(),
        ));
    };
    let server_ip = server.status.as_ref().and_then(|s| s.pod_ip.clone());
    match (phase(&server), server_ip) {
        ("Failed", _) => {
            let (message, exit_code) = finished(&server);
            Ok(done(
                Side::Server,
                Finished {
                    message,
                    exit_code,
                    from_node: None,
                    to_node: node(&server),
                },
            ))
        }
        ("Succeeded", _) => {
            // It finished before any sender reached it: it ran nothing (a node
            // that only simulates pods), or its sender's result is the one.
            let sender = pod_of(ctx, owner, Side::Sender, key).await?;
            let pod = sender.as_ref().unwrap_or(&server);
            let (message, exit_code) = finished(pod);
            let side = if sender.is_some() {
                Side::Sender
            } else {
                Side::Server
            };
            Ok(done(
                side,
                Finished {
                    message,
                    exit_code,
                    from_node: sender.as_ref().and_then(node),
                    to_node: node(&server),
                },
            ))
        }
        ("Running", Some(ip)) => {
            let Some(sender_job) = ensure_job(ctx, owner, ld, Side::Sender, key, Some(&ip)).await?
            else {
                return Ok(Probe::Probing(
                    "replacing the probe of an earlier fabric".into(),
                ));
            };
            let Some(sender) = pod_of(ctx, owner, Side::Sender, key).await? else {
                if let Some(result) = job_failed(Side::Sender, &sender_job) {
                    return Ok(result);
                }
                return Ok(Probe::Probing(
                    "starting the probe sender beside a decode pod".into(),
                ));
            };
            match phase(&sender) {
                "Succeeded" | "Failed" => {
                    let (message, exit_code) = finished(&sender);
                    Ok(done(
                        Side::Sender,
                        Finished {
                            message,
                            exit_code,
                            from_node: node(&sender),
                            to_node: node(&server),
                        },
                    ))
                }
                _ => Ok(Probe::Probing(format!(
                    "transferring from a decode node to {ip}{}",
                    waiting_reason(&sender)
                ))),
            }
        }
        _ => Ok(Probe::Probing(format!(
            "the probe server pod is not running yet{}",
            waiting_reason(&server)
        ))),
    }
}
