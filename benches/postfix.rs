//! What the milter costs the MTA, measured side by side in one run: the daemon as
//! shipped (the built binary, logging at info to a file, unix socket) against a
//! milter that does nothing (an indymilter built here that adds one header at end
//! of message) and against no milter at all. Prints every run and the medians;
//! asserts nothing about time.
//!
//! 1. `postfix`: messages/s through a throwaway Postfix (Debian's package, relaying
//!    to smtp-sink), one message per SMTP session as smtp-source sends them:
//!    (a) plain 2 KiB mail from a trusted client (outbound, signed),
//!    (b) plain inbound mail from a remote client (XCLIENT),
//!    (c) real bounces from tests/fixtures, MAIL FROM:<>, from a remote client;
//!    10 and 50 sessions in parallel. Needs root and postfix.
//! 2. `direct`: the milter driven over the protocol with no MTA: messages/s and
//!    p50/p99 latency per message, 1 and 100 messages per connection.
//! 3. `connections`: 1,000 milter connections held open with messages in flight:
//!    the daemon's resident memory and the latency of messages meanwhile.
//!
//! Variants are interleaved inside each round, so load from elsewhere on the
//! machine hits all of them alike.
//!
//! 4. `transports` (only when named): the milter in-process over plain TCP, TCP
//!    with TCP_NODELAY and TCP_QUICKACK, and a unix socket.
//!
//! Run: cargo bench --bench postfix [-- postfix|direct|connections|transports]
//! Env: BENCH_ROUNDS (3), BENCH_MESSAGES (messages per Postfix run, 600),
//!      BENCH_CONNECTIONS (1000), BENCH_DIRECT (`inbound`, `outbound` or `bounces`: only those
//!      direct cases), BENCH_LOADS (`a,b,c`: only those Postfix loads),
//!      BENCH_RAM=1 (the Postfix queues in /dev/shm instead of on disk).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/milter_client.rs"]
mod milter_client;

use common::{Rig, batv_config, temp_dir};
use milter_client::{Mail, MtaConn, from_raw, plain_mail};
use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

