//! backscatter-milter: a milter that stops backscatter.
//!
//! `run` serves the milter on an already-bound listener until `shutdown` completes;
//! the binary (`main.rs`) only parses the command line, binds and handles signals,
//! so tests can run the milter in-process.

pub mod address;
pub mod batv;
pub mod check;
pub mod config;
pub mod decisions;
pub mod dsn;
pub mod evidence;
pub mod exemptions;
pub mod http;
pub mod ledger;
pub mod logging;
pub mod logsafe;
pub mod maps;
pub mod milter;
pub mod net;
pub mod notify;
pub mod outbound;
pub mod quarantine;
pub mod redis_ledger;
pub mod report;
pub mod reputation;
pub mod session;
pub mod signature;
pub mod stats;
pub mod tagguard;
pub mod verdict;

use crate::{batv::Keys, config::Config};
use indymilter::Listener;
use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

/// What the milter runs with: the checked config, the BATV keys (if signing is on),
/// and the process-wide state that outlives a reload (counters, ledger, reputation).
pub struct Runtime {
    pub config: Config,
    pub keys: Option<Keys>,
    pub counters: Arc<Counters>,
    pub ledger: Option<Arc<dyn ledger::Ledger>>,
    pub reputation: Arc<reputation::Reputation>,
    /// Bad tags per client network: closes the tag oracle.
    pub tag_guard: Arc<tagguard::TagGuard>,
    pub stats: Arc<stats::Stats>,
    /// The last judged messages, for admins.
    pub decisions: Arc<decisions::Decisions>,
    /// Destinations that refuse our tagged senders.
    pub exemptions: Arc<exemptions::Learner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("keys", &self.keys)
            .field("ledger_entries", &self.ledger.as_ref().map(|l| l.len()))
            .finish_non_exhaustive()
    }
}

/// Errors loading what the milter runs with.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("batv.key_file: {0}")]
    Keys(#[from] batv::KeyError),
    #[error("ledger.state_dir: cannot open the ledger in {dir}: {source}")]
    Ledger { dir: String, source: std::io::Error },
}

/// Now, in seconds since 1970 (the ledger's and the reputation's clock).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The BATV keys a config names, when signing is on.
pub fn load_keys(config: &Config) -> Result<Option<Keys>, batv::KeyError> {
    config
        .batv
        .enabled()
        .then(|| Keys::load(&config.batv.key_file))
        .transpose()
}

impl Runtime {
    /// Checks a config and loads what it names: the key file and the ledger (when
    /// signing is on).
    pub fn load(config: Config, counters: Arc<Counters>) -> Result<Self, LoadError> {
        let keys = load_keys(&config)?;
        let ledger: Option<Arc<dyn ledger::Ledger>> = if config.batv.enabled() {
            let l = &config.ledger;
            let ttl = config.ledger_ttl_secs();
            match l.backend {
                config::LedgerBackend::File => {
                    let fl = ledger::FileLedger::open(&l.state_dir, l.max_entries, ttl, unix_now())
                        .map_err(|source| LoadError::Ledger {
                            dir: l.state_dir.display().to_string(),
                            source,
                        })?;
                    Some(Arc::new(fl))
                }
                config::LedgerBackend::Redis => Some(Arc::new(
                    redis_ledger::RedisLedger::new(
                        &l.redis_url,
                        &l.redis_prefix,
                        ttl,
                        l.redis_timeout,
                    )
                    .map_err(|source| LoadError::Ledger {
                        dir: l.redis_url.clone(),
                        source,
                    })?,
                )),
            }
        } else {
            None
        };
        let r = &config.reputation;
        let reputation = Arc::new(reputation::Reputation::new(
            r.window_secs,
            r.threshold,
            r.max_ips,
        ));
        let stats = Arc::new(stats::Stats::new(counters.clone(), ledger.clone()));
        let tag_guard = Arc::new(tagguard::TagGuard::new(config.batv.tag_guard));
        let decisions = Arc::new(decisions::Decisions::new(
            config.stats.recent_decisions,
            config.stats.decision_addresses,
        ));
        let exemptions = Arc::new(exemptions::Learner::open(
            Some(config.ledger.state_dir.as_path()).filter(|d| config.batv.enabled() && d.is_dir()),
            config.batv.learn_exemptions,
            config.batv.learn_after,
        ));
        Ok(Self {
            decisions,
            exemptions,
            config,
            keys,
            counters,
            ledger,
            reputation,
            tag_guard,
            stats,
        })
    }

