//! BATV through a real Postfix, with exactly the settings shipped in contrib/postfix/,
//! and the admin CLI (sign, verify, keygen).

mod common;

use backscatter_milter::batv;
use common::{
    Rig, Smtp, TestMilter, batv_config_own_ledger, corrupt_tag, postfix_available, temp_dir,
    test_keys,
};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_backscatter-milter");
const REGEXP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/postfix/batv-recipient.regexp"
);

/// main.cf lines from contrib/postfix/main.cf (the BATV part), plus a recipient
/// table so Postfix really checks recipients of example.org.
fn main_cf() -> Vec<(&'static str, &'static str)> {
    vec![
        common::BATV_MAIN_CF[0],
        common::BATV_MAIN_CF[1],
        (
            "relay_recipient_maps",
            "inline:{ user@example.org=OK, other@example.org=OK, @remote.example=OK, @partner.example=OK }",
        ),
    ]
}

/// The shipped contrib/postfix/main.cf names the same two settings as the rig uses.
#[test]
fn rig_uses_the_shipped_postfix_settings() {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/postfix/main.cf"
    ))
    .unwrap();
    assert!(
        shipped.contains("recipient_canonical_maps = regexp:/etc/postfix/batv-recipient.regexp")
    );
    assert!(shipped.contains("recipient_canonical_classes = envelope_recipient"));
    // The contrib map is what `postfix-map` prints for example.org (no drift), and
    // the rig loads exactly what the binary prints.
    let dir = temp_dir();
    let cfg = dir.path().join("m.toml");
    std::fs::write(
        &cfg,
        "[batv]\nsign_domains = [\"example.org\"]\nkey_file = \"/nonexistent\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "postfix-map"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(REGEXP).unwrap()
    );
    let rig_map = common::BATV_MAIN_CF[0].1.trim_start_matches("regexp:");
    assert_eq!(std::fs::read(rig_map).unwrap(), out.stdout);
}

