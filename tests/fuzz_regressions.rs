//! Replays every input that once crashed a fuzz target (tests/fixtures/fuzz-regressions/
//! <target>/) through the same checks the target makes, in a normal `cargo test`.

mod common;

use backscatter_milter::{batv, batv::Keys, config::Config, dsn, signature};
use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    path::PathBuf,
    time::Duration,
};

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

fn keys() -> Keys {
    Keys::parse("1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap()
}

#[test]
fn dsn_analyze() {
    let all = cases("dsn_analyze");
    assert!(all.len() >= 2, "the issue-10 panics are kept");
    let limits = dsn::Limits::default();
    for (name, data) in all {
        for sender in [None, Some(""), Some("someone@example.org")] {
            let a = dsn::analyze(&data, sender, &limits);
            assert!(a.recipients.len() <= limits.max_recipients, "{name}");
            let _ = dsn::describe(&name, &a);
        }
    }
}

#[test]
fn batv_tag() {
    let k = keys();
    for (name, data) in cases("batv_tag") {
        let Ok(addr) = std::str::from_utf8(&data) else {
            continue;
        };
        let _ = batv::parse(addr);
        let _ = batv::verify(&k, addr, 20_000, 7);
        if let Ok(tagged) = batv::sign(&k, addr, 20_000, 7) {
            let v = batv::verify(&k, &tagged, 20_000, 7)
                .unwrap_or_else(|e| panic!("{name}: our tag {tagged:?} fails: {e:?}"));
            assert_eq!(v.plain.to_ascii_lowercase(), addr.to_ascii_lowercase());
        }
    }
}

#[test]
fn config_parse() {
    for (_, data) in cases("config_parse") {
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = Config::parse(text, "fuzz.toml");
        }
    }
}

#[test]
fn signature_verify() {
    let k = keys();
    for (name, data) in cases("signature_verify") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        let mut it = text.splitn(3, '\0');
        let (value, mid, date) = (
            it.next().unwrap_or(""),
            it.next().unwrap_or(""),
            it.next().unwrap_or(""),
        );
        let _ = signature::verify(&k, value, mid, date);
        assert!(
            signature::verify(&k, &signature::sign(&k, mid, date), mid, date),
            "{name}"
        );
    }
}

/// SMFIC_OPTNEG: version 6, all actions, no protocol steps skipped.
const OPTNEG: &[u8] = &[0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 0x01, 0xff, 0, 0, 0, 0];

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
    let session = |input: &[u8]| {
        let mut s = TcpStream::connect(milter.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(input);
        let _ = s.shutdown(Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    for (name, data) in all {
        let mut input = Vec::new();
        if data.first().is_some_and(|b| b & 1 == 0) {
            input.extend_from_slice(OPTNEG);
            input.extend_from_slice(&data[1..]);
        } else {
            input.extend_from_slice(&data);
        }
        session(&input);
        let reply = session(OPTNEG);
        assert!(reply.len() >= 5 && reply[4] == b'O', "{name}: {reply:?}");
    }
}
