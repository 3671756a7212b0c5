//! Faults the milter must survive, each checked by its accounting: every message a
//! client sent is delivered, refused (the client saw a 4xx/5xx and keeps it) or
//! held; nothing is lost, duplicated or slips past the milter; no connection or
//! message stays counted once its peer is gone.
//!
//! MTA-side faults (a connection dropped mid-header, mid-body, between messages;
//! garbage and oversized packets; a client that says nothing) are driven with the
//! milter protocol itself (indymilter-test, raw bytes) beside real Postfix traffic;
//! process faults (SIGKILL, a Postfix restart) run under load with the built
//! binary or Postfix's own commands.

mod common;

use common::{Rig, TestMilter, batv_config, postfix_available, private_ledger, temp_dir};
use indymilter_test::TestConnection;
use std::{
    collections::HashMap,
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_backscatter-milter");

/// A signing config (ledger in `dir`), observe mode, with `milter` lines.
fn config(dir: &Path, milter: &str) -> String {
    format!(
        "[milter]\n{milter}\n{}{}",
        batv_config(dir, "trusted_networks = []"),
        private_ledger(dir)
    )
}

/// What the client saw for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// 250 after the final dot: Postfix took responsibility.
    Accepted,
    /// A 4xx/5xx, or no connection: the client keeps the message.
    Refused,
    /// The connection was lost after the final dot, before a reply.
    Unknown,
}

/// Sends one message over one SMTP session.
fn send(port: u16, from: &str, to: &str, subject: &str) -> Outcome {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return Outcome::Refused;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(w) = s.try_clone() else {
        return Outcome::Refused;
    };
    let mut w = w;
    let mut r = BufReader::new(s);
    let mut reply = || -> Option<u16> {
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).ok()? == 0 {
                return None;
            }
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return l.get(..3)?.parse().ok();
            }
        }
    };
    if reply() != Some(220) {
        return Outcome::Refused;
    }
    for (cmd, want) in [
        ("EHLO client.example".to_string(), 250),
        (format!("MAIL FROM:<{from}>"), 250),
        (format!("RCPT TO:<{to}>"), 250),
        ("DATA".to_string(), 354),
    ] {
        if w.write_all(format!("{cmd}\r\n").as_bytes()).is_err() || reply() != Some(want) {
            return Outcome::Refused;
        }
    }
    let msg = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.example>\r\n\r\nbody of {subject}\r\n.\r\n"
    );
    if w.write_all(msg.as_bytes()).is_err() {
        return Outcome::Refused;
    }
    let outcome = match reply() {
        Some(250) => Outcome::Accepted,
        Some(_) => Outcome::Refused,
        None => Outcome::Unknown,
    };
    let _ = w.write_all(b"QUIT\r\n");
    outcome
}

/// One message's story: its subject, the final outcome, how many times it was
/// refused before (a client retries a refused message, as an MTA would).
#[derive(Clone, Debug)]
struct Sent {
    subject: String,
    outcome: Outcome,
    refusals: u32,
}

