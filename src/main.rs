//! The command line: run the milter, check a config, and the BATV tools for admins.

use backscatter_milter::{
    Counters, Runtime, SharedRuntime,
    batv::{self, Keys},
    check::{self, Checked},
    config::Config,
    net,
};
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode, sync::Arc};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

mod cli;

const DEFAULT_CONFIG: &str = "/etc/backscatter-milter/milter.toml";

/// Exit status for a configuration error (sysexits.h EX_CONFIG); the systemd unit
/// does not restart on it (`RestartPreventExitStatus=78`).
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    version,
    about = "A milter that stops backscatter (bounces for mail you never sent)"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Check the configuration and everything it names (key file, token file,
    /// socket owner, state directory) without writing anything; exit 0, or 78 on a
    /// configuration error.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print ADDRESS with a BATV tag, signed on --date (default today). Reads only
    /// the config and the key file.
    Sign {
        #[arg(long)]
        date: Option<String>,
        address: String,
    },
    /// Check the BATV tag of ADDRESS on --date (default today): print the plain
    /// address and key id and exit 0, or say why not and exit 1. Reads only the
    /// config and the key file.
    Verify {
        #[arg(long)]
        date: Option<String>,
        address: String,
    },
    /// Analyse messages (bounce, delay, auto-reply, ...): one result per FILE, `-`
    /// for standard input. The ledger is only read.
    Classify {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// The envelope sender, when known ('' or '<>' for the null sender).
        #[arg(long)]
        mail_from: Option<String>,
        /// An envelope recipient (repeatable); with it, the verdict the milter would
        /// reach for this envelope is printed too.
        #[arg(long)]
        rcpt: Vec<String>,
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Print Postfix's recipient_canonical_maps regexp table for the configured
    /// batv.sign_domains (reads only the config).
    PostfixMap,
    /// Print a new key line for the key file.
    Keygen {
        /// The key id, 0-9.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=9))]
        id: u8,
    },
    /// Print the last judged messages, newest first, read from the running milter's
    /// endpoint ([stats] listen, with the token of token_file).
    Decisions {
        /// Only those decided so: accept, tag, quarantine, reject.
        #[arg(long)]
        action: Option<String>,
        /// Only this kind: bounce, delay, autoreply, challenge, ...
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Each reason in words under its row.
        #[arg(long, short)]
        explain: bool,
        /// The JSON as served.
        #[arg(long)]
        json: bool,
    },
    /// The messages we held (Postfix's hold queue, Sendmail's quarantine): list them
    /// with our reasons, release or delete them through the MTA's own commands.
    Quarantine {
        /// Which MTA holds them.
        #[arg(long, value_enum, default_value = "postfix", global = true)]
        mta: backscatter_milter::quarantine::Mta,
        /// Postfix's configuration directory (postqueue/postsuper -c), when not the
        /// default.
        #[arg(long, global = true)]
        postfix_config: Option<PathBuf>,
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// Destinations that refused our tagged sender: suggest exemptions (read from the
    /// running milter's endpoint), or forget a learned one.
    Exemptions {
        #[command(subcommand)]
        action: ExemptionsAction,
    },
    /// What enforce would have done (read from the running milter's endpoint): counts
    /// by decided action and reason, top sources, proofs that saved genuine
    /// bounces, any bounce to a valid tag that would be stopped, and a readiness
    /// line. Exit 0 when ready, 3 when not.
    Report {
        /// Only decisions at most this old: 90s, 30m, 12h, 7d (default: all
        /// remembered, see [stats] recent_decisions).
        #[arg(long)]
        since: Option<String>,
        /// Judged messages needed before the verdict can be ready.
        #[arg(long, default_value_t = 20)]
        min_judged: usize,
    },
    /// Print the man page backscatter-milter(8), roff, on standard output.
    #[command(hide = true)]
    Man,
    /// Print the completion script for SHELL on standard output.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum ExemptionsAction {
    /// List them with their refusals and a sample diagnostic, and print the
    /// exempt_recipient_domains line to add.
    Suggest,
    /// Revoke a learned exemption (in the state directory's refusing-domains.json;
    /// the milter reads it at its next reload) and never learn it again.
    Forget { domain: String },
}

#[derive(Subcommand)]
enum QuarantineAction {
    /// The messages we held, oldest first, with our verdict and reasons.
    List {
        /// Each reason in words under its row.
        #[arg(long, short)]
        explain: bool,
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// Release held messages (they are delivered now).
    Release {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete held messages (Postfix only).
    Delete {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

fn main() -> ExitCode {
    disable_core_dumps();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Man) => cli::man(),
        Some(Command::Completions { shell }) => cli::completions(shell),
        Some(Command::Keygen { id }) => match batv::keygen(id) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("keygen: {e}")),
        },
        Some(Command::PostfixMap) => match Config::load(&cli.config) {
            Ok(c) => {
                print!(
                    "{}",
                    backscatter_milter::maps::postfix_recipient_map(&c.batv)
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Some(Command::Decisions {
            action,
            kind,
            limit,
            explain,
            json,
        }) => decisions(&cli.config, action, kind, limit, explain, json),
        Some(Command::Report { since, min_judged }) => report(&cli.config, since, min_judged),
        Some(Command::Exemptions { action }) => exemptions(&cli.config, action),
        Some(Command::Quarantine {
            mta,
            postfix_config,
            action,
        }) => quarantine(&cli.config, mta, postfix_config, action),
        Some(Command::Classify {
            json,
            mail_from,
            rcpt,
            files,
        }) => classify(&cli.config, json, mail_from.as_deref(), &rcpt, &files),
        Some(Command::Sign { date, address }) => tool(&cli.config, date, |keys, config, day| {
            batv::sign(keys, &address, day, config.batv.lifetime_days).map_err(|e| e.to_string())
        }),
        Some(Command::Verify { date, address }) => tool(&cli.config, date, |keys, config, day| {
            batv::verify(keys, &address, day, config.batv.lifetime_days)
                .map(|v| format!("{} key={}", v.plain, v.key_id))
                .map_err(|e| format!("invalid: {e}"))
        }),
        None => {
            let who = if cli.check_config {
                check::Who::Admin
            } else {
                check::Who::Daemon
            };
            let checked = match check::check(&cli.config, who) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            if cli.check_config {
                for w in checked.config.warnings() {
                    eprintln!("backscatter-milter: warning: {}: {w}", cli.config.display());
                }
                for note in &checked.notes {
                    eprintln!("backscatter-milter: note: {note}");
                }
                println!("{}: OK", cli.config.display());
                return ExitCode::SUCCESS;
            }
            serve(cli.config, checked)
        }
    }
}

fn decisions(
    config: &std::path::Path,
    action: Option<String>,
    kind: Option<String>,
    limit: Option<usize>,
    explain: bool,
    json: bool,
) -> ExitCode {
    use backscatter_milter::decisions::{self, Filter};
    let mut query = Vec::new();
    for (k, v) in [
        ("action", action),
        ("kind", kind),
        ("limit", limit.map(|l| l.to_string())),
    ] {
        if let Some(v) = v {
            query.push(format!("{k}={v}"));
        }
    }
    let query = query.join("&");
    if let Err(e) = Filter::parse(&query) {
        return fail(format!("decisions: {e}"));
    }
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    let client = match decisions::Client::from_config(&config) {
        Ok(c) => c,
        Err(e) => return fail(format!("decisions: {e}")),
    };
    match client.get_json(&format!("/decisions?{query}")) {
        Ok(v) if json => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", decisions::table(&v, explain));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("decisions: {e}")),
    }
}

fn report(config: &std::path::Path, since: Option<String>, min_judged: usize) -> ExitCode {
    use backscatter_milter::report;
    let since = match since.as_deref().map(report::parse_duration) {
        Some(None) => return fail("report: --since: expected e.g. 90s, 30m, 12h or 7d"),
        Some(s) => s,
        None => None,
    };
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    let client = match backscatter_milter::decisions::Client::from_config(&config) {
        Ok(c) => c,
        Err(e) => return fail(format!("report: {e}")),
    };
    let (stats, decisions) = match (client.get_json("/stats"), client.get_json("/decisions")) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => return fail(format!("report: {e}")),
    };
    let (text, r) = report::render(
        &stats,
        &decisions,
        backscatter_milter::unix_now(),
        since,
        min_judged,
    );
    print!("{text}");
    if r.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn exemptions(config: &std::path::Path, action: ExemptionsAction) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    match action {
        ExemptionsAction::Suggest => {
            let client = match backscatter_milter::decisions::Client::from_config(&config) {
                Ok(c) => c,
                Err(e) => return fail(format!("exemptions: {e}")),
            };
            let stats = match client.get_json("/stats") {
                Ok(s) => s,
                Err(e) => return fail(format!("exemptions: {e}")),
            };
            let r = &stats["refusing_domains"];
            let list = r["domains"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("No destination has refused our tagged sender.");
                return ExitCode::SUCCESS;
            }
            println!("{:<32} {:>8}  {:<22} SAMPLE", "DOMAIN", "REFUSALS", "STATE");
            for d in &list {
                let state = if d["exempted"] == true {
                    "exempted (learned)"
                } else if d["configured"] == true {
                    "exempted (configured)"
                } else if d["revoked"] == true {
                    "revoked"
                } else {
                    "suggested"
                };
                let sample: String = d["sample"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect();
                println!(
                    "{:<32} {:>8}  {:<22} {sample}",
                    d["domain"]
                        .as_str()
                        .unwrap_or("")
                        .escape_debug()
                        .to_string(),
                    d["refusals"].as_u64().unwrap_or(0),
                    state
                );
            }
            println!("\nTo exempt them, in milter.toml [batv]:");
            println!("{}", r["suggested_line"].as_str().unwrap_or(""));
            ExitCode::SUCCESS
        }
        ExemptionsAction::Forget { domain } => {
            match backscatter_milter::exemptions::forget(&config.ledger.state_dir, &domain) {
                Ok(true) => {
                    println!(
                        "{domain}: forgotten (never learned again); takes effect at the milter's next reload"
                    );
                    ExitCode::SUCCESS
                }
                Ok(false) => fail(format!("{domain}: not a domain that refused our tags")),
                Err(e) => fail(format!("exemptions: {e}")),
            }
        }
    }
}

fn quarantine(
    config: &std::path::Path,
    mta: backscatter_milter::quarantine::Mta,
    postfix_config: Option<PathBuf>,
    action: QuarantineAction,
) -> ExitCode {
    use backscatter_milter::quarantine::{Queue, table};
    // The config names our header; without one, the default applies.
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(_) if !config.exists() => Config::default(),
        Err(e) => return config_error(e),
    };
    let queue = Queue {
        mta,
        postfix_config,
        header_name: config.milter.header_name.clone(),
    };
    let (verb, ids, op): (&str, Vec<String>, fn(&Queue, &str) -> _) = match action {
        QuarantineAction::List { explain, json } => {
            return match queue.list() {
                Ok(held) if json => {
                    for h in &held {
                        println!("{}", serde_json::to_string(h).unwrap_or_default());
                    }
                    ExitCode::SUCCESS
                }
                Ok(held) => {
                    print!("{}", table(&held, explain));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("quarantine list: {e}")),
            };
        }
        QuarantineAction::Release { ids } => ("released", ids, Queue::release),
        QuarantineAction::Delete { ids } => ("deleted", ids, Queue::delete),
    };
    // What was done goes to the milter's log (mail.log under the Debian package).
    backscatter_milter::logging::init(&config.log);
    let mut failed = false;
    for id in &ids {
        match op(&queue, id) {
            Ok(h) => {
                let reasons: Vec<String> = h
                    .ours
                    .reasons
                    .iter()
                    .map(|(c, p)| format!("{c}({p:+})"))
                    .collect();
                info!(
                    "{id}: quarantine: {verb} by an admin (from=<{}> score={} reasons=[{}])",
                    h.sender.escape_debug(),
                    h.ours.score.unwrap_or(0),
                    reasons.join(",").escape_debug()
                );
                println!("{id}: {verb}");
            }
            Err(e) => {
                error!("{}: quarantine: not {verb}: {e}", id.escape_debug());
                eprintln!("backscatter-milter: {id}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// No core dumps (they would hold the BATV keys and the stats token), and no
/// ptrace by other processes of the same user.
fn disable_core_dumps() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_DUMPABLE takes one integer argument; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

fn classify(
    config: &std::path::Path,
    json: bool,
    mail_from: Option<&str>,
    rcpts: &[String],
    files: &[String],
) -> ExitCode {
    use backscatter_milter::{evidence, ledger::FileLedger, session::check_recipient};
    // The config is optional: without one, the built-in defaults apply.
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(_) if !config.exists() => Config::default(),
        Err(e) => return config_error(e),
    };
    let keys = match backscatter_milter::load_keys(&config) {
        Ok(k) => k,
        Err(e) => return config_error(format!("batv.key_file: {e}")),
    };
    let now = backscatter_milter::unix_now();
    // Read only; and only when signing is on (as the daemon keeps it only then).
    let ledger: Option<Box<dyn backscatter_milter::ledger::Ledger>> = if !config.batv.enabled() {
        None
    } else {
        match config.ledger.backend {
            backscatter_milter::config::LedgerBackend::File => {
                Some(Box::new(FileLedger::read_only(
                    &config.ledger.state_dir,
                    config.ledger.max_entries,
                    config.ledger_ttl_secs(),
                    now,
                )))
            }
            backscatter_milter::config::LedgerBackend::Redis => {
                match backscatter_milter::redis_ledger::RedisLedger::new(
                    &config.ledger.redis_url,
                    &config.ledger.redis_prefix,
                    config.ledger_ttl_secs(),
                    config.ledger.redis_timeout,
                ) {
                    Ok(l) => Some(Box::new(l)),
                    Err(e) => return config_error(format!("ledger.redis_url: {e}")),
                }
            }
        }
    };
    let sender = mail_from.map(|s| s.trim().trim_matches(['<', '>']).to_string());
    let today = batv::today();
    let rcpts: Vec<backscatter_milter::address::Address> = rcpts
        .iter()
        .map(|r| backscatter_milter::address::Address::parse(r).unwrap_or_default())
        .collect();
    let tags: Vec<_> = rcpts
        .iter()
        .map(|r| check_recipient(&config.batv, keys.as_ref(), r, today))
        .collect();
    let rcpt_tags: Vec<evidence::RcptTag<'_>> = rcpts
        .iter()
        .zip(&tags)
        .map(|(address, tag)| evidence::RcptTag {
            address,
            tag: tag.as_ref(),
        })
        .collect();
    let ctx = evidence::Context {
        config: &config,
        keys: keys.as_ref(),
        ledger: ledger.as_deref(),
        today,
        now,
        bad_source: false,
    };
    let mut status = ExitCode::SUCCESS;
    for file in files {
        let raw = if file == "-" {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
        } else {
            std::fs::read(file)
        };
        let raw = match raw {
            Ok(r) => r,
            Err(e) => {
                eprintln!("backscatter-milter: {file}: {e}");
                status = ExitCode::FAILURE;
                continue;
            }
        };
        let (a, _, v) = evidence::assess(&raw, sender.as_deref(), &rcpt_tags, &ctx);
        let show_verdict = !rcpts.is_empty() || sender.is_some();
        if json {
            let mut o = serde_json::to_value(&a).unwrap_or_default();
            o["file"] = serde_json::Value::String(file.clone());
            if show_verdict {
                o["verdict"] = serde_json::json!({
                    "action": v.decided,
                    "applied": v.action,
                    "mode": v.mode,
                    "judged": v.judged,
                    "score": v.score,
                    "reasons": v.reasons,
                });
            }
            println!("{o}");
        } else {
            print!("{}", backscatter_milter::dsn::describe(file, &a));
            if show_verdict {
                println!(
                    "  verdict: {} (score {}, {}{})",
                    v.decided.as_str(),
                    v.score,
                    if v.reasons.is_empty() {
                        "no reasons".to_string()
                    } else {
                        v.reasons_text()
                    },
                    if v.judged { "" } else { "; kind not judged" }
                );
            }
        }
    }
    status
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("backscatter-milter: {msg}");
    ExitCode::FAILURE
}

fn config_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("backscatter-milter: {msg}");
    ExitCode::from(EX_CONFIG)
}

/// `sign` and `verify`: the config and the key file, nothing else (no ledger, no
/// state directory). Exit 0 with the answer, 1 with a negative answer, 78 when the
/// config or the key file is wrong.
fn tool(
    path: &std::path::Path,
    date: Option<String>,
    f: impl FnOnce(&Keys, &Config, i64) -> Result<String, String>,
) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    let keys = match backscatter_milter::load_keys(&config) {
        Ok(Some(k)) => k,
        Ok(None) => return config_error("batv.sign_domains is empty: no key file loaded"),
        Err(e) => return config_error(format!("batv.key_file: {e}")),
    };
    let day = match date.as_deref().map(batv::parse_date) {
        None => batv::today(),
        Some(Some(d)) => d,
        Some(None) => {
            eprintln!("backscatter-milter: --date: expected YYYY-MM-DD");
            return ExitCode::from(2);
        }
    };
    match f(&keys, &config, day) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    backscatter_milter::logging::init(&config.log);
}

/// Runs the daemon on a checked config. Binds the stats port before the milter
/// socket, so a taken port fails the start before the socket exists; the unix
/// socket is removed at exit.
fn serve(path: PathBuf, checked: Checked) -> ExitCode {
    init_logging(&checked.config);
    for w in checked.config.warnings() {
        warn!("{}: {w}", path.display());
    }
    let Checked { config, token, .. } = checked;
    let rt = match Runtime::load(config, Arc::new(Counters::default())) {
        Ok(rt) => rt,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    // One thread speaks the protocol for every connection: a callback is a few
    // microseconds of work, and a single thread saves the cross-thread wake-ups
    // that cost more than the work (measured: a third of the daemon's CPU per
    // message through Postfix, README "Performance"). What can take longer (the
    // analysis at end of message, ledger writes, the stats pages, a reload) runs
    // on the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let m = rt.config.milter.clone();
        let stats = rt.config.stats.clone();
        let stats_listener = match stats.listen {
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => Some((addr, l)),
                Err(e) => {
                    error!("stats.listen: cannot listen on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        // Held until the end: removes the unix socket at exit.
        let (listener, _socket_file) =
            match net::bind(&m.socket, m.socket_mode, m.socket_owner.as_deref()).await {
                Ok(l) => l,
                Err(e @ net::BindError::Owner(_)) => {
                    error!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
                Err(e) => {
                    error!("cannot listen on {}: {e}", m.socket);
                    return ExitCode::FAILURE;
                }
            };
        info!(
            "listening on {} (header {}, BATV signing {}, mode {})",
            m.socket,
            m.header_name,
            if rt.keys.is_some() { "on" } else { "off" },
            rt.config.verdict.policy.mode.as_str()
        );
        let shared = SharedRuntime::new(rt);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        if let Some((addr, l)) = stats_listener {
            info!(
                "stats endpoint on http://{addr}/ (token {})",
                if token.is_some() {
                    "required"
                } else {
                    "not required"
                }
            );
            let endpoint = backscatter_milter::http::Endpoint {
                runtime: shared.clone(),
                milter: m.socket.clone(),
                token,
            };
            tokio::spawn(backscatter_milter::http::serve(l, endpoint, stopped()));
        }
        // Handlers installed before READY=1: a SIGHUP right after it must not kill.
        tokio::spawn(reload_on_hup(
            path,
            shared.clone(),
            signal(SignalKind::hangup()),
        ));
        let stop_signals = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        tokio::spawn(async move {
            let (Ok(mut term), Ok(mut int)) = stop_signals else {
                error!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = int.recv() => info!("SIGINT received"),
            }
            backscatter_milter::notify::stopping();
            let _ = stop_tx.send(true);
        });
        backscatter_milter::notify::ready();
        match backscatter_milter::run(listener, shared, stopped()).await {
            Ok(()) => {
                info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!("milter failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGHUP: re-read the config and the key file; keep the old ones on error.
async fn reload_on_hup(
    path: PathBuf,
    shared: SharedRuntime,
    hup: std::io::Result<tokio::signal::unix::Signal>,
) {
    let Ok(mut hup) = hup else {
        error!("cannot install the SIGHUP handler; reload disabled");
        return;
    };
    while hup.recv().await.is_some() {
        backscatter_milter::notify::reloading();
        let old = shared.current();
        // Files are read off the protocol thread.
        let loaded = {
            let (path, old) = (path.clone(), old.clone());
            tokio::task::spawn_blocking(move || {
                Config::load(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|config| Runtime::reload(config, &old).map_err(|e| e.to_string()))
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        };
        let new = match loaded {
            Ok(rt) => rt,
            Err(e) => {
                error!("reload failed, keeping the running config: {e}");
                backscatter_milter::notify::ready();
                continue;
            }
        };
        let (o, n) = (&old.config, &new.config);
        let fixed = [
            ("milter.socket", o.milter.socket != n.milter.socket),
            (
                "milter.socket_mode",
                o.milter.socket_mode != n.milter.socket_mode,
            ),
            (
                "milter.socket_owner",
                o.milter.socket_owner != n.milter.socket_owner,
            ),
            (
                "milter.max_connections",
                o.milter.max_connections != n.milter.max_connections,
            ),
            (
                "milter.connection_timeout_secs",
                o.milter.connection_timeout != n.milter.connection_timeout,
            ),
            (
                "milter.shutdown_timeout_secs",
                o.milter.shutdown_timeout != n.milter.shutdown_timeout,
            ),
            ("log", o.log != n.log),
            ("ledger", o.ledger != n.ledger && old.ledger.is_some()),
            ("stats", o.stats != n.stats),
            ("reputation", o.reputation != n.reputation),
        ];
        for (key, changed) in fixed {
            if changed {
                warn!("reload: {key} changed; restart needed for it to take effect");
            }
        }
        let keys = new.keys.as_ref().map_or(0, |k: &Keys| k.ids().len());
        shared.replace(new);
        backscatter_milter::notify::ready();
        info!(
            "configuration reloaded from {} ({keys} BATV key(s))",
            path.display()
        );
    }
}
