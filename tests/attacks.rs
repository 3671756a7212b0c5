//! What an attacker who does not know our key can make the verdict do, and the
//! genuine bounces it must never refuse (issue 9). Each attack is named after what
//! it tries; the MTA-dependent ones run through a real Postfix.

mod common;

use backscatter_milter::{
    Counters, Runtime,
    address::Address,
    batv,
    config::Config,
    evidence::{self, Context, RcptTag},
    ledger::{FileLedger, Ledger},
    session::{self, Session},
    signature,
    verdict::Action,
};
use common::{
    Rig, Smtp, TestMilter, batv_config, corrupt_tag, postfix_available, temp_dir, test_keys,
};
use std::{path::Path, sync::Arc};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const USER: &str = "user@example.org";
const VICTIM: &str = "victim@third.example";

/// A real Postfix NDR (sisimai's lhost-postfix-01) reporting `failed`, returning
/// `original`.
fn ndr(failed: &str, original: &str) -> String {
    let t = std::fs::read_to_string(
        Path::new(FIX).join("corpus/sisimai/maildir/bsd/lhost-postfix-01.eml"),
    )
    .unwrap()
    .replace("r@p351355.pool.example.ne.jp", failed)
    .replace("kijitora@example.org", failed);
    let marker = "Content-Type: message/rfc822\n";
    let at = t.rfind(marker).unwrap() + marker.len();
    format!(
        "{}\n{}\n--FFFFFFFFFFFF.0000000000000/p351355.pool.example.ne.jp--\n",
        &t[..at],
        original.trim_end()
    )
}

/// Spam forging our user, as the third party received it, with extra header lines.
fn spam(extra_headers: &str) -> String {
    format!(
        "Received: from bot.spammer.example (bot.spammer.example [203.0.113.66])\n\tby mx.third.example (Postfix) with ESMTP id 77AA\n\tfor <victim@third.example>; Mon, 23 Nov 2026 10:00:00 +0000\n{extra_headers}From: user@example.org\nTo: victim@third.example\nSubject: Cheap watches\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <forged-1@bot.spammer.example>\n\nBuy now.\n"
    )
}

struct Lib {
    config: Config,
    keys: batv::Keys,
    ledger: FileLedger,
    today: i64,
}

impl Lib {
    fn new(extra: &str) -> Self {
        let config = Config::parse(
            &format!(
                "[batv]\nsign_domains = [\"example.org\"]\nkey_file = \"/nonexistent\"\nexempt_senders = [\"noreply@example.org\"]\nexempt_recipient_domains = [\"partner.example\"]\n[verdict]\nmode = \"enforce\"\nour_relays = [\"mx.example.org\", \"198.51.100.0/24\"]\n{extra}"
            ),
            "attacks",
        )
        .unwrap();
        Self {
            config,
            keys: test_keys(),
            ledger: FileLedger::memory(1000, 30 * 86_400),
            today: batv::today(),
        }
    }

    /// The verdict for `raw` from `sender` to one recipient.
    fn decide(&self, raw: &str, sender: &str, rcpt: &str) -> (Action, String) {
        let addr = Address::parse(rcpt).unwrap();
        let tag = session::check_recipient(&self.config.batv, Some(&self.keys), &addr, self.today);
        let rcpts = [RcptTag {
            address: &addr,
            tag: tag.as_ref(),
        }];
        let ctx = Context {
            config: &self.config,
            keys: Some(&self.keys),
            ledger: Some(&self.ledger),
            today: self.today,
            now: backscatter_milter::unix_now(),
            bad_source: false,
        };
        let (_, _, v) = evidence::assess(raw.as_bytes(), Some(sender), &rcpts, &ctx);
        (v.decided, v.reasons_text())
    }

    /// Our signature header for a message we sent to `rcpts`, valid until `expiry`.
    fn signed_headers(&self, id: &str, rcpts: &[&str], expiry: i64) -> String {
        let date = "Mon, 23 Nov 2026 09:00:00 +0000";
        let rcpts: Vec<String> = rcpts.iter().map(|r| r.to_string()).collect();
        let sig = signature::sign(
            &self.keys,
            &signature::Fields {
                message_id: id,
                date,
                from: USER,
            },
            &rcpts,
            expiry,
        )
        .unwrap();
        format!("From: {USER}\nDate: {date}\nMessage-ID: {id}\nX-Backscatter-Sig: {sig}\n")
    }
}