/// The daemons under test: "ours" (BENCH_MILTER_BIN, default this build's binary),
/// then BENCH_EXTRA_MILTERS="name=/path/to/binary,..." (older builds, to measure
/// before and after a change in the same run).
fn milter_bins() -> Vec<(String, String)> {
    let ours = std::env::var("BENCH_MILTER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_backscatter-milter").to_string());
    let mut v = vec![("ours".to_string(), ours)];
    for item in std::env::var("BENCH_EXTRA_MILTERS")
        .unwrap_or_default()
        .split(',')
    {
        if let Some((name, path)) = item.split_once('=') {
            v.push((name.to_string(), path.to_string()));
        }
    }
    v
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The milter under test: the shipped binary, as an admin runs it.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, name: &str, bin: &str) -> Self {
        let dir = &dir.join(name);
        fs::create_dir_all(dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.join("ours.sock");
        let cfg = dir.join("milter.toml");
        fs::write(
            &cfg,
            format!(
                "{}[milter]\nsocket = \"unix:{}\"\nsocket_mode = \"0666\"\nmax_connections = 1200\n\
                 [log]\nlevel = \"info\"\n",
                batv_config(dir, ""),
                socket.display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.join("milter.log")).unwrap();
        let child = Command::new(bin)
            .args(["--config", cfg.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .stderr(log.try_clone().unwrap())
            .stdout(log)
            .spawn()
            .unwrap();
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "milter never listened"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Self { child, socket }
    }

    /// How many messages the daemon logged as inbound and as outbound.
    fn directions(&self) -> (usize, usize) {
        let log = fs::read_to_string(self.socket.with_file_name("milter.log")).unwrap_or_default();
        (
            log.matches("direction=inbound").count(),
            log.matches("direction=outbound").count(),
        )
    }

    fn status_kib(&self, field: &str) -> u64 {
        let s = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A milter that does nothing but add one header at end of message: this bench
/// binary re-run with `--noop-milter SOCKET`, its own process like the daemon.
struct Noop {
    socket: PathBuf,
    child: Child,
}

impl Noop {
    /// `stages`: negotiate the stages and no-reply flags the daemon asks for
    /// (RCPT answered, connect/MAIL/headers without reply, the body skipped at its
    /// first chunk) instead of end of message only: separates what the protocol as
    /// we use it costs from what our code costs.
    fn start(dir: &Path, stages: bool) -> Self {
        let socket = dir.join(if stages {
            "noop-stages.sock"
        } else {
            "noop.sock"
        });
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.arg("--noop-milter").arg(&socket);
        if stages {
            cmd.arg("stages");
        }
        let child = cmd.spawn().unwrap();
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "no-op never listened"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Self { socket, child }
    }

    /// Serves until killed.
    fn serve(path: &Path, stages: bool) {
        use indymilter::{Actions, Callbacks, Status};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::UnixListener::bind(path).unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(0o666)).unwrap();
            let mut callbacks = Callbacks::<()>::new().on_eom(|cx| {
                Box::pin(async move {
                    use indymilter::ContextActions;
                    match cx.actions.add_header("X-Noop", "yes").await {
                        Ok(()) => Status::Continue,
                        Err(_) => Status::Tempfail,
                    }
                })
            });
            if stages {
                callbacks = callbacks
                    .on_negotiate(|cx, _, offered| {
                        Box::pin(async move {
                            cx.requested_opts =
                                backscatter_milter::milter::requested_opts(offered, true);
                            Status::Continue
                        })
                    })
                    .on_connect(|_, _, _| Box::pin(async { Status::Noreply }))
                    .on_mail(|_, _| Box::pin(async { Status::Noreply }))
                    .on_rcpt(|_, _| Box::pin(async { Status::Continue }))
                    .on_header(|_, _, _| Box::pin(async { Status::Noreply }))
                    .on_body(|_, _| Box::pin(async { Status::Skip }));
            }
            let config = indymilter::Config {
                actions: Actions::ADD_HEADER,
                max_connections: 1200,
                ..Default::default()
            };
            indymilter::run(l, callbacks, config, std::future::pending::<()>())
                .await
                .unwrap();
        });
    }
}

impl Drop for Noop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Real bounces from the fixtures (kind bounce in expected.tsv).
fn bounces() -> Vec<Vec<u8>> {
    let root = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/corpus"
    ));
    fs::read_to_string(root.join("expected.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (file, kind) = (f.next()?, f.next()?);
            (kind == "bounce").then(|| fs::read(root.join(file)).ok())?
        })
        .collect()
}

/// A message as SMTP DATA: CRLF lines, dot-stuffed, ending in CRLF.CRLF.
fn smtp_data(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let text = text.strip_prefix("From ").map_or(text.as_str(), |rest| {
        rest.split_once('\n').map_or("", |(_, r)| r)
    });
    let mut out = Vec::with_capacity(text.len() + 64);
    for line in text.lines() {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

// ---------------------------------------------------------------- 1. Postfix

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Load {
    Outbound,
    Inbound,
    Bounces,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Self::Outbound => "(a) plain mail, trusted client (outbound, signed)",
            Self::Inbound => "(b) plain mail, remote client (XCLIENT)",
            Self::Bounces => "(c) real bounces, MAIL FROM:<>, remote client",
        }
    }
}

fn reply(r: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            return all;
        }
        all.push_str(&l);
        if l.len() < 4 || l.as_bytes()[3] != b'-' {
            return all;
        }
    }
}

/// One SMTP session posing, through XCLIENT, as a remote MX; one message.
fn xclient_session(port: u16, n: usize, sender: &str, data: &[u8]) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let cmd = |w: &mut TcpStream, r: &mut BufReader<TcpStream>, line: &str, want: &str| {
        w.write_all(line.as_bytes()).unwrap();
        let got = reply(r);
        assert!(got.starts_with(want), "{line:?} -> {got:?}");
    };
    reply(&mut r);
    cmd(&mut w, &mut r, "EHLO bench.example\r\n", "250");
    let ip = format!("203.0.113.{}", 1 + n % 200);
    cmd(
        &mut w,
        &mut r,
        &format!("XCLIENT ADDR={ip} NAME=mx{}.remote.example\r\n", n % 200),
        "220",
    );
    cmd(&mut w, &mut r, "EHLO mx.remote.example\r\n", "250");
    cmd(&mut w, &mut r, &format!("MAIL FROM:<{sender}>\r\n"), "250");
    cmd(&mut w, &mut r, "RCPT TO:<user@example.org>\r\n", "250");
    cmd(&mut w, &mut r, "DATA\r\n", "354");
    w.write_all(data).unwrap();
    let got = reply(&mut r);
    assert!(got.starts_with("250"), "end of data -> {got:?}");
    let _ = w.write_all(b"QUIT\r\n");
    reply(&mut r);
}

