//! The sent-message ledger: the Message-IDs of the outbound messages we signed, so a
//! bounce that returns one of them is known to be ours.
//!
//! Embedded store: a concurrent map (O(1) lookups) bounded in entries, expiring after
//! the tag lifetime plus a grace period, backed by an append-only log under the state
//! directory (`ledger.log`, one `unix-seconds message-id` line per record). Every
//! record is written to the log before `record` returns, so a restart or a crash of
//! the milter loses nothing recorded before it (the kernel holds the write; an fsync
//! runs every `FSYNC_EVERY` records and at compaction, bounding what a power loss can
//! take). The log is replayed at start and compacted (rewritten with the live entries,
//! then renamed over) when it holds twice as many lines as live entries.
//! Why not an embedded database: one append and one map insert per outbound message is
//! all this needs; a log is trivially inspectable and has no format to migrate. A
//! shared store for several servers can implement [`Ledger`].

use dashmap::DashMap;
use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

const FSYNC_EVERY: u64 = 64;
const MAX_ID_LEN: usize = 998;

/// What a ledger must do; a shared store (Redis, SQL) can implement it later.
pub trait Ledger: Send + Sync {
    /// Records a Message-ID (without angle brackets) sent at `now` (unix seconds).
    fn record(&self, message_id: &str, now: u64) -> io::Result<()>;
    /// Whether the Message-ID was recorded and has not expired at `now`.
    fn contains(&self, message_id: &str, now: u64) -> bool;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn hits(&self) -> u64;
    fn misses(&self) -> u64;
}

impl std::fmt::Debug for dyn Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ledger({} entries)", self.len())
    }
}

fn normalise(id: &str) -> Option<String> {
    let id = id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (!id.is_empty() && id.len() <= MAX_ID_LEN && !id.contains(['\n', '\r', ' ']))
        .then(|| id.to_string())
}

struct Log {
    file: Option<File>,
    path: Option<PathBuf>,
    lines: u64,
    since_sync: u64,
    /// Insertion order, for eviction and expiry.
    order: VecDeque<(String, u64)>,
}

