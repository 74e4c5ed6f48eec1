//! End-to-end tests against a real control plane: kube-apiserver, etcd,
//! kube-controller-manager, kube-scheduler, kwok fake GPU nodes and live nodes
//! whose pods llmd-pod-runner runs as processes, built from Go modules (see
//! e2e/README.md). Each test runs its own operator process, scoped to
//! its own namespace.
//!
//! They are `#[ignore]`d so that a plain `cargo test` needs no cluster; `make e2e`
//! (part of `make test`) starts one and runs them with `--ignored`.

mod e2e {
    mod adoption;
    mod autoscaling;
    mod data_plane;
    mod degraded;
    pub mod harness;
    mod helm;
    mod inference_pool;
    mod invalid_manifests;
    mod leader_election;
    mod lifecycle;
    mod lora;
    mod multi_node;
    mod observability;
    mod pod_runner;
    mod rendering;
    mod scheduling;
    mod tuner;
}
