//! What each fuzz target checks on one input. Shared by the targets
//! (`fuzz/fuzz_targets/*.rs`) and by `tests/fuzz_regressions.rs`, which replays
//! every saved crash in a normal `cargo test`, so the harness cannot rot.
#![allow(dead_code)]

use backscatter_milter::{batv, batv::Keys, config::Config, dsn, signature};
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::LazyLock,
    time::Duration,
};

/// The key the targets sign and verify with (the tests' key).
pub const KEY_LINE: &str = "1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n";

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys::parse(KEY_LINE).expect("test key"));

/// Raw bytes into the bounce analysis, with and without an envelope sender.
pub fn dsn_analyze(data: &[u8]) {
    let limits = dsn::Limits::default();
    let sender = match data.first() {
        Some(b) if b % 3 == 0 => None,
        Some(b) if b % 3 == 1 => Some(""),
        _ => Some("someone@example.org"),
    };
    let a = dsn::analyze(data, sender, &limits);
    assert!(a.recipients.len() <= limits.max_recipients);
    let _ = dsn::describe("fuzz", &a);
}

/// BATV tags: parse and verify anything; a tag we sign verifies to its address.
pub fn batv_tag(data: &[u8]) {
    let Ok(addr) = std::str::from_utf8(data) else {
        return;
    };
    let _ = batv::is_tagged(addr);
    let _ = batv::parse(addr);
    let today = 20_000;
    let _ = batv::verify(&KEYS, addr, today, 7);
    if let Ok(tagged) = batv::sign(&KEYS, addr, today, 7) {
        let v = batv::verify(&KEYS, &tagged, today, 7)
            .unwrap_or_else(|e| panic!("our tag {tagged:?} fails: {e:?}"));
        assert_eq!(v.plain.to_ascii_lowercase(), addr.to_ascii_lowercase());
    }
}

/// The config parser: an error or a config, never a panic.
pub fn config_parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz.toml");
    }
}

/// The signature header (`value \0 message-id \0 date \0 from \0 recipient`):
/// anything may be checked; our own signature always verifies for its recipient.
pub fn signature_verify(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut it = text.splitn(5, '\0');
    let mut next = || it.next().unwrap_or("");
    let (value, mid, date, from, rcpt) = (next(), next(), next(), next(), next());
    let f = signature::Fields {
        message_id: mid,
        date,
        from,
    };
    let today = 20_000;
    let rcpts = [rcpt.to_string()];
    let _ = signature::verify(&KEYS, value, &f, &rcpts, today, None);
    if let Some(ours) = signature::sign(&KEYS, &f, &rcpts, today + 14) {
        assert_eq!(
            signature::verify(&KEYS, &ours, &f, &rcpts, today, None),
            signature::Check::Valid,
            "{ours}"
        );
    }
}

/// SMFIC_OPTNEG as Postfix sends it: version 6, all actions, every protocol
/// option offered (an MTA offering none is closed on without a reply).
pub const OPTNEG: &[u8] = &[
    0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 0x01, 0xff, 0, 0x1f, 0xff, 0xff,
];

fn session(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("milter answers");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(input);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A whole milter session on the milter at `addr`: arbitrary protocol bytes (an
/// even first byte: after a valid negotiation, so later stages are reached). The
/// milter answers or closes, and still negotiates afterwards.
pub fn milter_session(addr: SocketAddr, data: &[u8]) {
    let mut input = Vec::with_capacity(data.len() + OPTNEG.len());
    if data.first().is_some_and(|b| b & 1 == 0) {
        input.extend_from_slice(OPTNEG);
        input.extend_from_slice(&data[1..]);
    } else {
        input.extend_from_slice(data);
    }
    session(addr, &input);
    let reply = session(addr, OPTNEG);
    assert!(
        reply.len() >= 5 && reply[4] == b'O',
        "no negotiation reply: {reply:?}"
    );
}
