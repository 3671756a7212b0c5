//! The milter through a real Sendmail 8.17: Debian's packages, downloaded and
//! unpacked under target/ (never installed: Postfix stays the system's MTA), with a
//! sendmail.cf built from our shipped contrib/sendmail/*.mc, listening on loopback
//! ports in a private mount namespace (its own /etc/hosts, a dead resolver, a
//! syslog receiver on /dev/log), relaying to Postfix's smtp-sink and delivering
//! local mail with a script that writes files.
//!
//! Needs root, network to Debian's package registry (once: the tree is cached) and
//! Postfix's smtp-sink. Without them the tests print SKIPPED and pass, unless
//! BACKSCATTER_REQUIRE_SENDMAIL=1 (set by .ci/run), which makes a skip a failure.

mod common;

use backscatter_milter::batv;
use common::{TestMilter, Transport, batv_config, corrupt_tag, free_port, temp_dir, test_keys};
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

const HERE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sendmail");
const CONTRIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/sendmail");
const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The unpacked Debian tree, or `None` (after saying why) when these tests cannot run.
fn sendmail_root() -> Option<PathBuf> {
    static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = ROOT.get_or_init(|| {
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        for p in ["/usr/sbin/smtp-sink", "/usr/bin/unshare", "/usr/bin/mount"] {
            if !Path::new(p).exists() {
                return Err(format!("missing {p}"));
            }
        }
        let private_mounts = Command::new("unshare")
            .args(["-m", "--propagation", "private", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if !private_mounts {
            return Err("cannot make a private mount namespace (unshare -m)".into());
        }
        let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sendmail-debian");
        let out = Command::new(format!("{HERE}/setup.sh"))
            .arg(&dest)
            .output()
            .map_err(|e| format!("setup.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot fetch Debian's sendmail packages: {}",
                common::transcript(&out).trim()
            ));
        }
        Ok(dest)
    });
    match found {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            if std::env::var("BACKSCATTER_REQUIRE_SENDMAIL").is_ok_and(|v| v == "1") {
                panic!("BACKSCATTER_REQUIRE_SENDMAIL=1 but the Sendmail tests cannot run: {why}");
            }
            eprintln!(
                "SKIPPED (Sendmail): {why}; run .ci/run, or as root with postfix installed and Debian's package registry reachable"
            );
            None
        }
    }
}

/// Collects what Sendmail writes to /dev/log (bound to `path` in its namespace).
struct Syslog {
    text: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Syslog {
    fn listen(path: &Path) -> Self {
        let sock = UnixDatagram::bind(path).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o666)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let text = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (text.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let line = String::from_utf8_lossy(&buf[..n]);
                    let mut t = t.lock().unwrap();
                    t.push_str(line.trim_end());
                    t.push('\n');
                }
            }
        });
        Self {
            text,
            stop,
            thread: Some(thread),
        }
    }

    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One message as smtp-sink dumped it.
#[derive(Debug)]
struct Sunk {
    /// The MAIL FROM command's arguments: `<sender> BODY=... ENVID=...`.
    mail_args: String,
    rcpt_args: Vec<String>,
    content: String,
}

impl Sunk {
    fn sender(&self) -> &str {
        let first = self.mail_args.split(' ').next().unwrap_or("");
        first.trim_matches(['<', '>'])
    }

    fn header(&self, name: &str) -> Vec<String> {
        header(&self.content, name)
    }
}

