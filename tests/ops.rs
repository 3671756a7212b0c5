//! Operating on a Debian host: generated man pages and completions are current,
//! milter.toml(5) names exactly the keys the config accepts, the packaged config is
//! the shipped one logging to syslog, the systemd unit verifies, and the daemon's
//! lines reach syslog with facility mail (through Postfix) and it tells systemd
//! when it is ready.
//!
//! `BACKSCATTER_BLESS=1 cargo test --test ops` rewrites the generated files.

mod common;

use common::{Rig, free_port, postfix_available, temp_dir};
use std::{
    collections::BTreeSet,
    fs,
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_backscatter-milter");
const SHIPPED: &str = include_str!("../milter.toml");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn bin(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Compares a committed generated file with what generates it now.
fn check_generated(rel: &str, now: &str) -> Option<String> {
    let path = Path::new(ROOT).join(rel);
    if std::env::var("BACKSCATTER_BLESS").is_ok_and(|v| v == "1") {
        fs::write(&path, now).unwrap();
        return None;
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    (committed != now).then(|| rel.to_string())
}

/// roff text: backslashes and hyphens escaped, a leading dot or quote guarded.
fn roff(s: &str) -> String {
    let e = s.replace('\\', "\\e").replace('-', "\\-");
    if e.starts_with('.') || e.starts_with('\'') {
        format!("\\&{e}")
    } else {
        e
    }
}

/// milter.toml(5), generated from the comments of the shipped milter.toml (which
/// document every key, its default and what it does).
fn config_page() -> String {
    let version = env!("CARGO_PKG_VERSION");
    let mut out = format!(
        ".TH MILTER.TOML 5 \"\" \"backscatter\\-milter {version}\" \"File Formats\"\n\
         .SH NAME\nmilter.toml \\- backscatter\\-milter configuration\n\
         .SH SYNOPSIS\n/etc/backscatter\\-milter/milter.toml\n.SH DESCRIPTION\n"
    );
    let mut comment: Vec<String> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let mut in_header = true;
    let flush = |out: &mut String, comment: &mut Vec<String>, keys: &mut Vec<String>| {
        if keys.is_empty() {
            return;
        }
        for (i, k) in keys.iter().enumerate() {
            out.push_str(if i == 0 { ".TP\n" } else { ".TQ\n" });
            out.push_str(k);
            out.push('\n');
        }
        out.push_str(&body(comment));
        comment.clear();
        keys.clear();
    };
    for line in SHIPPED.lines() {
        let t = line.trim();
        if let Some(table) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            if in_header {
                out.push_str(&body(&comment));
                out.push_str(
                    "Installed by the Debian package, it logs to syslog (facility mail);\n\
                     the copy in /usr/share/doc/backscatter\\-milter/examples logs to stderr.\n\
                     .SH SETTINGS\n",
                );
                comment.clear();
                in_header = false;
            }
            flush(&mut out, &mut comment, &mut keys);
            out.push_str(&format!(".SS [{table}]\n"));
        } else if let Some(c) = t.strip_prefix('#') {
            if !keys.is_empty() {
                flush(&mut out, &mut comment, &mut keys);
            }
            comment.push(c.strip_prefix(' ').unwrap_or(c).to_string());
        } else if let Some((k, v)) = t.split_once('=') {
            keys.push(format!("\\fB{}\\fR = {}", roff(k.trim()), roff(v.trim())));
        } else if t.is_empty() && in_header && !comment.is_empty() {
            comment.push(String::new());
        }
    }
    flush(&mut out, &mut comment, &mut keys);
    out.push_str(
        ".SH FILES\n.TP\n/etc/backscatter\\-milter/milter.toml\nThis file.\n\
         .TP\n/etc/backscatter\\-milter/batv.keys\nThe BATV keys (batv.key_file), mode 0600, \
         owned by the service user.\n\
         .SH SEE ALSO\n\\fBbackscatter\\-milter\\fR(8), \\fBpostconf\\fR(5)\n",
    );
    out
}

/// A comment block as roff: lines indented by two or more spaces keep their layout.
fn body(lines: &[String]) -> String {
    let mut out = String::new();
    let mut literal = false;
    for l in lines {
        let indented = l.starts_with("  ");
        if indented != literal {
            out.push_str(if indented { ".nf\n" } else { ".fi\n" });
            literal = indented;
        }
        if l.is_empty() {
            out.push_str(".PP\n");
        } else {
            out.push_str(&roff(l));
            out.push('\n');
        }
    }
    if literal {
        out.push_str(".fi\n");
    }
    out
}

#[test]
fn generated_man_pages_and_completions_are_current() {
    let stale: Vec<String> = [
        ("contrib/man/backscatter-milter.8", bin(&["man"])),
        ("contrib/man/milter.toml.5", config_page()),
        (
            "contrib/completions/backscatter-milter.bash",
            bin(&["completions", "bash"]),
        ),
        (
            "contrib/completions/_backscatter-milter",
            bin(&["completions", "zsh"]),
        ),
        (
            "contrib/completions/backscatter-milter.fish",
            bin(&["completions", "fish"]),
        ),
    ]
    .into_iter()
    .filter_map(|(rel, now)| check_generated(rel, &now))
    .collect();
    assert!(
        stale.is_empty(),
        "stale: {stale:?}; run BACKSCATTER_BLESS=1 cargo test --test ops"
    );
    // Every subcommand an admin uses is in the man page.
    let page =
        fs::read_to_string(Path::new(ROOT).join("contrib/man/backscatter-milter.8")).unwrap();
    for cmd in ["sign", "verify", "classify", "keygen", "completions"] {
        assert!(page.contains(&format!(".SS {cmd}\n")), "{cmd}");
    }
    assert!(page.contains("\\-\\-check\\-config"));
}

/// The names serde lists after "expected one of" (or "expected").
fn expected_names(err: &str) -> BTreeSet<String> {
    let tail = err.split("expected").nth(1).unwrap_or_default();
    tail.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Every key the config accepts, as table.key, from the parser's own refusals.
fn accepted_keys() -> BTreeSet<String> {
    use backscatter_milter::config::Config;
    let tables = expected_names(&Config::parse("[zz_bogus]\n", "x").unwrap_err().to_string());
    assert!(tables.len() >= 10, "{tables:?}");
    let mut keys = BTreeSet::new();
    for t in &tables {
        let err = Config::parse(&format!("[{t}]\nzz_bogus = 1\n"), "x")
            .unwrap_err()
            .to_string();
        let names = expected_names(&err);
        assert!(!names.is_empty(), "{err}");
        keys.extend(names.into_iter().map(|k| format!("{t}.{k}")));
    }
    keys
}

#[test]
fn config_page_names_exactly_the_accepted_keys() {
    let page = fs::read_to_string(Path::new(ROOT).join("contrib/man/milter.toml.5")).unwrap();
    let mut documented = BTreeSet::new();
    let mut table = String::new();
    let mut lines = page.lines().peekable();
    while let Some(l) = lines.next() {
        if let Some(t) = l.strip_prefix(".SS [").and_then(|r| r.strip_suffix(']')) {
            table = t.to_string();
        } else if (l == ".TP" || l == ".TQ")
            && let Some(next) = lines.peek()
            && let Some(k) = next
                .strip_prefix("\\fB")
                .and_then(|r| r.split("\\fR").next())
        {
            documented.insert(format!("{table}.{}", k.replace("\\-", "-")));
        }
    }
    let accepted = accepted_keys();
    assert!(accepted.len() > 50, "{}", accepted.len());
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "milter.toml(5) lacks {undocumented:?}, names unknown {unknown:?}"
    );
}

#[test]
fn packaged_config_is_the_shipped_one_logging_to_syslog() {
    use backscatter_milter::config::{Config, LogTarget};
    let packaged = fs::read_to_string(Path::new(ROOT).join("contrib/debian/milter.toml")).unwrap();
    let p = Config::parse(&packaged, "contrib/debian/milter.toml").unwrap();
    let mut s = Config::parse(SHIPPED, "milter.toml").unwrap();
    assert_eq!(p.log.target, LogTarget::Syslog("/dev/log".into()));
    assert_eq!(p.log.facility, 2, "mail");
    s.log.target = p.log.target.clone();
    assert_eq!(p, s, "the packaged config differs in more than log.target");
    // The text too, so the comments stay the same (the title and target lines).
    let differing = packaged
        .lines()
        .filter(|l| !SHIPPED.lines().any(|s| s == *l))
        .count();
    assert!(differing <= 3, "{differing} lines differ");
    // Postfix's snippet names the socket the packaged config listens on.
    let main_cf = fs::read_to_string(Path::new(ROOT).join("contrib/postfix/main.cf")).unwrap();
    let socket = p.milter.socket.to_string();
    assert!(
        main_cf
            .lines()
            .any(|l| l == format!("smtpd_milters = {socket}")),
        "contrib/postfix/main.cf does not name {socket}"
    );
}

#[test]
fn systemd_unit_verifies() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        assert!(
            std::env::var("BACKSCATTER_REQUIRE_POSTFIX").as_deref() != Ok("1"),
            "BACKSCATTER_REQUIRE_POSTFIX=1 but systemd-analyze is missing"
        );
        eprintln!("SKIPPED: no systemd-analyze (Debian's systemd package)");
        return;
    }
    let unit =
        fs::read_to_string(Path::new(ROOT).join("contrib/systemd/backscatter-milter.service"))
            .unwrap();
    for must in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus=78",
        "Before=postfix.service sendmail.service",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "UMask=0077",
        "LimitCORE=0",
        "RuntimeDirectory=backscatter-milter",
        "StateDirectory=backscatter-milter",
    ] {
        assert!(unit.contains(must), "unit lacks {must}");
    }
    assert!(!unit.lines().any(|l| l == "Group=postfix"));
    // verify needs the binary where ExecStart says: point it at the built one.
    let dir = temp_dir();
    let path = dir.path().join("backscatter-milter.service");
    fs::write(&path, unit.replace("/usr/sbin/backscatter-milter", BIN)).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "systemd-analyze verify:\n{text}");
    assert!(!text.contains("backscatter-milter.service:"), "{text}");
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn recv_until(rx: &UnixDatagram, what: &str, got: &mut Vec<String>) -> String {
    let t = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        if let Some(l) = got.iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no '{what}' among {got:#?}"
        );
        if let Ok(n) = rx.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
}

