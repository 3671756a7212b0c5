//! The milter protocol checked by OpenDKIM's miltertest (Debian package `miltertest`).

mod common;

use backscatter_milter::batv;
use common::{TestMilter, batv_config, corrupt_tag, temp_dir, test_keys};
use std::process::Command;

#[test]
fn miltertest_agrees_on_the_protocol() {
    let required = std::env::var("BACKSCATTER_REQUIRE_POSTFIX").is_ok_and(|v| v == "1");
    if !std::path::Path::new("/usr/bin/miltertest").exists() {
        assert!(!required, "miltertest is required but not installed");
        eprintln!("SKIPPED: miltertest not installed (apt-get install miltertest)");
        return;
    }
    let dir = temp_dir();
    let milter = TestMilter::start(&batv_config(dir.path(), ""));
    let tagged = batv::sign(&test_keys(), "user@example.org", batv::today(), 7).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/miltertest/protocol.lua");
    let out = Command::new("miltertest")
        .arg("-D")
        .arg(format!("sock=inet:{}@127.0.0.1", milter.addr.port()))
        .arg("-D")
        .arg(format!("tagged={tagged}"))
        .arg("-D")
        .arg(format!("badtag={}", corrupt_tag(&tagged)))
        .args(["-s", script])
        .output()
        .unwrap();
    let text = common::transcript(&out);
    assert!(out.status.success(), "miltertest failed:\n{text}");
    assert!(text.contains("miltertest: all checks passed"), "{text}");
    assert_eq!(text.matches("ok: ").count(), 36, "{text}");
}
