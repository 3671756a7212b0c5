//! Where the log lines go: stderr, syslog (RFC 3164 datagrams on /dev/log, facility
//! `mail` by default, so they land in mail.log beside Postfix's) or the systemd
//! journal (its native datagram protocol). One line per event; the per-message line
//! starts with the MTA's queue id whatever the target.

use crate::config::{LogConfig, LogFormat, LogTarget};
use std::{
    io::{self, Write},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The name the lines carry (syslog tag, journal SYSLOG_IDENTIFIER).
pub const IDENT: &str = "backscatter-milter";

/// Sets up the global subscriber for `log`. A syslog or journal socket that cannot
/// be reached is not fatal (mail must flow): lines go to stderr until it can be.
pub fn init(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match &log.target {
        LogTarget::Stderr => {
            let b = builder
                .with_writer(io::stderr)
                .with_ansi(io::IsTerminal::is_terminal(&io::stderr()));
            match log.format {
                LogFormat::Text => b.init(),
                LogFormat::Json => b.json().init(),
            }
        }
        target => {
            let sink = Sink::new(target.clone(), log.facility);
            // The priority carries the level and the receiver adds the time.
            let b = builder
                .with_writer(sink)
                .with_ansi(false)
                .without_time()
                .with_level(false);
            match log.format {
                LogFormat::Text => b.init(),
                LogFormat::Json => b.json().init(),
            }
        }
    }
}

/// Syslog severity of a tracing level (RFC 5424 numbering).
fn severity(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// One datagram socket shared by all threads, reconnected when the receiver
/// (rsyslog, journald) restarts.
#[derive(Clone)]
pub struct Sink {
    target: LogTarget,
    facility: u8,
    pid: u32,
    socket: Arc<Mutex<Option<UnixDatagram>>>,
}

impl Sink {
    pub fn new(target: LogTarget, facility: u8) -> Self {
        Self {
            target,
            facility,
            pid: std::process::id(),
            socket: Arc::new(Mutex::new(None)),
        }
    }

    fn path(&self) -> &Path {
        match &self.target {
            LogTarget::Syslog(p) | LogTarget::Journald(p) => p,
            LogTarget::Stderr => Path::new(""),
        }
    }

    /// The datagram for one line at `level`.
    pub fn frame(&self, level: Level, line: &[u8]) -> Vec<u8> {
        let line = trim_newline(line);
        let sev = severity(level);
        match self.target {
            LogTarget::Journald(_) => journal_frame(self.facility, sev, line),
            _ => {
                let mut out = format!(
                    "<{}>{} {IDENT}[{}]: ",
                    u16::from(self.facility) * 8 + u16::from(sev),
                    rfc3164_now(),
                    self.pid
                )
                .into_bytes();
                out.extend_from_slice(prefix(level).as_bytes());
                out.extend_from_slice(line);
                out
            }
        }
    }

    fn send(&self, level: Level, line: &[u8]) {
        let frame = self.frame(level, line);
        let mut guard = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..2 {
            if guard.is_none() {
                *guard = UnixDatagram::unbound()
                    .and_then(|s| s.connect(self.path()).map(|()| s))
                    .ok();
            }
            match guard.as_ref().map(|s| s.send(&frame)) {
                Some(Ok(_)) => return,
                // The receiver went away (restart): reconnect once.
                Some(Err(_)) => *guard = None,
                None => break,
            }
        }
        drop(guard);
        // Nowhere else to go: stderr (the journal, under systemd).
        let _ = writeln!(
            io::stderr(),
            "{}{}",
            prefix(level),
            String::from_utf8_lossy(trim_newline(line))
        );
    }
}

/// Postfix's own words for the levels that need attention.
fn prefix(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error: ",
        Level::WARN => "warning: ",
        _ => "",
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\n' | b'\r'] = l {
        l = rest;
    }
    l
}

/// The journal's native protocol: KEY=value lines; a value with a newline is sent
/// as KEY, newline, its length as 64-bit little endian, the bytes, newline.
fn journal_frame(facility: u8, sev: u8, line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 96);
    let mut field = |key: &str, value: &[u8]| {
        out.extend_from_slice(key.as_bytes());
        if value.contains(&b'\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value);
        out.push(b'\n');
    };
    field("PRIORITY", sev.to_string().as_bytes());
    field("SYSLOG_FACILITY", facility.to_string().as_bytes());
    field("SYSLOG_IDENTIFIER", IDENT.as_bytes());
    field("MESSAGE", line);
    out
}

/// Local time as RFC 3164 wants it: `Nov 26 02:30:07`.
fn rfc3164_now() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: time(NULL) and localtime_r into a zeroed struct we own.
    let tm = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Collects one formatted event and sends it as one datagram when dropped.
pub struct EventWriter<'a> {
    sink: &'a Sink,
    level: Level,
    buf: Vec<u8>,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink.send(self.level, &self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        self.make_writer_for_level(Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        self.make_writer_for_level(*meta.level())
    }
}

impl Sink {
    fn make_writer_for_level(&self, level: Level) -> EventWriter<'_> {
        EventWriter {
            sink: self,
            level,
            buf: Vec::new(),
        }
    }
}