/// `threads` clients each sending `each` messages one after another on `port`,
/// retrying a refused message up to `retries` times (200 ms apart). `progress`
/// counts accepted messages.
fn load(
    port: u16,
    from: &'static str,
    tag: &str,
    threads: usize,
    each: usize,
    retries: u32,
    progress: Arc<AtomicUsize>,
) -> thread::JoinHandle<Vec<Sent>> {
    let tag = tag.to_string();
    thread::spawn(move || {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let progress = progress.clone();
                let tag = tag.clone();
                thread::spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..each {
                        let subject = format!("{tag}-{t}-{i}");
                        let mut refusals = 0;
                        let outcome = loop {
                            match send(port, from, "rcpt@remote.example", &subject) {
                                Outcome::Refused if refusals < retries => {
                                    refusals += 1;
                                    thread::sleep(Duration::from_millis(200));
                                }
                                o => break o,
                            }
                        };
                        if outcome == Outcome::Accepted {
                            progress.fetch_add(1, Ordering::SeqCst);
                        }
                        out.push(Sent {
                            subject,
                            outcome,
                            refusals,
                        });
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// The subjects the sink holds (with counts), and whether each carries the
/// milter's header.
fn delivered(rig: &Rig, tag: &str) -> HashMap<String, (usize, bool)> {
    let mut out: HashMap<String, (usize, bool)> = HashMap::new();
    for d in rig.delivered() {
        let Some(subject) = d.header("Subject").into_iter().next() else {
            continue;
        };
        if !subject.starts_with(tag) {
            continue;
        }
        let e = out.entry(subject).or_default();
        e.0 += 1;
        e.1 = !d.header("X-Backscatter").is_empty();
    }
    out
}

/// Waits for every accepted message to reach the sink, then checks the books:
/// sent = delivered + refused + held, each accepted message delivered exactly once
/// and through the milter (its header), nothing delivered that the client was told
/// was refused. Returns (delivered, refused, held).
fn account(rig: &Rig, tag: &str, sent: &[Sent]) -> (usize, usize, usize) {
    account_with(rig, tag, sent, false)
}

/// `account`, where `at_least_once` allows a message to reach the sink twice: when
/// Postfix itself is stopped mid-delivery, its smtp client may die after the sink
/// took a message and before the queue recorded it (SMTP's at-least-once).
fn account_with(rig: &Rig, tag: &str, sent: &[Sent], at_least_once: bool) -> (usize, usize, usize) {
    let accepted: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.outcome == Outcome::Accepted)
        .collect();
    let t = Instant::now();
    let got = loop {
        let got = delivered(rig, tag);
        if accepted.iter().all(|s| got.contains_key(&s.subject)) {
            // A moment for an Unknown one still in the queue.
            thread::sleep(Duration::from_millis(500));
            break delivered(rig, tag);
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "accepted but not delivered: {:?}\nqueue: {:?}\nmaillog:\n{}",
            accepted
                .iter()
                .filter(|s| !got.contains_key(&s.subject))
                .map(|s| &s.subject)
                .collect::<Vec<_>>(),
            rig.queued(),
            rig.maillog()
        );
        thread::sleep(Duration::from_millis(100));
    };
    let held = rig.queued().iter().filter(|(q, _)| q == "hold").count();
    for (subject, (n, through_milter)) in &got {
        assert!(
            *n == 1 || at_least_once && *n == 2,
            "{subject} delivered {n} times"
        );
        assert!(through_milter, "{subject} bypassed the milter");
        let s = sent.iter().find(|s| &s.subject == subject).unwrap();
        assert_ne!(
            s.outcome,
            Outcome::Refused,
            "{subject}: refused yet delivered"
        );
    }
    let delivered = got.len();
    // An Unknown message not delivered stays with the client: refused.
    let refused = sent
        .iter()
        .filter(|s| s.outcome != Outcome::Accepted && !got.contains_key(&s.subject))
        .count();
    assert_eq!(
        sent.len(),
        delivered + refused + held,
        "sent = delivered + refused + held"
    );
    (delivered, refused, held)
}

/// Waits until the milter counts no open connection and no message in flight.
fn wait_idle(milter: &TestMilter) {
    let counters = milter.shared.current().counters.clone();
    let t = Instant::now();
    loop {
        let conns = counters.connections_open.load(Ordering::SeqCst);
        let msgs = counters.messages_in_flight.load(Ordering::SeqCst);
        if conns == 0 && msgs == 0 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "still {conns} connection(s), {msgs} message(s) counted after their peers left"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    MidHeader,
    MidBody,
    BetweenMessages,
}

/// Runs one protocol step unless the milter negotiated it away (a `MilterUsage`
/// error from indymilter-test: the MTA would not send it).
macro_rules! step {
    ($e:expr) => {
        match $e.await {
            Ok(_) | Err(indymilter_test::TestError::MilterUsage) => {}
            Err(e) => panic!("{}: {e}", stringify!($e)),
        }
    };
}

/// An MTA that goes away at `cut`: the connection just closes.
async fn session_cut_at(addr: SocketAddr, cut: Cut, n: usize) {
    let mut c = TestConnection::open(addr).await.unwrap();
    step!(c.connect("client.example", [127, 0, 0, 1]));
    step!(c.helo("client.example"));
    step!(c.mail([format!("<cut{n}@client.example>")]));
    step!(c.rcpt(["<rcpt@remote.example>"]));
    step!(c.data());
    step!(c.header("From", format!(" <cut{n}@client.example>")));
    if let Cut::MidHeader = cut {
        return;
    }
    step!(c.header("Subject", " cut"));
    step!(c.eoh());
    step!(c.body("first half of the body\r\n"));
    if let Cut::MidBody = cut {
        return;
    }
    step!(c.body("second half\r\n"));
    step!(c.eom());
    // Between messages: the session is idle, then the MTA is gone.
}

/// The MTA drops the milter connection mid-header, mid-body and between messages,
/// 30 times each, while Postfix sends real mail through the same milter: the
/// milter forgets each cut session (nothing stays counted) and every real
/// message is accounted for.
#[test]
fn mta_drops_the_connection_mid_header_mid_body_and_between_messages() {
    if !postfix_available() {
        return;
    }
    let dir = temp_dir();
    let milter = TestMilter::start(&config(dir.path(), ""));
    let rig = Rig::start(&milter.socket(), &[]);
    let progress = Arc::new(AtomicUsize::new(0));
    let traffic = load(
        rig.smtp_port,
        "sender@client.example",
        "cuts",
        2,
        15,
        0,
        progress,
    );
    tokio().block_on(async {
        for n in 0..30 {
            for cut in [Cut::MidHeader, Cut::MidBody, Cut::BetweenMessages] {
                session_cut_at(milter.addr, cut, n).await;
            }
        }
    });
    let sent = traffic.join().unwrap();
    wait_idle(&milter);
    let (delivered, refused, held) = account(&rig, "cuts", &sent);
    assert_eq!((delivered, refused, held), (30, 0, 0));
}

/// Garbage and oversized packets: each such connection is closed by the milter,
/// at once or (a packet that could still be completed: length 0, half a packet)
/// at the connection timeout; the milter goes on serving Postfix as before.
#[test]
fn garbage_and_oversized_packets_are_closed_and_mail_flows() {
    if !postfix_available() {
        return;
    }
    let dir = temp_dir();
    let milter = TestMilter::start(&config(dir.path(), "connection_timeout_secs = 3"));
    let rig = Rig::start(&milter.socket(), &[]);
    // A valid option negotiation (version 6, all actions, no protocol steps off).
    let mut optneg = vec![0, 0, 0, 13, b'O'];
    optneg.extend_from_slice(&6u32.to_be_bytes());
    optneg.extend_from_slice(&0x1ffu32.to_be_bytes());
    optneg.extend_from_slice(&0u32.to_be_bytes());
    let mut lcg = 0x2545_f491_u32;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            lcg = lcg.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (lcg >> 24) as u8
        })
        .collect();
    let huge_body = {
        // After negotiation, a body chunk of 2 MiB: over the protocol's 1 MiB.
        let mut p = optneg.clone();
        let len = 2 * 1024 * 1024 + 1;
        p.extend_from_slice(&(len as u32).to_be_bytes());
        p.push(b'B');
        p.extend(std::iter::repeat_n(b'x', len - 1));
        p
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("length 0xffffffff", vec![0xff, 0xff, 0xff, 0xff, b'O']),
        ("length 0", vec![0, 0, 0, 0]),
        ("unknown command", {
            let mut p = optneg.clone();
            p.extend_from_slice(&[0, 0, 0, 3, b'z', 1, 2]);
            p
        }),
        ("macro packet without a command", {
            let mut p = optneg.clone();
            p.extend_from_slice(&[0, 0, 0, 1, b'D']);
            p
        }),
        ("connect packet cut short", {
            let mut p = optneg.clone();
            p.extend_from_slice(&[0, 0, 0, 40, b'C', b'h', b'o', b's', b't']);
            p
        }),
        ("2 MiB body chunk", huge_body),
    ];
    for (what, bytes) in &cases {
        let mut s = TcpStream::connect(milter.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(bytes);
        // The milter closes the connection (reading to the end does not hang).
        let mut sink = Vec::new();
        let t = Instant::now();
        let r = s.read_to_end(&mut sink);
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{what}: {r:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{what}: connection held open for {:?}",
            t.elapsed()
        );
    }
    wait_idle(&milter);
    let sent = load(
        rig.smtp_port,
        "sender@client.example",
        "garbage",
        2,
        5,
        0,
        Arc::default(),
    )
    .join()
    .unwrap();
    assert_eq!(account(&rig, "garbage", &sent), (10, 0, 0));
    wait_idle(&milter);
}

/// Clients that connect and say nothing (or stop mid-message) are closed after
/// `connection_timeout_secs`; meanwhile other sessions are served as usual.
#[test]
fn silent_clients_are_closed_after_the_connection_timeout() {
    if !postfix_available() {
        return;
    }
    let dir = temp_dir();
    let milter = TestMilter::start(&config(dir.path(), "connection_timeout_secs = 2"));
    let rig = Rig::start(&milter.socket(), &[]);
    let mut silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(milter.addr).unwrap())
        .collect();
    // One that stops half-way through a message (a message counted in flight).
    let rt = tokio();
    let stalled = rt.block_on(async {
        let mut c = TestConnection::open(milter.addr).await.unwrap();
        step!(c.connect("client.example", [127, 0, 0, 1]));
        step!(c.helo("client.example"));
        step!(c.mail(["<stall@client.example>"]));
        c
    });
    let counters = milter.shared.current().counters.clone();
    assert_eq!(counters.messages_in_flight.load(Ordering::SeqCst), 1);
    assert!(counters.connections_open.load(Ordering::SeqCst) >= 1);
    let opened = Instant::now();
    // Other sessions meanwhile: served.
    let sent = load(
        rig.smtp_port,
        "sender@client.example",
        "silent",
        2,
        5,
        0,
        Arc::default(),
    )
    .join()
    .unwrap();
    assert_eq!(account(&rig, "silent", &sent), (10, 0, 0));
    // Each silent connection is closed by the milter, after the timeout.
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 16];
        assert_eq!(
            s.read(&mut b).unwrap(),
            0,
            "the milter wrote to a silent client"
        );
    }
    assert!(opened.elapsed() >= Duration::from_millis(1900));
    assert!(
        opened.elapsed() < Duration::from_secs(15),
        "{:?}",
        opened.elapsed()
    );
    wait_idle(&milter);
    drop(stalled);
}

