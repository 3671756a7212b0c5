//! The sent-message ledger: for each outbound message of our domains (signed or
//! exempt), its Message-ID, its envelope sender and its recipients (both hashed), so
//! a bounce or auto-reply that returns the Message-ID is ours only when it speaks for
//! one of those recipients: a Message-ID copied from a public list post into spam
//! proves nothing for the spam's recipients.
//!
//! Embedded store: a concurrent map (O(1) lookups) bounded in entries (the oldest are
//! evicted), expiring after the tag lifetime plus a grace period, backed by an
//! append-only log under the state directory (`ledger.log`, one line per record, see
//! [`format_line`]). Every record is written to the log before `record` returns, so a
//! restart or a crash of the milter (kill -9) loses nothing recorded before it (the
//! kernel holds the write); an fsync runs every `FSYNC_EVERY` (64) records and at
//! compaction, so a power loss takes at most the last 64 records. The log is
//! replayed at start (a bad line is skipped and counted, never the end of replay) and
//! compacted (the live entries written to a new file, synced, renamed over) when it
//! holds twice as many lines as live entries. Recording an ID again replaces its
//! entry and its expiry. The milter records on its protocol thread only when the
//! record is a plain append (`next_record_is_cheap`, under `cheap_only`); the
//! fsync and the compaction always run on its blocking pool.
//! Why not an embedded database: one append and one map insert per outbound message is
//! all this needs; a log is trivially inspectable. A shared store for several servers
//! can implement [`Ledger`].

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

const FSYNC_EVERY: u64 = 64;
const MAX_ID_LEN: usize = 998;
/// Recipients kept per Message-ID (a message to more is matched on the first ones).
pub const MAX_RCPTS: usize = 1000;

/// A hashed address: the first 8 bytes of SHA-256 of the address lowercased. The
/// ledger never holds our users' correspondents in clear.
pub fn hash_address(addr: &str) -> u64 {
    let d = Sha256::digest(addr.trim().to_lowercase().as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// What the ledger knows of one message we sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// When it was recorded (unix seconds).
    pub at: u64,
    /// Hash of the envelope sender (plain, untagged), 0 when unknown.
    pub sender: u64,
    /// Hashes of its recipients.
    pub rcpts: Arc<[u64]>,
}

impl Entry {
    /// Whether `addr` was one of its recipients.
    pub fn has_rcpt(&self, addr: &str) -> bool {
        let h = hash_address(addr);
        self.rcpts.contains(&h)
    }

    /// Whether `addr` was its envelope sender.
    pub fn sent_by(&self, addr: &str) -> bool {
        self.sender != 0 && self.sender == hash_address(addr)
    }
}

/// What a ledger must do; a shared store (Redis, SQL) can implement it.
pub trait Ledger: Send + Sync {
    /// Records a Message-ID (angle brackets optional) sent at `now` (unix seconds) by
    /// `sender` (plain) to `rcpts`. Recording an ID again replaces it (new expiry).
    fn record(&self, message_id: &str, sender: &str, rcpts: &[String], now: u64) -> io::Result<()>;
    /// The live entry for a Message-ID at `now`.
    fn lookup(&self, message_id: &str, now: u64) -> Option<Entry>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn hits(&self) -> u64;
    fn misses(&self) -> u64;
    /// Log lines skipped at replay (unreadable or malformed).
    fn skipped(&self) -> u64 {
        0
    }
    /// Operations that failed (a shared store down or slow).
    fn errors(&self) -> u64 {
        0
    }
    /// Whether the next `record` is only an append to the page cache and a map
    /// insert (no fsync, no compaction, no network): the milter then records on
    /// its protocol thread instead of handing the message to a blocking thread.
    fn next_record_is_cheap(&self) -> bool {
        false
    }
}

impl std::fmt::Debug for dyn Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ledger({} entries)", self.len())
    }
}

/// A Message-ID without angle brackets, or `None` when it cannot be one.
pub fn normalise(id: &str) -> Option<String> {
    let id = id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (!id.is_empty() && id.len() <= MAX_ID_LEN && !id.contains(['\n', '\r', ' ', '\t']))
        .then(|| id.to_string())
}

struct Log {
    file: Option<File>,
    path: Option<PathBuf>,
    lines: u64,
    since_sync: u64,
    /// Recording order, for eviction and expiry. An ID recorded again appears
    /// twice; only the element whose time matches the map is live.
    order: VecDeque<(String, u64)>,
}

/// Whether the log has grown to twice its live entries (and past 1,024 lines).
fn compaction_due(lines: u64, live: u64) -> bool {
    lines >= 1024 && lines >= 2 * live.max(1)
}

