//! The milter protocol checked by OpenDKIM's miltertest (Debian package `miltertest`).

mod common;

use backscatter_milter::batv;
use common::{TestMilter, batv_config_own_ledger, corrupt_tag, temp_dir, test_keys};
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
    let milter = TestMilter::start(&batv_config_own_ledger(dir.path(), ""));
    // Garbage on the socket first: random bytes, an absurd length prefix, a packet
    // cut short, a connection dropped mid-negotiation. Each is closed; the milter
    // goes on serving (the script below must still pass).
    for junk in [
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        vec![0xff, 0xff, 0xff, 0xff, b'O', 0, 0, 0],
        vec![0, 0, 0, 13, b'O', 0, 0, 0, 6],
        vec![0, 0, 0, 1],
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect(),
    ] {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(milter.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let _ = s.write_all(&junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
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
    assert_eq!(text.matches("ok: ").count(), 44, "{text}");
}