fn xclient_load(port: u16, n: usize, sessions: usize, sender: &str, msgs: &[Vec<u8>]) {
    let msgs = Arc::new(msgs.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = (0..sessions)
        .map(|_| {
            let (msgs, next, sender) = (msgs.clone(), next.clone(), sender.to_string());
            thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    xclient_session(port, i, &sender, &msgs[i % msgs.len()]);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// "name value (ratio to the first, ratio to the second)" for each variant; the
/// first column has no ratio, the second only the first.
fn ratio_columns(
    names: &[&str],
    values: &[f64],
    decimals: usize,
    ratio: impl Fn(f64, f64) -> f64,
) -> Vec<String> {
    names
        .iter()
        .zip(values)
        .enumerate()
        .map(|(v, (name, &x))| match v {
            0 => format!("{name} {x:.decimals$}"),
            1 => format!("{name} {x:.decimals$} ({:.2})", ratio(x, values[0])),
            _ => format!(
                "{name} {x:.decimals$} ({:.2}, {:.2})",
                ratio(x, values[0]),
                ratio(x, values[1])
            ),
        })
        .collect()
}

/// CPU time a process (all its threads) has used, in ms, from /proc/PID/stat.
fn process_cpu_ms(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3 (state, not a number).
    let ticks = f.get(10).unwrap_or(&0.0) + f.get(11).unwrap_or(&0.0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / hz
}

/// CPU time the whole machine has spent busy (not idle, not waiting for I/O)
/// since boot, in ms, from /proc/stat.
fn busy_ms() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return 0.0;
    };
    let v: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 =
        v.iter().take(8).sum::<f64>() - v.get(3).unwrap_or(&0.0) - v.get(4).unwrap_or(&0.0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    busy * 1000.0 / hz
}

/// Waits (untimed) until Postfix has delivered everything, then empties the sink.
fn drain(rig: &Rig) {
    let t = Instant::now();
    while !rig.queued().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "queue never drained"
        );
        thread::sleep(Duration::from_millis(200));
    }
    if let Ok(entries) = fs::read_dir(rig.dir.path().join("sink")) {
        for e in entries.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn postfix_part(rounds: usize, n: usize, milters: &[(String, PathBuf)], pids: &[u32]) {
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/sbin/postfix").exists() {
        println!("1. through Postfix: skipped (needs root and Debian's postfix)");
        return;
    }
    let xclient = [("smtpd_authorized_xclient_hosts", "127.0.0.0/8")];
    let mut specs = vec![("alone".to_string(), String::new())];
    for (name, socket) in milters {
        specs.push((name.clone(), format!("unix:{}", socket.display())));
    }
    let rigs: Vec<Rig> = specs
        .iter()
        .map(|(_, spec)| Rig::start(spec, &xclient))
        .collect();
    let plain = {
        let m = plain_mail("alice@remote.example", "user@example.org", 1);
        let mut raw = Vec::new();
        for (k, v) in &m.headers {
            raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(&m.body);
        vec![smtp_data(&raw)]
    };
    let bounces: Vec<Vec<u8>> = bounces().iter().map(|b| smtp_data(b)).collect();
    // BENCH_LOADS=a,b,c (any of them) keeps only those loads.
    let only = std::env::var("BENCH_LOADS").unwrap_or_default();
    let loads: Vec<Load> = [Load::Outbound, Load::Inbound, Load::Bounces]
        .into_iter()
        .zip(["a", "b", "c"])
        .filter(|(_, k)| only.is_empty() || only.split(',').any(|o| o.trim() == *k))
        .map(|(l, _)| l)
        .collect();
    let sessions = [10usize, 50];
    let mut runs: BTreeMap<(Load, usize, usize), Vec<f64>> = BTreeMap::new();
    // Machine CPU (all processes: client, Postfix, milter, sink) per message, ms.
    let mut cpu: BTreeMap<(Load, usize, usize), Vec<f64>> = BTreeMap::new();
    // The milter process's own CPU per message, ms.
    let mut own: BTreeMap<(Load, usize, usize), Vec<f64>> = BTreeMap::new();
    let pid_of = |v: usize| (v > 0).then(|| pids[v - 1]);
    println!(
        "1. through Postfix, msg/s, {n} messages per run, one per SMTP session, {rounds} rounds interleaved"
    );
    for round in 0..rounds {
        for &load in &loads {
            for &s in &sessions {
                for k in 0..rigs.len() {
                    // A different variant goes first in each round.
                    let v = (k + round) % rigs.len();
                    let rig = &rigs[v];
                    let busy = busy_ms();
                    let mine = pid_of(v).map_or(0.0, process_cpu_ms);
                    let t = Instant::now();
                    match load {
                        Load::Outbound => rig.smtp_source(n, s, 2048),
                        Load::Inbound => {
                            xclient_load(rig.smtp_port, n, s, "alice@remote.example", &plain)
                        }
                        Load::Bounces => xclient_load(rig.smtp_port, n, s, "", &bounces),
                    }
                    let rate = n as f64 / t.elapsed().as_secs_f64();
                    runs.entry((load, s, v)).or_default().push(rate);
                    drain(rig);
                    cpu.entry((load, s, v))
                        .or_default()
                        .push((busy_ms() - busy) / n as f64);
                    if let Some(pid) = pid_of(v) {
                        own.entry((load, s, v))
                            .or_default()
                            .push((process_cpu_ms(pid) - mine) / n as f64);
                    }
                }
            }
        }
        println!("  round {} done", round + 1);
    }
    println!("  median msg/s of each variant, (its ratio to Postfix alone, to the no-op milter)");
    for &load in &loads {
        for &s in &sessions {
            let m: Vec<f64> = (0..specs.len())
                .map(|v| median(&runs[&(load, s, v)]))
                .collect();
            let names: Vec<&str> = specs.iter().map(|(n, _)| n.as_str()).collect();
            let cols = ratio_columns(&names, &m, 0, |x, base| x / base);
            println!("  {}, {s} sessions: {}", load.name(), cols.join(" | "));
            let c: Vec<f64> = (0..specs.len())
                .map(|v| median(&cpu[&(load, s, v)]))
                .collect();
            // CPU: less is better, so the ratios are the base's over this one's.
            let cols = ratio_columns(&names, &c, 2, |x, base| base / x);
            println!(
                "    CPU ms/msg (alone's / this, no-op's / this): {}",
                cols.join(" | ")
            );
            let cols: Vec<String> = specs
                .iter()
                .enumerate()
                .skip(1)
                .map(|(v, (name, _))| format!("{name} {:.0}", 1000.0 * median(&own[&(load, s, v)])))
                .collect();
            println!(
                "    the milter process's own CPU, us/msg: {}",
                cols.join(" | ")
            );
            for (v, (name, _)) in specs.iter().enumerate() {
                let all: Vec<String> = runs[&(load, s, v)]
                    .iter()
                    .zip(&cpu[&(load, s, v)])
                    .map(|(r, c)| format!("{r:.0} ({c:.2} ms)"))
                    .collect();
                println!("      {name:<12} runs: {}", all.join(", "));
            }
        }
    }
}

// ------------------------------------------------------- 2. direct, protocol

struct DirectRun {
    rate: f64,
    lat_ms: Vec<f64>,
}

/// `conns` connections in parallel, `per_conn` messages each, `total` messages.
async fn drive(
    socket: &Path,
    client: &'static str,
    mails: Arc<Vec<Mail>>,
    total: usize,
    per_conn: usize,
    parallel: usize,
) -> DirectRun {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (socket, mails, next) = (socket.to_path_buf(), mails.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            'conns: loop {
                let start = Instant::now();
                let mut c = MtaConn::open(&socket, "mx.remote.example", client)
                    .await
                    .unwrap();
                for j in 0..per_conn {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        let _ = c.quit().await;
                        break 'conns;
                    }
                    // The first message of a connection carries the connection's cost.
                    let t0 = if j == 0 { start } else { Instant::now() };
                    let out = c.message(&mails[i % mails.len()]).await.unwrap();
                    assert_eq!(out.reply, b'c', "milter did not continue");
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                let _ = c.quit().await;
            }
            lat
        }));
    }
    let mut lat_ms = Vec::with_capacity(total);
    for t in tasks {
        lat_ms.extend(t.await.unwrap());
    }
    DirectRun {
        rate: total as f64 / t.elapsed().as_secs_f64(),
        lat_ms,
    }
}

