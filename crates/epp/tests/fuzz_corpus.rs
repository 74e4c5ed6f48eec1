//! Runs the fuzz target's function over the committed corpus, so `cargo test`
//! covers every input the fuzzer has kept.

#[test]
fn the_fuzz_corpus_passes() {
    let dir = std::path::Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("fuzz/corpus/request_parsing");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        llmd_epp::fuzz_input::request_parsing(&data);
        n += 1;
    }
    assert!(n >= 10, "corpus has {n} inputs");
}