/// Attack 1: a Received line naming our hosts (HELO, our_relays, the MTA's name)
/// in the returned original cancelled `untagged` and `foreign_original`.
#[test]
fn attack_1_relay_evidence_never_delivers() {
    let lib = Lib::new("");
    let forged = spam(
        "Received: from mx.example.org (mx.example.org [198.51.100.7])\n\tby mx.example.org (Postfix) with ESMTP id 1\n",
    );
    let (action, why) = lib.decide(&ndr(VICTIM, &forged), "", USER);
    assert_eq!(action, Action::Reject, "{why}");
    // Even a newest line the remote really wrote with our address: quarantine.
    let ours_top = forged.replace(
        "bot.spammer.example (bot.spammer.example [203.0.113.66])",
        "mail.example.org (mail.example.org [198.51.100.25])",
    );
    let (action, why) = lib.decide(&ndr(VICTIM, &ours_top), "", USER);
    assert_eq!(action, Action::Quarantine, "{why}");
    assert!(why.contains("our_relay"), "{why}");
}

/// Attack 2: our signature header copied from a public post (list archive) into
/// spam; and one from years ago.
#[test]
fn attack_2_signature_replay_is_refused() {
    let lib = Lib::new("");
    let list = "list@lists.example.net";
    let headers = lib.signed_headers("<post-1@example.org>", &[list], lib.today + 14);
    let replay = format!("{headers}To: {list}\nSubject: hello list\n\nHello.\n");
    // The bounce of spam carrying it speaks for the spam's victim: refused.
    let (action, why) = lib.decide(&ndr(VICTIM, &replay), "", USER);
    assert_eq!(action, Action::Reject, "{why}");
    assert!(why.contains("signature_replayed"), "{why}");
    // The same signature does prove a bounce for the list address itself.
    let (action, why) = lib.decide(&ndr(list, &replay), "", USER);
    assert_eq!(action, Action::Accept, "{why}");
    // Past its last day it proves nothing, even for its own recipient.
    let old = lib.signed_headers("<post-0@example.org>", &[list], lib.today - 1);
    let (action, why) = lib.decide(&ndr(list, &format!("{old}\nOld.\n")), "", USER);
    assert_eq!(action, Action::Reject, "{why}");
}

/// Attack 3: a Message-ID we sent (a public list post) put into spam's Message-ID
/// or In-Reply-To.
#[test]
fn attack_3_ledger_replay_is_refused() {
    let lib = Lib::new("");
    let id = "<post-2@example.org>";
    lib.ledger
        .record(
            id,
            USER,
            &["list@lists.example.net".into()],
            backscatter_milter::unix_now(),
        )
        .unwrap();
    // A bounce of spam whose Message-ID is ours, reporting the victim.
    let forged = spam("").replace("<forged-1@bot.spammer.example>", id);
    let (action, why) = lib.decide(&ndr(VICTIM, &forged), "", USER);
    assert_eq!(action, Action::Reject, "{why}");
    // The victim's auto-reply to spam that cites our Message-ID.
    let oof = std::fs::read_to_string(Path::new(FIX).join("own/autoreply-exchange-oof.eml"))
        .unwrap()
        .replace("<c0ffee42-3@example.org>", id)
        .replace("anna@remote.example", VICTIM)
        .replace("jane@example.org", USER);
    let (action, why) = lib.decide(&oof, VICTIM, USER);
    assert!(action >= Action::Quarantine, "{action:?} {why}");
    // The list's own auto-reply (the list was a recipient): ours.
    let list_oof = oof.replace(VICTIM, "list@lists.example.net");
    let (action, why) = lib.decide(&list_oof, "list@lists.example.net", USER);
    assert_eq!(action, Action::Accept, "{why}");
}

/// Attack 4 (library part): a valid tag of ours on the original's Return-Path
/// (copied from any mail we sent) is a hint, never proof.
#[test]
fn attack_4_tagged_return_path_is_no_proof() {
    let lib = Lib::new("");
    let tagged = batv::sign(&lib.keys, USER, lib.today, 7).unwrap();
    let forged = spam(&format!("Return-Path: <{tagged}>\n"));
    let (action, why) = lib.decide(&ndr(VICTIM, &forged), "", USER);
    assert_eq!(action, Action::Quarantine, "{why}");
}

