//! The lease protocol against a scripted Lease API, on tokio's paused clock: how long
//! a standby waits, when a leader whose calls hang stops, what it writes after.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/leader";

/// One Lease, optimistic concurrency on resourceVersion, every call recorded. Calls
/// can be made to hang (no answer ever), as with an unreachable API server.
#[derive(Default)]
struct LeaseApi {
    lease: Mutex<Option<Value>>,
    version: AtomicU64,
    hang_reads: AtomicBool,
    hang_writes: AtomicBool,
    calls: Mutex<Vec<String>>,
}

impl LeaseApi {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }

    fn holder(&self) -> Option<String> {
        let lease = self.lease.lock().expect("lock");
        lease.as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_string)
    }

    /// Store `spec` as if another replica wrote it.
    fn put_spec(&self, spec: Value) {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        *self.lease.lock().expect("lock") = Some(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "leader", "namespace": "ops", "resourceVersion": version.to_string()},
            "spec": spec,
        }));
    }

    /// `None`: never answer.
    fn respond(&self, method: &Method, path: &str, body: &[u8]) -> Option<(StatusCode, Value)> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("{method} {path}"));
        let status = |code: u16, reason: &str| json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code});
        let write = *method != Method::GET;
        let hang = if write {
            &self.hang_writes
        } else {
            &self.hang_reads
        };
        if hang.load(Ordering::SeqCst) {
            return None;
        }
        let mut lease = self.lease.lock().expect("lock");
        Some(match *method {
            Method::GET => match lease.as_ref() {
                Some(l) if path == PATH => (StatusCode::OK, l.clone()),
                _ => (StatusCode::NOT_FOUND, status(404, "NotFound")),
            },
            Method::POST if lease.is_some() => (StatusCode::CONFLICT, status(409, "AlreadyExists")),
            Method::PUT | Method::POST => {
                let mut sent: Value = serde_json::from_slice(body).expect("lease JSON");
                let current = lease
                    .as_ref()
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if *method == Method::PUT
                    && current != Some(sent["metadata"]["resourceVersion"].clone())
                {
                    return Some((StatusCode::CONFLICT, status(409, "Conflict")));
                }
                let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
                sent["metadata"]["resourceVersion"] = json!(version.to_string());
                *lease = Some(sent.clone());
                (StatusCode::OK, sent)
            }
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                status(405, "MethodNotAllowed"),
            ),
        })
    }
}

fn client(api: Arc<LeaseApi>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        // Answers never sent are kept, so their calls stay pending instead of failing.
        let mut unanswered = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("body");
            match api.respond(&parts.method, parts.uri.path(), &bytes) {
                Some((status, value)) => send.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&value).expect("json")))
                        .expect("response"),
                ),
                None => unanswered.push(send),
            }
        }
    });
    Client::new(service, "ops")
}

fn lock(api: &Arc<LeaseApi>, identity: &str) -> LeaseLock {
    LeaseLock::new(
        Api::namespaced(client(api.clone()), "ops"),
        "leader".into(),
        identity.into(),
        Timings::default(),
    )
}

fn never_stop() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    rx
}