/// Syslog facility numbers by name (RFC 5424).
pub fn facility(name: &str) -> Option<u8> {
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

/// The standard socket of a target: /dev/log, the journal's native socket.
pub fn default_socket(target: &str) -> PathBuf {
    match target {
        "journald" => "/run/systemd/journal/socket".into(),
        _ => "/dev/log".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_frame_has_mail_priority_tag_and_one_line() {
        let s = Sink::new(LogTarget::Syslog("/nonexistent".into()), 2);
        let f = String::from_utf8(s.frame(Level::INFO, b"ABC123: from=<>\n")).unwrap();
        assert!(f.starts_with("<22>"), "{f}");
        assert!(
            f.ends_with(&format!("{IDENT}[{}]: ABC123: from=<>", std::process::id())),
            "{f}"
        );
        // "<22>Nov 26 02:30:07 ": month, space-padded day, time.
        assert_eq!(&f[7..8], " ");
        assert_eq!(&f[13..14], ":");
        let w = String::from_utf8(s.frame(Level::WARN, b"x")).unwrap();
        assert!(w.starts_with("<20>") && w.ends_with("]: warning: x"), "{w}");
        let e = String::from_utf8(s.frame(Level::ERROR, b"x")).unwrap();
        assert!(e.starts_with("<19>"), "{e}");
    }

    #[test]
    fn journal_frame_fields_and_binary_value() {
        let s = Sink::new(LogTarget::Journald("/nonexistent".into()), 2);
        let f = s.frame(Level::WARN, b"plain");
        assert_eq!(
            f,
            b"PRIORITY=4\nSYSLOG_FACILITY=2\nSYSLOG_IDENTIFIER=backscatter-milter\nMESSAGE=plain\n"
        );
        let f = s.frame(Level::INFO, b"two\nlines\n");
        let tail = b"MESSAGE\n\x09\0\0\0\0\0\0\0two\nlines\n";
        assert!(f.ends_with(tail), "{:?}", String::from_utf8_lossy(&f));
    }

    #[test]
    fn lines_reach_the_socket_and_fall_back_when_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let rx = UnixDatagram::bind(&path).unwrap();
        let s = Sink::new(LogTarget::Syslog(path.clone()), 16);
        s.send(Level::DEBUG, b"hello\n");
        let mut buf = [0u8; 512];
        let n = rx.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            got.starts_with("<135>") && got.ends_with("]: hello"),
            "{got}"
        );
        // The receiver restarts: the sink reconnects.
        drop(rx);
        std::fs::remove_file(&path).unwrap();
        let rx = UnixDatagram::bind(&path).unwrap();
        s.send(Level::INFO, b"again");
        let n = rx.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("]: again"));
    }

    #[test]
    fn facility_names() {
        assert_eq!(facility("mail"), Some(2));
        assert_eq!(facility("local7"), Some(23));
        assert_eq!(facility("bogus"), None);
    }
}
