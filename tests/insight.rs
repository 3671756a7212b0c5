//! What admins see and steer, through a real Postfix: recent decisions (JSON, the
//! page in headless Chromium, the `decisions` command).

mod common;

use common::{Rig, TestMilter, batv_config, http_get, postfix_available, temp_dir};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const BIN: &str = env!("CARGO_BIN_EXE_backscatter-milter");
const TOKEN: &str = "insight-token-for-the-stats-endpoint";
/// Our user: this local part must never appear in what admins are shown.
const USER: &str = "zebulon.private@example.org";
const FRIEND: &str = "friend@remote.example";

fn token_file(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("stats.token");
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// A real Postfix NDR from the corpus reporting `failed` as the failed recipient,
/// with `original` inside (empty: none returned).
fn ndr_for(failed: &str, original: &str) -> String {
    let t = std::fs::read_to_string(
        Path::new(FIX).join("corpus/sisimai/maildir/bsd/lhost-postfix-01.eml"),
    )
    .unwrap()
    .replace("r@p351355.pool.example.ne.jp", failed)
    .replace("kijitora@example.org", failed);
    if original.is_empty() {
        let cut = t.rfind("--FFFFFFFFFFFF.0000000000000/p351355.pool.example.ne.jp\nContent-Description: Undelivered Message").unwrap();
        return format!(
            "{}--FFFFFFFFFFFF.0000000000000/p351355.pool.example.ne.jp--\n",
            &t[..cut]
        );
    }
    let marker = "Content-Type: message/rfc822\n";
    let at = t.rfind(marker).unwrap() + marker.len();
    format!(
        "{}\n{}\n--FFFFFFFFFFFF.0000000000000/p351355.pool.example.ne.jp--\n",
        &t[..at],
        original.trim_end()
    )
}

struct World {
    dir: tempfile::TempDir,
    milter: TestMilter,
    rig: Rig,
}

fn world(verdict: &str, stats_extra: &str) -> World {
    let dir = temp_dir();
    let cfg = format!(
        "{}\n[ledger]\nstate_dir = \"{}\"\n[verdict]\n{verdict}\n[stats]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n{stats_extra}\n",
        batv_config(dir.path(), "trusted_networks = []"),
        dir.path().join("state").display(),
        token_file(dir.path())
    );
    let milter = TestMilter::start(&cfg);
    let rig = Rig::start(&milter.socket(), &*common::BATV_MAIN_CF);
    World { dir, milter, rig }
}

impl World {
    fn write(&self, name: &str, data: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        format!("@{}", p.display())
    }

    fn bounce(&self, name: &str, rcpt: &str, data: &str) -> (bool, String) {
        let file = self.write(name, data);
        self.rig
            .swaks(&["--from", "<>", "--to", rcpt, "--data", &file])
    }

    /// A config file for the admin commands: the endpoint where it really listens.
    fn admin_config(&self) -> PathBuf {
        let p = self.dir.path().join("admin.toml");
        std::fs::write(
            &p,
            format!(
                "[stats]\nlisten = \"{}\"\ntoken_file = \"{}\"\n",
                self.milter.stats_addr.unwrap(),
                self.dir.path().join("stats.token").display()
            ),
        )
        .unwrap();
        p
    }

    fn decisions(&self, query: &str) -> serde_json::Value {
        let (code, body) = http_get(
            self.milter.stats_addr.unwrap(),
            &format!("/decisions{query}"),
            Some(TOKEN),
        );
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Our user's mail to FRIEND, as it left (tagged, signed).
    fn send_ours(&self, subject: &str) -> common::Delivered {
        let before = self.rig.delivered().len();
        let (ok, t) = self.rig.swaks_port(
            self.rig.submission_port,
            &[
                "--from",
                USER,
                "--to",
                FRIEND,
                "--header",
                &format!("Subject: {subject}"),
            ],
        );
        assert!(ok, "{t}");
        self.rig
            .wait_delivered(before + 1)
            .into_iter()
            .find(|m| m.header("Subject") == [subject])
            .unwrap()
    }
}

fn local_part() -> &'static str {
    USER.split('@').next().unwrap()
}

/// Three bounces through Postfix (a genuine one to a valid tag, a forged one
/// returning spam, one without an original), then what admins see.
#[test]
fn recent_decisions_through_postfix() {
    if !postfix_available() {
        return;
    }
    let w = world("mode = \"enforce\"", "");
    let ours = w.send_ours("minutes of the meeting");
    let tagged = ours.mail_from.trim_matches(['<', '>']).to_string();
    assert!(tagged.starts_with("prvs="), "{tagged}");
    let (ok, t) = w.bounce("genuine.eml", &tagged, &ndr_for(FRIEND, &ours.content));
    assert!(ok, "{t}");
    let spam = std::fs::read_to_string(format!(
        "{FIX}/corpus/sisimai/maildir/bsd/lhost-sendmail-01.eml"
    ))
    .unwrap();
    let (ok, t) = w.bounce("forged.eml", USER, &spam);
    assert!(!ok && t.contains("550 5.7.1"), "{t}");
    let (ok, t) = w.bounce("bare.eml", USER, &ndr_for(FRIEND, ""));
    assert!(ok, "held, not refused: {t}");
    // Ordinary mail is not judged and not listed.
    let (ok, t) = w.rig.swaks(&["--from", FRIEND, "--to", USER]);
    assert!(ok, "{t}");

    let all = w.decisions("");
    let list = all["decisions"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{all:#}");
    assert_eq!(all["capacity"], 1000);
    // Newest first: held, rejected, accepted.
    let decided: Vec<&str> = list
        .iter()
        .map(|d| d["decided"].as_str().unwrap())
        .collect();
    assert_eq!(decided, ["quarantine", "reject", "accept"], "{all:#}");
    let (held, rejected, genuine) = (&list[0], &list[1], &list[2]);
    for d in list {
        assert_eq!(d["kind"], "bounce");
        assert_eq!(d["client_ip"], "127.0.0.1");
        assert_eq!(d["mode"], "enforce");
        assert!(d["time"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(d["recipients"][0]["address"], "*@example.org", "{d:#}");
    }
    assert_eq!(held["action"], "quarantine");
    assert_eq!(held["score"], 8);
    let codes = |d: &serde_json::Value| -> Vec<String> {
        d["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["code"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(codes(held), ["untagged", "no_original"]);
    assert!(
        held["reasons"][1]["text"]
            .as_str()
            .unwrap()
            .contains("No original message was returned"),
        "{held:#}"
    );
    assert_eq!(rejected["action"], "reject");
    assert!(codes(rejected).contains(&"foreign_original".to_string()));
    assert_eq!(genuine["action"], "accept");
    assert_eq!(codes(genuine)[0], "valid_tag");
    assert_eq!(genuine["recipients"][0]["tag"], "valid");
    assert_eq!(genuine["statuses"][0], "5.1.1", "{genuine:#}");
    assert_eq!(genuine["failed_domains"][0], "remote.example");
    assert!(
        genuine["reporting_mta"].as_str().is_some(),
        "the NDR names its MTA: {genuine:#}"
    );
    // The MTA's queue id is the one Postfix logged for that message.
    let qid = held["queue_id"].as_str().unwrap();
    assert!(
        w.rig
            .queued()
            .iter()
            .any(|(q, id)| q == "hold" && id == qid),
        "{qid} is in the hold queue: {:?}",
        w.rig.queued()
    );
    let qid = genuine["queue_id"].as_str().unwrap();
    assert!(
        w.rig
            .maillog()
            .lines()
            .any(|l| l.contains(&format!("{qid}: from=<>"))),
        "{qid}"
    );

    // Filters.
    let only = w.decisions("?action=reject&kind=bounce");
    assert_eq!(only["decisions"].as_array().unwrap().len(), 1);
    assert_eq!(only["decisions"][0]["decided"], "reject");
    assert_eq!(
        w.decisions("?kind=autoreply")["decisions"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        w.decisions("?limit=2")["decisions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (code, _) = http_get(
        w.milter.stats_addr.unwrap(),
        "/decisions?action=maybe",
        Some(TOKEN),
    );
    assert_eq!(code, 400);
    let (code, _) = http_get(w.milter.stats_addr.unwrap(), "/decisions", None);
    assert_eq!(code, 401, "the token guards it");

    // The command reads the endpoint the config names.
    let out = Command::new(BIN)
        .args(["--config", w.admin_config().to_str().unwrap(), "decisions"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", common::transcript(&out));
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().next().unwrap().starts_with("TIME (UTC)"));
    assert!(table.contains("untagged(+5),no_original(+3)"), "{table}");
    let out = Command::new(BIN)
        .args([
            "--config",
            w.admin_config().to_str().unwrap(),
            "decisions",
            "--action",
            "accept",
            "--explain",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", common::transcript(&out));
    assert_eq!(
        table.lines().count(),
        5,
        "header, row, its three proofs: {table}"
    );
    assert!(
        table.contains("- Proof: the bounce was sent to a valid BATV tag"),
        "{table}"
    );

    // No local part of our user anywhere: JSON, page, command.
    let (_, page) = http_get(w.milter.stats_addr.unwrap(), "/", Some(TOKEN));
    let (_, json) = http_get(w.milter.stats_addr.unwrap(), "/decisions", Some(TOKEN));
    for shown in [&json, &page, &table.to_string()] {
        assert!(!shown.contains(local_part()), "{shown}");
    }
    assert!(page.contains("id=\"decisions\""), "{page}");
}

#[test]
fn hashed_addresses_and_a_ring_of_two() {
    if !postfix_available() {
        return;
    }
    let w = world(
        "mode = \"observe\"",
        "recent_decisions = 2\ndecision_addresses = \"hash\"",
    );
    for i in 0..3 {
        let (ok, t) = w.bounce(&format!("b{i}.eml"), USER, &ndr_for(FRIEND, ""));
        assert!(ok, "observe delivers: {t}");
    }
    let (ok, t) = w.bounce(
        "other.eml",
        "someone.else@example.org",
        &ndr_for(FRIEND, ""),
    );
    assert!(ok, "{t}");
    let all = w.decisions("");
    let list = all["decisions"].as_array().unwrap();
    assert_eq!(list.len(), 2, "the ring keeps two: {all:#}");
    let a0 = list[0]["recipients"][0]["address"].as_str().unwrap();
    let a1 = list[1]["recipients"][0]["address"].as_str().unwrap();
    assert!(a0.starts_with("h:") && a0.ends_with("@example.org"), "{a0}");
    assert_ne!(a0, a1, "two users, two hashes");
    assert_eq!(list[1]["decided"], "quarantine");
    assert_eq!(list[1]["action"], "tag", "observe applies at most tag");
    assert!(!all.to_string().contains(local_part()));
    assert!(!all.to_string().contains("someone.else"));
}

/// The page with decisions in headless Chromium: the table is there, the filter
/// selects work, a click shows the reasons in words. A screenshot is kept in
/// target/insight-decisions.png.
#[test]
fn decisions_page_in_headless_chromium() {
    if !common::chromium_available() || !postfix_available() {
        return;
    }
    let chromium = Path::new(common::CHROMIUM);
    // No token here: Chromium's command line cannot send one.
    let dir = temp_dir();
    let cfg = format!(
        "{}\n[ledger]\nstate_dir = \"{}\"\n[verdict]\nmode = \"enforce\"\n[stats]\nlisten = \"127.0.0.1:0\"\n",
        batv_config(dir.path(), "trusted_networks = []"),
        dir.path().join("state").display()
    );
    let milter = TestMilter::start(&cfg);
    let rig = Rig::start(&milter.socket(), &[]);
    let spam = format!("@{FIX}/corpus/sisimai/maildir/bsd/lhost-sendmail-01.eml");
    for _ in 0..2 {
        let (ok, _) = rig.swaks(&["--from", "<>", "--to", USER, "--data", &spam]);
        assert!(!ok);
    }
    let bare = dir.path().join("bare.eml");
    std::fs::write(&bare, ndr_for(FRIEND, "")).unwrap();
    let (ok, t) = rig.swaks(&[
        "--from",
        "<>",
        "--to",
        USER,
        "--data",
        &format!("@{}", bare.display()),
    ]);
    assert!(ok, "{t}");
    let base = format!("http://{}/", milter.stats_addr.unwrap());
    let profile = dir.path().join("chromium-profile");
    let chrome = |args: &[&str]| {
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .output()
            .unwrap()
    };
    let dom = String::from_utf8_lossy(&chrome(&["--dump-dom", &base]).stdout).into_owned();
    assert_eq!(dom.matches("<tr class=\"decision\"").count(), 3, "{dom}");
    assert_eq!(dom.matches("data-action=\"reject\"").count(), 2, "{dom}");
    assert!(!dom.contains(local_part()));
    // The filter, as the select submits it.
    let url = format!("{base}?action=quarantine&kind=bounce");
    let dom = String::from_utf8_lossy(&chrome(&["--dump-dom", &url]).stdout).into_owned();
    assert_eq!(dom.matches("<tr class=\"decision\"").count(), 1, "{dom}");
    assert!(
        dom.contains("<option selected=\"\">quarantine</option>"),
        "the select shows the filter: {dom}"
    );
    // A row opens in the page's own script, the one a click calls: the reasons in
    // words show.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("insight-decisions.png");
    let _ = std::fs::remove_file(&shot);
    // Chromium's headless screenshot runs no input; the page opens the row named
    // in its fragment (#why-N) so the open state can be seen.
    let out = chrome(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,1000",
        &format!("{base}#why-0"),
    ]);
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}): {}", common::transcript(&out)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000);
    let dom = String::from_utf8_lossy(&chrome(&["--dump-dom", &format!("{base}#why-0")]).stdout)
        .into_owned();
    let row = dom
        .split("id=\"why-0\"")
        .nth(1)
        .unwrap_or_else(|| panic!("{dom}"));
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(!dom.contains("id=\"why-0\" hidden"), "opened: {dom}");
    assert!(row.contains("No original message was returned"), "{row}");
    assert!(
        dom.contains("id=\"why-1\" hidden"),
        "the others stay closed"
    );
}

fn quarantine(w: &World, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["--config", w.admin_config().to_str().unwrap(), "quarantine"])
        .args(args)
        .args(["--postfix-config", w.rig.config_dir().to_str().unwrap()])
        .output()
        .unwrap()
}

/// Two bounces without an original are held by Postfix on our verdict; the command
/// lists them with our reasons, releases one (the sink gets it) and deletes the
/// other (gone, never delivered).
#[test]
fn the_hold_queue_through_postfix() {
    if !postfix_available() {
        return;
    }
    let w = world("mode = \"enforce\"", "");
    let (ok, t) = w.bounce("one.eml", USER, &ndr_for(FRIEND, ""));
    assert!(ok, "{t}");
    let (ok, t) = w.bounce("two.eml", USER, &ndr_for("other@far.example", ""));
    assert!(ok, "{t}");
    let held: Vec<String> = w
        .rig
        .queued()
        .into_iter()
        .filter(|(q, _)| q == "hold")
        .map(|(_, id)| id)
        .collect();
    assert_eq!(held.len(), 2, "{}", w.rig.maillog());

    let out = quarantine(&w, &["list", "--explain"]);
    assert!(out.status.success(), "{}", common::transcript(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    for id in &held {
        let row = table
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} listed: {table}"));
        assert!(row.contains("untagged(+5),no_original(+3)"), "{row}");
        assert!(row.contains(" 8 ") && row.contains("bounce"), "{row}");
        assert!(
            row.contains("MAILER-DAEMON"),
            "null sender, as postqueue says: {row}"
        );
    }
    assert!(
        table.contains("- No original message was returned"),
        "{table}"
    );
    let out = quarantine(&w, &["list", "--json"]);
    let json: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json.len(), 2);
    assert_eq!(json[0]["recipients"][0], USER);

    // Which held message is which (by the failed recipient in it).
    let (keep, drop) = if w.rig.postcat(&held[0]).contains("far.example") {
        (&held[1], &held[0])
    } else {
        (&held[0], &held[1])
    };
    let before = w.rig.delivered().len();
    let out = quarantine(&w, &["release", keep]);
    assert!(out.status.success(), "{}", common::transcript(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{keep}: released\n")
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!("{keep}: quarantine: released by an admin"))
            && log.contains("no_original(+3)"),
        "logged: {log}"
    );
    let got = w.rig.wait_delivered(before + 1);
    let released = got
        .iter()
        .find(|m| m.mail_from == "<>" && m.content.contains(FRIEND))
        .unwrap_or_else(|| panic!("released message delivered: {got:?}"));
    assert!(
        released
            .header("X-Backscatter")
            .join("")
            .contains("verdict=quarantine"),
        "{}",
        released.content
    );

    let out = quarantine(&w, &["delete", drop]);
    assert!(out.status.success(), "{}", common::transcript(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("deleted by an admin"));
    assert!(w.rig.queued().is_empty(), "{:?}", w.rig.queued());
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        !w.rig
            .delivered()
            .iter()
            .any(|m| m.content.contains("far.example")),
        "the deleted one was never delivered"
    );
    // Neither is held any more: acting again fails, naming why; a bogus id never
    // reaches postsuper.
    let out = quarantine(&w, &["release", keep]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a message we hold"),
        "{}",
        common::transcript(&out)
    );
    let out = quarantine(&w, &["delete", "-d"]);
    assert!(!out.status.success());
    let out = quarantine(&w, &["delete", "ALL"]);
    assert!(!out.status.success());
    let out = quarantine(&w, &["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing held"));
}

/// Three real Postfix instances: ours (with the milter), a relay that sends our mail
/// on and bounces what is refused back to us over SMTP, and a destination whose
/// smtpd_sender_restrictions refuse tagged senders. The refusals are counted; after
/// `learn_after` of them mail to that domain leaves unsigned (and is accepted);
/// `exemptions suggest` shows the line to add; `exemptions forget` revokes it.
#[test]
fn a_destination_refusing_our_tags_is_learned() {
    use backscatter_milter::{Runtime, config::Config};
    if !postfix_available() {
        return;
    }
    let dir = temp_dir();
    let cfg = format!(
        "{}\nlearn_exemptions = true\nlearn_after = 2\n[ledger]\nstate_dir = \"{}\"\n[verdict]\nmode = \"enforce\"\n[stats]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        batv_config(dir.path(), "trusted_networks = []"),
        dir.path().join("state").display(),
        token_file(dir.path())
    );
    let milter = TestMilter::start(&cfg);
    let senders = dir.path().join("senders.regexp");
    std::fs::write(
        &senders,
        "/^prvs=/ REJECT tagged senders are not accepted here\n",
    )
    .unwrap();
    let strict = Rig::start(
        "",
        &[
            ("myhostname", "mx.strict.example"),
            (
                "smtpd_sender_restrictions",
                &format!("check_sender_access regexp:{}", senders.display()),
            ),
        ],
    );
    let relay_host = format!("[127.0.0.1]:{}", strict.smtp_port);
    let relay = Rig::start(
        "",
        &[
            ("myhostname", "relay.example.net"),
            ("relayhost", relay_host.as_str()),
        ],
    );
    let mut ours_cf: Vec<(&str, &str)> = common::BATV_MAIN_CF.to_vec();
    let transport = format!(
        "inline:{{ strict.example=smtp:[127.0.0.1]:{} }}",
        relay.smtp_port
    );
    ours_cf.push(("transport_maps", &transport));
    let ours = Rig::start(&milter.socket(), &ours_cf);
    // The relay returns bounces for example.org to us.
    let back = format!(
        "transport_maps=inline:{{ example.org=smtp:[127.0.0.1]:{} }}",
        ours.smtp_port
    );
    let c = relay.config_dir();
    for args in [
        vec!["-c", c.to_str().unwrap(), "-e", &back],
        vec!["-c", c.to_str().unwrap(), "-e", "bounce_queue_lifetime=0"],
    ] {
        assert!(
            Command::new("/usr/sbin/postconf")
                .args(&args)
                .status()
                .unwrap()
                .success()
        );
    }
    assert!(
        Command::new("/usr/sbin/postfix")
            .args(["-c", c.to_str().unwrap(), "reload"])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(std::time::Duration::from_secs(1));

    let send = |n: usize| {
        let (ok, t) = ours.swaks_port(
            ours.submission_port,
            &[
                "--from",
                USER,
                "--to",
                "friend@strict.example",
                "--header",
                &format!("Subject: to the strict list {n}"),
            ],
        );
        assert!(ok, "{t}");
    };
    let refusals = |want: u64| {
        let t = std::time::Instant::now();
        loop {
            let (_, body) = http_get(milter.stats_addr.unwrap(), "/stats", Some(TOKEN));
            let s: serde_json::Value = serde_json::from_str(&body).unwrap();
            let d = s["refusing_domains"]["domains"]
                .as_array()
                .and_then(|l| l.iter().find(|d| d["domain"] == "strict.example").cloned());
            if d.as_ref().is_some_and(|d| d["refusals"] == want) {
                return (s, d.unwrap());
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(30),
                "{want} refusals from strict.example: {s:#}\nours:\n{}\nrelay:\n{}",
                ours.maillog(),
                relay.maillog()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    send(1);
    let (_, d) = refusals(1);
    assert_eq!(d["exempted"], false);
    assert!(
        d["sample"]
            .as_str()
            .unwrap()
            .contains("Sender address rejected: tagged senders are not accepted here"),
        "{d:#}"
    );
    // The bounce came back to the tag over SMTP, was judged ours and delivered.
    let back = ours.wait_delivered(1);
    assert!(
        back.iter().any(|m| m.mail_from == "<>"
            && m.header("X-Backscatter")
                .join("")
                .contains("verdict=accept")),
        "{back:?}"
    );
    send(2);
    let (stats, d) = refusals(2);
    assert_eq!(d["exempted"], true, "learned after 2: {stats:#}");
    assert!(
        d["sample"].as_str().unwrap().contains("<*@example.org>"),
        "{d:#}"
    );
    assert!(!stats.to_string().contains(local_part()), "{stats:#}");
    assert_eq!(
        stats["refusing_domains"]["suggested_line"],
        "exempt_recipient_domains = [\"strict.example\"]"
    );
    // Persisted in the state directory.
    let file = dir.path().join("state/refusing-domains.json");
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("\"strict.example\"")
    );

    // The next message leaves unsigned, and the destination takes it.
    send(3);
    let t = std::time::Instant::now();
    while strict.delivered().is_empty() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "strict.example never accepted the unsigned message: {}",
            strict.maillog()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let got = strict.delivered();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, format!("<{USER}>"), "unsigned");
    assert!(got[0].content.contains("to the strict list 3"));

    // The admin's view and the exact line.
    let admin = dir.path().join("admin.toml");
    std::fs::write(
        &admin,
        format!(
            "[stats]\nlisten = \"{}\"\ntoken_file = \"{}\"\n[ledger]\nstate_dir = \"{}\"\n",
            milter.stats_addr.unwrap(),
            dir.path().join("stats.token").display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", admin.to_str().unwrap(), "exemptions", "suggest"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", common::transcript(&out));
    let row = text
        .lines()
        .find(|l| l.starts_with("strict.example"))
        .unwrap();
    assert!(
        row.contains(" 2 ") && row.contains("exempted (learned)"),
        "{row}"
    );
    assert!(text.contains("Sender address rejected"), "{text}");
    assert!(
        text.lines()
            .any(|l| l == "exempt_recipient_domains = [\"strict.example\"]"),
        "{text}"
    );
    let (_, page) = http_get(milter.stats_addr.unwrap(), "/", Some(TOKEN));
    assert!(page.contains("id=\"refusing\"") && page.contains("strict.example"));

    // Revoked: after the reload, mail to it is signed again (and refused again).
    let out = Command::new(BIN)
        .args([
            "--config",
            admin.to_str().unwrap(),
            "exemptions",
            "forget",
            "strict.example",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::transcript(&out));
    let old = milter.shared.current();
    let config = Config::parse(&cfg, "test").unwrap();
    milter
        .shared
        .replace(Runtime::reload(config, &old).unwrap());
    send(4);
    let (_, d) = refusals(1);
    assert_eq!(d["revoked"], true);
    assert_eq!(d["exempted"], false);
    assert_eq!(strict.delivered().len(), 1, "refused again, never accepted");
}

/// Observe mode through Postfix: the report says what enforce would have done and
/// whether it is safe to switch.
#[test]
fn observe_report_through_postfix() {
    if !postfix_available() {
        return;
    }
    let w = world("mode = \"observe\"", "");
    let ours = w.send_ours("a genuine one");
    let tagged = ours.mail_from.trim_matches(['<', '>']).to_string();
    let (ok, t) = w.bounce("genuine.eml", &tagged, &ndr_for(FRIEND, &ours.content));
    assert!(ok, "{t}");
    let spam = std::fs::read_to_string(format!(
        "{FIX}/corpus/sisimai/maildir/bsd/lhost-sendmail-01.eml"
    ))
    .unwrap();
    for i in 0..2 {
        let (ok, t) = w.bounce(&format!("forged{i}.eml"), USER, &spam);
        assert!(ok, "observe delivers: {t}");
    }
    let (ok, t) = w.bounce("bare.eml", USER, &ndr_for(FRIEND, ""));
    assert!(ok, "{t}");
    let report = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["--config", w.admin_config().to_str().unwrap(), "report"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = report(&["--min-judged", "4", "--since", "1h"]);
    assert_eq!(code, Some(0), "{text}");
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix}: {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line("reject")[1], "2", "{text}");
    assert_eq!(line("reject")[2], "(0", "observe applied none: {text}");
    assert_eq!(line("quarantine")[1], "1");
    assert_eq!(line("accept")[1], "1");
    assert_eq!(line("foreign_original")[1], "2");
    assert_eq!(
        line("valid_tag")[1],
        "1",
        "the genuine bounce saved by its tag"
    );
    assert!(
        text.contains("client         127.0.0.1") && text.contains("smtpgw.example.jp"),
        "{text}"
    );
    assert!(
        text.contains("Bounces to a valid tag of ours that enforce would stop: 0"),
        "{text}"
    );
    assert!(
        text.lines().last().unwrap().starts_with(
            "READY: no genuine bounce would be stopped; enforce would reject 2 and hold 1 of 4 judged"
        ),
        "{text}"
    );
    assert!(!text.contains(local_part()));
    let (code, text) = report(&[]);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("NOT READY: only 4 judged message(s) seen, at least 20 wanted"),
        "{text}"
    );
}