thread_local! {
    /// Set while recording on the milter's protocol thread: the fsync and the
    /// compaction wait for the next record made on a blocking thread (which
    /// `next_record_is_cheap` then asks for).
    static CHEAP_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the ledger's slow work (fsync, compaction) deferred.
pub fn cheap_only<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CHEAP_ONLY.set(false);
        }
    }
    CHEAP_ONLY.set(true);
    let _reset = Reset;
    f()
}

/// The embedded ledger (see the module documentation).
pub struct FileLedger {
    map: DashMap<String, Entry>,
    log: Mutex<Log>,
    max_entries: usize,
    ttl_secs: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    skipped: AtomicU64,
}

/// One log line: `T ID SENDER-HASH RCPT-HASH,RCPT-HASH,...` (hashes in hex). Lines of
/// the first format (`T ID`) are read as entries with no recipients, which prove
/// nothing.
fn format_line(id: &str, e: &Entry) -> String {
    let rcpts: Vec<String> = e.rcpts.iter().map(|h| format!("{h:016x}")).collect();
    format!("{} {id} {:016x} {}\n", e.at, e.sender, rcpts.join(","))
}

fn parse_line(line: &str) -> Option<(String, Entry)> {
    let mut f = line.split(' ');
    let at = f.next()?.parse::<u64>().ok()?;
    let id = normalise(f.next()?)?;
    let sender = match f.next() {
        Some(s) => u64::from_str_radix(s, 16).ok()?,
        None => 0,
    };
    let rcpts: Vec<u64> = match f.next() {
        Some("") | None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|h| u64::from_str_radix(h, 16).ok())
            .collect::<Option<_>>()?,
    };
    if f.next().is_some() {
        return None;
    }
    Some((
        id,
        Entry {
            at,
            sender,
            rcpts: rcpts.into(),
        },
    ))
}

