//! The built binary as an admin runs it: unix socket, SIGHUP reload, SIGTERM drain.

mod common;

use common::{Rig, Smtp, postfix_available, temp_dir};
use std::{
    fs,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_backscatter-milter");

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(config: &Path, log: &Path) -> Self {
        let child = Command::new(BIN)
            .args(["--config", config.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .stderr(fs::File::create(log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let d = Self {
            child,
            log: log.to_path_buf(),
        };
        d.wait_log("listening on", 1);
        d
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str, count: usize) {
        let t = Instant::now();
        while self.log().matches(needle).count() < count {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "no '{needle}' in log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(30));
        }
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn unix_socket_reload_and_graceful_shutdown() {
    if !postfix_available() {
        return;
    }
    let dir = temp_dir();
    let sock = dir.path().join("m.sock");
    // A stale socket from a previous run is removed at start.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let cfg = dir.path().join("milter.toml");
    let write_cfg = |header: &str, socket: &Path| {
        fs::write(
            &cfg,
            format!(
                "[milter]\nsocket = \"unix:{}\"\nsocket_mode = \"0666\"\nheader_name = \"{header}\"\nshutdown_timeout_secs = 20\n[batv]\ntrusted_networks = []\n",
                socket.display()
            ),
        )
        .unwrap();
    };
    write_cfg("X-Backscatter", &sock);
    let log = dir.path().join("milter.log");
    let mut daemon = Daemon::start(&cfg, &log);
    let meta = fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);

    let rig = Rig::start(&format!("unix:{}", sock.display()), &[]);
    let (ok, t) = rig.swaks(&["--from", "a@example.org", "--to", "one@remote.example"]);
    assert!(ok, "{t}");
    let got = rig.wait_delivered(1);
    assert_eq!(
        got[0].header("X-Backscatter"),
        vec!["null-sender=no; rcpts=1"]
    );

    // SIGHUP: a new header name applies to new connections; a new socket needs a restart.
    write_cfg("X-Backscatter-Check", &dir.path().join("other.sock"));
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("configuration reloaded", 1);
    assert!(
        daemon
            .log()
            .contains("milter.socket changed; restart needed"),
        "{}",
        daemon.log()
    );
    let (ok, t) = rig.swaks(&["--from", "a@example.org", "--to", "two@remote.example"]);
    assert!(ok, "{t}");
    let got = rig.wait_delivered(2);
    let second = got
        .iter()
        .find(|m| m.rcpts == ["<two@remote.example>"])
        .unwrap();
    assert_eq!(
        second.header("X-Backscatter-Check"),
        vec!["null-sender=no; rcpts=1"]
    );

    // A broken config on SIGHUP keeps the running one.
    fs::write(&cfg, "[milter]\nbogus = 1\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("reload failed, keeping the running config", 1);

    // SIGTERM with a message half-way through DATA: it still completes.
    let mut smtp = Smtp::connect(rig.smtp_port);
    smtp.cmd("EHLO client.example");
    assert!(smtp.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(
        smtp.cmd("RCPT TO:<inflight@remote.example>")
            .starts_with("250")
    );
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send("Subject: in flight\r\n\r\nfirst half\r\n");
    thread::sleep(Duration::from_millis(300));
    daemon.signal(libc::SIGTERM);
    daemon.wait_log("no longer accepting connections", 1);
    // New connections are refused while the message in flight finishes.
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_err());
    smtp.send("second half\r\n.\r\n");
    let reply = smtp.reply();
    assert!(
        reply.starts_with("250"),
        "in-flight message: {reply}\n{}",
        daemon.log()
    );
    smtp.cmd("QUIT");
    let status = wait_exit(&mut daemon.child, Duration::from_secs(25));
    assert_eq!(status, Some(0), "{}", daemon.log());
    let got = rig.wait_delivered(3);
    let inflight = got
        .iter()
        .find(|m| m.rcpts == ["<inflight@remote.example>"])
        .unwrap();
    assert_eq!(
        inflight.header("X-Backscatter-Check"),
        vec!["null-sender=no; rcpts=1"]
    );
    assert!(inflight.content.contains("second half"));
    // Every summary line starts with the Postfix queue id.
    let log = daemon.log();
    let summaries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("from=<"))
        .map(|l| l.split(" INFO ").nth(1).unwrap_or(l))
        .collect();
    assert_eq!(summaries.len(), 3, "{}", daemon.log());
    for s in summaries {
        let qid = s.split(':').next().unwrap().trim();
        assert!(
            qid.len() >= 8 && qid.chars().all(|c| c.is_ascii_hexdigit()),
            "{s}"
        );
        assert!(
            rig.maillog().contains(&format!("{qid}: ")),
            "{qid} not in maillog"
        );
    }
}

fn wait_exit(child: &mut Child, max: Duration) -> Option<i32> {
    let t = Instant::now();
    while t.elapsed() < max {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        thread::sleep(Duration::from_millis(50));
    }
    None
}

/// No secret (the BATV key, the stats token) appears in the logs or in any output of
/// the stats endpoint, after real mail in both directions.
#[test]
fn secrets_never_appear_in_logs_or_stats() {
    if !postfix_available() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let token = "tok-9f8e7d6c5b4a39281706f5e4";
    let tf = dir.path().join("token");
    fs::write(&tf, token).unwrap();
    fs::set_permissions(&tf, fs::Permissions::from_mode(0o600)).unwrap();
    let sock = dir.path().join("m.sock");
    let stats_port = common::free_port();
    let cfg = dir.path().join("milter.toml");
    fs::write(
        &cfg,
        format!(
            "[milter]\nsocket = \"unix:{}\"\nsocket_mode = \"0666\"\n[log]\nlevel = \"debug\"\n{}\n[ledger]\nstate_dir = \"{}\"\n[verdict]\nmode = \"enforce\"\n[stats]\nlisten = \"127.0.0.1:{stats_port}\"\ntoken_file = \"{}\"\n",
            sock.display(),
            common::batv_config(dir.path(), "trusted_networks = []"),
            dir.path().join("state").display(),
            tf.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("milter.log");
    let daemon = Daemon::start(&cfg, &log);
    let rig = Rig::start(&format!("unix:{}", sock.display()), &[]);
    let (ok, t) = rig.swaks_port(
        rig.submission_port,
        &["--from", "user@example.org", "--to", "a@remote.example"],
    );
    assert!(ok, "{t}");
    let bounce = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/corpus/sisimai/maildir/bsd/lhost-sendmail-01.eml"
    );
    let (ok, _) = rig.swaks(&[
        "--from",
        "<>",
        "--to",
        "user@example.org",
        "--data",
        &format!("@{bounce}"),
    ]);
    assert!(!ok);
    let (ok, _) = rig.swaks(&["--from", "<>", "--to", "prvs=1000abcdef=user@example.org"]);
    assert!(!ok);
    rig.wait_delivered(1);
    let stats: std::net::SocketAddr = format!("127.0.0.1:{stats_port}").parse().unwrap();
    let mut outputs = vec![daemon.log()];
    for path in ["/metrics", "/stats", "/", "/healthz"] {
        let (code, body) = common::http_get(stats, path, Some(token));
        assert_eq!(code, 200, "{path}");
        outputs.push(body);
    }
    let (code, body) = common::http_get(stats, "/metrics", None);
    assert_eq!(code, 401);
    outputs.push(body);
    // The outputs are real: the log has the verdicts, /stats the counts.
    assert!(
        outputs[0].contains("action=reject") && outputs[0].contains("signed=yes"),
        "{}",
        outputs[0]
    );
    assert!(
        outputs[2].contains("\"outbound_signed\":1"),
        "{}",
        outputs[2]
    );
    let secrets = [
        common::TEST_KEY.split(' ').nth(1).unwrap(),
        "0123456789abcdef0123456789abcdef",
        "0123456789abcdef",
        token,
    ];
    for (i, out) in outputs.iter().enumerate() {
        for s in secrets {
            assert!(!out.contains(s), "secret {s:?} in output {i}");
        }
    }
}

/// Key rotation: a new first key signs after SIGHUP; tags of the old key still verify.
#[test]
fn key_rotation_on_sighup() {
    if !postfix_available() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let sock = dir.path().join("m.sock");
    let cfg = dir.path().join("milter.toml");
    fs::write(
        &cfg,
        format!(
            "[milter]\nsocket = \"unix:{}\"\nsocket_mode = \"0666\"\n{}\n[ledger]\nstate_dir = \"{}\"\n",
            sock.display(),
            common::batv_config(dir.path(), "trusted_networks = []"),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("milter.log");
    let daemon = Daemon::start(&cfg, &log);
    let rig = Rig::start(&format!("unix:{}", sock.display()), &*common::BATV_MAIN_CF);
    let send = |to: &str| {
        let (ok, t) = rig.swaks_port(
            rig.submission_port,
            &["--from", "user@example.org", "--to", to],
        );
        assert!(ok, "{t}");
    };
    send("before@remote.example");
    let keys = dir.path().join("batv.keys");
    let new_key = backscatter_milter::batv::keygen(2).unwrap();
    fs::write(&keys, format!("{new_key}\n{}\n", common::TEST_KEY)).unwrap();
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o600)).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("configuration reloaded", 1);
    assert!(daemon.log().contains("(2 BATV key(s))"), "{}", daemon.log());
    send("after@remote.example");
    let got = rig.wait_delivered(2);
    let from = |rcpt: &str| {
        got.iter()
            .find(|m| m.rcpts == [format!("<{rcpt}>")])
            .unwrap()
            .mail_from
            .trim_matches(['<', '>'])
            .to_string()
    };
    let (old, new) = (from("before@remote.example"), from("after@remote.example"));
    assert!(old.starts_with("prvs=1"), "{old}");
    assert!(new.starts_with("prvs=2"), "{new}");
    // Bounces to both tags are delivered; the new key never reached the log.
    for tag in [&old, &new] {
        let (ok, t) = rig.swaks(&["--from", "<>", "--to", tag]);
        assert!(ok, "{tag}: {t}");
    }
    rig.wait_delivered(4);
    assert!(!daemon.log().contains(new_key.split(' ').nth(1).unwrap()));
}