fn held_by(holder: &str, renew_time: &str) -> Value {
    json!({"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew_time, "leaseTransitions": 3})
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewals_hang_stops_writing_at_its_renew_deadline() {
    let api = Arc::new(LeaseApi::default());
    let leader = lock(&api, "a");
    let renewed_at = leader.acquire(never_stop()).await.expect("acquired");
    assert_eq!(api.holder().as_deref(), Some("a"));
    api.hang_writes.store(true, Ordering::SeqCst);
    let fence = Fence::closed();
    let lost = leader.keep_leading(renewed_at, &fence).await;
    assert_eq!(lost, Lost::DeadlinePassed);
    assert_eq!(
        Instant::now() - renewed_at,
        Timings::default().renew_deadline,
        "leading ends exactly at the renew deadline, not when a hung call returns"
    );
    assert!(!fence.allows(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn a_leader_keeps_leading_while_renewals_succeed() {
    let api = Arc::new(LeaseApi::default());
    let leader = lock(&api, "a");
    let renewed_at = leader.acquire(never_stop()).await.expect("acquired");
    let fence = Fence::closed();
    // Renewals at 2, 4, ... 60 s.
    let leading = tokio::time::timeout(
        Duration::from_secs(61),
        leader.keep_leading(renewed_at, &fence),
    )
    .await;
    assert!(leading.is_err(), "stopped leading: {leading:?}");
    assert!(fence.allows(Instant::now()));
    let renewals = api.calls().iter().filter(|c| c.starts_with("PUT")).count();
    assert_eq!(renewals, 30, "one renewal per retry period");
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_reads_another_holder_stops_and_writes_nothing_more() {
    let api = Arc::new(LeaseApi::default());
    let leader = lock(&api, "a");
    let renewed_at = leader.acquire(never_stop()).await.expect("acquired");
    api.put_spec(held_by("b", "2030-01-01T00:00:00.000000Z"));
    let writes_before = api.calls().iter().filter(|c| !c.starts_with("GET")).count();
    let fence = Fence::closed();
    let lost = leader.keep_leading(renewed_at, &fence).await;
    assert_eq!(
        lost,
        Lost::TakenOver {
            holder: Some("b".into())
        }
    );
    assert!(!fence.allows(Instant::now()), "closed before its deadline");
    assert!(Instant::now() - renewed_at < Timings::default().renew_deadline);
    let writes_after = api.calls().iter().filter(|c| !c.starts_with("GET")).count();
    assert_eq!(writes_before, writes_after, "{:?}", api.calls());
    assert_eq!(api.holder().as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn a_standby_takes_over_a_lease_duration_after_the_record_stopped_changing() {
    let api = Arc::new(LeaseApi::default());
    // The holder's clock says 1970: a standby comparing renewTime with its own clock
    // would take over at once.
    api.put_spec(held_by("a", "1970-01-01T00:00:00.000000Z"));
    let holder = {
        let api = api.clone();
        tokio::spawn(async move {
            // The holder renews every 2 s for 20 s, then dies.
            for i in 1..=10 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                api.put_spec(held_by("a", &format!("1970-01-01T00:00:{i:02}.000000Z")));
            }
        })
    };
    let start = Instant::now();
    let standby = lock(&api, "b");
    let acquired = standby.acquire(never_stop()).await.expect("acquired");
    holder.await.expect("holder task");
    let waited = acquired - start;
    assert!(
        waited >= Duration::from_secs(35) && waited <= Duration::from_secs(37),
        "took over after {waited:?}: the last renewal was at 20 s and the lease lasts 15 s"
    );
    assert_eq!(api.holder().as_deref(), Some("b"));
    let lease: Lease =
        serde_json::from_value(api.lease.lock().expect("lock").clone().expect("lease"))
            .expect("lease parses");
    assert_eq!(lease.spec.and_then(|s| s.lease_transitions), Some(4));
}

#[tokio::test(start_paused = true)]
async fn a_hung_lease_call_times_out_after_the_retry_period() {
    let api = Arc::new(LeaseApi::default());
    api.hang_reads.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let candidate = lock(&api, "a");
    let acquiring = tokio::spawn(async move { candidate.acquire(never_stop()).await });
    // The first read hangs; once reads answer again, the next round acquires.
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.hang_reads.store(false, Ordering::SeqCst);
    let acquired = acquiring.await.expect("task").expect("acquired");
    assert_eq!(acquired - start, Timings::default().retry_period);
    let reads = api.calls().iter().filter(|c| c.starts_with("GET")).count();
    assert_eq!(reads, 2, "{:?}", api.calls());
}

#[tokio::test(start_paused = true)]
async fn release_clears_only_a_lease_that_names_us() {
    let api = Arc::new(LeaseApi::default());
    api.put_spec(held_by("b", "2030-01-01T00:00:00.000000Z"));
    lock(&api, "a").release().await.expect("release");
    assert_eq!(api.holder().as_deref(), Some("b"));
    api.put_spec(held_by("a", "2030-01-01T00:00:00.000000Z"));
    lock(&api, "a").release().await.expect("release");
    assert_eq!(api.holder(), None);
}
