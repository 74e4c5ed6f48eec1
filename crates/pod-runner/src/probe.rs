//! Startup, readiness and liveness probes: what to check (HTTP GET, TCP connect,
//! gRPC health), when (the probe's timing, with the readiness and startup periods
//! capped so the local cluster reacts within about a second), and the
//! success/failure threshold counting that turns check results into a state.
//!
//! Exec probes would need to run a command "inside the container", which has no
//! meaning here: they are reported once as unsupported and ignored.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::ProbeTiming;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "Startup",
            Self::Readiness => "Readiness",
            Self::Liveness => "Liveness",
        }
    }
}

/// What a probe checks, with named ports resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Http {
        scheme: String,
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Grpc {
        port: u16,
        service: String,
    },
}

/// A probe ready to run: its check and its effective timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePlan {
    pub kind: ProbeKind,
    pub check: Check,
    pub initial_delay: Duration,
    /// Period while the last result was a success.
    pub period: Duration,
    /// Period while the last result was a failure (or there is none yet).
    pub retry_period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("{kind} probe: container has no port named {name:?}")]
    UnknownPort { kind: &'static str, name: String },
    #[error("{kind} probe: port {port} out of range")]
    BadPort { kind: &'static str, port: i32 },
    #[error("{kind} probe: exec probes are not supported here; ignored")]
    Exec { kind: &'static str },
    #[error("{kind} probe: no handler")]
    NoHandler { kind: &'static str },
}

/// A probe port: a number, or the name of one of the container's ports.
pub fn resolve_port(
    port: &IntOrString,
    container: &Container,
    kind: ProbeKind,
) -> Result<u16, ProbeError> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| ProbeError::UnknownPort {
                    kind: kind.as_str(),
                    name: name.clone(),
                })?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(ProbeError::BadPort {
            kind: kind.as_str(),
            port: number,
        })
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.map_or(default, |s| u64::try_from(s).unwrap_or(default)))
}

/// Turn a container's probe into a plan. Readiness and startup periods are capped
/// at `timing.period_cap` and repeated every `timing.retry_period` while failing;
/// the startup probe's failure threshold is scaled so its total time budget
/// (period x threshold) stays what the pod asked for. Liveness keeps its own
/// period: capping it would restart slow containers the pod meant to tolerate.
pub fn plan(
    probe: &Probe,
    container: &Container,
    kind: ProbeKind,
    timing: &ProbeTiming,
) -> Result<ProbePlan, ProbeError> {
    let k = kind.as_str();
    let check = if let Some(h) = &probe.http_get {
        Check::Http {
            scheme: h
                .scheme
                .clone()
                .unwrap_or_else(|| "HTTP".into())
                .to_lowercase(),
            host: h.host.clone().filter(|s| !s.is_empty()),
            port: resolve_port(&h.port, container, kind)?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|hh| (hh.name.clone(), hh.value.clone()))
                .collect(),
        }
    } else if let Some(t) = &probe.tcp_socket {
        Check::Tcp {
            host: t.host.clone().filter(|s| !s.is_empty()),
            port: resolve_port(&t.port, container, kind)?,
        }
    } else if let Some(g) = &probe.grpc {
        Check::Grpc {
            port: u16::try_from(g.port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or(ProbeError::BadPort {
                    kind: k,
                    port: g.port,
                })?,
            service: g.service.clone().unwrap_or_default(),
        }
    } else if probe.exec.is_some() {
        return Err(ProbeError::Exec { kind: k });
    } else {
        return Err(ProbeError::NoHandler { kind: k });
    };
    let period = secs(probe.period_seconds, 10).max(Duration::from_secs(1));
    let failure_threshold = u32::try_from(probe.failure_threshold.unwrap_or(3).max(1)).unwrap_or(3);
    let success_threshold = u32::try_from(probe.success_threshold.unwrap_or(1).max(1)).unwrap_or(1);
    let (period, retry_period, failure_threshold) = match kind {
        ProbeKind::Liveness => (period, period, failure_threshold),
        ProbeKind::Readiness => {
            let capped = period.min(timing.period_cap());
            (capped, timing.retry_period().min(capped), failure_threshold)
        }
        ProbeKind::Startup => {
            let capped = period.min(timing.period_cap());
            let retry = timing.retry_period().min(capped);
            let budget = period.as_millis() * u128::from(failure_threshold);
            let scaled = budget.div_ceil(retry.as_millis().max(1));
            (capped, retry, u32::try_from(scaled).unwrap_or(u32::MAX))
        }
    };
    Ok(ProbePlan {
        kind,
        check,
        initial_delay: secs(probe.initial_delay_seconds, 0),
        period,
        retry_period,
        timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold,
        failure_threshold,
    })
}

/// Threshold counting: the result flips to success after `success_threshold`
/// consecutive successes and to failure after `failure_threshold` consecutive
/// failures.
#[derive(Debug, Clone)]
pub struct ProbeCounter {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    result: bool,
}

impl ProbeCounter {
    /// `initial` is the result before any check: false for readiness and
    /// startup, true for liveness.
    pub fn new(plan: &ProbePlan, initial: bool) -> Self {
        Self {
            success_threshold: plan.success_threshold,
            failure_threshold: plan.failure_threshold,
            successes: 0,
            failures: 0,
            result: initial,
        }
    }

    pub fn result(&self) -> bool {
        self.result
    }

    /// Record one check; returns the new result if it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if !self.result && self.successes >= self.success_threshold {
                self.result = true;
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.result && self.failures >= self.failure_threshold {
                self.result = false;
                return Some(false);
            }
        }
        None
    }

    /// Failed often enough to act on (startup/liveness: restart the container).
    pub fn exhausted(&self) -> bool {
        self.failures >= self.failure_threshold
    }
}

