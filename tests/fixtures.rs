//! Real and hand-written messages with known answers (tests/fixtures/*/expected.tsv):
//! kind, RFC 3463 statuses, failed recipients and the original's Message-ID. Plus
//! hostile input: each gets a defined result, never a panic.

use backscatter_milter::dsn::{self, Kind, Limits, Source};
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn check(expected: &str, base: &Path) -> usize {
    let mut n = 0;
    let mut failures = Vec::new();
    for line in expected
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        let (file, kind) = (f[0], f[1]);
        let raw = std::fs::read(base.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let a = dsn::analyze(&raw, None, &Limits::default());
        n += 1;
        if a.kind.as_str() != kind {
            failures.push(format!("{file}: kind {} != {kind}", a.kind.as_str()));
            continue;
        }
        let statuses: Vec<String> = a
            .recipients
            .iter()
            .filter_map(|r| r.status.map(|s| s.to_string()))
            .collect();
        for want in f.get(2).unwrap_or(&"").split(',').filter(|s| !s.is_empty()) {
            if !statuses.iter().any(|s| s == want) {
                failures.push(format!("{file}: status {want} not in {statuses:?}"));
            }
        }
        let want_r: Vec<String> = f
            .get(3)
            .unwrap_or(&"")
            .split(';')
            .filter(|s| !s.is_empty())
            .map(|s| s.to_lowercase())
            .collect();
        if !want_r.is_empty() {
            let mut got: Vec<String> = a
                .recipients
                .iter()
                .map(|r| r.address.to_lowercase())
                .collect();
            got.sort();
            got.dedup();
            if got != want_r {
                failures.push(format!("{file}: recipients {got:?} != {want_r:?}"));
            }
        }
        if let Some(want) = f.get(4).filter(|s| !s.is_empty())
            && a.original.message_id.as_deref() != Some(*want)
        {
            failures.push(format!(
                "{file}: original Message-ID {:?} != {want}",
                a.original.message_id
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} fixtures wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    n
}

#[test]
fn corpus_fixtures() {
    let base = Path::new(FIXTURES).join("corpus");
    let n = check(
        &std::fs::read_to_string(base.join("expected.tsv")).unwrap(),
        &base,
    );
    assert!(n >= 100, "only {n} fixtures");
}

#[test]
fn own_fixtures() {
    let base = Path::new(FIXTURES);
    let n = check(
        &std::fs::read_to_string(base.join("own/expected.tsv")).unwrap(),
        base,
    );
    assert_eq!(n, 9);
}

#[test]
fn headers_only_bounce_reads_the_original_headers() {
    let raw = std::fs::read(Path::new(FIXTURES).join("own/postfix-headers-only.eml")).unwrap();
    let a = dsn::analyze(&raw, Some(""), &Limits::default());
    let o = &a.original;
    assert_eq!(o.source, Source::Rfc822Headers);
    assert!(o.truncated);
    assert_eq!(o.from.as_deref(), Some("jane@example.org"));
    assert_eq!(
        o.return_path.as_deref(),
        Some("prvs=1001a1b2c3=jane@example.org")
    );
    assert_eq!(o.received.len(), 2);
    assert!(o.received[1].contains("by mx.example.org (Postfix) with ESMTPSA"));
    assert_eq!(o.dkim.len(), 1);
    assert_eq!(
        (o.dkim[0].d.as_str(), o.dkim[0].s.as_str()),
        ("example.org", "mail2026")
    );
    assert_eq!(a.reporting_mta.as_deref(), Some("mx.remote.example"));
    let r = &a.recipients[0];
    assert_eq!(r.remote_mta.as_deref(), Some("mailstore.remote.example"));
    assert_eq!(r.status.unwrap().meaning(), Some("mailbox full"));
}

#[test]
fn line_ending_variants_agree() {
    // The corpus keeps CRLF (dos/) and CR-only (mac/) copies of some messages.
    let base = Path::new(FIXTURES).join("corpus/sisimai/maildir");
    for dir in ["dos", "mac"] {
        for e in std::fs::read_dir(base.join(dir)).unwrap().flatten() {
            let name = e.file_name();
            let Ok(bsd) = std::fs::read(base.join("bsd").join(&name)) else {
                continue;
            };
            let a = dsn::analyze(&std::fs::read(e.path()).unwrap(), None, &Limits::default());
            let b = dsn::analyze(&bsd, None, &Limits::default());
            assert_eq!(a.kind, b.kind, "{dir}/{name:?}");
            assert_eq!(a.recipients.len(), b.recipients.len(), "{dir}/{name:?}");
            assert_eq!(
                a.original.message_id, b.original.message_id,
                "{dir}/{name:?}"
            );
        }
    }
}

// ---- hostile input: a defined result, never a panic, bounded work.

fn postfix_bounce() -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join("own/bounce-of-bounce.eml")).unwrap()
}

#[test]
fn huge_body_is_cut_at_the_limit() {
    let mut raw = postfix_bounce();
    raw.extend(std::iter::repeat_n(b'x', 50 * 1024 * 1024));
    let a = dsn::analyze(&raw, Some(""), &Limits::default());
    assert_eq!(a.kind, Kind::Bounce);
    assert!(a.truncated);
    assert_eq!(a.recipients[0].address, "forged-sender@victim.example");
}

#[test]
fn ten_thousand_parts() {
    let mut raw = String::from(
        "From: MAILER-DAEMON@x.example\r\nSubject: Undelivered Mail Returned to Sender\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n",
    );
    for i in 0..10_000 {
        raw.push_str(&format!(
            "--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"
        ));
    }
    raw.push_str("--b--\r\n");
    let a = dsn::analyze(raw.as_bytes(), Some(""), &Limits::default());
    assert!(a.truncated, "the part cap applies");
    assert_eq!(a.kind, Kind::Bounce);
}

#[test]
fn deep_nesting() {
    let depth = 2_000;
    let mut raw = String::from("From: a@b.example\r\nSubject: nest\r\n");
    for i in 0..depth {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
        ));
    }
    raw.push_str("Content-Type: text/plain\r\n\r\nhello\r\n");
    for i in (0..depth).rev() {
        raw.push_str(&format!("--b{i}--\r\n"));
    }
    let a = dsn::analyze(raw.as_bytes(), None, &Limits::default());
    assert_eq!(a.kind, Kind::Other);
    // Nested message/rfc822 parts, 500 deep.
    let mut m = String::from("Subject: x\r\nFrom: y@z.example\r\n\r\nbody\r\n");
    for _ in 0..500 {
        m = format!("From: MAILER-DAEMON@z.example\r\nContent-Type: message/rfc822\r\n\r\n{m}");
    }
    let a = dsn::analyze(m.as_bytes(), Some(""), &Limits::default());
    assert_ne!(a.kind, Kind::Feedback);
}