fn direct_part(rounds: usize, milters: &[(String, PathBuf)], bounce_raw: &[Vec<u8>]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let plain: Arc<Vec<Mail>> = Arc::new(
        (0..64)
            .map(|i| plain_mail("alice@remote.example", "user@example.org", i))
            .collect(),
    );
    let bounces: Arc<Vec<Mail>> = Arc::new(
        bounce_raw
            .iter()
            .map(|b| from_raw("", "user@example.org", b))
            .collect(),
    );
    let variants = milters;
    // Our users' mail: from a trusted client (the loopback), signed and recorded.
    let outbound: Arc<Vec<Mail>> = Arc::new(
        (0..64)
            .map(|i| plain_mail("alice@example.org", "bob@remote.example", i))
            .collect(),
    );
    const REMOTE: &str = "203.0.113.7";
    const LOCAL: &str = "127.0.0.1";
    let cases = [
        ("plain inbound", REMOTE, plain.clone(), 1usize, 2000usize),
        ("plain inbound", REMOTE, plain.clone(), 100, 6000),
        ("plain outbound", LOCAL, outbound.clone(), 1, 2000),
        ("plain outbound", LOCAL, outbound.clone(), 100, 6000),
        ("real bounces", REMOTE, bounces.clone(), 1, 2000),
        ("real bounces", REMOTE, bounces.clone(), 100, 6000),
    ];
    // BENCH_DIRECT=plain|bounces keeps only those cases (for profiling).
    let only = std::env::var("BENCH_DIRECT").unwrap_or_default();
    let cases: Vec<_> = cases
        .into_iter()
        .filter(|(name, ..)| only.is_empty() || name.contains(only.as_str()))
        .collect();
    let parallel = 4;
    println!(
        "2. the milter driven directly over the protocol (no MTA), {parallel} connections in parallel, {rounds} rounds interleaved"
    );
    let mut runs: BTreeMap<(usize, usize), Vec<DirectRun>> = BTreeMap::new();
    for round in 0..rounds {
        for (c, (_, client, mails, per, total)) in cases.iter().enumerate() {
            for k in 0..variants.len() {
                let v = (k + round) % variants.len();
                let r = rt.block_on(drive(
                    &variants[v].1,
                    client,
                    mails.clone(),
                    *total,
                    *per,
                    parallel,
                ));
                runs.entry((c, v)).or_default().push(r);
            }
        }
    }
    println!("  msg/s, latency per message p50/p99 ms, (ratio of msg/s to the no-op milter)");
    for (c, (name, _, _, per, _)) in cases.iter().enumerate() {
        let mut cols = Vec::new();
        let mut rates = Vec::new();
        for (v, (vname, _)) in variants.iter().enumerate() {
            let rs = &runs[&(c, v)];
            let rate = median(&rs.iter().map(|r| r.rate).collect::<Vec<_>>());
            let mut lat: Vec<f64> = rs.iter().flat_map(|r| r.lat_ms.iter().copied()).collect();
            lat.sort_by(|a, b| a.total_cmp(b));
            rates.push(rate);
            cols.push(format!(
                "{vname} {rate:.0} {:.2}/{:.2} ({:.2})",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                rate / rates[0]
            ));
        }
        println!("  {name}, {per} per connection: {}", cols.join(" | "));
        for (v, (vname, _)) in variants.iter().enumerate() {
            let all: Vec<String> = runs[&(c, v)]
                .iter()
                .map(|r| format!("{:.0}", r.rate))
                .collect();
            println!("      {vname:<10} runs msg/s: {}", all.join(", "));
        }
    }
}

