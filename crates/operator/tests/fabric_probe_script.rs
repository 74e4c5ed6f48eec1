//! The KV fabric probe program itself, between two local processes with real NIXL
//! (the pinned nixl-cu12 venv `e2e/hack/nixl-venv.sh` builds): a transfer that
//! arrives, a handshake nobody answers (a wrong side-channel port) and a transport
//! the machine lacks, each reported as the operator reads it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../..")
}

/// The venv's python (built once into the cache). A probe test without NIXL fails.
fn python() -> PathBuf {
    let out = Command::new(repo().join("e2e/hack/nixl-venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("e2e/hack/nixl-venv.sh runs");
    assert!(out.status.success(), "nixl-venv.sh failed");
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    PathBuf::from(path)
}

fn script() -> PathBuf {
    repo().join("crates/operator/src/build/fabric_probe.py")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn probe(python: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(script())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The JSON line a finished probe printed, and its exit status.
fn result(child: Child) -> (Value, bool) {
    let out = child.wait_with_output().expect("probe ends");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    (
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}")),
        out.status.success(),
    )
}

#[test]
fn a_transfer_arrives_and_each_failure_names_its_cause() {
    let python = python();
    let port = free_port().to_string();
    let dir = tempfile::tempdir().expect("dir");
    let server_result = dir.path().join("server");
    let server = probe(
        &python,
        &[
            "serve",
            "--port",
            &port,
            "--size-mib",
            "8",
            "--timeout",
            "30",
            "--result-file",
            server_result.to_str().unwrap_or_default(),
        ],
        &[],
    )
    .spawn()
    .expect("server");
    // The server's listener comes up on its own; the sender waits for the handshake.
    std::thread::sleep(Duration::from_millis(300));
    let sender = probe(
        &python,
        &[
            "send",
            "--target",
            "127.0.0.1",
            "--port",
            &port,
            "--size-mib",
            "8",
            "--timeout",
            "30",
        ],
        &[],
    )
    .spawn()
    .expect("sender");
    let (sent, ok) = result(sender);
    assert!(ok, "{sent}");
    assert_eq!(sent["ok"], true);
    assert_eq!(sent["bytes"], 8 << 20);
    assert!(
        sent["gbPerSecond"].as_f64().is_some_and(|g| g > 0.0),
        "{sent}"
    );
    let (served, ok) = result(server);
    assert!(ok && served["ok"] == true, "{served}");
    // The termination message file holds the same line.
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&server_result).expect("result file"))
            .expect("json");
    assert_eq!(written, served);

    // Nothing answers on the side-channel port.
    let unused = free_port().to_string();
    let (refused, ok) = result(
        probe(
            &python,
            &[
                "send",
                "--target",
                "127.0.0.1",
                "--port",
                &unused,
                "--timeout",
                "2",
            ],
            &[],
        )
        .spawn()
        .expect("sender"),
    );
    assert!(!ok);
    assert_eq!(refused["cause"], "handshake_refused", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&unused)
    );

    // A transport this machine does not have.
    let (unavailable, ok) = result(
        probe(
            &python,
            &[
                "serve",
                "--port",
                &free_port().to_string(),
                "--timeout",
                "2",
            ],
            &[("UCX_TLS", "rc")],
        )
        .spawn()
        .expect("server"),
    );
    assert!(!ok);
    assert_eq!(
        unavailable["cause"], "transport_unavailable",
        "{unavailable}"
    );
    assert!(
        unavailable["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("UCX_TLS=rc")
    );
}