/// Refusal 7: a late bounce to an expired tag, returning our signed original.
#[test]
fn refusal_7_late_bounce_to_expired_tag_is_rescued_by_our_signature() {
    let lib = Lib::new("");
    let friend = "friend@remote.example";
    let expired = batv::sign(&lib.keys, USER, lib.today - 10, 7).unwrap();
    let original = format!(
        "{}To: {friend}\nSubject: report\n\nBody.\n",
        lib.signed_headers("<late-1@example.org>", &[friend], lib.today + 4)
    );
    let (action, why) = lib.decide(&ndr(friend, &original), "", &expired);
    assert_eq!(action, Action::Accept, "{why}");
    // Without the signature, the expired tag is refused at end of message.
    let (action, why) = lib.decide(&ndr(friend, &spam("")), "", &expired);
    assert_eq!(action, Action::Reject, "{why}");
}

/// Refusal 10: our signature header after hundreds of other fields, or after a
/// field with a very long name, is still found.
#[test]
fn refusal_10_signature_found_behind_many_or_long_fields() {
    let lib = Lib::new("");
    let friend = "friend@remote.example";
    let signed = lib.signed_headers("<many-1@example.org>", &[friend], lib.today + 4);
    let filler: String = (0..400).map(|i| format!("X-Filler-{i}: {i}\n")).collect();
    let long = format!("X-{}: v\n", "L".repeat(300));
    for before in [filler, long] {
        // The signature is appended last, after the original's own fields.
        let (head, sig) = signed.split_at(signed.find("X-Backscatter-Sig").unwrap());
        let original = format!("{head}To: {friend}\n{before}{sig}\nBody.\n");
        let (action, why) = lib.decide(&ndr(friend, &original), "", USER);
        assert_eq!(action, Action::Accept, "{why}");
    }
}

/// Refusal 8: replies for mail to exempt recipients (not tagged, not signed) and
/// bounces for exempt senders are proven by the ledger; `untagged` never counts
/// against senders we never tag.
#[test]
fn refusal_8_exempt_mail_is_recorded_and_never_untagged() {
    let dir = temp_dir();
    let cfg = Config::parse(
        &format!(
            "{}[verdict]\nmode = \"enforce\"\n[ledger]\nstate_dir = \"{}\"\n",
            batv_config(
                dir.path(),
                "trusted_networks = []\nexempt_senders = [\"noreply@example.org\"]\nexempt_recipient_domains = [\"partner.example\"]"
            ),
            dir.path().join("state").display()
        ),
        "t",
    )
    .unwrap();
    let rt = Arc::new(Runtime::load(cfg, Arc::new(Counters::default())).unwrap());
    let today = batv::today();
    let now = backscatter_milter::unix_now();
    let run = |sender: &str, rcpt: &str, auth: Option<&str>, raw: &str| {
        let mut s = Session::new(
            rt.clone(),
            "mx.partner.example",
            Some("192.0.2.9".parse().unwrap()),
            false,
        );
        s.mail(&[format!("<{sender}>")], auth);
        assert_eq!(
            s.rcpt(&[format!("<{rcpt}>")], today, now),
            session::RcptReply::Continue
        );
        let (head, body) = raw.split_once("\n\n").unwrap();
        for line in head.lines() {
            if let Some((n, v)) = line.split_once(':') {
                s.header(n, v.trim().as_bytes());
            }
        }
        s.body(body.as_bytes());
        s.end_of_message(today, now)
    };
    // Outbound, authenticated: to a partner (exempt) and from noreply (exempt).
    let out1 = run(
        USER,
        "bob@partner.example",
        Some("user"),
        "Message-ID: <ex-1@example.org>\nFrom: user@example.org\nDate: Mon, 23 Nov 2026 09:00:00 +0000\nSubject: hi\n\nHi.\n",
    );
    assert!(
        out1.change_sender.is_none() && out1.signature.is_none(),
        "{out1:?}"
    );
    assert!(
        out1.add_header.is_none(),
        "no header of ours on outbound mail"
    );
    let out2 = run(
        "noreply@example.org",
        "carol@remote.example",
        Some("user"),
        "Message-ID: <ex-2@example.org>\nFrom: noreply@example.org\nDate: Mon, 23 Nov 2026 09:00:00 +0000\nSubject: ticket\n\nTicket.\n",
    );
    assert!(out2.change_sender.is_none(), "{out2:?}");
    // The partner's auto-reply to the first: delivered.
    let oof = std::fs::read_to_string(Path::new(FIX).join("own/autoreply-exchange-oof.eml"))
        .unwrap()
        .replace("<c0ffee42-3@example.org>", "<ex-1@example.org>")
        .replace("anna@remote.example", "bob@partner.example")
        .replace("jane@example.org", USER);
    let p = run("bob@partner.example", USER, None, &oof);
    let v = p.verdict.unwrap();
    assert_eq!(v.decided, Action::Accept, "{}", v.reasons_text());
    // A bounce of the second (to the untagged exempt sender): delivered.
    let b = run(
        "",
        "noreply@example.org",
        None,
        &ndr(
            "carol@remote.example",
            "Message-ID: <ex-2@example.org>\nFrom: noreply@example.org\nSubject: ticket\n\nTicket.\n",
        ),
    );
    let v = b.verdict.unwrap();
    assert_eq!(v.decided, Action::Accept, "{}", v.reasons_text());
    // A forged bounce to the exempt sender with no original: no `untagged` points.
    let cut = ndr("x@y.example", "");
    let f = run("", "noreply@example.org", None, &cut);
    let v = f.verdict.unwrap();
    assert!(
        !v.reasons_text().contains("untagged"),
        "{}",
        v.reasons_text()
    );
}

