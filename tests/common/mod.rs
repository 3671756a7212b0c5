//! Test rig: a throwaway Postfix instance (Debian's package) on loopback that relays
//! everything to Postfix's own `smtp-sink`, plus the milter running in-process.
//!
//! Tests that need Postfix (and root, to start it) skip visibly without them, unless
//! BACKSCATTER_REQUIRE_POSTFIX=1 (set by .ci/run), which turns a skip into a failure.
#![allow(dead_code)]

use backscatter_milter::{Counters, Runtime, SharedRuntime, config::Config};
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

/// Returns false (after saying so) when the Postfix tests cannot run here.
pub fn postfix_available() -> bool {
    let required = std::env::var("BACKSCATTER_REQUIRE_POSTFIX").is_ok_and(|v| v == "1");
    let root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> = ["/usr/sbin/postfix", "/usr/sbin/smtp-sink", "/usr/bin/swaks"]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if root && missing.is_empty() {
        return true;
    }
    let why = if root {
        format!("missing {}", missing.join(", "))
    } else {
        "not root".to_string()
    };
    if required {
        panic!("BACKSCATTER_REQUIRE_POSTFIX=1 but Postfix tests cannot run: {why}");
    }
    eprintln!("SKIPPED (Postfix rig): {why}; run .ci/run or as root with postfix, swaks installed");
    false
}

/// Debian's Chromium, for the page tests.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Returns false (after saying so) when headless Chromium is not installed; in CI
/// (BACKSCATTER_REQUIRE_POSTFIX=1) that is a failure.
pub fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    assert!(
        std::env::var("BACKSCATTER_REQUIRE_POSTFIX").is_err(),
        "chromium is required in CI"
    );
    eprintln!("SKIPPED: chromium not installed (apt-get install chromium)");
    false
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temp dir that the postfix user can enter (mktemp makes 0700).
/// A fresh directory under /tmp (or `BACKSCATTER_TMPDIR`: the Postfix bench puts
/// its queues in RAM this way).
pub fn temp_dir() -> tempfile::TempDir {
    let base = std::env::var("BACKSCATTER_TMPDIR").unwrap_or_else(|_| "/tmp".into());
    let d = tempfile::Builder::new()
        .prefix("bsm")
        .tempdir_in(base)
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// The milter, in-process, on 127.0.0.1:0; stopped on drop.
pub struct TestMilter {
    pub addr: SocketAddr,
    spec: String,
    /// The stats endpoint, when the config sets `[stats] listen` (port 0 allowed).
    pub stats_addr: Option<SocketAddr>,
    pub shared: SharedRuntime,
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: std::sync::Mutex<Option<thread::JoinHandle<()>>>,
}

/// How the in-process milter listens.
#[derive(Clone, Debug)]
pub enum Transport {
    /// TCP with TCP_NODELAY and TCP_QUICKACK (what the daemon uses).
    Tcp(SocketAddr),
    /// TCP as tokio gives it (Nagle and delayed ACKs on), for comparison.
    PlainTcp(SocketAddr),
    Unix(PathBuf),
}

impl TestMilter {
    pub fn start(config_text: &str) -> Self {
        Self::start_at(config_text, "127.0.0.1:0".parse().unwrap())
    }

    /// Starts on a given address (to restart a milter where Postfix expects it).
    pub fn start_at(config_text: &str, bind: SocketAddr) -> Self {
        Self::start_on(config_text, Transport::Tcp(bind))
    }

    pub fn start_on(config_text: &str, transport: Transport) -> Self {
        let config = Config::parse(config_text, "test").expect("test config");
        refuse_system_paths(&config);
        note_system_paths();
        let stats_listen = config.stats.listen;
        let token = config
            .stats
            .token_file
            .as_deref()
            .map(|p| backscatter_milter::http::load_token(p).expect("token file"));
        let rt = Runtime::load(config, Arc::new(Counters::default())).expect("test runtime");
        let shared = SharedRuntime::new(rt);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let s2 = shared.clone();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (tcp, unix) = match &transport {
                    Transport::Tcp(a) | Transport::PlainTcp(a) => {
                        (Some(tokio::net::TcpListener::bind(a).await.unwrap()), None)
                    }
                    Transport::Unix(p) => {
                        let _ = std::fs::remove_file(p);
                        let l = tokio::net::UnixListener::bind(p).unwrap();
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666))
                            .unwrap();
                        (None, Some(l))
                    }
                };
                let milter_addr = tcp.as_ref().map_or_else(
                    || "127.0.0.1:0".parse().unwrap(),
                    |l| l.local_addr().unwrap(),
                );
                let milter_spec = match &transport {
                    Transport::Unix(p) => backscatter_milter::config::SocketSpec::Unix(p.clone()),
                    _ => backscatter_milter::config::SocketSpec::Inet(milter_addr),
                };
                let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
                let stats_addr = match stats_listen {
                    Some(a) => {
                        let sl = tokio::net::TcpListener::bind(a).await.unwrap();
                        let sa = sl.local_addr().unwrap();
                        let endpoint = backscatter_milter::http::Endpoint {
                            runtime: s2.clone(),
                            milter: milter_spec.clone(),
                            token,
                        };
                        tokio::spawn(backscatter_milter::http::serve(sl, endpoint, async {
                            let _ = stop_http_rx.await;
                        }));
                        Some(sa)
                    }
                    None => None,
                };
                addr_tx
                    .send((milter_addr, stats_addr, milter_spec.to_string()))
                    .unwrap();
                let stop = async {
                    let _ = rx.await;
                };
                match (transport, tcp, unix) {
                    (Transport::Tcp(_), Some(l), _) => {
                        backscatter_milter::run(
                            backscatter_milter::net::FastTcpListener(l),
                            s2,
                            stop,
                        )
                        .await
                    }
                    (_, Some(l), _) => backscatter_milter::run(l, s2, stop).await,
                    (_, _, Some(l)) => backscatter_milter::run(l, s2, stop).await,
                    _ => unreachable!(),
                }
                .unwrap();
                let _ = stop_http_tx.send(());
            });
        });
        let (addr, stats_addr, spec) = addr_rx.recv().unwrap();
        Self {
            addr,
            spec,
            stats_addr,
            shared,
            stop: std::sync::Mutex::new(Some(tx)),
            thread: std::sync::Mutex::new(Some(thread)),
        }
    }

    /// The socket in Postfix's notation.
    pub fn socket(&self) -> String {
        self.spec.clone()
    }

    pub fn socket_ref(&self) -> &str {
        &self.spec
    }

    /// Stops serving now (idempotent); the port closes.
    pub fn stop_now(&self) {
        if let Some(tx) = self.stop.lock().unwrap().take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestMilter {
    fn drop(&mut self) {
        self.stop_now();
        if !thread::panicking() {
            assert_system_paths_untouched();
        }
    }
}

/// One message as smtp-sink dumped it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub mail_from: String,
    pub rcpts: Vec<String>,
    /// The message as received (headers and body), without the sink's own lines.
    pub content: String,
}

