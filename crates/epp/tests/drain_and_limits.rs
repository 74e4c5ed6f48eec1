//! The EPP under pressure and at its end: it drains on SIGTERM instead of cutting
//! streams, refuses a burst beyond its admission limit, gives up on a silent engine
//! and never follows an engine's redirect.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::recorder::Recorder;
use support::{Epp, Sim, http, sim_bin, wait_for};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A streaming completion of `tokens` tokens, read line by line on its own thread;
/// the first line is sent on `first` as soon as it arrives.
fn stream_in_background(
    url: String,
    tokens: u32,
) -> (
    std::sync::mpsc::Receiver<()>,
    std::thread::JoinHandle<String>,
) {
    let (first_tx, first) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let response = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client")
            .post(url)
            .json(
                &json!({"model": "test-model", "prompt": "hello there", "max_tokens": tokens,
                          "stream": true, "ignore_eos": true}),
            )
            .send()
            .expect("stream starts");
        let mut reader = BufReader::new(response);
        let mut all = String::new();
        let mut line = String::new();
        let mut told = false;
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if !told && line.starts_with("data:") {
                let _ = first_tx.send(());
                told = true;
            }
            all.push_str(&line);
            line.clear();
        }
        all
    });
    (first, handle)
}

async fn health_status(port: u16) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let r = client
        .check(HealthCheckRequest {
            service: "inference-extension".into(),
        })
        .await
        .ok()?;
    Some(r.into_inner().status)
}

#[test]
fn sigterm_drains_a_stream_in_flight_then_exits() {
    let bin = sim_bin();
    let sim = Sim::start(&bin, &["--inter-token-latency", "100ms"]);
    let mut epp = Epp::start_with(&sim.address(), None, &["--drain-timeout", "20s"]);
    let (first, stream) = stream_in_background(epp.url("/v1/completions"), 25);
    first
        .recv_timeout(Duration::from_secs(10))
        .expect("the stream started");
    let pid = epp.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );

    // Not serving any more, while the stream goes on.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let health = epp.health;
    wait_for("health NOT_SERVING", Duration::from_secs(5), || {
        (runtime.block_on(health_status(health)) == Some(ServingStatus::NotServing as i32))
            .then_some(())
    });
    assert!(
        epp.child.try_wait().expect("wait").is_none(),
        "still running while the stream is in flight"
    );

    let text = stream.join().expect("stream thread");
    assert!(
        text.contains("data: [DONE]"),
        "the stream finished whole: {text}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = epp.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "exited after draining");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "a clean exit: {status}");
}

#[test]
fn a_burst_beyond_the_admission_limit_gets_429_with_retry_after() {
    let bin = sim_bin();
    let sim = Sim::start(&bin, &["--inter-token-latency", "100ms"]);
    let epp = Epp::start_with(&sim.address(), None, &["--max-concurrent-requests", "1"]);
    let (first, stream) = stream_in_background(epp.url("/v1/completions"), 20);
    first
        .recv_timeout(Duration::from_secs(10))
        .expect("the first request is in flight");
    let refused = http()
        .post(epp.url("/v1/completions"))
        .json(&json!({"model": "test-model", "prompt": "hi", "max_tokens": 1}))
        .send()
        .expect("answers");
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = refused.json().expect("json error");
    assert_eq!(body["error"]["type"], "rate_limit_exceeded", "{body}");
    assert!(stream.join().expect("stream").contains("[DONE]"));
    let after = http()
        .post(epp.url("/v1/completions"))
        .json(&json!({"model": "test-model", "prompt": "hi", "max_tokens": 1}))
        .send()
        .expect("answers");
    assert_eq!(
        after.status().as_u16(),
        200,
        "admitted again once the first ended"
    );
    assert!(
        epp.metrics_text()
            .contains("llmd_epp_requests_shed_total 1")
    );
}

#[test]
fn an_engine_silent_past_the_first_byte_timeout_gets_a_504() {
    let bin = sim_bin();
    let sim = Sim::start(
        &bin,
        &["--time-to-first-token", "5s", "--latency-calculator", ""],
    );
    let epp = Epp::start_with(
        &sim.address(),
        None,
        &["--engine-first-byte-timeout", "300ms"],
    );
    let started = Instant::now();
    let r = http()
        .post(epp.url("/v1/completions"))
        .json(&json!({"model": "test-model", "prompt": "hi", "max_tokens": 2}))
        .send()
        .expect("answers");
    assert_eq!(r.status().as_u16(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let body: Value = r.json().expect("json error");
    assert_eq!(body["error"]["type"], "upstream_timeout", "{body}");
}

#[test]
fn a_redirect_from_an_engine_is_never_followed() {
    let elsewhere = Recorder::start();
    let engine = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = engine.local_addr().expect("address").to_string();
    let location = format!("http://{}/v1/completions", elsewhere.address);
    std::thread::spawn(move || {
        for conn in engine.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 65536];
            let _ = conn.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n"
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    let epp = Epp::start(&address, None);
    let r = http()
        .post(epp.url("/v1/completions"))
        .json(&json!({"model": "test-model", "prompt": "hi", "max_tokens": 2}))
        .send()
        .expect("answers");
    assert_eq!(r.status().as_u16(), 502);
    assert!(
        elsewhere.seen().is_empty(),
        "the redirect target was never contacted"
    );
}