#[test]
fn outbound_signed_then_bounce_to_tag_delivered_to_plain_address() {
    if !postfix_available() {
        return;
    }
    let dir = temp_dir();
    let milter = TestMilter::start(&batv_config_own_ledger(dir.path(), ""));
    let rig = Rig::start(&milter.socket(), &main_cf());

    // 1. A trusted client (loopback) sends for a sign domain, with DSN parameters.
    let mut smtp = Smtp::connect(rig.smtp_port);
    smtp.cmd("EHLO client.example");
    let r = smtp.cmd("MAIL FROM:<user@example.org> RET=HDRS ENVID=abc123");
    assert!(r.starts_with("250"), "{r}");
    assert!(
        smtp.cmd("RCPT TO:<friend@remote.example>")
            .starts_with("250")
    );
    assert!(smtp.cmd("DATA").starts_with("354"));
    let r = smtp.cmd("Subject: outbound\r\nMessage-ID: <out1@example.org>\r\n\r\nhello\r\n.");
    assert!(r.starts_with("250"), "{r}");
    smtp.cmd("QUIT");
    let got = rig.wait_delivered(1);
    let tagged = got[0].mail_from.trim_matches(['<', '>']).to_string();
    assert!(
        tagged.starts_with("prvs=1") && tagged.ends_with("=user@example.org"),
        "{tagged}"
    );
    // The ESMTP parameters survived the sender change.
    let raw = std::fs::read_dir(rig.dir.path().join("sink"))
        .unwrap()
        .flatten()
        .next()
        .unwrap();
    let dump = std::fs::read_to_string(raw.path()).unwrap();
    assert!(
        dump.contains("RET=HDRS") && dump.contains("ENVID=abc123"),
        "{dump}"
    );
    assert!(batv::verify(&test_keys(), &tagged, batv::today(), 7).is_ok());
    // And the admin's verify command agrees.
    let cfg = dir.path().join("m.toml");
    std::fs::write(&cfg, batv_config_own_ledger(dir.path(), "")).unwrap();
    let v = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "verify", &tagged])
        .output()
        .unwrap();
    assert!(v.status.success());
    assert_eq!(
        String::from_utf8_lossy(&v.stdout),
        "user@example.org key=1\n"
    );

    // 2. A null-sender bounce to the tagged address arrives for the plain address.
    let (ok, t) = rig.swaks(&[
        "--from",
        "<>",
        "--to",
        &tagged,
        "--header",
        "Subject: Undelivered Mail Returned to Sender",
    ]);
    assert!(ok, "{t}");
    let got = rig.wait_delivered(2);
    let bounce = got.iter().find(|m| m.mail_from == "<>").unwrap();
    assert_eq!(bounce.rcpts, vec!["<user@example.org>"]);
    // From loopback (a trusted network) the bounce counts as ours: no header.
    assert_eq!(bounce.header("X-Backscatter"), Vec::<String>::new());

    // Tags are case-insensitive (MTAs fold case).
    let (ok, t) = rig.swaks(&["--from", "<>", "--to", &tagged.to_uppercase()]);
    assert!(ok, "{t}");
    let got = rig.wait_delivered(3);
    assert_eq!(
        got.iter()
            .filter(|m| m.rcpts.len() == 1 && m.rcpts[0].eq_ignore_ascii_case("<user@example.org>"))
            .count(),
        2
    );

    // 3. Forged tags are refused at RCPT with 550 5.7.1, one text for every reason
    //    (no oracle); an expired tag is left to the verdict at end of message.
    let expired = batv::sign(&test_keys(), "user@example.org", batv::today() - 30, 7).unwrap();
    let mut unknown_key = tagged.clone().into_bytes();
    unknown_key[5] = b'9';
    let unknown_key = String::from_utf8(unknown_key).unwrap();
    for bad in [corrupt_tag(&tagged), unknown_key] {
        let (ok, t) = rig.swaks(&["--from", "<>", "--to", &bad]);
        assert!(!ok, "{bad} accepted:\n{t}");
        assert!(
            t.contains(&format!(
                "<** 550 5.7.1 {}",
                backscatter_milter::session::BAD_TAG_TEXT
            )),
            "{bad}:\n{t}"
        );
        assert!(!t.contains("signature") && !t.contains("key id"), "{t}");
    }
    let (ok, t) = rig.swaks(&["--from", "<>", "--to", &expired]);
    assert!(ok, "an expired tag passes RCPT: {t}");
    // Garbage tags are rejected by Postfix's own recipient check (not our shape).
    let (ok, t) = rig.swaks(&["--from", "<>", "--to", "prvs=12=user@example.org"]);
    assert!(!ok && t.contains("550 5.1.1"), "{t}");
    // Untagged unknown users are still refused by Postfix (check not weakened).
    let (ok, t) = rig.swaks(&["--from", "<>", "--to", "nosuch@example.org"]);
    assert!(!ok && t.contains("550 5.1.1"), "{t}");

    // 4. A sender-verification callout to an untagged valid user gets 250 at RCPT.
    let mut smtp = Smtp::connect(rig.smtp_port);
    smtp.cmd("EHLO callout.example");
    assert!(smtp.cmd("MAIL FROM:<>").starts_with("250"));
    let r = smtp.cmd("RCPT TO:<user@example.org>");
    assert!(r.starts_with("250"), "callout: {r}");
    assert!(smtp.cmd("QUIT").starts_with("221"));

    // Nothing more arrived than the four accepted messages (from loopback, a trusted
    // network, nothing is judged), nothing queued.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(rig.delivered().len(), 4);
    assert!(rig.queued().is_empty());
}