/// Clients the checks share.
#[derive(Clone)]
pub struct Prober {
    http: reqwest::Client,
}

impl Prober {
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .build()?;
        Ok(Self { http })
    }

    /// Run one check against the pod at `pod_ip`; `Err` carries the failure text.
    pub async fn check(&self, plan: &ProbePlan, pod_ip: Ipv4Addr) -> Result<(), String> {
        let host = |h: &Option<String>| h.clone().unwrap_or_else(|| pod_ip.to_string());
        let attempt = async {
            match &plan.check {
                Check::Http {
                    scheme,
                    host: h,
                    port,
                    path,
                    headers,
                } => {
                    let url = format!("{scheme}://{}:{port}{path}", host(h));
                    let mut req = self.http.get(&url).timeout(plan.timeout);
                    for (k, v) in headers {
                        req = req.header(k, v);
                    }
                    let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
                    let code = resp.status().as_u16();
                    if (200..400).contains(&code) {
                        Ok(())
                    } else {
                        Err(format!("HTTP probe failed with statuscode: {code}"))
                    }
                }
                Check::Tcp { host: h, port } => {
                    let addr = format!("{}:{port}", host(h));
                    tokio::net::TcpStream::connect(&addr)
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("dial tcp {addr}: {e}"))
                }
                Check::Grpc { port, service } => {
                    grpc_check(pod_ip, *port, service, plan.timeout).await
                }
            }
        };
        match tokio::time::timeout(plan.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!("timeout after {:?}", plan.timeout)),
        }
    }
}

async fn grpc_check(
    ip: Ipv4Addr,
    port: u16,
    service: &str,
    timeout: Duration,
) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("gRPC connect {ip}:{port}: {e}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|e| format!("gRPC health {service:?}: {}", e.message()))?;
    let status = response.into_inner().status;
    if status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(format!("gRPC health {service:?}: status {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, GRPCAction, HTTPGetAction};

    fn container() -> Container {
        Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8000,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        }
    }

    fn http_probe(port: IntOrString, period: i32, failure: i32) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/health".into()),
                port,
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failure),
            ..Probe::default()
        }
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let c = container();
        let kind = ProbeKind::Readiness;
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c, kind),
            Ok(8000)
        );
        assert_eq!(resolve_port(&IntOrString::Int(9003), &c, kind), Ok(9003));
        assert_eq!(
            resolve_port(&IntOrString::String("9090".into()), &c, kind),
            Ok(9090)
        );
        assert!(matches!(
            resolve_port(&IntOrString::String("metrics".into()), &c, kind),
            Err(ProbeError::UnknownPort { .. })
        ));
        assert!(matches!(
            resolve_port(&IntOrString::Int(0), &c, kind),
            Err(ProbeError::BadPort { .. })
        ));
    }

    #[test]
    fn readiness_period_is_capped_liveness_is_not() {
        let timing = ProbeTiming::default();
        let c = container();
        let probe = http_probe(IntOrString::String("http".into()), 5, 3);
        let r = plan(&probe, &c, ProbeKind::Readiness, &timing).expect("plan");
        assert_eq!(r.period, Duration::from_secs(1));
        assert_eq!(r.retry_period, Duration::from_millis(200));
        assert_eq!(
            r.check,
            Check::Http {
                scheme: "http".into(),
                host: None,
                port: 8000,
                path: "/health".into(),
                headers: vec![]
            }
        );
        let l = plan(&probe, &c, ProbeKind::Liveness, &timing).expect("plan");
        assert_eq!(l.period, Duration::from_secs(5));
        assert_eq!(l.failure_threshold, 3);
    }

    #[test]
    fn startup_keeps_its_time_budget_when_its_period_is_capped() {
        let probe = http_probe(IntOrString::Int(8000), 10, 360);
        let s = plan(
            &probe,
            &container(),
            ProbeKind::Startup,
            &ProbeTiming::default(),
        )
        .expect("plan");
        assert_eq!(s.retry_period, Duration::from_millis(200));
        // 10 s x 360 = 3600 s = 18000 checks of 200 ms.
        assert_eq!(s.failure_threshold, 18_000);
    }

    #[test]
    fn grpc_and_exec_probes() {
        let grpc = Probe {
            grpc: Some(GRPCAction {
                port: 9003,
                service: Some("inference-extension".into()),
            }),
            ..Probe::default()
        };
        let p = plan(
            &grpc,
            &container(),
            ProbeKind::Readiness,
            &ProbeTiming::default(),
        )
        .expect("plan");
        assert_eq!(
            p.check,
            Check::Grpc {
                port: 9003,
                service: "inference-extension".into()
            }
        );
        let exec = Probe {
            exec: Some(ExecAction::default()),
            ..Probe::default()
        };
        assert!(matches!(
            plan(
                &exec,
                &container(),
                ProbeKind::Liveness,
                &ProbeTiming::default()
            ),
            Err(ProbeError::Exec { .. })
        ));
    }

    #[test]
    fn thresholds_decide_when_the_result_flips() {
        let probe = Probe {
            success_threshold: Some(2),
            ..http_probe(IntOrString::Int(1), 1, 3)
        };
        let p = plan(
            &probe,
            &container(),
            ProbeKind::Readiness,
            &ProbeTiming::default(),
        )
        .expect("plan");
        let mut c = ProbeCounter::new(&p, false);
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(true));
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None, "a success resets the failure count");
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(false));
        assert!(c.exhausted());
    }
}
