//! The milter through a real Postfix: what arrives at the sink, what Postfix did.

mod common;

use common::{Rig, TestMilter, postfix_available};

/// Mail from the rig (loopback) is inbound here: outbound mail gets no header of ours.
const BASIC: &str = "[log]\nlevel = \"info\"\n[batv]\ntrusted_networks = []\n";

#[test]
fn ordinary_mail_gets_our_header_and_nothing_else_changes() {
    if !postfix_available() {
        return;
    }
    let milter = TestMilter::start(BASIC);
    let rig = Rig::start(&milter.socket(), &[]);
    let body = "Line one\nLine two with =?utf-8?q?x?= and tabs\tend\n";
    let (ok, t) = rig.swaks(&[
        "--from",
        "alice@example.org",
        "--to",
        "bob@remote.example,carol@remote.example",
        "--header",
        "Subject: hello",
        "--header",
        "X-Backscatter: forged by someone outside",
        "--header",
        "x-backscatter: a second forged copy",
        "--body",
        body,
    ]);
    assert!(ok, "{t}");
    let got = rig.wait_delivered(1);
    assert_eq!(got.len(), 1, "one transaction for two recipients");
    let m = &got[0];
    assert_eq!(m.mail_from, "<alice@example.org>");
    assert_eq!(
        m.rcpts,
        vec!["<bob@remote.example>", "<carol@remote.example>"]
    );
    assert_eq!(
        m.header("X-Backscatter"),
        vec!["null-sender=no; rcpts=2"],
        "exactly our header, forged copies gone:\n{}",
        m.content
    );
    assert_eq!(m.header("Subject"), vec!["hello"]);
    let (_, got_body) = m.content.split_once("\n\n").expect("a body");
    assert_eq!(got_body.trim_end(), body.trim_end(), "body unchanged");
    // Nothing but our header was added or removed: the sent headers are all there.
    for h in ["From", "To", "Date", "Message-Id", "X-Mailer"] {
        assert_eq!(m.header(h).len(), 1, "{h} in\n{}", m.content);
    }
    let log = rig.maillog();
    assert!(!log.contains("milter-reject"), "{log}");
}

#[test]
fn null_sender_is_recognised() {
    if !postfix_available() {
        return;
    }
    let milter = TestMilter::start(BASIC);
    let rig = Rig::start(&milter.socket(), &[]);
    let (ok, t) = rig.swaks(&["--from", "<>", "--to", "user@remote.example"]);
    assert!(ok, "{t}");
    let got = rig.wait_delivered(1);
    assert_eq!(got[0].mail_from, "<>");
    assert_eq!(
        got[0].header("X-Backscatter"),
        vec!["null-sender=yes; rcpts=1"]
    );
}

#[test]
fn local_submission_through_non_smtpd_milters() {
    if !postfix_available() {
        return;
    }
    let milter = TestMilter::start(BASIC);
    let rig = Rig::start(&milter.socket(), &[]);
    let out = rig.sendmail(
        "local@example.org",
        "dest@remote.example",
        "Subject: from the sendmail command\nX-Backscatter: forged\n\nbody\n",
    );
    assert!(out.status.success(), "{}", common::transcript(&out));
    let got = rig.wait_delivered(1);
    assert_eq!(got[0].mail_from, "<local@example.org>");
    // Outbound (a local submission): nothing of ours tells the recipient about our
    // internals, and the forged copy is gone.
    assert_eq!(got[0].header("X-Backscatter"), Vec::<String>::new());
    assert!(!got[0].content.contains("forged"), "{}", got[0].content);
    assert_eq!(got[0].header("Subject"), vec!["from the sendmail command"]);
}