/// The built milter, on a unix socket, logging to a file.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(cfg: &Path, log: &Path) -> Self {
        let parsed = backscatter_milter::config::Config::load(cfg).unwrap();
        common::refuse_system_paths(&parsed);
        common::note_system_paths();
        let child = Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !fs::read_to_string(log)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "milter did not start"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            log: log.to_path_buf(),
        }
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

/// The milter is killed with SIGKILL while 4 clients send, and restarted a second
/// later. Meanwhile Postfix applies milter_default_action (tempfail): clients are
/// told 4xx and retry. In the end every message is delivered exactly once, each
/// through the milter; some were refused first (the outage was real).
#[test]
fn milter_killed_with_sigkill_under_load_and_restarted() {
    if !postfix_available() {
        return;
    }
    let dir = temp_dir();
    let sock = dir.path().join("m.sock");
    let cfg = dir.path().join("milter.toml");
    fs::write(
        &cfg,
        config(
            dir.path(),
            &format!(
                "socket = \"unix:{}\"\nsocket_mode = \"0666\"",
                sock.display()
            ),
        ),
    )
    .unwrap();
    let first = Daemon::start(&cfg, &dir.path().join("first.log"));
    let rig = Rig::start(&format!("unix:{}", sock.display()), &[]);
    let progress = Arc::new(AtomicUsize::new(0));
    let traffic = load(
        rig.smtp_port,
        "sender@client.example",
        "kill",
        4,
        20,
        50,
        progress.clone(),
    );
    let t = Instant::now();
    while progress.load(Ordering::SeqCst) < 20 {
        assert!(t.elapsed() < Duration::from_secs(60), "no progress");
        thread::sleep(Duration::from_millis(10));
    }
    drop(first); // SIGKILL
    thread::sleep(Duration::from_secs(1));
    // The socket is left behind; nothing answers; the new start replaces it.
    assert!(sock.exists());
    let second = Daemon::start(&cfg, &dir.path().join("second.log"));
    let sent = traffic.join().unwrap();
    assert_eq!(sent.len(), 80);
    let (delivered, refused, held) = account(&rig, "kill", &sent);
    assert_eq!((delivered, refused, held), (80, 0, 0));
    let retried = sent.iter().filter(|s| s.refusals > 0).count();
    assert!(retried > 0, "no message was refused during the outage");
    assert!(
        rig.maillog().contains("milter"),
        "Postfix did not notice the milter outage"
    );
    let log = fs::read_to_string(&second.log).unwrap();
    assert!(log.contains("listening on"), "{log}");
}

