//! The decode-side routing sidecar against real engines (llm-d-inference-sim): the
//! P/D two-step for a request that names a prefiller, pass-through otherwise, a
//! client that goes away stops the decode, and bad input gets a clear error.
//! (SSRF protection's pod watch runs on the live cluster: the e2e suite.)

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::recorder::Recorder;
use support::*;

struct Sidecar {
    port: u16,
    metrics: u16,
    child: Child,
}

impl Sidecar {
    /// A sidecar in front of the engine at 127.0.0.1:`engine_port`, with SSRF
    /// protection off (no API server here).
    fn start(engine_port: u16) -> Sidecar {
        let (port, metrics) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_llmd-sidecar"))
            .args([
                "--port",
                &port.to_string(),
                "--model-server-port",
                &engine_port.to_string(),
                "--metrics-port",
                &metrics.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start llmd-sidecar");
        let sidecar = Sidecar {
            port,
            metrics,
            child,
        };
        wait_for("sidecar health", Duration::from_secs(20), || {
            http()
                .get(sidecar.url("/health"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        sidecar
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn metrics_text(&self) -> String {
        http()
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn engine_metric(sim: &Sim, name: &str) -> f64 {
    let text = http()
        .get(format!("http://{}/metrics", sim.address()))
        .send()
        .and_then(|r| r.text())
        .expect("engine metrics");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("host:port")
}

fn served(sim: &Sim) -> f64 {
    engine_metric(sim, "vllm:request_success_total")
}

fn header(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

const ECHO_IDS: &[&str] = &["--enable-request-id-headers"];

#[test]
fn a_named_prefiller_prefills_and_the_local_engine_decodes_under_one_fresh_request_id() {
    let bin = sim_bin();
    let prefill = Sim::start(&bin, ECHO_IDS);
    let decode = Sim::start(&bin, ECHO_IDS);
    let sidecar = Sidecar::start(decode.port);
    let (p0, d0) = (served(&prefill), served(&decode));

    let r = http()
        .post(sidecar.url("/v1/completions"))
        .header("x-prefiller-host-port", prefill.address())
        .header("x-request-id", "client-7")
        .json(&json!({"model": "test-model", "prompt": tenant_prompt(1, 1), "max_tokens": 3, "ignore_eos": true}))
        .send()
        .expect("sidecar answers");
    assert_eq!(r.status(), 200);
    let id = header(&r, "x-llmd-pd-request-id").expect("the legs' request id");
    assert_ne!(id, "client-7", "a fresh id, not the client's");
    assert_eq!(
        header(&r, "x-request-id").as_deref(),
        Some(id.as_str()),
        "the decode engine saw it"
    );
    assert_eq!(
        header(&r, "x-inference-pod"),
        Some(decode.pod_name()),
        "decoded by the local engine"
    );
    let body: Value = r.json().expect("json");
    assert_eq!(body["usage"]["completion_tokens"], 3, "{body}");
    assert_eq!(served(&prefill) - p0, 1.0, "one prefill leg");
    assert_eq!(served(&decode) - d0, 1.0, "one decode leg");

    // Streamed: the client's stream setting is restored on the decode leg.
    let mut r = http()
        .post(sidecar.url("/v1/completions"))
        .header("x-prefiller-host-port", prefill.address())
        .json(&json!({"model": "test-model", "prompt": tenant_prompt(2, 1), "max_tokens": 4, "ignore_eos": true, "stream": true}))
        .send()
        .expect("sidecar answers");
    assert_eq!(r.status(), 200);
    let mut text = String::new();
    r.read_to_string(&mut text).expect("stream");
    assert!(text.contains("data: [DONE]"), "{text}");
    assert!(text.matches("data: ").count() >= 4, "{text}");

    let metrics = sidecar.metrics_text();
    assert!(
        metrics.contains("llmd_sidecar_pd_splits_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("llmd_sidecar_requests_total{route=\"disaggregated\",code=\"200\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("llmd_sidecar_pd_leg_duration_seconds_count{leg=\"prefill\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("llmd_sidecar_pd_leg_duration_seconds_count{leg=\"decode\"} 2"),
        "{metrics}"
    );
}

#[test]
fn the_legs_carry_what_llm_d_sends_and_no_client_kv_params() {
    // Recording engines show exactly what each leg received.
    let prefill = Recorder::start();
    let decode = Recorder::start();
    let sidecar = Sidecar::start(port_of(&decode.address));
    let r = http()
        .post(sidecar.url("/v1/chat/completions"))
        .header("x-prefiller-host-port", &prefill.address)
        .header("x-request-id", "client-9")
        .json(&json!({
            "model": "test-model", "stream": true, "max_completion_tokens": 50,
            "messages": [{"role": "user", "content": "hello"}],
            "kv_transfer_params": {"remote_host": "169.254.169.254", "remote_port": 80},
        }))
        .send()
        .expect("sidecar answers");
    assert_eq!(r.status(), 200);
    let p = prefill.seen();
    let d = decode.seen();
    assert_eq!((p.len(), d.len()), (1, 1));
    let (p, d) = (&p[0], &d[0]);
    assert_eq!(p.path, "/v1/chat/completions");
    assert_eq!(p.body["stream"], false);
    assert_eq!(p.body["max_tokens"], 1);
    assert_eq!(p.body["max_completion_tokens"], 1);
    assert_eq!(p.body["kv_transfer_params"]["do_remote_decode"], true);
    assert_eq!(p.body["kv_transfer_params"]["remote_host"], Value::Null);
    assert_eq!(d.body["stream"], true, "the client's stream setting");
    assert_eq!(d.body["max_completion_tokens"], 50, "and token limit");
    assert_eq!(
        d.body["kv_transfer_params"]["remote_engine_id"], "recorder",
        "the prefiller's parameters, not the client's"
    );
    let id = |s: &support::recorder::Seen, h: &str| {
        s.headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(id(p, "x-request-id"), id(d, "x-request-id"));
    assert_ne!(id(p, "x-request-id").as_deref(), Some("client-9"));
    assert_eq!(id(d, "x-client-request-id").as_deref(), Some("client-9"));
    assert!(d.headers.get("x-prefiller-host-port").is_none());

    // Without a prefiller: straight to the engine, the client's params dropped.
    let r = http()
        .post(sidecar.url("/v1/completions"))
        .json(&json!({"model": "test-model", "prompt": "hi",
                      "kv_transfer_params": {"remote_host": "169.254.169.254"}}))
        .send()
        .expect("sidecar answers");
    assert_eq!(r.status(), 200);
    assert_eq!(prefill.seen().len(), 1, "no prefill leg");
    let seen = decode.seen();
    let last = seen.last().expect("passed through");
    assert!(
        last.body.get("kv_transfer_params").is_none(),
        "{:?}",
        last.body
    );
}

#[test]
fn everything_else_passes_through_to_the_engine() {
    let decode = Sim::start(&sim_bin(), &[]);
    let sidecar = Sidecar::start(decode.port);
    let d0 = served(&decode);
    let r = http()
        .post(sidecar.url("/v1/completions"))
        .json(&json!({"model": "test-model", "prompt": "hello", "max_tokens": 2}))
        .send()
        .expect("sidecar answers");
    assert_eq!(r.status(), 200);
    assert_eq!(served(&decode) - d0, 1.0);
    // The engine's metrics (what the EndpointPicker scrapes) and model list.
    let metrics = http()
        .get(sidecar.url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("engine metrics");
    assert!(metrics.contains("vllm:num_requests_running"), "{metrics}");
    // As Prometheus asks for it: compressed, and said so (the body is relayed as it
    // came, so its encoding must come with it or the scrape cannot parse it).
    let gzipped = http()
        .get(sidecar.url("/metrics"))
        .header("accept-encoding", "gzip")
        .send()
        .expect("engine metrics, gzipped");
    let encoding = header(&gzipped, "content-encoding");
    let body = gzipped.bytes().expect("body");
    assert!(
        body.starts_with(&[0x1f, 0x8b]),
        "the engine compresses /metrics when asked"
    );
    assert_eq!(encoding.as_deref(), Some("gzip"));
    let models: Value = http()
        .get(sidecar.url("/v1/models"))
        .send()
        .and_then(|r| r.json())
        .expect("models");
    assert_eq!(models["data"][0]["id"], "test-model", "{models}");
    // The engine's own errors keep their status.
    let r = http()
        .post(sidecar.url("/v1/completions"))
        .json(&json!({"model": "no-such-model", "prompt": "hello"}))
        .send()
        .expect("sidecar answers");
    assert_eq!(r.status(), 404);
}

/// The sidecar's open TCP connections to local port `port` (from /proc: the
/// sockets among its file descriptors that are established to that port).
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().to_string();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9
                && f[2].ends_with(&format!(":{port:04X}"))
                && f[3] == "01"
                && inodes.contains(f[9])
        })
        .count()
}

#[test]
fn a_client_that_goes_away_closes_both_legs_to_the_engines() {
    let bin = sim_bin();
    let prefill = Sim::start(&bin, &[]);
    // Slow tokens: this stream would run for a minute.
    let decode = Sim::start(&bin, &["--inter-token-latency", "300ms"]);
    let sidecar = Sidecar::start(decode.port);
    let pid = sidecar.child.id();
    let mut r = http()
        .post(sidecar.url("/v1/completions"))
        .header("x-prefiller-host-port", prefill.address())
        .json(
            &json!({"model": "test-model", "prompt": tenant_prompt(3, 1),
                      "max_tokens": 200, "ignore_eos": true, "stream": true}),
        )
        .send()
        .expect("sidecar answers");
    assert_eq!(r.status(), 200);
    let mut first = [0u8; 16];
    r.read_exact(&mut first).expect("the stream started");
    // The decode leg streams (a connection of a leg just ended may take a moment
    // to go).
    wait_for("the decode leg streams", Duration::from_secs(5), || {
        (connections_to(pid, decode.port) == 1).then_some(())
    });
    drop(r);
    // vLLM aborts a request whose connection closes (the simulator generates on).
    wait_for(
        "the sidecar closes the decode leg",
        Duration::from_secs(10),
        || (connections_to(pid, decode.port) == 0).then_some(()),
    );

    // A client gone during the prefill leg: the prefill connection closes too.
    let slow_prefill = Sim::start(&bin, &["--prefill-time-per-token", "50ms"]);
    let url = sidecar.url("/v1/completions");
    let address = slow_prefill.address();
    let client = std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_millis(1500))
            .build()
            .expect("client")
            .post(url)
            .header("x-prefiller-host-port", address)
            .json(&json!({"model": "test-model", "prompt": tenant_prompt(4, 1), "max_tokens": 2}))
            .send()
    });
    wait_for("the prefill leg runs", Duration::from_secs(10), || {
        (connections_to(pid, slow_prefill.port) == 1).then_some(())
    });
    assert!(
        client.join().expect("client thread").is_err(),
        "the client gave up"
    );
    wait_for(
        "the sidecar closes the prefill leg",
        Duration::from_secs(10),
        || (connections_to(pid, slow_prefill.port) == 0).then_some(()),
    );
    assert_eq!(connections_to(pid, decode.port), 0, "and never decodes it");
}

#[test]
fn bad_prefillers_and_failed_legs_get_clear_errors() {
    let bin = sim_bin();
    let decode = Sim::start(&bin, &[]);
    // A prefiller that refuses every prompt (a 400, the request's own fault) and
    // one that is overloaded (503, as an engine shutting down also answers).
    let failing = Sim::start(
        &bin,
        &[
            "--failure-injection-rate",
            "100",
            "--failure-types",
            "invalid_request",
        ],
    );
    let overloaded = Sim::start(
        &bin,
        &[
            "--failure-injection-rate",
            "100",
            "--failure-types",
            "server_error",
        ],
    );
    let sidecar = Sidecar::start(decode.port);
    let d0 = served(&decode);
    let ask = |prefiller: &str, body: Value| {
        let r = http()
            .post(sidecar.url("/v1/completions"))
            .header("x-prefiller-host-port", prefiller)
            .json(&body)
            .send()
            .expect("sidecar answers");
        let status = r.status().as_u16();
        let body: Value = r.json().expect("an OpenAI error body");
        (
            status,
            body["error"]["message"].as_str().unwrap_or("").to_string(),
        )
    };
    let ok = json!({"model": "test-model", "prompt": "hello", "max_tokens": 2});

    let (s, m) = ask("metadata.internal:80", ok.clone());
    assert_eq!(s, 400, "{m}");
    assert!(m.contains("x-prefiller-host-port"), "{m}");

    // A prefiller that refuses the connection got nothing: decoded here instead.
    let closed = format!("127.0.0.1:{}", free_port());
    let r = http()
        .post(sidecar.url("/v1/completions"))
        .header("x-prefiller-host-port", &closed)
        .json(&ok)
        .send()
        .expect("sidecar answers");
    assert_eq!(r.status(), 200);
    assert_eq!(served(&decode) - d0, 1.0);

    // One that cannot take it now: decoded here too.
    let r = http()
        .post(sidecar.url("/v1/completions"))
        .header("x-prefiller-host-port", overloaded.address())
        .json(&ok)
        .send()
        .expect("sidecar answers");
    assert_eq!(r.status(), 200);
    assert_eq!(served(&decode) - d0, 2.0);

    let (s, m) = ask(&failing.address(), ok.clone());
    assert_eq!(s, 400, "the prefiller's 4xx is the client's: {m}");
    assert!(
        m.contains(&format!("prefill on {}", failing.address())),
        "{m}"
    );

    let (s, m) = ask(&failing.address(), json!({"model": "test-model"}));
    assert_eq!(s, 400, "a body that is no completion: {m}");
    assert!(m.contains("prompt"), "{m}");

    assert_eq!(
        served(&decode) - d0,
        2.0,
        "no failed prefill went on to decode"
    );
    let metrics = sidecar.metrics_text();
    for cause in ["unreachable", "unavailable", "error_status"] {
        let line =
            format!("llmd_sidecar_pd_failures_total{{stage=\"prefill\",cause=\"{cause}\"}} 1");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

#[test]
fn the_epp_proxy_hands_a_split_to_a_decode_pods_sidecar_and_pairs_only_kv_compatible_pods() {
    // Recording engines: the prefill pod, and the decode engine behind its sidecar.
    let prefill = Recorder::start();
    let stale_prefill = Recorder::start();
    let decode = Recorder::start();
    let sidecar = Sidecar::start(port_of(&decode.address));
    let epp = Epp::start(
        &format!(
            "{}=prefill;kv=v2,{}=prefill;kv=v1,127.0.0.1:{}=decode;kv=v2;sidecar",
            prefill.address, stale_prefill.address, sidecar.port
        ),
        Some(&pd_config(32)),
    );
    for i in 0..6 {
        let r = http()
            .post(epp.url("/v1/completions"))
            .json(&json!({"model": "test-model", "prompt": format!("{i} {}", "word ".repeat(200)), "max_tokens": 2}))
            .send()
            .expect("proxy answers");
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "x-prefiller-host-port").as_deref(),
            Some(prefill.address.as_str()),
            "only the KV-compatible prefill pod"
        );
        assert!(
            header(&r, "x-llmd-pd-request-id").is_some(),
            "the sidecar ran the legs"
        );
    }
    assert!(stale_prefill.seen().is_empty());
    assert_eq!(prefill.seen().len(), 6);
    // The decode engine got the prefiller's parameters through the sidecar.
    for seen in decode.seen() {
        assert_eq!(
            seen.body["kv_transfer_params"]["remote_engine_id"], "recorder",
            "{:?}",
            seen.body
        );
    }
    let metrics = sidecar.metrics_text();
    assert!(
        metrics.contains("llmd_sidecar_pd_splits_total 6"),
        "{metrics}"
    );
    assert!(
        epp.metrics_text().contains("llmd_epp_pd_splits_total 0"),
        "the EPP ran no legs itself"
    );
}

#[test]
fn with_only_kv_incompatible_prefill_pods_requests_are_served_aggregated() {
    let bin = sim_bin();
    let prefill = Sim::start(&bin, &[]);
    let decode = Sim::start(&bin, &[]);
    let epp = Epp::start(
        &format!(
            "{}=prefill;kv=v1,{}=decode;kv=v2",
            prefill.address(),
            decode.address()
        ),
        Some(&pd_config(32)),
    );
    let p0 = served(&prefill);
    let r = http()
        .post(epp.url("/v1/completions"))
        .json(&json!({"model": "test-model", "prompt": tenant_prompt(6, 1), "max_tokens": 2}))
        .send()
        .expect("proxy answers");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-prefiller-host-port"), None);
    assert_eq!(served(&prefill), p0, "the incompatible prefill pod idles");
    let metrics = epp.metrics_text();
    assert!(
        metrics.contains(
            "llmd_epp_pd_decisions_total{outcome=\"aggregated_no_kv_compatible_prefill\"} 1"
        ),
        "{metrics}"
    );
}