    /// A reload: new config and keys; the counters, ledger, reputation and metrics
    /// carry over. Only when signing is turned on by the reload is a ledger opened
    /// (and the metrics start afresh, now with the ledger's).
    pub fn reload(config: Config, old: &Runtime) -> Result<Self, LoadError> {
        let rt = if old.ledger.is_none() && config.batv.enabled() {
            Self {
                reputation: old.reputation.clone(),
                tag_guard: old.tag_guard.clone(),
                decisions: old.decisions.clone(),
                ..Self::load(config, old.counters.clone())?
            }
        } else {
            Self {
                keys: load_keys(&config)?,
                config,
                counters: old.counters.clone(),
                ledger: old.ledger.clone(),
                reputation: old.reputation.clone(),
                tag_guard: old.tag_guard.clone(),
                stats: old.stats.clone(),
                decisions: old.decisions.clone(),
                exemptions: old.exemptions.clone(),
            }
        };
        rt.exemptions
            .reload(rt.config.batv.learn_exemptions, rt.config.batv.learn_after);
        let st = &rt.config.stats;
        rt.decisions
            .configure(st.recent_decisions, st.decision_addresses);
        rt.stats.reloaded();
        Ok(rt)
    }
}

/// The current runtime, swapped whole on reload; each connection keeps the snapshot
/// it started with.
#[derive(Clone)]
pub struct SharedRuntime(Arc<RwLock<Arc<Runtime>>>);

impl SharedRuntime {
    pub fn new(rt: Runtime) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(rt))))
    }

    pub fn current(&self) -> Arc<Runtime> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, rt: Runtime) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rt);
    }
}

/// Process-wide counters (atomics; cheap on the message path).
#[derive(Debug, Default)]
pub struct Counters {
    pub connections_open: AtomicU64,
    pub messages_in_flight: AtomicU64,
    pub errors: AtomicU64,
    /// Messages tempfailed because of an internal error.
    pub tempfails: AtomicU64,
    /// Messages whose headers or body passed a cap (decided on what was seen).
    pub truncated: AtomicU64,
    /// Analyses stopped by the time budget (decided on what was found so far).
    pub analysis_over_budget: AtomicU64,
    idle: Notify,
}

impl Counters {
    pub fn connection(self: &Arc<Self>) -> ConnGuard {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        ConnGuard(self.clone())
    }

    pub fn message(self: &Arc<Self>) -> MsgGuard {
        self.messages_in_flight.fetch_add(1, Ordering::SeqCst);
        MsgGuard(self.clone())
    }

    /// An internal error that tempfailed a message.
    pub fn tempfailed(&self) {
        self.tempfails.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until no message is in flight.
    pub async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            if self.messages_in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts an open milter connection while alive.
#[derive(Debug)]
pub struct ConnGuard(Arc<Counters>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a message between MAIL and end of message (or abort) while alive.
#[derive(Debug)]
pub struct MsgGuard(Arc<Counters>);

impl Drop for MsgGuard {
    fn drop(&mut self) {
        if self.0.messages_in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A listener that stops accepting (and closes its socket) once `stop` fires.
struct StoppableListener<L> {
    inner: Option<L>,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<L: Listener> Listener for StoppableListener<L> {
    type Io = L::Io;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        if self.inner.is_some() && self.stop.as_mut().poll(cx).is_ready() {
            self.inner = None;
        }
        match self.inner.as_mut() {
            Some(l) => l.poll_accept(cx),
            None => Poll::Pending,
        }
    }
}

/// Serves the milter until `shutdown` completes; then stops accepting, lets
/// messages in flight finish (at most `shutdown_timeout`) and closes the rest.
pub async fn run(
    listener: impl Listener,
    rt: SharedRuntime,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let current = rt.current();
    let counters = current.counters.clone();
    let grace = current.config.milter.shutdown_timeout;
    let config = indymilter::Config {
        max_connections: current.config.milter.max_connections,
        connection_timeout: current.config.milter.connection_timeout,
        ..Default::default()
    };
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let listener = StoppableListener {
        inner: Some(listener),
        stop: Box::pin(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }),
    };
    let drained = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        let open = counters.messages_in_flight.load(Ordering::SeqCst);
        info!("shutting down: no longer accepting connections, {open} message(s) in flight");
        if tokio::time::timeout(grace, counters.drained())
            .await
            .is_err()
        {
            warn!(
                "shutdown: {} message(s) still in flight after {}s, closing them",
                counters.messages_in_flight.load(Ordering::SeqCst),
                grace.as_secs()
            );
        }
        // Give the last replies a moment to reach the MTA.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    indymilter::run(listener, milter::callbacks(rt), config, drained).await
}
