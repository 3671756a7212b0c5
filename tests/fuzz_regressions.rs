//! Replays every input that once crashed a fuzz target (tests/fixtures/fuzz-regressions/
//! <target>/) through the same checks the target makes, in a normal `cargo test`.

mod common;

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::PathBuf;

fn cases(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz-regressions")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn dsn_analyze() {
    let all = cases("dsn_analyze");
    assert!(all.len() >= 2, "the issue-10 panics are kept");
    for (name, data) in all {
        checks::dsn_analyze(&data);
        eprintln!("dsn_analyze/{name}: ok");
    }
}

#[test]
fn batv_tag() {
    for (_, data) in cases("batv_tag") {
        checks::batv_tag(&data);
    }
}

#[test]
fn config_parse() {
    for (_, data) in cases("config_parse") {
        checks::config_parse(&data);
    }
}

#[test]
fn signature_verify() {
    for (_, data) in cases("signature_verify") {
        checks::signature_verify(&data);
    }
}

#[test]
fn milter_session() {
    let all = cases("milter_session");
    if all.is_empty() {
        return;
    }
    let dir = common::temp_dir();
    let config = format!(
        "{}[ledger]\nstate_dir = \"{}\"\n[verdict]\nmode = \"enforce\"\n",
        common::batv_config(dir.path(), ""),
        dir.path().display()
    );
    let milter = common::TestMilter::start(&config);
    for (name, data) in all {
        eprintln!("milter_session/{name}");
        checks::milter_session(milter.addr, &data);
    }
}