/// The daemon as the package runs it: syslog target, facility mail; its readiness
/// reaches $NOTIFY_SOCKET; a message through Postfix is logged under its queue id.
#[test]
fn daemon_logs_to_syslog_with_facility_mail_and_notifies_readiness() {
    let dir = temp_dir();
    let log_sock = dir.path().join("log");
    let notify_sock = dir.path().join("notify");
    let rx = UnixDatagram::bind(&log_sock).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let notify = UnixDatagram::bind(&notify_sock).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let port = free_port();
    let cfg = dir.path().join("milter.toml");
    fs::write(
        &cfg,
        format!(
            "[milter]\nsocket = \"inet:127.0.0.1:{port}\"\n\
             [log]\ntarget = \"syslog\"\nsocket = \"{}\"\n[batv]\ntrusted_networks = []\n",
            log_sock.display()
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify_sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let daemon = Daemon(child);
    let mut got = Vec::new();
    let line = recv_until(&rx, "listening on", &mut got);
    // <22>: facility mail (2) * 8 + severity info (6).
    assert!(line.starts_with("<22>"), "{line}");
    assert!(
        line.contains(&format!(
            " backscatter-milter[{pid}]: listening on inet:127.0.0.1:{port}"
        )),
        "{line}"
    );
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 on NOTIFY_SOCKET");
    assert!(buf[..n].starts_with(b"READY=1"), "{:?}", &buf[..n]);
    // Ready means listening: a connection succeeds now.
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();

    // SIGHUP: RELOADING=1 then READY=1.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let n = notify.recv(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"RELOADING=1\nMONOTONIC_USEC="));
    let n = notify.recv(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"READY=1"));
    recv_until(&rx, "configuration reloaded", &mut got);

    if postfix_available() {
        let rig = Rig::start(&format!("inet:127.0.0.1:{port}"), &[]);
        let (ok, t) = rig.swaks(&["--from", "<>", "--to", "postmaster@remote.example"]);
        assert!(ok, "{t}");
        let delivered = rig.wait_delivered(1);
        assert_eq!(
            delivered[0].header("X-Backscatter")[0].split(';').next(),
            Some("null-sender=yes")
        );
        // Postfix's queue id for it, from Postfix's own log.
        let maillog = rig.maillog();
        let qid = maillog
            .lines()
            .find(|l| l.contains("postfix/smtpd") && l.contains(": client="))
            .and_then(|l| l.split("]: ").nth(1))
            .and_then(|r| r.split(':').next())
            .unwrap_or_else(|| panic!("no queue id in\n{maillog}"))
            .to_string();
        let line = recv_until(&rx, &format!("]: {qid}: "), &mut got);
        assert!(line.starts_with("<22>"), "{line}");
        assert!(line.contains("null_sender=true"), "{line}");
    }
    drop(daemon);
    assert!(
        !got.iter().any(|l| l.contains('\x1b')),
        "ANSI codes in syslog lines"
    );
}

#[test]
fn check_config_warns_when_trusted_networks_hide_inbound_bounces() {
    let dir = temp_dir();
    let cfg = dir.path().join("m.toml");
    let keys = dir.path().join("keys");
    fs::write(&keys, bin(&["keygen", "--id", "1"])).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o600)).unwrap();
    let run = |extra: &str| {
        fs::write(
            &cfg,
            format!(
                "[batv]\nsign_domains = [\"example.org\"]\nkey_file = \"{}\"\n{extra}\n\
                 [ledger]\nstate_dir = \"{}\"\n[verdict]\nmode = \"enforce\"\n",
                keys.display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // Warnings only (as root, check-config adds a note about the service user).
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.contains(": note: "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let err = run("");
    assert!(
        err.contains("warning") && err.contains("batv.inbound_relays"),
        "{err}"
    );
    assert_eq!(run("inbound_relays = [\"127.0.0.1\"]"), "");
    assert_eq!(run("trusted_networks = []"), "");
}

/// Behind a content filter or backup MX on a trusted network, a forged bounce goes
/// unjudged (taken as ours going out) unless that host is in batv.inbound_relays.
#[test]
fn inbound_relays_make_bounces_from_trusted_hosts_judged() {
    if !postfix_available() {
        return;
    }
    let data = format!("@{ROOT}/tests/fixtures/corpus/sisimai/maildir/bsd/lhost-sendmail-01.eml");
    let verdict_of = |extra: &str| {
        let dir = temp_dir();
        let milter = common::TestMilter::start(&common::batv_config_own_ledger(dir.path(), extra));
        let rig = Rig::start(&milter.socket(), &[]);
        // Postfix's client here is 127.0.0.1: in the default trusted_networks.
        let (ok, t) = rig.swaks(&["--from", "<>", "--to", "user@example.org", "--data", &data]);
        assert!(ok, "{t}");
        // No header at all on mail taken as ours going out.
        rig.wait_delivered(1)[0].header("X-Backscatter").join("")
    };
    let hidden = verdict_of("");
    assert!(
        !hidden.contains("kind="),
        "judged without inbound_relays: {hidden}"
    );
    let judged = verdict_of("inbound_relays = [\"127.0.0.1\"]");
    assert!(
        judged.contains("kind=bounce") && judged.contains("verdict=reject"),
        "{judged}"
    );
}