/// Whether the file's last byte is not a newline (a write cut short by a crash).
fn ends_torn(path: &Path) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    if f.metadata()?.len() == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    Ok(b[0] != b'\n')
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
            skipped: AtomicU64::new(0),
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
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        // A line torn by a crash must not swallow the next record.
        if ends_torn(&path)? {
            file.write_all(b"\n")?;
        }
        {
            let mut log = ledger.log.lock().unwrap_or_else(|e| e.into_inner());
            log.file = Some(file);
            log.path = Some(path);
            log.lines = lines;
        }
        ledger.maybe_compact()?;
        Ok(ledger)
    }

    /// Loads the live records of a log; returns how many lines it has. A line that
    /// is not UTF-8 or not a record is skipped and counted, never the end of replay.
    fn replay(&self, path: &Path, now: u64) -> u64 {
        let mut lines = 0;
        let Ok(f) = File::open(path) else {
            return 0;
        };
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut reader = BufReader::new(f);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => {
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            lines += 1;
            let parsed = std::str::from_utf8(&buf)
                .ok()
                .and_then(|l| parse_line(l.trim_end_matches(['\n', '\r'])));
            match parsed {
                Some((id, e)) => {
                    if e.at.saturating_add(self.ttl_secs) >= now {
                        self.insert(&mut log, id, e);
                    }
                }
                None => {
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        lines
    }

    fn insert(&self, log: &mut Log, id: String, e: Entry) {
        let at = e.at;
        self.map.insert(id.clone(), e);
        log.order.push_back((id, at));
        // Evict the oldest live entries beyond the cap (stale order elements, left by
        // IDs recorded again, are dropped on the way).
        while self.map.len() > self.max_entries {
            match log.order.pop_front() {
                Some((old, ot)) => {
                    self.map.remove_if(&old, |_, v| v.at == ot);
                }
                None => break,
            }
        }
        // Keep the order queue from growing without bound on re-recorded IDs.
        if log.order.len() > 2 * self.map.len() + 1024 {
            let mut live: Vec<(String, u64)> =
                self.map.iter().map(|r| (r.key().clone(), r.at)).collect();
            live.sort_by_key(|(_, t)| *t);
            log.order = live.into();
        }
    }

    fn expire(&self, log: &mut Log, now: u64) {
        while let Some((id, t)) = log.order.front() {
            if t.saturating_add(self.ttl_secs) >= now {
                break;
            }
            self.map.remove_if(id, |_, v| v.at == *t);
            log.order.pop_front();
        }
    }

    /// Rewrites the log with the live entries when it has grown to twice their number.
    fn maybe_compact(&self) -> io::Result<()> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.map.len() as u64;
        if !compaction_due(log.lines, live) || CHEAP_ONLY.get() {
            return Ok(());
        }
        let Some(path) = log.path.clone() else {
            return Ok(());
        };
        let tmp = path.with_extension("log.tmp");
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        let mut entries: Vec<(String, Entry)> = self
            .map
            .iter()
            .map(|r| (r.key().clone(), r.value().clone()))
            .collect();
        entries.sort_by_key(|(_, e)| e.at);
        for (id, e) in &entries {
            out.write_all(format_line(id, e).as_bytes())?;
        }
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        log.file = Some(OpenOptions::new().append(true).open(&path)?);
        log.lines = entries.len() as u64;
        log.order = entries.into_iter().map(|(id, e)| (id, e.at)).collect();
        Ok(())
    }
}

impl Ledger for FileLedger {
    fn record(&self, message_id: &str, sender: &str, rcpts: &[String], now: u64) -> io::Result<()> {
        let Some(id) = normalise(message_id) else {
            return Ok(());
        };
        let mut hashes: Vec<u64> = rcpts
            .iter()
            .take(MAX_RCPTS)
            .map(|r| hash_address(r))
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        let e = Entry {
            at: now,
            sender: if sender.is_empty() {
                0
            } else {
                hash_address(sender)
            },
            rcpts: hashes.into(),
        };
        {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = log.file.as_mut() {
                f.write_all(format_line(&id, &e).as_bytes())?;
                log.lines += 1;
                log.since_sync += 1;
                if log.since_sync >= FSYNC_EVERY && !CHEAP_ONLY.get() {
                    log.since_sync = 0;
                    let _ = log.file.as_ref().map(File::sync_data);
                }
            }
            self.expire(&mut log, now);
            self.insert(&mut log, id, e);
        }
        self.maybe_compact()
    }

    fn lookup(&self, message_id: &str, now: u64) -> Option<Entry> {
        let found = normalise(message_id)
            .and_then(|id| self.map.get(&id).map(|e| e.clone()))
            .filter(|e| e.at.saturating_add(self.ttl_secs) >= now);
        if found.is_some() {
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

    fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    fn next_record_is_cheap(&self) -> bool {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        // Expiry may shrink the live set during the record: count it as half.
        let live = self.map.len() as u64 / 2;
        log.since_sync + 1 < FSYNC_EVERY && !compaction_due(log.lines + 1, live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(l: &FileLedger, id: &str, t: u64) {
        l.record(id, "alice@example.org", &[format!("to-{id}")], t)
            .unwrap();
    }

    /// Records on the protocol thread never fsync or compact: once one is due the
    /// ledger says the next record is not cheap (the milter then uses a blocking
    /// thread), and a record made outside `cheap_only` does the deferred work.
    #[test]
    fn slow_work_is_deferred_to_a_record_off_the_protocol_thread() {
        let dir = tempfile::tempdir().unwrap();
        let l = FileLedger::open(dir.path(), 100_000, 86_400, 1_000).unwrap();
        let since_sync = |l: &FileLedger| l.log.lock().unwrap().since_sync;
        let mut n = 0;
        while l.next_record_is_cheap() {
            cheap_only(|| rec(&l, &format!("<{n}@x>"), 1_000));
            n += 1;
            assert!(n < 1000, "never due");
        }
        assert_eq!(n as u64, FSYNC_EVERY - 1);
        // A racing record under cheap_only passes the threshold without syncing.
        cheap_only(|| rec(&l, "<race@x>", 1_000));
        assert_eq!(since_sync(&l), FSYNC_EVERY);
        assert!(!l.next_record_is_cheap());
        rec(&l, "<blocking@x>", 1_000);
        assert_eq!(since_sync(&l), 0);
        assert!(l.next_record_is_cheap());
        // Re-recording one ID grows the log, not the live set: compaction falls
        // due at 1,024 lines, and only a record outside cheap_only compacts.
        for _ in 0..1100 {
            if l.next_record_is_cheap() {
                cheap_only(|| rec(&l, "<same@x>", 1_000));
            } else {
                rec(&l, "<same@x>", 1_000);
            }
        }
        let lines = l.log.lock().unwrap().lines;
        assert!(lines < 1024, "{lines} lines: never compacted");
        assert_eq!(l.lookup("<same@x>", 1_000).map(|e| e.at), Some(1_000));
        assert!(l.lookup("<5@x>", 1_000).is_some());
    }

    #[test]
    fn records_survive_a_restart_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400;
        {
            let l = FileLedger::open(dir.path(), 100, 7 * day, 1000).unwrap();
            l.record(
                "<a@example.org>",
                "alice@example.org",
                &["Bob@Remote.example".into()],
                1000,
            )
            .unwrap();
            rec(&l, "b@example.org", 2000);
            rec(&l, "bad id with spaces", 2000);
            let e = l.lookup("a@example.org", 1000).unwrap();
            assert!(e.has_rcpt("bob@remote.example") && !e.has_rcpt("eve@remote.example"));
            assert!(e.sent_by("Alice@example.org") && !e.sent_by("bob@example.org"));
            assert!(l.lookup("c@example.org", 1000).is_none());
            assert_eq!((l.hits(), l.misses()), (1, 1));
        }
        let l = FileLedger::open(dir.path(), 100, 7 * day, 3000).unwrap();
        assert!(
            l.lookup("<a@example.org>", 3000)
                .unwrap()
                .has_rcpt("bob@remote.example")
        );
        assert!(l.lookup("b@example.org", 3000).is_some());
        assert_eq!(l.len(), 2);
        // Expired after the lifetime.
        assert!(l.lookup("a@example.org", 1000 + 7 * day + 1).is_none());
        let l = FileLedger::open(dir.path(), 100, 7 * day, 1500 + 7 * day).unwrap();
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn bounded_and_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let l = FileLedger::open(dir.path(), 500, 1_000_000, 0).unwrap();
        for i in 0..5000u64 {
            rec(&l, &format!("m{i}@example.org"), i);
        }
        assert_eq!(l.len(), 500);
        assert!(l.lookup("m4999@example.org", 5000).is_some());
        assert!(l.lookup("m0@example.org", 5000).is_none());
        let lines = fs::read_to_string(dir.path().join("ledger.log"))
            .unwrap()
            .lines()
            .count();
        assert!(lines < 2 * 500 + 1024 + 1, "log compacted: {lines} lines");
        drop(l);
        let l = FileLedger::open(dir.path(), 500, 1_000_000, 5000).unwrap();
        assert_eq!(l.len(), 500);
        assert!(l.lookup("m4999@example.org", 5000).is_some());
    }

    /// An ID recorded twice takes the new expiry, is evicted as the newest (not an
    /// older entry in its place) and survives compaction.
    #[test]
    fn re_recorded_ids_move_to_the_back() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = 1000;
        let l = FileLedger::open(dir.path(), 3, ttl, 0).unwrap();
        rec(&l, "a@x", 0);
        rec(&l, "b@x", 10);
        rec(&l, "a@x", 20); // a again: now the newest
        rec(&l, "c@x", 30);
        assert_eq!(l.len(), 3);
        rec(&l, "d@x", 40); // evicts the oldest live entry: b, not a
        assert!(l.lookup("b@x", 40).is_none());
        assert!(l.lookup("a@x", 40).is_some());
        // a expires from its second record, not its first.
        assert!(l.lookup("a@x", 1015).is_some());
        // Compaction (it runs by itself past 1024 lines) keeps every live entry.
        for i in 0..1100u64 {
            rec(&l, "a@x", 1016 + i);
        }
        drop(l);
        let text = fs::read_to_string(dir.path().join("ledger.log")).unwrap();
        let lines = text.lines().count();
        assert!(lines < 1100, "compacted: {lines} lines");
        assert!(text.lines().next().unwrap().contains(" a@x "), "{text}");
        let l = FileLedger::open(dir.path(), 3, ttl, 2116).unwrap();
        assert!(l.lookup("a@x", 2116).is_some());
    }

    #[test]
    fn replay_skips_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = b"100 one@x 0000000000000001 0000000000000002\n".to_vec();
        log.extend_from_slice(b"\xff\xfe not utf-8\n");
        log.extend_from_slice(b"garbage\n");
        log.extend_from_slice(b"100 legacy-format@x\n");
        log.extend_from_slice(b"100 two@x 0000000000000001 \n");
        log.extend_from_slice(b"100 torn@x 0000000000000001 0000000000000002,"); // cut short
        fs::write(dir.path().join("ledger.log"), log).unwrap();
        let l = FileLedger::open(dir.path(), 100, 1000, 100).unwrap();
        assert_eq!(l.skipped(), 3);
        assert_eq!(l.len(), 3);
        // The next record starts on a line of its own.
        l.record("after@x", "a@x", &["b@x".into()], 100).unwrap();
        drop(l);
        let l = FileLedger::open(dir.path(), 100, 1000, 100).unwrap();
        assert!(l.lookup("after@x", 100).is_some());
        assert!(l.lookup("two@x", 100).is_some());
        assert!(l.lookup("legacy-format@x", 100).unwrap().rcpts.is_empty());
    }
}
