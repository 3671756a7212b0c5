//! `backscatter-milter classify`: the analysis and the verdict an admin can ask for.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_backscatter-milter");
const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn run(args: &[&str], stdin: Option<&[u8]>) -> (i32, String) {
    use std::io::Write;
    let mut c = Command::new(BIN)
        .args(["--config", "/nonexistent/milter.toml"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        c.stdin.take().unwrap().write_all(input).unwrap();
    } else {
        drop(c.stdin.take());
    }
    let out = c.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn json_lines_with_the_documented_fields() {
    let bounce = format!("{FIX}/own/postfix-headers-only.eml");
    let ham = format!("{FIX}/own/ham-quotes-undeliverable.eml");
    let (code, out) = run(&["classify", "--json", &bounce, &ham], None);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let b = &lines[0];
    assert_eq!(b["file"], bounce.as_str());
    assert_eq!(b["kind"], "bounce");
    let r = &b["recipients"][0];
    assert_eq!(r["address"], "tom@remote.example");
    assert_eq!(r["status"], "5.2.2");
    assert_eq!(r["meaning"], "mailbox full");
    assert_eq!(r["action"], "failed");
    assert_eq!(
        r["diagnostic"],
        "552 5.2.2 <tom@remote.example>: Mailbox full"
    );
    let o = &b["original"];
    assert_eq!(o["source"], "rfc822-headers");
    assert_eq!(o["message_id"], "c0ffee42-1@example.org");
    assert_eq!(o["from"], "jane@example.org");
    assert_eq!(o["return_path"], "prvs=1001a1b2c3=jane@example.org");
    assert_eq!(o["received"].as_array().unwrap().len(), 2);
    assert!(b.get("verdict").is_none(), "no envelope, no verdict");
    assert_eq!(lines[1]["kind"], "other");
    assert_eq!(lines[1]["original"]["source"], "none");
}

#[test]
fn verdict_for_an_envelope() {
    let file = format!("{FIX}/own/bounce-of-bounce.eml");
    // '' and '<>' both mean the null sender.
    for null in ["", "<>"] {
        let (code, out) = run(
            &[
                "classify",
                "--json",
                "--mail-from",
                null,
                "--rcpt",
                "postmaster@example.org",
                &file,
            ],
            None,
        );
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let verdict = &v["verdict"];
        // Defaults (no BATV): a foreign original scores 10, reject; observe applies tag.
        assert_eq!(verdict["action"], "reject", "{v}");
        assert_eq!(verdict["applied"], "tag");
        assert_eq!(verdict["score"], 10);
        assert_eq!(verdict["reasons"][0]["code"], "foreign_original");
    }
    // From standard input, human-readable.
    let raw = std::fs::read(&file).unwrap();
    let (code, out) = run(
        &[
            "classify",
            "--mail-from",
            "<>",
            "--rcpt",
            "a@example.org",
            "-",
        ],
        Some(&raw),
    );
    assert_eq!(code, 0);
    assert!(out.starts_with("-: bounce (rfc3464)"), "{out}");
    assert!(
        out.contains("verdict: reject (score 10, foreign_original(+10))"),
        "{out}"
    );
    // A missing file is an error, the others still print.
    let (code, out) = run(&["classify", "/nonexistent.eml", &file], None);
    assert_eq!(code, 1);
    assert!(out.contains("bounce"));
}