/// With the milter gone, Postfix's milter_default_action governs and no message is
/// lost: every message is delivered, refused to the client, or still queued.
#[test]
fn milter_stopped_loses_nothing() {
    if !postfix_available() {
        return;
    }
    let milter = TestMilter::start(BASIC);
    let rig = Rig::start(&milter.socket(), &[]);
    let mut refused = 0;
    let sent = 6;
    for i in 0..sent {
        if i == 3 {
            milter.stop_now();
        }
        let (ok, t) = rig.swaks(&[
            "--from",
            "a@example.org",
            "--to",
            &format!("r{i}@remote.example"),
        ]);
        if !ok {
            assert!(t.contains("451 4.7.1"), "tempfail expected:\n{t}");
            refused += 1;
        }
    }
    let delivered = rig.wait_delivered(3);
    let queued = rig.queued();
    assert_eq!(delivered.len(), 3);
    assert_eq!(
        refused, 3,
        "milter_default_action = tempfail refuses while the milter is away"
    );
    assert_eq!(sent, delivered.len() + refused + queued.len());
    drop(milter);

    // milter_default_action = accept: delivered without our header.
    let rig = Rig::start("inet:127.0.0.1:1", &[("milter_default_action", "accept")]);
    let (ok, t) = rig.swaks(&["--from", "a@example.org", "--to", "x@remote.example"]);
    assert!(ok, "{t}");
    let got = rig.wait_delivered(1);
    assert!(got[0].header("X-Backscatter").is_empty());
}

/// A panic inside one message tempfails that message only.
#[test]
fn panic_in_one_message_tempfails_only_that_message() {
    if !postfix_available() {
        return;
    }
    let _ = backscatter_milter::session::PANIC_ON_HEADER.set("X-Test-Panic".into());
    let milter = TestMilter::start(BASIC);
    let rig = Rig::start(&milter.socket(), &[]);
    let (ok, t) = rig.swaks(&[
        "--from",
        "a@example.org",
        "--to",
        "p@remote.example",
        "--header",
        "X-Test-Panic: 1",
    ]);
    assert!(!ok && t.contains("451 4.7.1"), "{t}");
    for i in 0..3 {
        let (ok, t) = rig.swaks(&[
            "--from",
            "a@example.org",
            "--to",
            &format!("ok{i}@remote.example"),
        ]);
        assert!(ok, "{t}");
    }
    let got = rig.wait_delivered(3);
    assert_eq!(got.len(), 3);
    let rt = milter.shared.current();
    assert_eq!(
        rt.counters
            .errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Past the body cap the milter stops buffering; the message still arrives whole.
#[test]
fn body_past_the_cap_is_delivered_whole() {
    if !postfix_available() {
        return;
    }
    let milter = TestMilter::start(&format!(
        "{BASIC}[limits]\nmax_body_bytes = 1024\nmax_header_bytes = 2048\n"
    ));
    let rig = Rig::start(&milter.socket(), &[]);
    let body: String = (0..3000)
        .map(|i| format!("line {i:05} of a long body\n"))
        .collect();
    let many_headers: Vec<String> = (0..100)
        .map(|i| format!("X-Filler-{i}: {}", "y".repeat(40)))
        .collect();
    let mut args = vec![
        "--from",
        "a@example.org",
        "--to",
        "big@remote.example",
        "--body",
        &body,
    ];
    for h in &many_headers {
        args.push("--header");
        args.push(h);
    }
    args.push("--header");
    args.push("X-Backscatter: forged after the header cap");
    let (ok, t) = rig.swaks(&args);
    assert!(ok, "{}", &t[t.len().saturating_sub(2000)..]);
    let got = rig.wait_delivered(1);
    assert!(got[0].content.contains("line 02999 of a long body"));
    assert_eq!(got[0].content.matches("of a long body").count(), 3000);
    assert_eq!(
        got[0].header("X-Backscatter"),
        vec!["null-sender=no; rcpts=1"]
    );
    let rt = milter.shared.current();
    assert_eq!(
        rt.counters
            .truncated
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Many messages over several connections with Postfix's own smtp-source.
#[test]
fn smtp_source_load_all_delivered_with_header() {
    if !postfix_available() {
        return;
    }
    let milter = TestMilter::start(BASIC);
    let rig = Rig::start(&milter.socket(), &[]);
    rig.smtp_source(40, 4, 512);
    let got = rig.wait_delivered(40);
    assert_eq!(got.len(), 40);
    assert!(
        got.iter()
            .all(|m| m.header("X-Backscatter") == vec!["null-sender=no; rcpts=1"])
    );
}
