//! The ledger in Redis, shared by several mail servers: a message sent through one
//! is found when its bounce arrives at another (`[ledger] backend = "redis"`).
//!
//! Schema: one key per message, `{prefix}m:{message-id}` (the Message-ID without
//! angle brackets), holding the same text as a `ledger.log` line without the ID
//! (`unix-seconds sender-hash rcpt-hash,rcpt-hash,...`, hashes as in
//! [`crate::ledger::hash_address`]), set with `EX` = the ledger's TTL, so Redis
//! expires it. Recording again replaces it.
//!
//! Redis slow or down never holds mail: every command has a timeout
//! (`redis_timeout_ms`); a failed lookup is a miss (the decision falls back to the
//! other evidence: tags, signatures), a failed record is logged and counted
//! (`errors()`); after a failure the next command reconnects, at most once per
//! second. The ledger is called from the milter's blocking pool, so a slow Redis
//! costs one blocking thread for at most the timeout.

use crate::ledger::{Entry, Ledger, hash_address, normalise};
use std::{
    io,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

pub struct RedisLedger {
    client: redis::Client,
    prefix: String,
    ttl_secs: u64,
    timeout: Duration,
    conn: Mutex<Conn>,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    recorded: AtomicU64,
}

struct Conn {
    con: Option<redis::Connection>,
    last_attempt: Option<Instant>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("redis: {e}"))
}

impl RedisLedger {
    /// No connection is made here: the first command connects (so the milter starts
    /// while Redis is down).
    pub fn new(url: &str, prefix: &str, ttl_secs: u64, timeout: Duration) -> io::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url).map_err(io_err)?,
            prefix: prefix.to_string(),
            ttl_secs,
            timeout,
            conn: Mutex::new(Conn {
                con: None,
                last_attempt: None,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}m:{id}", self.prefix)
    }

    /// Runs one command on the connection, connecting first if needed. A command
    /// that fails on a connection made earlier (Redis restarted since) is tried once
    /// more on a fresh one.
    fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> io::Result<T> {
        let mut c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh = false;
        loop {
            if c.con.is_none() {
                if !fresh
                    && c.last_attempt
                        .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
                {
                    return Err(io_err("down (reconnecting at most once per second)"));
                }
                fresh = true;
                c.last_attempt = Some(Instant::now());
                let con = self
                    .client
                    .get_connection_with_timeout(self.timeout)
                    .map_err(io_err)?;
                con.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
                con.set_write_timeout(Some(self.timeout)).map_err(io_err)?;
                c.con = Some(con);
            }
            let con = c.con.as_mut().expect("connected above");
            match cmd.query::<T>(con) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    c.con = None;
                    if fresh {
                        return Err(io_err(e));
                    }
                    fresh = true;
                }
            }
        }
    }

    fn failed<T>(&self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            self.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("ledger: {e}");
        }
        r
    }
}

impl Ledger for RedisLedger {
    fn record(&self, message_id: &str, sender: &str, rcpts: &[String], now: u64) -> io::Result<()> {
        let Some(id) = normalise(message_id) else {
            return Ok(());
        };
        let mut hashes: Vec<u64> = rcpts
            .iter()
            .take(crate::ledger::MAX_RCPTS)
            .map(|r| hash_address(r))
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        let sender = if sender.is_empty() {
            0
        } else {
            hash_address(sender)
        };
        let list: Vec<String> = hashes.iter().map(|h| format!("{h:016x}")).collect();
        let value = format!("{now} {sender:016x} {}", list.join(","));
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&id))
            .arg(value)
            .arg("EX")
            .arg(self.ttl_secs.max(1));
        let r = self.failed(self.run::<()>(&cmd));
        if r.is_ok() {
            self.recorded.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn lookup(&self, message_id: &str, now: u64) -> Option<Entry> {
        let id = normalise(message_id)?;
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(&id));
        let found = self
            .failed(self.run::<Option<String>>(&cmd))
            .ok()
            .flatten()
            .and_then(|v| parse_value(&v))
            .filter(|e| e.at.saturating_add(self.ttl_secs) >= now);
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Records made through this process (Redis holds the shared total).
    fn len(&self) -> usize {
        self.recorded.load(Ordering::Relaxed) as usize
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Commands that failed (timeouts, Redis down).
    fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

fn parse_value(v: &str) -> Option<Entry> {
    let mut f = v.split(' ');
    let at = f.next()?.parse().ok()?;
    let sender = u64::from_str_radix(f.next()?, 16).ok()?;
    let rcpts: Vec<u64> = match f.next() {
        None | Some("") => Vec::new(),
        Some(l) => l
            .split(',')
            .map(|h| u64::from_str_radix(h, 16).ok())
            .collect::<Option<_>>()?,
    };
    Some(Entry {
        at,
        sender,
        rcpts: rcpts.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_is_a_miss_not_a_hang() {
        // Nothing listens on port 1: refused at once; the next try waits a second.
        let l =
            RedisLedger::new("redis://127.0.0.1:1/", "t:", 60, Duration::from_millis(200)).unwrap();
        let t = Instant::now();
        assert!(l.record("<a@x>", "s@x", &["r@x".into()], 1).is_err());
        assert!(l.lookup("<a@x>", 1).is_none());
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(l.errors(), 2);
        assert_eq!(
            parse_value("5 0000000000000001 0000000000000002,0000000000000003")
                .unwrap()
                .rcpts
                .len(),
            2
        );
    }
}