/// Refusal 9: enforce mode with BATV off passes no check: nothing could prove a
/// bounce ours.
#[test]
fn refusal_9_enforce_without_evidence_is_refused_at_check() {
    let dir = temp_dir();
    let cfg = dir.path().join("m.toml");
    std::fs::write(&cfg, "[verdict]\nmode = \"enforce\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backscatter-milter"))
        .args(["--config", cfg.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("m.toml:2: verdict.mode"), "{err}");
}

/// A milter (BATV on, enforce, no trusted networks) before a Postfix with the
/// generated recipient map and a recipient table.
fn world(extra_batv: &str) -> (tempfile::TempDir, TestMilter, Rig) {
    let dir = temp_dir();
    let cfg = format!(
        "{}\n[ledger]\nstate_dir = \"{}\"\n[verdict]\nmode = \"enforce\"\n",
        batv_config(dir.path(), &format!("trusted_networks = []\n{extra_batv}")),
        dir.path().join("state").display()
    );
    let milter = TestMilter::start(&cfg);
    let mut main_cf: Vec<(&str, &str)> = common::BATV_MAIN_CF.to_vec();
    main_cf.push((
        "relay_recipient_maps",
        "inline:{ user@example.org=OK, other@example.org=OK, @remote.example=OK, @partner.example=OK }",
    ));
    let rig = Rig::start(&milter.socket(), &main_cf);
    (dir, milter, rig)
}

/// Attack 4 through Postfix: one valid tag no longer carries untagged recipients in
/// the same null-sender transaction; they get 452 4.5.3 and come back on their own.
#[test]
fn attack_4_one_valid_tag_carries_only_its_recipient() {
    if !postfix_available() {
        return;
    }
    let (_dir, _milter, rig) = world("");
    let tagged = batv::sign(&test_keys(), USER, batv::today(), 7).unwrap();
    let mut smtp = Smtp::connect(rig.smtp_port);
    smtp.cmd("EHLO mx.third.example");
    assert!(smtp.cmd("MAIL FROM:<>").starts_with("250"));
    let r1 = smtp.cmd(&format!("RCPT TO:<{tagged}>"));
    assert!(r1.starts_with("250"), "{r1}");
    let r2 = smtp.cmd("RCPT TO:<other@example.org>");
    assert!(r2.starts_with("452 4.5.3"), "{r2}");
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(&ndr(VICTIM, &spam("")).replace('\n', "\r\n"));
    let r = smtp.cmd(".");
    assert!(r.starts_with("250"), "{r}");
    smtp.cmd("QUIT");
    let got = rig.wait_delivered(1);
    assert_eq!(
        got[0].rcpts,
        vec![format!("<{USER}>")],
        "only the tag's own recipient"
    );
    // The MTA's retry of the other recipient alone is judged on its own: refused.
    let (ok, t) = rig.swaks(&[
        "--from",
        "<>",
        "--to",
        "other@example.org",
        "--data",
        &write(&rig, &ndr(VICTIM, &spam(""))),
    ]);
    assert!(!ok && t.contains("550 5.7.1"), "{t}");
}