fn header(content: &str, name: &str) -> Vec<String> {
    let head = content.split("\n\n").next().unwrap_or("");
    head.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Options {
    /// Append contrib/sendmail/batv-local-domain.mc.
    local_rule: bool,
}

const WITH_RULE: Options = Options { local_rule: true };

/// A throwaway Sendmail: an MTA daemon (`Name=MTA`) and a submission daemon
/// (`Name=MSA`, as stock Sendmail names it) on loopback ports; example.org is
/// local (the user `mail`, which every Debian system has); everything else goes to
/// smtp-sink.
struct Sendmail {
    dir: tempfile::TempDir,
    root: PathBuf,
    mta_port: u16,
    msa_port: u16,
    daemon: Child,
    sink: Child,
    syslog: Syslog,
}

impl Sendmail {
    fn start(root: &Path, milter_socket: &str, opts: Options) -> Self {
        // A free port can be taken by another test's server before Sendmail or
        // smtp-sink binds it: then start again on other ports.
        let mut why = String::new();
        for _ in 0..3 {
            match Self::try_start(root, milter_socket, opts) {
                Ok(sm) => return sm,
                Err(e) => why = e,
            }
        }
        panic!("Sendmail did not start: {why}");
    }

    fn try_start(root: &Path, milter_socket: &str, opts: Options) -> Result<Self, String> {
        let dir = temp_dir();
        let d = dir.path();
        for (sub, mode) in [("queue", 0o700), ("sink", 0o755), ("mbox", 0o777)] {
            fs::create_dir(d.join(sub)).unwrap();
            fs::set_permissions(d.join(sub), fs::Permissions::from_mode(mode)).unwrap();
        }
        Command::new("chown")
            .args(["postfix", d.join("sink").to_str().unwrap()])
            .status()
            .unwrap();
        fs::write(
            d.join("hosts"),
            "127.0.0.1 mx.example.org mx localhost\n::1 localhost\n",
        )
        .unwrap();
        // Nothing answers DNS on 127.0.0.1:53: every lookup fails at once.
        fs::write(
            d.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        fs::write(d.join("service.switch"), "hosts files\naliases files\n").unwrap();
        // The local mailer: one file per delivery, named after the user (the last
        // argument: Sendmail puts -r SENDER before it).
        let deliver = d.join("deliver");
        fs::write(
            &deliver,
            format!(
                "#!/bin/sh\nfor u; do :; done\ncat > {}/mbox/\"$u\".$$\n",
                d.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&deliver, fs::Permissions::from_mode(0o755)).unwrap();
        let syslog = Syslog::listen(&d.join("log.sock"));

        let (mta_port, msa_port, sink_port) = (free_port(), free_port(), free_port());
        let sink = Command::new("/usr/sbin/smtp-sink")
            .args(["-u", "postfix", "-d"])
            .arg(format!("{}/sink/%M.", d.display()))
            .arg(format!("127.0.0.1:{sink_port}"))
            .arg("100")
            .stdout(Stdio::null())
            .spawn()
            .expect("smtp-sink");

        let shipped = fs::read_to_string(format!("{CONTRIB}/backscatter-milter.mc")).unwrap();
        let shipped = shipped.replace("unix:/run/backscatter-milter/milter.sock", milter_socket);
        assert!(
            shipped.contains(milter_socket),
            "the shipped .mc names its socket"
        );
        let mut mc = format!(
            "divert(-1)
divert(0)dnl
VERSIONID(`backscatter-milter test')
define(`__OSTYPE__',`')dnl
undefine(`ALIAS_FILE')dnl
define(`confDOMAIN_NAME', `mx.example.org')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`QUEUE_DIR', `{d}/queue')dnl
define(`confPID_FILE', `{d}/sendmail.pid')dnl
define(`STATUS_FILE', `{d}/statistics')dnl
define(`confSERVICE_SWITCH_FILE', `{d}/service.switch')dnl
define(`confDONT_BLAME_SENDMAIL', `GroupWritableDirPathSafe,TrustStickyBit')dnl
define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl
define(`confTO_IDENT', `0')dnl
define(`confQUEUE_LA', `100')dnl
define(`confREFUSE_LA', `100')dnl
define(`confDELAY_LA', `0')dnl
define(`confMILTER_LOG_LEVEL', `14')dnl
define(`SMART_HOST', `esmtp:[127.0.0.1]')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {sink_port}')dnl
define(`LOCAL_MAILER_PATH', `{deliver}')dnl
define(`LOCAL_MAILER_ARGS', `deliver $u')dnl
FEATURE(`nocanonify')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`no_default_msa')dnl
LOCAL_DOMAIN(`example.org')dnl
DAEMON_OPTIONS(`Port={mta_port}, Addr=127.0.0.1, Name=MTA')dnl
DAEMON_OPTIONS(`Port={msa_port}, Addr=127.0.0.1, Name=MSA, M=E')dnl
{shipped}MAILER(`local')dnl
MAILER(`smtp')dnl
",
            d = d.display(),
            deliver = deliver.display(),
        );
        if opts.local_rule {
            mc.push_str(&fs::read_to_string(format!("{CONTRIB}/batv-local-domain.mc")).unwrap());
        }
        let cf = build_cf(root, &d.join("test.mc"), &mc);
        fs::write(d.join("test.cf"), cf).unwrap();

        let daemon = Command::new(format!("{HERE}/run.sh"))
            .arg(d)
            .arg(root.join("usr/libexec/sendmail/sendmail"))
            .args(["-C", d.join("test.cf").to_str().unwrap(), "-bD", "-X"])
            .arg(d.join("traffic"))
            .env("LD_LIBRARY_PATH", lib_dir(root))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut sm = Self {
            dir,
            root: root.to_path_buf(),
            mta_port,
            msa_port,
            daemon,
            sink,
            syslog,
        };
        sm.wait_for_port(sink_port, "220 ")?;
        thread::sleep(Duration::from_millis(50));
        if let Ok(Some(st)) = sm.sink.try_wait() {
            return Err(format!("smtp-sink exited ({st}): port {sink_port} taken?"));
        }
        sm.wait_for_port(mta_port, "220 mx.example.org ESMTP Sendmail")?;
        sm.wait_for_port(msa_port, "220 mx.example.org ESMTP Sendmail")?;
        Ok(sm)
    }

    /// Waits until `port` greets with `banner` (ours, not another test's server).
    fn wait_for_port(&mut self, port: u16, banner: &str) -> Result<(), String> {
        let t = Instant::now();
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut line = String::new();
                let _ = BufReader::new(&s).read_line(&mut line);
                let _ = (&s).write_all(b"QUIT\r\n");
                if line.starts_with(banner) {
                    return Ok(());
                }
                return Err(format!("port {port} greets {line:?}, not {banner:?}"));
            }
            if let Ok(Some(st)) = self.daemon.try_wait() {
                return Err(format!("sendmail exited ({st}); log:\n{}", self.log()));
            }
            if t.elapsed() > Duration::from_secs(20) {
                return Err(format!("port {port} never opened; log:\n{}", self.log()));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until Sendmail has no queue file left (deliveries finished).
    fn wait_queue_empty(&self) {
        let t = Instant::now();
        while !self.queue_files("qf").is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "still queued: {:?}\n{}",
                self.queue_files(""),
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        self.syslog.text()
    }

    fn cf(&self) -> PathBuf {
        self.dir.path().join("test.cf")
    }

    /// Runs the unpacked sendmail binary with this config, in the namespace.
    fn sendmail(&self, args: &[&str], stdin: &str) -> Output {
        self.run("sendmail", args, stdin)
    }

    /// Runs `program` (sendmail, or one of its names: mailq, ...) in the namespace.
    fn run(&self, program: &str, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(format!("{HERE}/run.sh"))
            .arg(self.dir.path())
            .arg(self.root.join("usr/libexec/sendmail").join(program))
            .args(args)
            .env("LD_LIBRARY_PATH", lib_dir(&self.root))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Waits until Sendmail logged `n` deliveries by `mailer` (esmtp: the sink;
    /// local: the mbox script).
    fn wait_sent(&self, mailer: &str, n: usize) {
        let t = Instant::now();
        loop {
            let log = self.log();
            let sent = log
                .lines()
                .filter(|l| l.contains(&format!("mailer={mailer},")) && l.contains("stat=Sent"))
                .count();
            if sent >= n {
                thread::sleep(Duration::from_millis(100));
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "only {sent} of {n} deliveries by {mailer}; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn sunk(&self) -> Vec<Sunk> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.dir.path().join("sink"))
            .unwrap()
            .flatten()
        {
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            let mut m = Sunk {
                mail_args: String::new(),
                rcpt_args: Vec::new(),
                content: String::new(),
            };
            let mut lines = text.lines().peekable();
            while let Some(l) = lines.peek() {
                if let Some(v) = l.strip_prefix("X-Mail-Args: ") {
                    m.mail_args = v.to_string();
                } else if let Some(v) = l.strip_prefix("X-Rcpt-Args: ") {
                    m.rcpt_args.push(v.to_string());
                } else if !l.starts_with("X-Client-") && !l.starts_with("X-Helo-Args") {
                    break;
                }
                lines.next();
            }
            m.content = lines.collect::<Vec<_>>().join("\n");
            out.push(m);
        }
        out
    }

    /// Local deliveries to `user`, as the mbox script stored them.
    fn mailbox(&self, user: &str) -> Vec<String> {
        fs::read_dir(self.dir.path().join("mbox"))
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{user}."))
            })
            .map(|e| fs::read_to_string(e.path()).unwrap())
            .collect()
    }

    /// The queue files whose names start with `prefix` (qf, hf, df).
    fn queue_files(&self, prefix: &str) -> Vec<(String, String)> {
        fs::read_dir(self.dir.path().join("queue"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    String::from_utf8_lossy(&fs::read(e.path()).unwrap()).into_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Sendmail {
    fn drop(&mut self) {
        // SIGTERM: the daemon stops its children and exits.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = self.sink.kill();
        let _ = self.sink.wait();
        if std::env::var("BACKSCATTER_KEEP_RIG").is_ok() {
            fs::write(self.dir.path().join("syslog"), self.log()).unwrap();
            eprintln!("sendmail rig kept at {}", self.dir.path().display());
            std::mem::forget(std::mem::replace(&mut self.dir, temp_dir()));
        }
    }
}

fn lib_dir(root: &Path) -> PathBuf {
    let lib = root.join("usr/lib");
    fs::read_dir(&lib)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("libwrap.so.0").exists())
        .expect("libwrap.so.0 in the unpacked tree")
}

/// sendmail.cf from `mc` with the unpacked m4 and cf tree.
fn build_cf(root: &Path, mc_path: &Path, mc: &str) -> String {
    fs::write(mc_path, mc).unwrap();
    let cf_dir = root.join("usr/share/sendmail/cf");
    let out = Command::new(root.join("usr/bin/m4"))
        .arg(format!("-D_CF_DIR_={}/", cf_dir.display()))
        .arg(cf_dir.join("m4/cf.m4"))
        .arg(mc_path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "m4: {}",
        common::transcript(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A tiny SMTP client.
struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
    pub greeting: String,
}

impl Smtp {
    fn connect(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut c = Self {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            greeting: String::new(),
        };
        c.greeting = c.reply();
        c
    }

    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&l);
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        let _ = self.w.write_all(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// MAIL, RCPTs, DATA and the message; returns the reply to the final dot (or
    /// the first refusal, prefixed with the command it answered).
    fn send(&mut self, mail: &str, rcpts: &[&str], message: &str) -> String {
        let r = self.cmd(&format!("MAIL FROM:{mail}"));
        if !r.starts_with("250") {
            return format!("MAIL: {r}");
        }
        for rcpt in rcpts {
            let r = self.cmd(&format!("RCPT TO:{rcpt}"));
            if !r.starts_with("250") {
                self.cmd("RSET");
                return format!("RCPT: {r}");
            }
        }
        let r = self.cmd("DATA");
        if !r.starts_with("354") {
            return format!("DATA: {r}");
        }
        let mut data = String::new();
        for l in message.lines() {
            if l.starts_with('.') {
                data.push('.');
            }
            data.push_str(l);
            data.push_str("\r\n");
        }
        data.push('.');
        self.cmd(&data)
    }
}

/// One SMTP session: EHLO, one message, QUIT.
fn submit(port: u16, mail: &str, rcpts: &[&str], message: &str) -> String {
    let mut s = Smtp::connect(port);
    let ehlo = s.cmd("EHLO client.example");
    assert!(ehlo.starts_with("250"), "{}{ehlo}", s.greeting);
    let r = s.send(mail, rcpts, message);
    s.cmd("QUIT");
    r
}

/// A real Postfix NDR from the corpus (its message/rfc822 part is empty) with
/// `original` put inside it.
fn ndr_returning(original: &str) -> String {
    let t =
        fs::read_to_string(Path::new(FIX).join("corpus/sisimai/maildir/bsd/lhost-postfix-01.eml"))
            .unwrap();
    let marker = "Content-Type: message/rfc822\n";
    let at = t.rfind(marker).unwrap() + marker.len();
    format!(
        "{}\n{}\n--FFFFFFFFFFFF.0000000000000/p351355.pool.example.ne.jp--\n",
        &t[..at],
        original.trim_end()
    )
}

/// Spam that forged our user's address, as a third party received it.
const SPAM: &str = "Received: from bot.spammer.example (bot.spammer.example [203.0.113.66])\n\tby mx.third.example (Postfix) with ESMTP id 77AA\n\tfor <victim@third.example>; Mon, 23 Nov 2026 10:00:00 +0000\nFrom: mail@example.org\nTo: victim@third.example\nSubject: Cheap watches\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <forged-1@bot.spammer.example>\n\nBuy now.\n";

/// A milter on a unix socket in `dir`: BATV for example.org, the ledger in `dir`,
/// then `extra` TOML. Without `trusted_loopback`, no trusted networks: only the
/// daemons in the default `sign_daemon_names` (Sendmail's MSA) sign.
fn milter(dir: &Path, trusted_loopback: bool, extra: &str) -> (TestMilter, String) {
    let sock = dir.join("milter.sock");
    let trusted = if trusted_loopback {
        ""
    } else {
        "trusted_networks = []"
    };
    let cfg = format!(
        "{}\n[ledger]\nstate_dir = \"{}\"\n{extra}\n",
        batv_config(dir, trusted),
        dir.join("state").display()
    );
    let m = TestMilter::start_on(&cfg, Transport::Unix(sock.clone()));
    (m, format!("unix:{}", sock.display()))
}

const ENFORCE: &str = "[verdict]\nmode = \"enforce\"\n";

fn our_message(id: &str, subject: &str) -> String {
    format!(
        "From: mail@example.org\nTo: friend@remote.example\nSubject: {subject}\nDate: Thu, 26 Nov 2026 02:00:00 +0000\nMessage-ID: <{id}>\n\nHello from Sendmail.\n"
    )
}

/// Outbound through the MSA: signed, DSN parameters intact, no empty AUTH=. The
/// bounce to the tag: delivered to the plain local user. A bad tag: refused at
/// RCPT. Forged backscatter: rejected.
#[test]
fn sendmail_signs_verifies_and_rejects_backscatter() {
    let Some(root) = sendmail_root() else { return };
    let dir = temp_dir();
    let (milter, socket) = milter(dir.path(), false, ENFORCE);
    let sm = Sendmail::start(&root, &socket, WITH_RULE);

    // 1. Our user submits through the MSA, asking for DSNs.
    let r = submit(
        sm.msa_port,
        "<mail@example.org> BODY=8BITMIME RET=HDRS ENVID=env-42",
        &["<friend@remote.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;friend@remote.example"],
        &our_message("sm-out-1@example.org", "through the MSA").replace("Hello", "Grüße"),
    );
    assert!(r.starts_with("250"), "{r}\n{}", sm.log());
    sm.wait_sent("esmtp", 1);
    let out = sm.sunk();
    assert_eq!(out.len(), 1);
    let tagged = out[0].sender().to_string();
    assert!(
        tagged.starts_with("prvs=1") && tagged.ends_with("=mail@example.org"),
        "{}",
        out[0].mail_args
    );
    assert_eq!(
        batv::verify(&test_keys(), &tagged, batv::today(), 7)
            .unwrap()
            .plain,
        "mail@example.org"
    );
    // The client's own ESMTP parameters survive the sender change, and Sendmail
    // adds no empty AUTH= (it did when the milter passed the arguments back).
    let args: Vec<&str> = out[0].mail_args.split(' ').skip(1).collect();
    for want in ["BODY=8BITMIME", "RET=HDRS", "ENVID=env-42"] {
        assert!(args.contains(&want), "{want} in {:?}", out[0].mail_args);
    }
    assert!(
        !out[0].mail_args.contains("AUTH="),
        "{:?}",
        out[0].mail_args
    );
    assert!(
        out[0].rcpt_args[0].contains("NOTIFY=FAILURE,DELAY"),
        "{:?}",
        out[0].rcpt_args
    );
    assert_eq!(
        out[0].header("X-Backscatter-Sig").len(),
        1,
        "{}",
        out[0].content
    );
    // Outbound mail carries no header of ours (it would tell the recipient about us).
    assert!(
        out[0].header("X-Backscatter").is_empty(),
        "{}",
        out[0].content
    );

    // The same sender through the MTA daemon (not a signing daemon, not trusted):
    // leaves unsigned.
    let r = submit(
        sm.mta_port,
        "<mail@example.org>",
        &["<friend@remote.example>"],
        &our_message("sm-out-2@example.org", "through the MTA"),
    );
    assert!(r.starts_with("250"), "{r}");
    sm.wait_sent("esmtp", 2);
    let unsigned = sm
        .sunk()
        .into_iter()
        .find(|m| m.header("Subject") == ["through the MTA"])
        .unwrap();
    assert_eq!(unsigned.sender(), "mail@example.org");

    // 2. The remote bounces our message to the tag: delivered to the plain user.
    let original = &out[0].content;
    let r = submit(
        sm.mta_port,
        "<>",
        &[&format!("<{tagged}>")],
        &ndr_returning(original),
    );
    assert!(r.starts_with("250"), "{r}\n{}", sm.log());
    sm.wait_sent("local", 1);
    let mbox = sm.mailbox("mail");
    assert_eq!(mbox.len(), 1);
    let verdict = header(&mbox[0], "X-Backscatter");
    assert_eq!(verdict.len(), 1, "{}", mbox[0]);
    assert!(
        verdict[0].contains("batv=valid") && verdict[0].contains("verdict=accept"),
        "{verdict:?}"
    );

    // 3. A tag of the right shape but not ours: refused at RCPT by the milter.
    let r = submit(
        sm.mta_port,
        "<>",
        &[&format!("<{}>", corrupt_tag(&tagged))],
        &ndr_returning(original),
    );
    assert!(
        r.starts_with("RCPT: 550 5.7.1") && r.contains("Invalid return address tag"),
        "{r}"
    );

    // 4. Spam forged our address; the third party bounces it to the plain address.
    let r = submit(
        sm.mta_port,
        "<>",
        &["<mail@example.org>"],
        &ndr_returning(SPAM),
    );
    assert!(
        r.starts_with("550 5.7.1") && r.contains("Backscatter rejected"),
        "{r}"
    );

    // Nothing else was delivered or queued.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(sm.mailbox("mail").len(), 1);
    assert_eq!(sm.sunk().len(), 2);
    sm.wait_queue_empty();
    let log = sm.log();
    // Sendmail's own account of the milter's actions.
    assert!(
        log.contains(&format!("Milter (backscatter) chgfrom: <{tagged}>\n")),
        "{log}"
    );
    assert!(
        log.contains(&format!("Milter (backscatter) delete: rcpt <{tagged}>"))
            && log.contains("Milter (backscatter) add: rcpt: <mail@example.org>"),
        "{log}"
    );
    drop(milter);
}

/// Without the local-domain rule Sendmail itself refuses the tagged local
/// recipient before the milter sees it: every genuine bounce would be lost.
#[test]
fn sendmail_without_the_local_rule_loses_bounces_to_tags() {
    let Some(root) = sendmail_root() else { return };
    let dir = temp_dir();
    let (_milter, socket) = milter(dir.path(), false, ENFORCE);
    let sm = Sendmail::start(&root, &socket, Options { local_rule: false });
    let tagged = batv::sign(&test_keys(), "mail@example.org", batv::today(), 7).unwrap();
    let r = submit(
        sm.mta_port,
        "<>",
        &[&format!("<{tagged}>")],
        "Subject: x\n\nx\n",
    );
    assert!(r.starts_with("RCPT: 550 5.1.1"), "{r}");
    assert!(r.contains("User unknown"), "{r}");
}

/// With thresholds that quarantine, forged backscatter is held in Sendmail's
/// quarantine: mailq -qQ lists it with our reason; released, it is delivered.
#[test]
fn sendmail_quarantine_hold_list_release() {
    let Some(root) = sendmail_root() else { return };
    let dir = temp_dir();
    let (_milter, socket) = milter(
        dir.path(),
        false,
        "[verdict]\nmode = \"enforce\"\nreject_threshold = 50\nquarantine_threshold = 5\n",
    );
    let sm = Sendmail::start(&root, &socket, WITH_RULE);
    let r = submit(
        sm.mta_port,
        "<>",
        &["<mail@example.org>"],
        &ndr_returning(SPAM),
    );
    assert!(r.starts_with("250"), "{r}");
    let t = Instant::now();
    let (name, qf) = loop {
        if let Some(f) = sm.queue_files("hf").into_iter().next() {
            break f;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "nothing quarantined: {:?}\n{}",
            sm.queue_files(""),
            sm.log()
        );
        thread::sleep(Duration::from_millis(50));
    };
    let id = &name[2..];
    let reason = qf
        .lines()
        .find_map(|l| l.strip_prefix('q'))
        .unwrap_or_else(|| panic!("no q line in {name}:\n{qf}"));
    assert!(
        reason.starts_with("backscatter-milter: suspected backscatter (score 15"),
        "{reason}"
    );
    assert!(sm.mailbox("mail").is_empty());

    let cf = sm.cf();
    let cf = cf.to_str().unwrap();
    let listed = sm.run("mailq", &["-C", cf, "-qQ"], "");
    let listed = common::transcript(&listed);
    assert!(
        listed.contains(id) && listed.contains("QUARANTINE: backscatter-milter"),
        "{listed}"
    );
    // `backscatter-milter quarantine --mta sendmail list` reads this very listing
    // (mailq cuts the reason short; our header in the queue file has it all).
    let (_, ours) = backscatter_milter::quarantine::parse_mailq(&listed);
    assert_eq!(ours.len(), 1, "{listed}");
    assert_eq!(&ours[0].id, id);
    assert_eq!(ours[0].ours.score, Some(15), "{listed}");
    assert_eq!(ours[0].recipients, ["mail@example.org"], "{listed}");
    let full = backscatter_milter::quarantine::read_queue_file(&qf, "X-Backscatter")
        .unwrap_or_else(|| panic!("our header in {name}:\n{qf}"));
    assert_eq!(full.score, Some(15));
    assert!(
        full.reasons.iter().any(|(c, _)| c == "foreign_original"),
        "{full:?}"
    );
    // Release: unquarantine, then run that queue entry.
    let out = sm.sendmail(&["-C", cf, "-Q", "-qQ", &format!("-qI{id}")], "");
    assert!(out.status.success(), "{}", common::transcript(&out));
    assert!(sm.queue_files("hf").is_empty());
    let out = sm.sendmail(&["-C", cf, "-q", &format!("-qI{id}")], "");
    assert!(out.status.success(), "{}", common::transcript(&out));
    sm.wait_sent("local", 1);
    let mbox = sm.mailbox("mail");
    assert_eq!(mbox.len(), 1);
    assert!(header(&mbox[0], "X-Backscatter")[0].contains("verdict=quarantine"));
}

/// F=T: with the milter gone, Sendmail tempfails; nothing is accepted unfiltered.
#[test]
fn sendmail_tempfails_while_the_milter_is_down() {
    let Some(root) = sendmail_root() else { return };
    let dir = temp_dir();
    let (milter, socket) = milter(dir.path(), false, ENFORCE);
    let sm = Sendmail::start(&root, &socket, WITH_RULE);
    let msg = our_message("sm-down@example.org", "while down");
    let r = submit(
        sm.mta_port,
        "<a@remote.example>",
        &["<mail@example.org>"],
        &msg,
    );
    assert!(r.starts_with("250"), "{r}");
    milter.stop_now();
    let r = submit(
        sm.mta_port,
        "<b@remote.example>",
        &["<mail@example.org>"],
        &msg,
    );
    assert_eq!(r.trim_end(), "MAIL: 451 4.3.2 Please try again later");
    thread::sleep(Duration::from_millis(300));
    sm.wait_sent("local", 1);
    assert_eq!(sm.mailbox("mail").len(), 1);
    sm.wait_queue_empty();
}

/// Sendmail opens the milter connection when the client connects and keeps it
/// idle between commands. A milter timeout shorter than the client's pause drops
/// it and the message tempfails; a longer one (the default: libmilter's 7210 s)
/// lets it through.
#[test]
fn sendmail_milter_connection_idle_between_commands() {
    let Some(root) = sendmail_root() else { return };
    let pause = Duration::from_secs(2);
    for (timeout, survives) in [(1, false), (30, true)] {
        let dir = temp_dir();
        let (_milter, socket) = milter(
            dir.path(),
            false,
            &format!("{ENFORCE}[milter]\nconnection_timeout_secs = {timeout}\n"),
        );
        let sm = Sendmail::start(&root, &socket, WITH_RULE);
        let mut s = Smtp::connect(sm.mta_port);
        assert!(s.cmd("EHLO client.example").starts_with("250"));
        thread::sleep(pause);
        let r = s.send(
            "<a@remote.example>",
            &["<mail@example.org>"],
            &our_message("idle@example.org", "after a pause"),
        );
        s.cmd("QUIT");
        if survives {
            assert!(
                r.starts_with("250"),
                "timeout {timeout}s: {r}\n{}",
                sm.log()
            );
            sm.wait_sent("local", 1);
            assert!(header(&sm.mailbox("mail")[0], "X-Backscatter")[0].contains("rcpts=1"));
        } else {
            assert_eq!(
                r.trim_end(),
                "MAIL: 451 4.3.2 Please try again later",
                "timeout {timeout}s"
            );
            assert!(sm.mailbox("mail").is_empty());
        }
    }
    assert_eq!(
        backscatter_milter::config::Config::default()
            .milter
            .connection_timeout,
        Duration::from_secs(7210)
    );
}

/// Command-line mail: `sendmail -t` with a submit.cf built like Debian's (the
/// `msp` feature relaying to [127.0.0.1] port 25, here the test's MTA port). The
/// MSP itself runs no milter; it hands the message over SMTP to the MTA daemon,
/// where the milter sees a client at 127.0.0.1 on daemon MTA: signed through
/// the default trusted_networks (loopback).
#[test]
fn sendmail_command_line_mail_through_the_msp_is_signed() {
    let Some(root) = sendmail_root() else { return };
    let dir = temp_dir();
    let (_milter, socket) = milter(dir.path(), true, ENFORCE);
    let sm = Sendmail::start(&root, &socket, WITH_RULE);
    let d = sm.dir.path();
    // The MSP refuses to run as root; Debian runs it as smmsp, this rig as mail.
    fs::create_dir(d.join("clientmqueue")).unwrap();
    Command::new("chown")
        .args(["mail:mail", d.join("clientmqueue").to_str().unwrap()])
        .status()
        .unwrap();
    let mc = format!(
        "divert(-1)
divert(0)dnl
VERSIONID(`backscatter-milter test MSP')
define(`confCF_VERSION', `Submit')dnl
define(`__OSTYPE__',`')dnl
define(`confDOMAIN_NAME', `mx.example.org')dnl
define(`confRUN_AS_USER', `mail')dnl
define(`MSP_QUEUE_DIR', `{d}/clientmqueue')dnl
define(`confPID_FILE', `{d}/sm-client.pid')dnl
define(`confSERVICE_SWITCH_FILE', `{d}/service.switch')dnl
define(`confDONT_BLAME_SENDMAIL', `GroupWritableDirPathSafe,TrustStickyBit')dnl
define(`confTO_IDENT', `0')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {port}')dnl
FEATURE(`msp', `[127.0.0.1]', `25')dnl
",
        d = d.display(),
        port = sm.mta_port
    );
    let cf = build_cf(&root, &d.join("submit.mc"), &mc);
    fs::write(d.join("submit.cf"), cf).unwrap();
    let out = sm.sendmail(
        &[
            "-C",
            d.join("submit.cf").to_str().unwrap(),
            "-f",
            "mail@example.org",
            "-t",
            "-i",
        ],
        &our_message("msp-1@example.org", "from the command line"),
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        common::transcript(&out),
        sm.log()
    );
    sm.wait_sent("esmtp", 1);
    let got = sm.sunk();
    assert_eq!(got.len(), 1);
    let tagged = got[0].sender();
    assert!(
        batv::verify(&test_keys(), tagged, batv::today(), 7)
            .is_ok_and(|v| v.plain == "mail@example.org"),
        "{}",
        got[0].mail_args
    );
    assert!(
        got[0].header("X-Backscatter").is_empty(),
        "{}",
        got[0].content
    );
    // The MSP's own AUTH=<> (it is not authenticated) may pass on; never an empty one.
    assert!(
        !got[0].mail_args.split(' ').any(|a| a == "AUTH="),
        "{}",
        got[0].mail_args
    );
    // It came in over SMTP from 127.0.0.1 through the MTA daemon.
    let log = sm.log();
    assert!(
        log.lines().any(|l| l.contains("msgid=<msp-1@example.org>")
            && l.contains("daemon=MTA,")
            && l.contains("[127.0.0.1]")),
        "{log}"
    );
}

/// The README shows the shipped .mc lines as they are.
#[test]
fn readme_shows_the_shipped_mc_lines() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for file in ["backscatter-milter.mc", "batv-local-domain.mc"] {
        let text = fs::read_to_string(format!("{CONTRIB}/{file}")).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("dnl")).collect();
        assert!(!lines.is_empty());
        for line in lines {
            // The rule's trailing comment is not shown.
            let line = line.split("\tstrip").next().unwrap();
            assert!(readme.contains(line), "{file}: {line:?} not in README.md");
        }
    }
}