#[test]
fn malformed_inputs_never_panic() {
    let bounce = postfix_bounce();
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\r\n\r\n".to_vec(),
        b"garbage without any structure".to_vec(),
        b"Content-Type: multipart/report; boundary=\"\"\r\n\r\n--\r\n--\r\n".to_vec(),
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno boundary at all".to_vec(),
        b"From: \xff\xfe\x00\x01@\x80\r\nSubject: \x00\x00\r\n\r\n\x00\x01\x02".to_vec(),
        b"Content-Type: text/plain; charset=x-unknown-charset\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!not base64".to_vec(),
        b"Content-Type: text/plain; charset=iso-2022-jp\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=1B$B=ZZ=".to_vec(),
        b"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: ;\r\nStatus: 9.9.9.9\r\nAction:\r\n".to_vec(),
        b"Subject: \xc3\x28 bad utf8 \xe2\x82\r\nFrom: MAILER-DAEMON@x\r\n\r\n\xc3\x28 could not be delivered <a@b.example>: 550 5.1.1\r\n".to_vec(),
    ];
    // Every prefix of a real bounce (cut mid-header, mid-boundary, mid-part).
    for cut in (0..bounce.len()).step_by(97) {
        cases.push(bounce[..cut].to_vec());
    }
    // CR-only line ends.
    cases.push(
        bounce
            .iter()
            .map(|&b| if b == b'\n' { b'\r' } else { b })
            .collect(),
    );
    for (i, c) in cases.iter().enumerate() {
        let a = std::panic::catch_unwind(|| dsn::analyze(c, Some(""), &Limits::default()));
        assert!(a.is_ok(), "case {i} panicked");
    }
    // The CR-only copy reads the same as the original.
    let cr: Vec<u8> = bounce
        .iter()
        .map(|&b| if b == b'\n' { b'\r' } else { b })
        .collect();
    let a = dsn::analyze(&cr, Some(""), &Limits::default());
    assert_eq!(a.kind, Kind::Bounce);
    assert_eq!(a.recipients[0].status.unwrap().to_string(), "5.1.1");
}

mod mutated {
    use super::*;
    use proptest::prelude::*;

    fn seeds() -> Vec<Vec<u8>> {
        [
            "own/bounce-of-bounce.eml",
            "own/postfix-headers-only.eml",
            "own/challenge-tmda.eml",
            "corpus/sisimai/maildir/bsd/lhost-exim-01.eml",
            "corpus/sisimai/maildir/bsd/lhost-qmail-01.eml",
        ]
        .iter()
        .map(|f| std::fs::read(Path::new(FIXTURES).join(f)).unwrap())
        .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        /// Real bounces with random bytes overwritten, inserted and cut: a defined
        /// result every time, never a panic.
        #[test]
        fn mutated_bounces_never_panic(seed in 0usize..5, edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..40), cut in any::<usize>()) {
            let mut m = seeds()[seed].clone();
            for (pos, byte, op) in edits {
                let p = pos % (m.len() + 1);
                match op {
                    0 if p < m.len() => m[p] = byte,
                    1 => m.insert(p, byte),
                    _ if p < m.len() => { m.remove(p); }
                    _ => {}
                }
            }
            m.truncate(cut % (m.len() + 1));
            let a = dsn::analyze(&m, Some(""), &Limits::default());
            prop_assert!(a.recipients.len() <= Limits::default().max_recipients);
        }
    }
}

/// Real reports from the MTAs running here (Postfix, Exim): every failure they
/// were made to produce, with RET=FULL and RET=HDRS, plus delays and success DSNs.
#[test]
fn mta_fixtures() {
    let base = Path::new(FIXTURES).join("mta");
    let n = check(
        &std::fs::read_to_string(base.join("expected.tsv")).unwrap(),
        &base,
    );
    assert!(n >= 38, "only {n} MTA fixtures");
}

/// Formats vendors document, rewritten with example names (documented/README.md).
#[test]
fn documented_fixtures() {
    let base = Path::new(FIXTURES).join("documented");
    let n = check(
        &std::fs::read_to_string(base.join("expected.tsv")).unwrap(),
        &base,
    );
    assert_eq!(n, 7);
}