fn write(rig: &Rig, data: &str) -> String {
    let p = rig.config_dir().join(format!("msg-{}.eml", data.len()));
    std::fs::write(&p, data).unwrap();
    format!("@{}", p.display())
}

/// Attack 5 through Postfix: the tag is no oracle. Every forged tag gets the same
/// 550 text; after five from one network, tagged RCPTs are not verified at all
/// (451 4.7.1), even a valid one, for an hour.
#[test]
fn attack_5_tag_oracle_is_closed() {
    if !postfix_available() {
        return;
    }
    let (_dir, milter, rig) = world("");
    let keys = test_keys();
    let tagged = batv::sign(&keys, USER, batv::today(), 7).unwrap();
    let mut unknown_key = tagged.clone().into_bytes();
    unknown_key[5] = b'9';
    let guesses = [
        corrupt_tag(&tagged),
        String::from_utf8(unknown_key).unwrap(),
        corrupt_tag(&corrupt_tag(&tagged)),
        tagged.replacen(&tagged[9..15], "000000", 1),
        tagged.replacen(&tagged[9..15], "ffffff", 1),
    ];
    let mut smtp = Smtp::connect(rig.smtp_port);
    smtp.cmd("EHLO guesser.example");
    assert!(smtp.cmd("MAIL FROM:<>").starts_with("250"));
    let mut texts = Vec::new();
    for g in &guesses {
        let r = smtp.cmd(&format!("RCPT TO:<{g}>"));
        assert!(r.starts_with("550 5.7.1"), "{g}: {r}");
        texts.push(r);
    }
    assert!(texts.iter().all(|t| *t == texts[0]), "one text: {texts:?}");
    let r = smtp.cmd(&format!("RCPT TO:<{tagged}>"));
    assert!(r.starts_with("451 4.7.1"), "blocked, not verified: {r}");
    smtp.cmd("QUIT");
    // The block is per network and in the guard; the milter's state says so.
    let rt = milter.shared.current();
    assert_eq!(rt.tag_guard.blocked(backscatter_milter::unix_now()), 1);
}

/// Attack 6 through Postfix: a trailing dot on our domain no longer escapes the tag
/// check or the `untagged` points.
#[test]
fn attack_6_trailing_dot_is_our_domain() {
    if !postfix_available() {
        return;
    }
    let (_dir, _milter, rig) = world("");
    let tagged = batv::sign(&test_keys(), USER, batv::today(), 7).unwrap();
    let (ok, t) = rig.swaks(&[
        "--from",
        "<>",
        "--to",
        &format!("{}.", corrupt_tag(&tagged)),
    ]);
    assert!(!ok && t.contains("550 5.7.1"), "{t}");
    let data = write(&rig, &ndr(VICTIM, &spam("")));
    let (ok, t) = rig.swaks(&["--from", "<>", "--to", "user@example.org.", "--data", &data]);
    assert!(
        !ok && t.contains("550 5.7.1") && t.contains("Backscatter rejected"),
        "{t}"
    );
}

/// Refusal 11: the generated Postfix map leaves other domains' tags alone, so our
/// replies to a remote BATV site keep their tag.
#[test]
fn refusal_11_other_domains_tags_are_not_stripped() {
    if !postfix_available() {
        return;
    }
    let (_dir, _milter, rig) = world("");
    let remote = "PRVS=0123ABCDEF=x@partner.example";
    let (ok, t) = rig.swaks_port(rig.submission_port, &["--from", USER, "--to", remote]);
    assert!(ok, "{t}");
    let got = rig.wait_delivered(1);
    assert!(
        got[0].rcpts[0].eq_ignore_ascii_case(&format!("<{remote}>")),
        "{:?}",
        got[0].rcpts
    );
}