// ------------------------------------------------- 3. 1,000 connections held

fn connections_part(n: usize, ours: &Daemon, bounce_raw: &[Vec<u8>]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let plain = plain_mail("alice@remote.example", "user@example.org", 1);
    let bounces: Vec<Mail> = bounce_raw
        .iter()
        .map(|b| from_raw("", "user@example.org", b))
        .collect();
    let rss_idle = ours.status_kib("VmRSS:");
    println!(
        "3. {n} milter connections to the daemon, each with a message in flight (half plain inbound mail, half real bounces with their bodies)"
    );
    rt.block_on(async {
        // Open and start a message on every connection, 50 at a time.
        let mut held = Vec::with_capacity(n);
        for batch in 0..n.div_ceil(50) {
            let mut tasks = Vec::new();
            for i in batch * 50..((batch + 1) * 50).min(n) {
                let socket = ours.socket.clone();
                let m = if i % 2 == 0 {
                    plain.clone()
                } else {
                    bounces[i % bounces.len()].clone()
                };
                tasks.push(tokio::spawn(async move {
                    let mut c = MtaConn::open(&socket, "mx.remote.example", "203.0.113.9")
                        .await
                        .unwrap();
                    let skipped = c.start(&m).await.unwrap();
                    (c, skipped, m)
                }));
            }
            for t in tasks {
                held.push(t.await.unwrap());
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_held = ours.status_kib("VmRSS:");
        // Meanwhile: 10 other connections send messages in a loop for 3 s.
        let mut lat = Vec::new();
        let stop = Instant::now() + Duration::from_secs(3);
        let mut tasks = Vec::new();
        for k in 0..10 {
            let socket = ours.socket.clone();
            let m = if k % 2 == 0 {
                plain.clone()
            } else {
                bounces[k % bounces.len()].clone()
            };
            tasks.push(tokio::spawn(async move {
                let mut c = MtaConn::open(&socket, "mx.remote.example", "203.0.113.10")
                    .await
                    .unwrap();
                let mut lat = Vec::new();
                while Instant::now() < stop {
                    let t = Instant::now();
                    c.message(&m).await.unwrap();
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                lat
            }));
        }
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        let steady = (lat.len(), percentile(&lat, 0.5), percentile(&lat, 0.99));
        // Then all held messages end at once, and each connection sends 4 more.
        let t = Instant::now();
        let mut tasks = Vec::new();
        for (mut c, skipped, m) in held {
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let t0 = Instant::now();
                c.finish(skipped).await.unwrap();
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
                for _ in 0..4 {
                    let t0 = Instant::now();
                    c.message(&m).await.unwrap();
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                let _ = c.quit().await;
                lat
            }));
        }
        let mut burst = Vec::new();
        for t in tasks {
            burst.extend(t.await.unwrap());
        }
        let wall = t.elapsed().as_secs_f64();
        burst.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  daemon RSS: {:.1} MB idle, {:.1} MB with {n} connections and messages in flight, peak {:.1} MB",
            rss_idle as f64 / 1024.0,
            rss_held as f64 / 1024.0,
            ours.status_kib("VmHWM:") as f64 / 1024.0
        );
        println!(
            "  while held: 10 other connections, {} messages, latency p50 {:.2} ms, p99 {:.2} ms",
            steady.0, steady.1, steady.2
        );
        println!(
            "  burst: all {n} connections end their message and send 4 more at once: {} messages in {wall:.2} s ({:.0} msg/s), latency p50 {:.2} ms, p99 {:.2} ms",
            burst.len(),
            burst.len() as f64 / wall,
            percentile(&burst, 0.5),
            percentile(&burst, 0.99)
        );
    });
}