impl Delivered {
    /// The values of a header (first line only), case-insensitive name.
    pub fn header(&self, name: &str) -> Vec<String> {
        let head = self.content.split("\n\n").next().unwrap_or("");
        head.lines()
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .collect()
    }
}

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub smtp_port: u16,
    /// A second smtpd with `milter_macro_daemon_name=ORIGINATING`, as on submission.
    pub submission_port: u16,
    sink_port: u16,
    sink: Child,
}

impl Rig {
    /// Starts Postfix with `smtpd_milters`/`non_smtpd_milters` = `milter` (may be
    /// empty) and extra main.cf lines.
    pub fn start(milter: &str, extra_main_cf: &[(&str, &str)]) -> Self {
        let dir = temp_dir();
        let d = dir.path();
        for sub in ["etc", "queue", "data", "sink"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        for sub in ["data", "sink"] {
            Command::new("chown")
                .args(["postfix", d.join(sub).to_str().unwrap()])
                .status()
                .unwrap();
        }
        let smtp_port = free_port();
        let submission_port = free_port();
        let sink_port = free_port();
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {q}
data_directory = {data}
myhostname = mx.example.org
mydomain = example.org
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = static:ALL
relayhost = [127.0.0.1]:{sink_port}
smtp_dns_support_level = disabled
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
biff = no
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
milter_default_action = tempfail
smtpd_milters = {milter}
non_smtpd_milters = {milter}
",
            q = d.join("queue").display(),
            data = d.join("data").display(),
            d = d.display(),
        );
        // An extra entry replaces the default of the same name: a repeated name
        // makes every Postfix process log a warning at start, postlogd included,
        // and postlogd writes its own warnings to the socket it has not started
        // reading yet; with more than net.unix.max_dgram_qlen (10 here) of them
        // queued, postlogd blocks on itself and the whole instance hangs.
        let mut lines: Vec<String> = main_cf.lines().map(str::to_string).collect();
        for (k, v) in extra_main_cf {
            let line = format!("{k} = {v}");
            match lines
                .iter_mut()
                .find(|l| l.split('=').next().map(str::trim) == Some(*k))
            {
                Some(old) => *old = line,
                None => lines.push(line),
            }
        }
        let main_cf = lines.join("\n") + "\n";
        fs::write(d.join("etc/main.cf"), main_cf).unwrap();
        fs::write(
            d.join("etc/master.cf"),
            master_cf(smtp_port, submission_port),
        )
        .unwrap();
        let sink = Command::new("/usr/sbin/smtp-sink")
            .args([
                "-u",
                "postfix",
                "-d",
                &format!("{}/sink/%M.", d.display()),
                &format!("127.0.0.1:{sink_port}"),
                "100",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("smtp-sink");
        let st = Command::new("/usr/sbin/postfix")
            .args(["-c", d.join("etc").to_str().unwrap(), "start"])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "postfix start: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let rig = Self {
            dir,
            smtp_port,
            submission_port,
            sink_port,
            sink,
        };
        rig.wait_for_port(smtp_port);
        rig.wait_for_port(submission_port);
        rig.wait_for_port(sink_port);
        rig
    }

    fn wait_for_port(&self, port: u16) {
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "port {port} never opened; maillog:\n{}",
                self.maillog()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    pub fn maillog(&self) -> String {
        fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Runs swaks against this Postfix; returns (exit ok, transcript).
    pub fn swaks(&self, args: &[&str]) -> (bool, String) {
        self.swaks_port(self.smtp_port, args)
    }

    pub fn swaks_port(&self, port: u16, args: &[&str]) -> (bool, String) {
        let out = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{port}")])
            .args(["--helo", "client.example", "--timeout", "30"])
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), transcript(&out))
    }

    /// Sends `n` messages of `size` bytes over `sessions` parallel SMTP sessions
    /// with Postfix's smtp-source, from load@example.org to sink@remote.example.
    pub fn smtp_source(&self, n: usize, sessions: usize, size: usize) {
        let out = Command::new("/usr/sbin/smtp-source")
            .args([
                "-m",
                &n.to_string(),
                "-s",
                &sessions.to_string(),
                "-l",
                &size.to_string(),
            ])
            .args(["-f", "load@example.org", "-t", "sink@remote.example"])
            .arg(format!("127.0.0.1:{}", self.smtp_port))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", transcript(&out));
    }

    /// Submits a message with Postfix's sendmail command (non_smtpd_milters).
    pub fn sendmail(&self, from: &str, to: &str, message: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("/usr/sbin/sendmail")
            .args(["-C", self.config_dir().to_str().unwrap(), "-f", from, to])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(message.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// All messages the sink holds now.
    pub fn delivered(&self) -> Vec<Delivered> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.dir.path().join("sink")) else {
            return out;
        };
        for e in entries.flatten() {
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            let mut d = Delivered {
                mail_from: String::new(),
                rcpts: Vec::new(),
                content: String::new(),
            };
            let mut lines = text.lines().peekable();
            while let Some(l) = lines.peek() {
                if let Some(v) = l.strip_prefix("X-Mail-Args: ") {
                    d.mail_from = v.split(' ').next().unwrap_or("").to_string();
                } else if let Some(v) = l.strip_prefix("X-Rcpt-Args: ") {
                    d.rcpts.push(v.split(' ').next().unwrap_or("").to_string());
                } else if !l.starts_with("X-Client-") && !l.starts_with("X-Helo-Args") {
                    break;
                }
                lines.next();
            }
            // Skip the sink's own Received header (3 lines).
            let rest: Vec<&str> = lines.collect();
            let body = rest
                .iter()
                .skip_while(|l| l.starts_with("Received: from mx.example.org"))
                .skip_while(|l| l.starts_with('\t'))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
            d.content = body;
            out.push(d);
        }
        out
    }

    /// Waits until Postfix logged `n` deliveries to the sink.
    pub fn wait_delivered(&self, n: usize) -> Vec<Delivered> {
        let t = Instant::now();
        loop {
            let sent = self.maillog().matches("status=sent").count();
            // smtp-sink may write its file after it has answered Postfix (and
            // Postfix logged status=sent): wait for the files too.
            if sent >= n && self.delivered().len() >= n {
                // Let the last file be written out whole.
                thread::sleep(Duration::from_millis(100));
                return self.delivered();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "only {sent} of {n} messages delivered; maillog:\n{}",
                self.maillog()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A queued message's content, as Postfix's postcat shows it.
    pub fn postcat(&self, id: &str) -> String {
        let out = Command::new("/usr/sbin/postcat")
            .args(["-c", self.config_dir().to_str().unwrap(), "-q", id])
            .output()
            .unwrap();
        transcript(&out)
    }

    /// Messages in Postfix's queue, as (queue_name, queue_id).
    pub fn queued(&self) -> Vec<(String, String)> {
        let out = Command::new("/usr/sbin/postqueue")
            .args(["-c", self.config_dir().to_str().unwrap(), "-j"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some((
                    v["queue_name"].as_str()?.to_string(),
                    v["queue_id"].as_str()?.to_string(),
                ))
            })
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .args(["-c", self.config_dir().to_str().unwrap(), "stop"])
            .output();
        let _ = self.sink.kill();
        let _ = self.sink.wait();
        if std::env::var("BACKSCATTER_KEEP_RIG").is_ok() {
            let p = self.dir.path().to_path_buf();
            eprintln!("rig kept at {}", p.display());
            std::mem::forget(std::mem::replace(&mut self.dir, temp_dir()));
        }
    }
}

pub fn transcript(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn master_cf(smtp_port: u16, submission_port: u16) -> String {
    format!(
        "127.0.0.1:{smtp_port} inet n - n - - smtpd
127.0.0.1:{submission_port} inet n - n - - smtpd -o milter_macro_daemon_name=ORIGINATING
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
    )
}

/// A test BATV key line (the secret is the ASCII "0123456789abcdef0123456789abcdef").
pub const TEST_KEY: &str = "1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// Writes a 0600 key file into `dir` and returns a config enabling BATV for
/// example.org with it, plus `extra` TOML appended to the [batv] table.
pub fn batv_config(dir: &Path, extra_batv: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let key_file = dir.join("batv.keys");
    fs::write(&key_file, format!("{TEST_KEY}\n")).unwrap();
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "[batv]\nsign_domains = [\"example.org\"]\nkey_file = \"{}\"\n{extra_batv}\n",
        key_file.display()
    )
}

/// `batv_config` with the sent-message ledger in `dir` too (not the system's
/// /var/lib/backscatter-milter).
pub fn batv_config_own_ledger(dir: &Path, extra_batv: &str) -> String {
    format!(
        "{}\n[ledger]\nstate_dir = \"{}\"\n",
        batv_config(dir, extra_batv),
        dir.display()
    )
}

/// A `[ledger]` table keeping the ledger in `dir/state` (never the system's
/// /var/lib/backscatter-milter); for configs that do not set `[ledger]` otherwise.
pub fn private_ledger(dir: &Path) -> String {
    format!(
        "\n[ledger]\nstate_dir = \"{}\"\n",
        dir.join("state").display()
    )
}

/// Where an installed milter keeps its files. No test may use them.
pub const SYSTEM_PATHS: [&str; 3] = [
    "/var/lib/backscatter-milter",
    "/run/backscatter-milter",
    "/etc/backscatter-milter",
];

/// Panics when a test config would make the milter use a system path (the default
/// `ledger.state_dir` or key file of a config that signs, a socket or token file
/// under them): every test config must point at temp dirs. TestMilter checks its
/// config; the daemon tests check theirs. Then `assert_system_paths_untouched`
/// checks, at each TestMilter's end, that nothing changed there meanwhile.
pub fn refuse_system_paths(config: &Config) {
    use backscatter_milter::config::SocketSpec;
    let mut used: Vec<&Path> = Vec::new();
    if config.batv.enabled() {
        if config.ledger.backend == backscatter_milter::config::LedgerBackend::File {
            used.push(&config.ledger.state_dir);
        }
        used.push(&config.batv.key_file);
    }
    if let SocketSpec::Unix(p) = &config.milter.socket {
        used.push(p);
    }
    used.extend(config.stats.token_file.as_deref());
    for p in used {
        assert!(
            !SYSTEM_PATHS.iter().any(|s| p.starts_with(s)),
            "a test config uses the system path {}: point it at a temp dir (private_ledger)",
            p.display()
        );
    }
}

/// What the system paths look like: for each (and the ledger), whether it exists,
/// its inode and modification time.
fn system_paths_state() -> Vec<Option<(u64, i64, i64)>> {
    use std::os::unix::fs::MetadataExt;
    SYSTEM_PATHS
        .iter()
        .map(PathBuf::from)
        .chain([PathBuf::from(SYSTEM_PATHS[0]).join("ledger.log")])
        .map(|p| {
            fs::symlink_metadata(p)
                .ok()
                .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

static SYSTEM_PATHS_AT_START: std::sync::OnceLock<Vec<Option<(u64, i64, i64)>>> =
    std::sync::OnceLock::new();

/// Records the system paths' state the first time a test starts a milter.
pub fn note_system_paths() {
    SYSTEM_PATHS_AT_START.get_or_init(system_paths_state);
}

/// Checks that no system path appeared, vanished or changed since the first milter
/// of this test binary started. Strict (a panic) with
/// BACKSCATTER_WATCH_SYSTEM_PATHS=1, as .ci/run sets on its machine of its own;
/// else a warning, as on a shared machine another process (another checkout's
/// tests, an installed milter) may change them.
pub fn assert_system_paths_untouched() {
    if let Some(before) = SYSTEM_PATHS_AT_START.get() {
        let now = system_paths_state();
        if before != &now {
            let msg = format!(
                "{SYSTEM_PATHS:?} (or the ledger in it) changed while tests ran: {before:?} -> {now:?}; tests must use temp dirs only"
            );
            let strict = std::env::var("BACKSCATTER_WATCH_SYSTEM_PATHS").is_ok_and(|v| v == "1");
            assert!(!strict, "{msg}");
            eprintln!("WARNING: {msg}");
        }
    }
}

pub fn test_keys() -> backscatter_milter::batv::Keys {
    backscatter_milter::batv::Keys::parse(TEST_KEY).unwrap()
}

/// The same address with one hex digit of its tag changed.
pub fn corrupt_tag(tagged: &str) -> String {
    let mut b = tagged.as_bytes().to_vec();
    b[12] = if b[12] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).unwrap()
}

/// A tiny SMTP client that can stop half-way through DATA.
pub struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    pub fn connect(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Self {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        c.reply();
        c
    }

    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).unwrap();
            all.push_str(&l);
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.reply()
    }

    pub fn send(&mut self, raw: &str) {
        self.w.write_all(raw.as_bytes()).unwrap();
    }
}

/// A plain HTTP/1.1 GET over a TCP socket: (status code, headers+body text).
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    http_raw(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{}\r\n",
            token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"))
        ),
    )
}

/// Sends raw bytes as an HTTP request; returns (status code, response text).
pub fn http_raw(addr: SocketAddr, request: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (code, body)
}

/// The BATV lines of contrib/postfix/main.cf, pointing at the shipped regexp map.
/// The Postfix settings for BATV: the recipient map as `backscatter-milter
/// postfix-map` prints it for example.org (the tests load what the binary prints).
pub static BATV_MAIN_CF: std::sync::LazyLock<[(&str, &str); 2]> = std::sync::LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("bsm-map-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("milter.toml");
    fs::write(
        &cfg,
        "[batv]\nsign_domains = [\"example.org\"]\nkey_file = \"/nonexistent\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_backscatter-milter"))
        .args(["--config", cfg.to_str().unwrap(), "postfix-map"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let map = dir.join("batv-recipient.regexp");
    fs::write(&map, &out.stdout).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let value: &'static str = Box::leak(format!("regexp:{}", map.display()).into_boxed_str());
    [
        ("recipient_canonical_maps", value),
        ("recipient_canonical_classes", "envelope_recipient"),
    ]
});