/// Postfix is stopped and started again while clients send through the milter:
/// the milter sees its MTA connections cut at any point, forgets them, and serves
/// the restarted Postfix; every message is accounted for.
#[test]
fn postfix_restarted_under_load() {
    if !postfix_available() {
        return;
    }
    let dir = temp_dir();
    let milter = TestMilter::start(&config(dir.path(), ""));
    let rig = Rig::start(&milter.socket(), &[]);
    let progress = Arc::new(AtomicUsize::new(0));
    let traffic = load(
        rig.smtp_port,
        "sender@client.example",
        "restart",
        4,
        15,
        100,
        progress.clone(),
    );
    let t = Instant::now();
    while progress.load(Ordering::SeqCst) < 15 {
        assert!(t.elapsed() < Duration::from_secs(60), "no progress");
        thread::sleep(Duration::from_millis(10));
    }
    let postfix = |cmd: &str| {
        let out = Command::new("/usr/sbin/postfix")
            .args(["-c", rig.config_dir().to_str().unwrap(), cmd])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "postfix {cmd}: {}",
            common::transcript(&out)
        );
    };
    postfix("stop");
    // Until master is gone, a start would fail.
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", rig.smtp_port)).is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "postfix did not stop"
        );
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(500));
    // At start, postsuper (as the postfix user) cleans up after the stop and may
    // log about it: the maillog root created at the first start must let it.
    Command::new("chown")
        .arg("postfix")
        .arg(rig.dir.path().join("maillog"))
        .status()
        .unwrap();
    postfix("start");
    let sent = traffic.join().unwrap();
    assert_eq!(sent.len(), 60);
    let (delivered, refused, held) = account_with(&rig, "restart", &sent, true);
    assert_eq!(held, 0);
    assert_eq!(delivered + refused, 60);
    // Only a message whose reply was lost in the restart may be unaccounted by the
    // client; everything accepted was delivered (checked by `account`).
    assert!(
        refused
            <= sent
                .iter()
                .filter(|s| s.outcome == Outcome::Unknown)
                .count(),
        "refused for good: {refused}"
    );
    assert!(
        sent.iter().any(|s| s.refusals > 0),
        "no message hit the restart"
    );
    wait_idle(&milter);
}