// ------------------------------------------- 4. transports (only when asked)

/// The milter in-process on each transport, one SMTP session at a time and 20 in
/// parallel: why the daemon sets TCP_NODELAY and TCP_QUICKACK.
fn transports_part(n: usize) {
    use common::{TestMilter, Transport};
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/sbin/postfix").exists() {
        println!("4. transports: skipped (needs root and Debian's postfix)");
        return;
    }
    let cfg = "[log]\nlevel = \"warn\"\n";
    let dir = temp_dir();
    let cases: Vec<(&str, Option<Transport>)> = vec![
        ("no milter", None),
        (
            "milter, plain TCP (Nagle, delayed ACKs)",
            Some(Transport::PlainTcp("127.0.0.1:0".parse().unwrap())),
        ),
        (
            "milter, TCP_NODELAY + TCP_QUICKACK",
            Some(Transport::Tcp("127.0.0.1:0".parse().unwrap())),
        ),
        (
            "milter, unix socket",
            Some(Transport::Unix(dir.path().join("m.sock"))),
        ),
    ];
    println!("4. transports, 2 KiB messages, msg/s (one SMTP session at a time | 20 in parallel):");
    for (name, transport) in cases {
        let milter = transport.map(|t| TestMilter::start_on(cfg, t));
        let rig = Rig::start(milter.as_ref().map_or("", |m| m.socket_ref()), &[]);
        let rate = |count: usize, sessions: usize, already: usize| {
            let t = Instant::now();
            rig.smtp_source(count, sessions, 2048);
            rig.wait_delivered(already + count);
            count as f64 / t.elapsed().as_secs_f64()
        };
        let serial = rate(n / 4, 1, 0);
        let parallel = rate(n, 20, n / 4);
        println!("  {name:<42} {serial:>7.0} | {parallel:>7.0}");
    }
}

fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let [flag, socket, rest @ ..] = args.as_slice()
        && flag == "--noop-milter"
    {
        Noop::serve(Path::new(socket), rest.iter().any(|a| a == "stages"));
        return;
    }
    let parts: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| ["postfix", "direct", "connections", "transports"].contains(a))
        .collect();
    let want = |p: &str| (parts.is_empty() && p != "transports") || parts.contains(&p);
    raise_fd_limit();
    let rounds = env_num("BENCH_ROUNDS", 3);
    // BENCH_RAM=1: Postfix's queues and the sink in RAM (/dev/shm). Postfix alone
    // then runs about twice as fast, so any milter's share of the cost (the
    // no-op's too) looks about twice as large; the default keeps them on disk
    // as a real Postfix has them.
    if std::env::var_os("BENCH_RAM").is_some() && Path::new("/dev/shm").is_dir() {
        // SAFETY: set before any other thread is started.
        unsafe { std::env::set_var("BACKSCATTER_TMPDIR", "/dev/shm") };
    }
    let dir = temp_dir();
    let noop = Noop::start(dir.path(), false);
    let noop_stages = Noop::start(dir.path(), true);
    let daemons: Vec<(String, Daemon)> = milter_bins()
        .into_iter()
        .map(|(name, bin)| {
            let d = Daemon::start(dir.path(), &name, &bin);
            (name, d)
        })
        .collect();
    let ours = &daemons[0].1;
    let mut milters = vec![("no-op".to_string(), noop.socket.clone())];
    for (name, d) in &daemons {
        milters.push((name.clone(), d.socket.clone()));
    }
    milters.push(("no-op/stages".to_string(), noop_stages.socket.clone()));
    let mut pids = vec![noop.child.id()];
    pids.extend(daemons.iter().map(|(_, d)| d.child.id()));
    pids.push(noop_stages.child.id());
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "milters: {:?}\nmachine: {cpus} CPUs, load average at start {}",
        milter_bins(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let bounce_raw = bounces();
    if want("postfix") {
        postfix_part(rounds, env_num("BENCH_MESSAGES", 600), &milters, &pids);
    }
    if want("direct") {
        direct_part(rounds, &milters, &bounce_raw);
    }
    if want("connections") {
        connections_part(env_num("BENCH_CONNECTIONS", 1000), ours, &bounce_raw);
    }
    if want("transports") {
        transports_part(env_num("BENCH_MESSAGES", 600));
    }
    for (name, d) in &daemons {
        let (i, o) = d.directions();
        println!("{name}: logged {i} messages as inbound, {o} as outbound");
    }
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at end {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
