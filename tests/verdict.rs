//! The whole decision through a real Postfix: what Postfix did with each message
//! (delivered to the sink, rejected to the client, held), and nothing lost.

mod common;

use backscatter_milter::batv;
use common::{Delivered, Rig, TestMilter, batv_config, postfix_available, temp_dir, test_keys};
use std::path::Path;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The recipient of the mail `World::send_ours` sends: the one its bounces name.
const FRIEND: &str = "friend@remote.example";

/// A real Postfix NDR from the corpus (its message/rfc822 part is empty) with
/// `original` put inside it, reporting `FRIEND` as the failed recipient.
fn ndr_returning(original: &str) -> String {
    ndr_for(FRIEND, original)
}

/// The same NDR reporting `failed` as the failed recipient.
fn ndr_for(failed: &str, original: &str) -> String {
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

/// The same NDR with no original at all.
fn ndr_without_original() -> String {
    let t = std::fs::read_to_string(
        Path::new(FIX).join("corpus/sisimai/maildir/bsd/lhost-postfix-01.eml"),
    )
    .unwrap();
    let cut = t.rfind("--FFFFFFFFFFFF.0000000000000/p351355.pool.example.ne.jp\nContent-Description: Undelivered Message").unwrap();
    format!(
        "{}--FFFFFFFFFFFF.0000000000000/p351355.pool.example.ne.jp--\n",
        &t[..cut]
    )
}

/// A headers-only Postfix bounce (text/rfc822-headers) returning `headers`.
fn headers_only_returning(headers: &str) -> String {
    let t = std::fs::read_to_string(Path::new(FIX).join("own/postfix-headers-only.eml"))
        .unwrap()
        .replace("tom@remote.example", FRIEND);
    let start = t.find("Content-Type: text/rfc822-headers\n\n").unwrap()
        + "Content-Type: text/rfc822-headers\n\n".len();
    let end = t.rfind("\n--D00E2A0155").unwrap();
    format!("{}{}\n{}", &t[..start], headers.trim_end(), &t[end..])
}

fn header_block(m: &Delivered) -> String {
    m.content.split("\n\n").next().unwrap().to_string()
}

/// Spam that forged our user's address, as a third party received it.
const SPAM: &str = "Received: from bot.spammer.example (bot.spammer.example [203.0.113.66])\n\tby mx.third.example (Postfix) with ESMTP id 77AA\n\tfor <victim@third.example>; Mon, 23 Nov 2026 10:00:00 +0000\nFrom: user@example.org\nTo: victim@third.example\nSubject: Cheap watches\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <forged-1@bot.spammer.example>\n\nBuy now.\n";

fn write(dir: &Path, name: &str, data: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    format!("@{}", p.display())
}

struct World {
    dir: tempfile::TempDir,
    milter: TestMilter,
    rig: Rig,
    cfg: String,
}

/// A milter (BATV on for example.org, no trusted networks: only the submission
/// port is ours) in front of a Postfix that relays to the sink.
fn world(verdict: &str) -> World {
    world_with("", verdict)
}

/// The same with more `[batv]` settings.
fn world_with(batv_extra: &str, verdict: &str) -> World {
    let dir = temp_dir();
    let state = dir.path().join("state");
    let cfg = format!(
        "{}\n[ledger]\nstate_dir = \"{}\"\n[verdict]\n{verdict}\n",
        batv_config(dir.path(), &format!("trusted_networks = []\n{batv_extra}")),
        state.display()
    );
    let milter = TestMilter::start(&cfg);
    let rig = Rig::start(&milter.socket(), &*common::BATV_MAIN_CF);
    World {
        dir,
        milter,
        rig,
        cfg,
    }
}

impl World {
    /// Sends mail as our user through the submission service; returns what arrived.
    fn send_ours(&self, subject: &str) -> Delivered {
        let before = self.rig.delivered().len();
        let (ok, t) = self.rig.swaks_port(
            self.rig.submission_port,
            &[
                "--from",
                "user@example.org",
                "--to",
                FRIEND,
                "--header",
                &format!("Subject: {subject}"),
            ],
        );
        assert!(ok, "{t}");
        let got = self.rig.wait_delivered(before + 1);
        got.into_iter()
            .find(|m| m.header("Subject") == [subject])
            .unwrap()
    }

    /// Sends `data` as a null-sender message to `rcpt`; returns (accepted, transcript).
    fn bounce(&self, name: &str, rcpt: &str, data: &str) -> (bool, String) {
        let file = write(self.dir.path(), name, data);
        self.rig
            .swaks(&["--from", "<>", "--to", rcpt, "--data", &file])
    }
}

#[test]
fn verdicts_through_postfix_enforce() {
    if !postfix_available() {
        return;
    }
    let w = world("mode = \"enforce\"");
    let mut sent = 0;
    let mut rejected = 0;

    // Our message, as it left: signed envelope, signature header, in the ledger.
    let ours = w.send_ours("quarterly report");
    let tagged = ours.mail_from.trim_matches(['<', '>']).to_string();
    assert!(
        batv::verify(&test_keys(), &tagged, batv::today(), 7).is_ok(),
        "{tagged}"
    );
    assert_eq!(
        ours.header("X-Backscatter-Sig").len(),
        1,
        "{}",
        ours.content
    );
    let outbound_delivered = 1;

    // 1. A remote bounces it to the tagged sender: delivered to the plain address.
    sent += 1;
    let (ok, t) = w.bounce("1.eml", &tagged, &ndr_returning(&ours.content));
    assert!(ok, "{t}");

    // 2. Spam forged our address; the third party's bounce comes to the untagged address.
    sent += 1;
    let (ok, t) = w.bounce("2.eml", "user@example.org", &ndr_returning(SPAM));
    assert!(
        !ok && t.contains("550 5.7.1") && t.contains("Backscatter rejected"),
        "{t}"
    );
    rejected += 1;

    // 3. A bounce to our From address (untagged) returning our original with our header.
    sent += 1;
    let (ok, t) = w.bounce("3.eml", "user@example.org", &ndr_returning(&ours.content));
    assert!(ok, "our signature header: {t}");
    //    ... and with the header gone but the Message-ID in our ledger.
    let stripped: String = ours
        .content
        .lines()
        .filter(|l| !l.starts_with("X-Backscatter-Sig"))
        .collect::<Vec<_>>()
        .join("\n");
    sent += 1;
    let (ok, t) = w.bounce("3b.eml", "user@example.org", &ndr_returning(&stripped));
    assert!(ok, "ledger: {t}");

    // 4. Headers-only bounces: of our mail delivered, of spam rejected.
    sent += 1;
    let (ok, t) = w.bounce(
        "4.eml",
        "user@example.org",
        &headers_only_returning(&header_block(&ours)),
    );
    assert!(ok, "{t}");
    sent += 1;
    let spam_headers = SPAM.split("\n\n").next().unwrap();
    let (ok, t) = w.bounce(
        "4b.eml",
        "user@example.org",
        &headers_only_returning(spam_headers),
    );
    assert!(!ok && t.contains("550 5.7.1"), "{t}");
    rejected += 1;

    // 5. An untagged bounce with no original: held, not lost.
    sent += 1;
    let (ok, t) = w.bounce("5.eml", "user@example.org", &ndr_without_original());
    assert!(ok, "{t}");

    // 6. Out-of-office replies: to mail we never sent (held), to mail we sent (delivered).
    let oof =
        std::fs::read_to_string(Path::new(FIX).join("own/autoreply-exchange-oof.eml")).unwrap();
    sent += 1;
    let (ok, t) = w.rig.swaks(&[
        "--from",
        "anna@remote.example",
        "--to",
        "user@example.org",
        "--data",
        &write(w.dir.path(), "6.eml", &oof),
    ]);
    assert!(ok, "{t}");
    let our_id = ours
        .header("Message-Id")
        .pop()
        .or_else(|| ours.header("Message-ID").pop())
        .unwrap();
    // The reply of the recipient of our mail (the ledger knows it was one).
    let oof_ours = oof
        .replace("<c0ffee42-3@example.org>", &our_id)
        .replace("anna@remote.example", FRIEND);
    sent += 1;
    let (ok, t) = w.rig.swaks(&[
        "--from",
        FRIEND,
        "--to",
        "user@example.org",
        "--data",
        &write(w.dir.path(), "6b.eml", &oof_ours),
    ]);
    assert!(ok, "{t}");

    // Count: what Postfix delivered, held, or refused.
    w.rig.wait_delivered(outbound_delivered + 5);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let delivered = w.rig.delivered().len() - outbound_delivered;
    let held: Vec<_> = w
        .rig
        .queued()
        .into_iter()
        .filter(|(q, _)| q == "hold")
        .collect();
    assert_eq!(
        held.len(),
        2,
        "no-original bounce and stray auto-reply held: {held:?}"
    );
    assert_eq!(rejected, 2);
    assert_eq!(sent, delivered + rejected + held.len(), "nothing lost");
    let all = w.rig.delivered();
    let bounce1 = all
        .iter()
        .find(|m| {
            m.mail_from == "<>"
                && m.content.contains("quarterly report")
                && m.rcpts == ["<user@example.org>"]
        })
        .unwrap();
    let h = bounce1.header("X-Backscatter").join("");
    assert!(h.contains("kind=bounce; verdict=accept"), "{h}");
    // Postfix logged the hold; the held messages carry our verdict header (postcat).
    let log = w.rig.maillog();
    assert_eq!(
        log.matches("milter-hold: END-OF-MESSAGE from").count(),
        2,
        "{log}"
    );
    for (_, id) in &held {
        let content = w.rig.postcat(id);
        assert!(
            content.contains(
                "verdict=quarantine; score=8; mode=enforce; reasons=untagged(+5),no_original(+3)"
            ),
            "{content}"
        );
    }
}

#[test]
fn observe_mode_delivers_with_the_verdict_header() {
    if !postfix_available() {
        return;
    }
    let w = world("mode = \"observe\"");
    let (ok, t) = w.bounce("2.eml", "user@example.org", &ndr_returning(SPAM));
    assert!(ok, "observe never rejects: {t}");
    let got = w.rig.wait_delivered(1);
    let h = got[0].header("X-Backscatter").join("");
    assert!(h.contains("kind=bounce; verdict=reject; score=15; mode=observe; reasons=untagged(+5),foreign_original(+10)"), "{h}");
    assert!(w.rig.queued().is_empty());
}

#[test]
fn signing_since_today_quarantines_instead_of_rejecting() {
    if !postfix_available() {
        return;
    }
    let today = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    let today = String::from_utf8_lossy(&today.stdout).trim().to_string();
    let w = world_with(
        &format!("signing_since = \"{today}\""),
        "mode = \"enforce\"",
    );
    let (ok, t) = w.bounce("2.eml", "user@example.org", &ndr_returning(SPAM));
    assert!(ok, "quarantined, not rejected: {t}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let rig = &w.rig;
    let held: Vec<_> = rig
        .queued()
        .into_iter()
        .filter(|(q, _)| q == "hold")
        .collect();
    assert_eq!(held.len(), 1);
    assert!(rig.delivered().is_empty());
}

#[test]
fn the_ledger_survives_a_milter_restart() {
    if !postfix_available() {
        return;
    }
    let w = world("mode = \"enforce\"");
    let ours = w.send_ours("before the restart");
    let addr = w.milter.addr;
    w.milter.stop_now();
    let milter = TestMilter::start_at(&w.cfg, addr);
    let stripped: String = ours
        .content
        .lines()
        .filter(|l| !l.starts_with("X-Backscatter-Sig"))
        .collect::<Vec<_>>()
        .join("\n");
    let (ok, t) = w.bounce("7.eml", "user@example.org", &ndr_returning(&stripped));
    assert!(ok, "the restarted milter still knows the Message-ID: {t}");
    let got = w.rig.wait_delivered(2);
    let b = got.iter().find(|m| m.mail_from == "<>").unwrap();
    assert!(
        b.header("X-Backscatter")
            .join("")
            .contains("reasons=ledger_hit(-100)"),
        "{:?}",
        b.header("X-Backscatter")
    );
    drop(milter);
}

/// `on_invalid_tag = "record"`: a bad tag passes RCPT and the verdict rejects it at
/// end of message; forged signature headers from outside are removed.
#[test]
fn recorded_bad_tags_and_forged_signature_headers() {
    if !postfix_available() {
        return;
    }
    let w = world_with("on_invalid_tag = \"record\"", "mode = \"enforce\"");
    let rig = &w.rig;
    let expired = batv::sign(&test_keys(), "user@example.org", batv::today() - 30, 7).unwrap();
    let mut smtp = common::Smtp::connect(rig.smtp_port);
    smtp.cmd("EHLO remote.example");
    assert!(smtp.cmd("MAIL FROM:<>").starts_with("250"));
    let r = smtp.cmd(&format!("RCPT TO:<{expired}>"));
    assert!(r.starts_with("250"), "recorded, not refused at RCPT: {r}");
    assert!(smtp.cmd("DATA").starts_with("354"));
    let r = smtp.cmd("Subject: Undelivered Mail Returned to Sender\r\nFrom: MAILER-DAEMON@remote.example\r\n\r\nThis is the mail system at host remote.example.\r\n.");
    assert!(
        r.starts_with("550 5.7.1") && r.contains("return address tag is invalid"),
        "{r}"
    );
    smtp.cmd("QUIT");
    // Ordinary inbound mail carrying a forged signature header: removed.
    let (ok, t) = rig.swaks(&[
        "--from",
        "friend@remote.example",
        "--to",
        "user@example.org",
        "--header",
        "X-Backscatter-Sig: v=1; k=1; m=0011223344556677",
    ]);
    assert!(ok, "{t}");
    let got = rig.wait_delivered(1);
    assert!(
        got[0].header("X-Backscatter-Sig").is_empty(),
        "{}",
        got[0].content
    );
    assert_eq!(
        got[0].header("X-Backscatter"),
        vec!["null-sender=no; rcpts=1"]
    );
}
