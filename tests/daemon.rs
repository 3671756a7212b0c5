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
        Self::start_with(Command::new(BIN), config, log)
    }

    /// Starts `command` (the binary, or a wrapper running it) with `--config`.
    fn start_with(mut command: Command, config: &Path, log: &Path) -> Self {
        let parsed = backscatter_milter::config::Config::load(config).unwrap();
        common::refuse_system_paths(&parsed);
        common::note_system_paths();
        let child = command
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
        if !thread::panicking() {
            common::assert_system_paths_untouched();
        }
    }
}

/// Runs the binary to its end (at most 20 s): (exit code, stderr).
fn run_to_end(config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(20));
    if code.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
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
    // The socket is removed at exit.
    assert!(!sock.exists(), "socket left behind at exit");
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

fn unix_config(dir: &Path, sock: &Path, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join(format!("milter-{}.toml", common::free_port()));
    fs::write(
        &cfg,
        format!(
            "[milter]\nsocket = \"unix:{}\"\nsocket_mode = \"0666\"\n{extra}",
            sock.display()
        ),
    )
    .unwrap();
    cfg
}

fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).unwrap().ino()
}

/// A second instance on a live socket refuses to start (before, it unlinked the
/// socket and took it over); a stale socket (nothing answers, as after SIGKILL) is
/// replaced; the socket goes at a clean exit.
#[test]
fn a_live_socket_is_never_taken_over() {
    let dir = temp_dir();
    let sock = dir.path().join("m.sock");
    let cfg = unix_config(dir.path(), &sock, "");
    let first = Daemon::start(&cfg, &dir.path().join("first.log"));
    let ino = inode(&sock);
    let (code, err) = run_to_end(&cfg);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("is in use: another process answers on it"),
        "{err}"
    );
    assert_eq!(inode(&sock), ino, "the live socket was replaced");
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
    assert!(first.log().matches("listening on").count() == 1);

    // SIGKILL leaves the socket behind; nothing answers on it: the next start
    // replaces it.
    drop(first);
    assert!(sock.exists());
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_err());
    let mut second = Daemon::start(&cfg, &dir.path().join("second.log"));
    // The first is dead: what answers now is the second, on a new socket.
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
    second.signal(libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut second.child, Duration::from_secs(20)),
        Some(0)
    );
    assert!(!sock.exists(), "socket left behind at exit");
}

/// A taken stats port fails the start before the milter socket exists (else
/// Postfix would see a socket with no milter behind it after the exit).
#[test]
fn a_taken_stats_port_fails_before_the_socket_exists() {
    let dir = temp_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let sock = dir.path().join("m.sock");
    let cfg = unix_config(
        dir.path(),
        &sock,
        &format!("[stats]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let (code, err) = run_to_end(&cfg);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("stats.listen: cannot listen on"), "{err}");
    assert!(!sock.exists());
    // A configuration error (here an unknown socket owner) is exit 78, which the
    // systemd unit does not restart.
    let cfg = unix_config(dir.path(), &sock, "socket_owner = \"no-such-user-bsm\"\n");
    let (code, err) = run_to_end(&cfg);
    assert_eq!(code, Some(78), "{err}");
    assert!(!sock.exists());
    let unit = include_str!("../contrib/systemd/backscatter-milter.service");
    assert!(unit.lines().any(|l| l == "RestartPreventExitStatus=78"));
    assert!(unit.lines().any(|l| l == "LimitCORE=0"));
}

/// 200 half-open connections (100 silent, 100 stopping inside their headers) do
/// not lock the stats endpoint out: a normal request from the same address is
/// answered at once (before, the 65th connection on was dropped unanswered).
#[test]
fn stats_endpoint_answers_under_200_half_open_connections() {
    use std::io::Write;
    let dir = temp_dir();
    let token = "tok-half-open-0123456789";
    let tf = dir.path().join("token");
    fs::write(&tf, token).unwrap();
    fs::set_permissions(&tf, fs::Permissions::from_mode(0o600)).unwrap();
    let stats_port = common::free_port();
    let sock = dir.path().join("m.sock");
    let cfg = unix_config(
        dir.path(),
        &sock,
        &format!(
            "[stats]\nlisten = \"127.0.0.1:{stats_port}\"\ntoken_file = \"{}\"\n",
            tf.display()
        ),
    );
    let daemon = Daemon::start(&cfg, &dir.path().join("milter.log"));
    daemon.wait_log("stats endpoint on", 1);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{stats_port}").parse().unwrap();
    let mut held = Vec::new();
    for i in 0..200 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
        held.push(s);
    }
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let (code, body) = common::http_get(addr, "/healthz", Some(token));
    let took = t.elapsed();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    // Well under the 5 s header timeout: not waiting for the pile to time out.
    assert!(took < Duration::from_secs(3), "{took:?}");
    let (code, _) = common::http_get(addr, "/metrics", None);
    assert_eq!(code, 401);
    drop(held);
}

/// The daemon is not dumpable: no core file, no ptrace by the same user. The
/// kernel shows its /proc/PID files as owned by root even when the process runs
/// as another user (run as `nobody` here, with setpriv).
#[test]
fn the_daemon_is_not_dumpable() {
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/bin/setpriv").exists() {
        assert!(
            std::env::var("BACKSCATTER_REQUIRE_POSTFIX").as_deref() != Ok("1"),
            "root and setpriv are required"
        );
        eprintln!("SKIPPED: needs root and setpriv");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = temp_dir();
    let port = common::free_port();
    let cfg = dir.path().join("milter.toml");
    fs::write(
        &cfg,
        format!("[milter]\nsocket = \"inet:127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).unwrap();
    let mut wrapper = Command::new("/usr/bin/setpriv");
    wrapper.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        BIN,
    ]);
    let daemon = Daemon::start_with(wrapper, &cfg, &dir.path().join("milter.log"));
    let status = fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains("65534"), "{uid_line}");
    for file in ["fd", "environ"] {
        let meta = fs::metadata(format!("/proc/{}/{file}", daemon.child.id())).unwrap();
        assert_eq!(meta.uid(), 0, "the daemon is dumpable ({file})");
    }
}