/// The embedded ledger (see the module documentation).
pub struct FileLedger {
    map: DashMap<String, u64>,
    log: Mutex<Log>,
    max_entries: usize,
    ttl_secs: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl FileLedger {
    /// An in-memory ledger (tests, and `classify` without a state directory).
    pub fn memory(max_entries: usize, ttl_secs: u64) -> Self {
        Self {
            map: DashMap::new(),
            log: Mutex::new(Log {
                file: None,
                path: None,
                lines: 0,
                since_sync: 0,
                order: VecDeque::new(),
            }),
            max_entries,
            ttl_secs,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Reads `dir/ledger.log` without writing to it (the `classify` command).
    pub fn read_only(dir: &Path, max_entries: usize, ttl_secs: u64, now: u64) -> Self {
        let ledger = Self::memory(max_entries, ttl_secs);
        ledger.replay(&dir.join("ledger.log"), now);
        ledger
    }

    /// Opens (creating) `dir/ledger.log`, replaying what has not expired at `now`.
    pub fn open(dir: &Path, max_entries: usize, ttl_secs: u64, now: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join("ledger.log");
        let ledger = Self::memory(max_entries, ttl_secs);
        let lines = ledger.replay(&path, now);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        {
            let mut log = ledger.log.lock().unwrap_or_else(|e| e.into_inner());
            log.file = Some(file);
            log.path = Some(path);
            log.lines = lines;
        }
        ledger.maybe_compact()?;
        Ok(ledger)
    }

    /// Loads the live records of a log; returns how many lines it has.
    fn replay(&self, path: &Path, now: u64) -> u64 {
        let ttl_secs = self.ttl_secs;
        let ledger = self;
        let mut lines = 0;
        if let Ok(f) = File::open(path) {
            let mut log = ledger.log.lock().unwrap_or_else(|e| e.into_inner());
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                lines += 1;
                let Some((t, id)) = line.split_once(' ') else {
                    continue;
                };
                let (Ok(t), Some(id)) = (t.parse::<u64>(), normalise(id)) else {
                    continue;
                };
                if t + ttl_secs >= now {
                    ledger.insert(&mut log, id, t);
                }
            }
        }
        lines
    }

    fn insert(&self, log: &mut Log, id: String, t: u64) {
        if self.map.insert(id.clone(), t).is_none() {
            log.order.push_back((id, t));
        }
        while self.map.len() > self.max_entries {
            match log.order.pop_front() {
                Some((old, ot)) => {
                    self.map.remove_if(&old, |_, v| *v == ot);
                }
                None => break,
            }
        }
    }

    fn expire(&self, log: &mut Log, now: u64) {
        while let Some((id, t)) = log.order.front() {
            if t + self.ttl_secs >= now {
                break;
            }
            self.map.remove_if(id, |_, v| v == t);
            log.order.pop_front();
        }
    }

    /// Rewrites the log with the live entries when it has grown to twice their number.
    fn maybe_compact(&self) -> io::Result<()> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.map.len() as u64;
        if log.lines < 1024 || log.lines < 2 * live.max(1) {
            return Ok(());
        }
        let Some(path) = log.path.clone() else {
            return Ok(());
        };
        let tmp = path.with_extension("log.tmp");
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        let mut n = 0;
        for (id, t) in &log.order {
            if self.map.get(id).is_some_and(|v| *v == *t) {
                writeln!(out, "{t} {id}")?;
                n += 1;
            }
        }
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        log.file = Some(OpenOptions::new().append(true).open(&path)?);
        log.lines = n;
        Ok(())
    }
}

impl Ledger for FileLedger {
    fn record(&self, message_id: &str, now: u64) -> io::Result<()> {
        let Some(id) = normalise(message_id) else {
            return Ok(());
        };
        {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = log.file.as_mut() {
                f.write_all(format!("{now} {id}\n").as_bytes())?;
                log.lines += 1;
                log.since_sync += 1;
                if log.since_sync >= FSYNC_EVERY {
                    log.since_sync = 0;
                    let _ = log.file.as_ref().map(File::sync_data);
                }
            }
            self.expire(&mut log, now);
            self.insert(&mut log, id, now);
        }
        self.maybe_compact()
    }

    fn contains(&self, message_id: &str, now: u64) -> bool {
        let found = normalise(message_id)
            .and_then(|id| self.map.get(&id).map(|t| *t + self.ttl_secs >= now))
            .unwrap_or(false);
        if found {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_restart_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400;
        {
            let l = FileLedger::open(dir.path(), 100, 7 * day, 1000).unwrap();
            l.record("<a@example.org>", 1000).unwrap();
            l.record("b@example.org", 2000).unwrap();
            l.record("bad id with spaces", 2000).unwrap();
            assert!(l.contains("a@example.org", 1000));
            assert!(!l.contains("c@example.org", 1000));
            assert_eq!((l.hits(), l.misses()), (1, 1));
        }
        let l = FileLedger::open(dir.path(), 100, 7 * day, 3000).unwrap();
        assert!(l.contains("<a@example.org>", 3000));
        assert!(l.contains("b@example.org", 3000));
        assert_eq!(l.len(), 2);
        // Expired after the lifetime.
        assert!(!l.contains("a@example.org", 1000 + 7 * day + 1));
        let l = FileLedger::open(dir.path(), 100, 7 * day, 1500 + 7 * day).unwrap();
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn bounded_and_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let l = FileLedger::open(dir.path(), 500, 1_000_000, 0).unwrap();
        for i in 0..5000u64 {
            l.record(&format!("m{i}@example.org"), i).unwrap();
        }
        assert_eq!(l.len(), 500);
        assert!(l.contains("m4999@example.org", 5000));
        assert!(!l.contains("m0@example.org", 5000));
        let lines = fs::read_to_string(dir.path().join("ledger.log"))
            .unwrap()
            .lines()
            .count();
        assert!(lines < 2 * 500 + 1024 + 1, "log compacted: {lines} lines");
        drop(l);
        let l = FileLedger::open(dir.path(), 500, 1_000_000, 5000).unwrap();
        assert_eq!(l.len(), 500);
        assert!(l.contains("m4999@example.org", 5000));
    }
}
