//! Invalid manifests under e2e/invalid are refused by the API server at
//! `kubectl apply`, each with a message that names the field. Each file starts with
//! `# expect: <text the refusal must contain>`.

use super::harness::*;

#[tokio::test]
#[ignore = "needs a cluster: make e2e"]
async fn invalid_manifests_are_refused_with_a_message_naming_the_field() {
    install_crds().await;
    let ns = TestNamespace::create("e2e-invalid").await;
    let dir = repo().join("e2e/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("e2e/invalid")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "only {} invalid manifests", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("manifest");
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks a '# expect:' first line", file.display()));
        let out = apply_yaml(&ns.name, &text);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{}: accepted", file.display()));
        } else if !stderr.contains(expected) {
            failures.push(format!(
                "{}: refused with\n  {stderr}\nexpected it to contain\n  {expected}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