#[test]
fn who_is_signed_and_who_is_exempt() {
    if !postfix_available() {
        return;
    }
    let dir = temp_dir();
    // No trusted networks: only the ORIGINATING service and local submission sign.
    let milter = TestMilter::start(&batv_config_own_ledger(
        dir.path(),
        "trusted_networks = []\nexempt_senders = [\"noreply@example.org\"]\nexempt_recipient_domains = [\"partner.example\"]\n",
    ));
    let rig = Rig::start(&milter.socket(), &main_cf());
    let send = |port: u16, from: &str, to: &str| {
        let (ok, t) = rig.swaks_port(port, &["--from", from, "--to", to]);
        assert!(ok, "{t}");
    };
    send(rig.smtp_port, "user@example.org", "a@remote.example"); // not originating
    send(rig.submission_port, "user@example.org", "b@remote.example"); // signed
    send(
        rig.submission_port,
        "noreply@example.org",
        "c@remote.example",
    ); // exempt sender
    send(rig.submission_port, "user@example.org", "d@partner.example"); // exempt rcpt domain
    send(
        rig.submission_port,
        "user@other.example",
        "e@remote.example",
    ); // not our domain
    let out = rig.sendmail(
        "other@example.org",
        "f@remote.example",
        "Subject: local\n\nx\n",
    );
    assert!(out.status.success(), "{}", common::transcript(&out));
    let got = rig.wait_delivered(6);
    let from_of = |rcpt: &str| {
        got.iter()
            .find(|m| m.rcpts == [format!("<{rcpt}>")])
            .unwrap_or_else(|| panic!("{rcpt} not delivered"))
            .mail_from
            .clone()
    };
    assert_eq!(from_of("a@remote.example"), "<user@example.org>");
    assert!(from_of("b@remote.example").starts_with("<prvs="));
    assert_eq!(from_of("c@remote.example"), "<noreply@example.org>");
    assert_eq!(from_of("d@partner.example"), "<user@example.org>");
    assert_eq!(from_of("e@remote.example"), "<user@other.example>");
    let local = from_of("f@remote.example");
    assert!(
        local.starts_with("<prvs=") && local.ends_with("=other@example.org>"),
        "{local}"
    );
}

#[test]
fn cli_sign_verify_keygen() {
    let dir = temp_dir();
    let cfg = dir.path().join("m.toml");
    std::fs::write(&cfg, batv_config_own_ledger(dir.path(), "")).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Known answer (see batv.rs: HMAC-SHA256 via Python's hmac) for 2025-11-25.
    let (code, out, _) = run(&["sign", "--date", "2025-11-25", "user@example.org"]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "prvs=142404e546=user@example.org\n")
    );
    let (code, out, _) = run(&[
        "verify",
        "--date",
        "2025-11-30",
        "prvs=142404e546=user@example.org",
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "user@example.org key=1\n"));
    let (code, out, _) = run(&[
        "verify",
        "--date",
        "2025-12-03",
        "prvs=142404e546=user@example.org",
    ]);
    assert_eq!((code, out.as_str()), (Some(1), "invalid: tag expired\n"));
    let (code, out, _) = run(&[
        "verify",
        "--date",
        "2025-11-25",
        "prvs=142404e547=user@example.org",
    ]);
    assert_eq!((code, out.as_str()), (Some(1), "invalid: bad signature\n"));
    let (code, out, _) = run(&["verify", "plain@example.org"]);
    assert_eq!(
        (code, out.as_str()),
        (Some(1), "invalid: address carries no prvs tag\n")
    );
    // A usage error, like clap's own: 2.
    let (code, _, err) = run(&["sign", "--date", "2025-13-01", "user@example.org"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--date: expected YYYY-MM-DD"), "{err}");
    let (code, out, _) = run(&["keygen", "--id", "7"]);
    assert_eq!(code, Some(0));
    let keys = batv::Keys::parse(&out).unwrap();
    assert_eq!(keys.ids(), vec![7]);
    // Secrets never leave through sign/verify output or errors.
    for (_, o, e) in [
        run(&["sign", "user@example.org"]),
        run(&["verify", "prvs=1000000000=x@example.org"]),
    ] {
        assert!(!o.contains("MDEy") && !e.contains("MDEy"));
    }
}