/// The ledger's disk fills up (a 64 KiB tmpfs, full): outbound mail keeps flowing
/// signed (the policy: a failed record never stops mail), each failure is logged
/// and counted in backscatter_errors. At start, an unwritable state directory is
/// a configuration error (exit 78, see tests/config.rs).
#[test]
fn a_full_state_dir_keeps_mail_flowing_and_is_counted() {
    if !postfix_available() {
        return;
    }
    let dir = temp_dir();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
        .arg(&state)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&state);
    let milter = TestMilter::start(&config(dir.path(), ""));
    let rig = Rig::start(&milter.socket(), &*common::BATV_MAIN_CF);
    // Fill the disk.
    let mut filler = fs::File::create(state.join("filler")).unwrap();
    let chunk = [b'x'; 4096];
    while filler.write_all(&chunk).is_ok() {}
    drop(filler);
    let errors_before = milter
        .shared
        .current()
        .counters
        .errors
        .load(Ordering::SeqCst);
    let sent = load(
        rig.submission_port,
        "user@example.org",
        "full",
        2,
        4,
        0,
        Arc::default(),
    )
    .join()
    .unwrap();
    assert_eq!(account(&rig, "full", &sent), (8, 0, 0));
    // Signed all the same.
    for d in rig.delivered() {
        assert!(d.mail_from.starts_with("<prvs="), "{}", d.mail_from);
    }
    let rt = milter.shared.current();
    let errors = rt.counters.errors.load(Ordering::SeqCst) - errors_before;
    assert_eq!(errors, 8, "ledger failures not counted");
    assert!(
        rt.stats
            .metrics_text()
            .lines()
            .any(|l| l.starts_with("backscatter_errors_total ") && !l.ends_with(" 0")),
        "{}",
        rt.stats.metrics_text()
    );
    drop(rt);
    milter.stop_now();
}
