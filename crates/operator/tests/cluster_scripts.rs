//! The local-cluster scripts never empty or remove a directory that is not a
//! cluster's state they made: pointed at a directory holding someone's files,
//! cluster-up refuses and cluster-down leaves it alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script(name: &str, state: &Path) -> Output {
    let path = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../../e2e/hack")
        .join(name);
    Command::new("bash")
        .arg(path)
        .env("LLMD_CLUSTER_DIR", state)
        .env("LLMD_LIVE_NODES", "0")
        .output()
        .expect("bash runs")
}

/// A scratch directory `base/state` holding a file of the user's.
fn foreign_dir(tag: &str) -> (PathBuf, PathBuf) {
    let base = std::env::temp_dir().join(format!("llmd-scripts-{tag}-{}", std::process::id()));
    let state = base.join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    std::fs::write(state.join("notes.txt"), "mine").expect("write");
    (base, state)
}

/// The user's file is still there; then the scratch directory goes.
fn assert_untouched(base: &Path, state: &Path) {
    assert_eq!(
        std::fs::read_to_string(state.join("notes.txt"))
            .ok()
            .as_deref(),
        Some("mine")
    );
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn cluster_down_leaves_a_directory_that_holds_no_cluster_state() {
    let (base, state) = foreign_dir("down");
    let out = script("cluster-down.sh", &state);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("holds no cluster state"), "{err}");
    assert_untouched(&base, &state);
}

#[test]
fn cluster_up_refuses_a_directory_that_holds_someone_elses_files() {
    let (base, state) = foreign_dir("up");
    let out = script("cluster-up.sh", &state);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("is not empty and holds no cluster state"),
        "{err}"
    );
    assert_untouched(&base, &state);
}
