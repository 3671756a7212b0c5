//! Configuration: the raw TOML shape (`Raw*`, serde, unknown keys refused) and the
//! checked [`Config`] the rest of the program uses. Every validation error names the
//! key, the line (when the file says it) and the problem.

use crate::net::Cidr;
use serde::Deserialize;
use std::{fmt, fs, net::IpAddr, path::Path, path::PathBuf, str::FromStr, time::Duration};

/// A configuration error: what was wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}:{line}: {key}: {problem}", line = line.map_or_else(|| "?".to_string(), |l| l.to_string()))]
    Invalid {
        path: String,
        key: String,
        line: Option<usize>,
        problem: String,
    },
}

// ---------------------------------------------------------------- raw (serde) shape

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    milter: RawMilter,
    log: RawLog,
    limits: RawLimits,
    analysis: RawAnalysis,
    batv: RawBatv,
    verdict: RawVerdict,
    scores: RawScores,
    ledger: RawLedger,
    reputation: RawReputation,
    stats: RawStats,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStats {
    listen: String,
    token_file: String,
    allow_unauthenticated: bool,
    recent_decisions: usize,
    decision_addresses: String,
}

impl Default for RawStats {
    fn default() -> Self {
        Self {
            listen: String::new(),
            token_file: String::new(),
            allow_unauthenticated: false,
            recent_decisions: 1000,
            decision_addresses: "domain".into(),
        }
    }
}

/// The most decisions kept in memory (`stats.recent_decisions`).
pub const MAX_RECENT_DECISIONS: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawVerdict {
    mode: String,
    judge_kinds: Vec<String>,
    reject_threshold: i32,
    quarantine_threshold: i32,
    tag_threshold: i32,
    our_relays: Vec<String>,
    signature_header: String,
    legacy_signature_until: String,
}

impl Default for RawVerdict {
    fn default() -> Self {
        let p = crate::verdict::Policy::default();
        Self {
            mode: "observe".into(),
            judge_kinds: p.judge.iter().map(|k| k.as_str().to_string()).collect(),
            reject_threshold: p.reject_threshold,
            quarantine_threshold: p.quarantine_threshold,
            tag_threshold: p.tag_threshold,
            our_relays: Vec::new(),
            signature_header: "X-Backscatter-Sig".into(),
            legacy_signature_until: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawScores {
    valid_tag: i32,
    our_signature: i32,
    ledger_hit: i32,
    original_sender_tagged: i32,
    our_relay: i32,
    bad_tag: i32,
    untagged: i32,
    foreign_original: i32,
    no_original: i32,
    bad_source: i32,
}

impl Default for RawScores {
    fn default() -> Self {
        let s = crate::verdict::Scores::default();
        Self {
            valid_tag: s.valid_tag,
            our_signature: s.our_signature,
            ledger_hit: s.ledger_hit,
            original_sender_tagged: s.original_sender_tagged,
            our_relay: s.our_relay,
            bad_tag: s.bad_tag,
            untagged: s.untagged,
            foreign_original: s.foreign_original,
            no_original: s.no_original,
            bad_source: s.bad_source,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLedger {
    backend: String,
    state_dir: String,
    max_entries: usize,
    grace_days: u16,
    redis_url: String,
    redis_prefix: String,
    redis_timeout_ms: u64,
}

impl Default for RawLedger {
    fn default() -> Self {
        Self {
            backend: "file".into(),
            state_dir: "/var/lib/backscatter-milter".into(),
            max_entries: 1_000_000,
            grace_days: 7,
            redis_url: "redis://127.0.0.1:6379/0".into(),
            redis_prefix: "backscatter:".into(),
            redis_timeout_ms: 250,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReputation {
    window_secs: u64,
    threshold: u32,
    max_ips: usize,
}

impl Default for RawReputation {
    fn default() -> Self {
        Self {
            window_secs: 3600,
            threshold: 10,
            max_ips: 100_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAnalysis {
    max_bytes: usize,
    max_parts: usize,
    max_headers: usize,
    max_recipients: usize,
    max_text: usize,
    time_budget_ms: u64,
    concurrency: usize,
}

impl Default for RawAnalysis {
    fn default() -> Self {
        let d = crate::dsn::Limits::default();
        Self {
            max_bytes: d.max_bytes,
            max_parts: d.max_parts,
            max_headers: d.max_headers,
            max_recipients: d.max_recipients,
            max_text: d.max_text,
            time_budget_ms: d.time_budget.as_millis() as u64,
            concurrency: d.concurrency,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMilter {
    socket: String,
    socket_mode: String,
    socket_owner: String,
    max_connections: usize,
    connection_timeout_secs: u64,
    shutdown_timeout_secs: u64,
    header_name: String,
}

impl Default for RawMilter {
    fn default() -> Self {
        Self {
            socket: "inet:127.0.0.1:7357".into(),
            socket_mode: "0660".into(),
            socket_owner: String::new(),
            max_connections: 200,
            connection_timeout_secs: 7210,
            shutdown_timeout_secs: 30,
            header_name: "X-Backscatter".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
    format: String,
    target: String,
    socket: String,
    facility: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
            target: "stderr".into(),
            socket: String::new(),
            facility: "mail".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_header_bytes: usize,
    max_headers: usize,
    max_body_bytes: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 256 * 1024,
            max_headers: 1000,
            max_body_bytes: 2 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBatv {
    key_file: String,
    lifetime_days: u16,
    sign_domains: Vec<String>,
    sign_subdomains: bool,
    trusted_networks: Vec<String>,
    inbound_relays: Vec<String>,
    sign_daemon_names: Vec<String>,
    sign_local_submission: bool,
    exempt_senders: Vec<String>,
    exempt_recipients: Vec<String>,
    exempt_recipient_domains: Vec<String>,
    on_invalid_tag: String,
    signing_since: String,
    max_bad_tags: u32,
    bad_tag_window_secs: u64,
    bad_tag_block_secs: u64,
    learn_exemptions: bool,
    learn_after: u32,
}

impl Default for RawBatv {
    fn default() -> Self {
        Self {
            key_file: "/etc/backscatter-milter/batv.keys".into(),
            lifetime_days: 7,
            sign_domains: Vec::new(),
            sign_subdomains: false,
            trusted_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            inbound_relays: Vec::new(),
            sign_daemon_names: ["ORIGINATING", "MSA", "MSP-v4", "MSP-v6"]
                .map(String::from)
                .into(),
            sign_local_submission: true,
            exempt_senders: Vec::new(),
            exempt_recipients: Vec::new(),
            exempt_recipient_domains: Vec::new(),
            on_invalid_tag: "reject".into(),
            signing_since: String::new(),
            max_bad_tags: 5,
            bad_tag_window_secs: 3600,
            bad_tag_block_secs: 3600,
            learn_exemptions: false,
            learn_after: 3,
        }
    }
}

// ---------------------------------------------------------------- checked shape

/// Where the milter listens, in Postfix's notation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketSpec {
    Inet(std::net::SocketAddr),
    Unix(PathBuf),
}

impl FromStr for SocketSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or("expected inet:HOST:PORT, inet6:[HOST]:PORT or unix:/PATH")?;
        match kind {
            "inet" | "inet6" => {
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or("expected HOST:PORT after inet:")?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let ip: IpAddr = if host == "localhost" {
                    IpAddr::from([127, 0, 0, 1])
                } else {
                    host.parse()
                        .map_err(|_| format!("'{host}' is not an IP address"))?
                };
                if kind == "inet6" && ip.is_ipv4() || kind == "inet" && ip.is_ipv6() {
                    return Err(format!("'{host}' does not match the family {kind}"));
                }
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("'{port}' is not a port number"))?;
                Ok(Self::Inet((ip, port).into()))
            }
            "unix" | "local" => {
                if !rest.starts_with('/') {
                    return Err("a unix socket path must be absolute".into());
                }
                if rest.len() >= 108 {
                    return Err("a unix socket path must be shorter than 108 bytes".into());
                }
                Ok(Self::Unix(rest.into()))
            }
            other => Err(format!(
                "unknown socket type '{other}' (use inet, inet6 or unix)"
            )),
        }
    }
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet(a) if a.is_ipv6() => write!(f, "inet6:{a}"),
            Self::Inet(a) => write!(f, "inet:{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the sent-message ledger lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerBackend {
    /// `ledger.log` under `state_dir` (one server).
    File,
    /// Redis at `redis_url` (several servers share it).
    Redis,
}

/// What to do with a recipient whose tag fails verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnInvalidTag {
    /// 550 5.7.1 at RCPT.
    Reject,
    /// Accept the RCPT, record the result for the verdict.
    Record,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MilterConfig {
    pub socket: SocketSpec,
    pub socket_mode: u32,
    pub socket_owner: Option<String>,
    pub max_connections: usize,
    pub connection_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub header_name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
    pub target: LogTarget,
    /// Syslog facility number (mail = 2), for the syslog and journald targets.
    pub facility: u8,
}

/// Where log lines go; the socket of a syslog or journald target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    Syslog(PathBuf),
    Journald(PathBuf),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BatvConfig {
    pub key_file: PathBuf,
    pub lifetime_days: u16,
    pub sign_domains: Vec<String>,
    pub sign_subdomains: bool,
    pub trusted_networks: Vec<Cidr>,
    /// Trusted hosts that relay inbound mail (backup MX, content filter): their
    /// null-sender mail to our domains is judged as inbound.
    pub inbound_relays: Vec<Cidr>,
    pub sign_daemon_names: Vec<String>,
    pub sign_local_submission: bool,
    pub exempt_senders: Vec<String>,
    pub exempt_recipients: Vec<String>,
    pub exempt_recipient_domains: Vec<String>,
    pub on_invalid_tag: OnInvalidTag,
    /// The day signing started (days since 1970), if set.
    pub signing_since: Option<i64>,
    /// Bad tags per client network before its tagged RCPTs are no longer verified.
    pub tag_guard: crate::tagguard::Limits,
    /// Exempt, on their own, destinations that refused our tagged sender
    /// `learn_after` times (`crate::exemptions`).
    pub learn_exemptions: bool,
    pub learn_after: u32,
}

impl BatvConfig {
    /// Whether signing is configured at all (a key file is needed only then).
    pub fn enabled(&self) -> bool {
        !self.sign_domains.is_empty()
    }

    /// Whether `domain` (lowercase) is one of ours to sign and verify.
    pub fn is_our_domain(&self, domain: &str) -> bool {
        self.sign_domains.iter().any(|d| {
            domain == d
                || (self.sign_subdomains
                    && domain.len() > d.len()
                    && domain.ends_with(d.as_str())
                    && domain.as_bytes()[domain.len() - d.len() - 1] == b'.')
        })
    }
}

/// The checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub milter: MilterConfig,
    pub log: LogConfig,
    pub limits: Limits,
    pub analysis: crate::dsn::Limits,
    pub batv: BatvConfig,
    pub verdict: VerdictConfig,
    pub ledger: LedgerConfig,
    pub reputation: ReputationConfig,
    pub stats: StatsConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StatsConfig {
    /// Where the HTTP endpoint listens; `None`: off.
    pub listen: Option<std::net::SocketAddr>,
    pub token_file: Option<PathBuf>,
    /// How many judged messages `/decisions` keeps; 0: none.
    pub recent_decisions: usize,
    pub decision_addresses: crate::decisions::AddressView,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VerdictConfig {
    pub policy: crate::verdict::Policy,
    pub our_relay_hosts: Vec<String>,
    pub our_relay_networks: Vec<Cidr>,
    pub signature_header: String,
    /// The last day (days since 1970) version 1 signatures still count, if set.
    pub legacy_signature_until: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LedgerConfig {
    pub backend: LedgerBackend,
    pub state_dir: PathBuf,
    pub max_entries: usize,
    pub grace_days: u16,
    pub redis_url: String,
    pub redis_prefix: String,
    pub redis_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReputationConfig {
    pub window_secs: u64,
    pub threshold: u32,
    pub max_ips: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self::parse("", "<defaults>").expect("the built-in defaults are valid")
    }
}

impl Config {
    /// How long the ledger keeps a Message-ID: the tag lifetime plus the grace.
    pub fn ledger_ttl_secs(&self) -> u64 {
        86_400 * u64::from(self.batv.lifetime_days + self.ledger.grace_days)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let v = Validator { text, path };
        let m = raw.milter;
        let socket = m.socket.parse().map_err(|p| v.err("milter", "socket", p))?;
        let socket_mode = u32::from_str_radix(&m.socket_mode, 8)
            .ok()
            .filter(|&mode| mode <= 0o777)
            .ok_or_else(|| {
                v.err(
                    "milter",
                    "socket_mode",
                    "expected an octal mode such as \"0660\"",
                )
            })?;
        if m.max_connections == 0 {
            return Err(v.err("milter", "max_connections", "must be at least 1"));
        }
        if m.connection_timeout_secs == 0 {
            return Err(v.err("milter", "connection_timeout_secs", "must be at least 1"));
        }
        if !is_header_name(&m.header_name) {
            return Err(v.err(
                "milter",
                "header_name",
                "must be a header field name: printable ASCII without ':' or spaces",
            ));
        }
        let m_header_name = m.header_name.clone();
        let level = raw.log.level.to_ascii_lowercase();
        if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
            return Err(v.err(
                "log",
                "level",
                "expected one of error, warn, info, debug, trace",
            ));
        }
        let format = match raw.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(v.err("log", "format", "expected \"text\" or \"json\"")),
        };
        let log_socket = if raw.log.socket.is_empty() {
            crate::logging::default_socket(&raw.log.target)
        } else if raw.log.socket.starts_with('/') {
            PathBuf::from(&raw.log.socket)
        } else {
            return Err(v.err("log", "socket", "must be an absolute path"));
        };
        let target = match raw.log.target.as_str() {
            "stderr" => LogTarget::Stderr,
            "syslog" => LogTarget::Syslog(log_socket),
            "journald" => LogTarget::Journald(log_socket),
            _ => {
                return Err(v.err(
                    "log",
                    "target",
                    "expected \"stderr\", \"syslog\" or \"journald\"",
                ));
            }
        };
        let facility = crate::logging::facility(&raw.log.facility).ok_or_else(|| {
            v.err(
                "log",
                "facility",
                "expected a syslog facility: mail, daemon, user, local0 ... local7",
            )
        })?;
        let l = raw.limits;
        if l.max_header_bytes < 1024 {
            return Err(v.err("limits", "max_header_bytes", "must be at least 1024"));
        }
        if l.max_headers == 0 {
            return Err(v.err("limits", "max_headers", "must be at least 1"));
        }
        // Upper bounds too: each is memory or work per message in flight.
        for (key, value, max) in [
            ("max_header_bytes", l.max_header_bytes, 16 << 20),
            ("max_headers", l.max_headers, 100_000),
            ("max_body_bytes", l.max_body_bytes, 256 << 20),
        ] {
            if value > max {
                return Err(v.err("limits", key, format!("must be at most {max}")));
            }
        }
        let a = raw.analysis;
        for (key, value, min, max) in [
            ("max_bytes", a.max_bytes, 1024, 64 << 20),
            ("max_parts", a.max_parts, 1, 10_000),
            ("max_headers", a.max_headers, 10, 10_000),
            ("max_recipients", a.max_recipients, 1, 1000),
            ("max_text", a.max_text, 1024, 4 << 20),
            ("time_budget_ms", a.time_budget_ms as usize, 1, 60_000),
            ("concurrency", a.concurrency, 0, 1024),
        ] {
            if value < min {
                return Err(v.err("analysis", key, format!("must be at least {min}")));
            }
            if value > max {
                return Err(v.err("analysis", key, format!("must be at most {max}")));
            }
        }
        let b = raw.batv;
        if !(1..=365).contains(&b.lifetime_days) {
            return Err(v.err("batv", "lifetime_days", "must be between 1 and 365"));
        }
        let sign_domains =
            domains(&b.sign_domains).map_err(|p| v.err("batv", "sign_domains", p))?;
        let exempt_recipient_domains = domains(&b.exempt_recipient_domains)
            .map_err(|p| v.err("batv", "exempt_recipient_domains", p))?;
        let trusted_networks = b
            .trusted_networks
            .iter()
            .map(|n| n.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|p| v.err("batv", "trusted_networks", p))?;
        let inbound_relays = b
            .inbound_relays
            .iter()
            .map(|n| n.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|p| v.err("batv", "inbound_relays", p))?;
        let exempt_senders =
            addresses(&b.exempt_senders).map_err(|p| v.err("batv", "exempt_senders", p))?;
        let exempt_recipients =
            addresses(&b.exempt_recipients).map_err(|p| v.err("batv", "exempt_recipients", p))?;
        let on_invalid_tag = match b.on_invalid_tag.as_str() {
            "reject" => OnInvalidTag::Reject,
            "record" => OnInvalidTag::Record,
            _ => {
                return Err(v.err(
                    "batv",
                    "on_invalid_tag",
                    "expected \"reject\" or \"record\"",
                ));
            }
        };
        let signing_since = if b.signing_since.is_empty() {
            None
        } else {
            Some(
                crate::batv::parse_date(&b.signing_since)
                    .ok_or_else(|| v.err("batv", "signing_since", "expected a date YYYY-MM-DD"))?,
            )
        };
        let r = raw.verdict;
        use crate::verdict::{Mode, Policy, Scores};
        let mode = match r.mode.as_str() {
            "observe" => Mode::Observe,
            "enforce" => Mode::Enforce,
            _ => return Err(v.err("verdict", "mode", "expected \"observe\" or \"enforce\"")),
        };
        let mut judge = Vec::new();
        for k in &r.judge_kinds {
            use crate::dsn::Kind::*;
            judge.push(match k.as_str() {
                "bounce" => Bounce,
                "delay" => Delay,
                "delivery" => Delivery,
                "autoreply" => Autoreply,
                "challenge" => Challenge,
                "virus_notice" => VirusNotice,
                "feedback" => Feedback,
                "mdn" => Mdn,
                _ => {
                    return Err(v.err(
                        "verdict",
                        "judge_kinds",
                        format!("unknown kind '{k}' (bounce, delay, delivery, autoreply, challenge, virus_notice, feedback, mdn)"),
                    ));
                }
            });
        }
        if !(r.tag_threshold <= r.quarantine_threshold
            && r.quarantine_threshold <= r.reject_threshold)
        {
            return Err(v.err(
                "verdict",
                "reject_threshold",
                "thresholds must satisfy tag_threshold <= quarantine_threshold <= reject_threshold",
            ));
        }
        let mut our_relay_hosts = Vec::new();
        let mut our_relay_networks = Vec::new();
        for relay in &r.our_relays {
            if relay.contains('/') || relay.parse::<IpAddr>().is_ok() {
                our_relay_networks.push(
                    relay
                        .parse::<Cidr>()
                        .map_err(|p| v.err("verdict", "our_relays", p))?,
                );
            } else {
                our_relay_hosts.extend(
                    domains(std::slice::from_ref(relay))
                        .map_err(|p| v.err("verdict", "our_relays", p))?,
                );
            }
        }
        if !is_header_name(&r.signature_header) {
            return Err(v.err("verdict", "signature_header", "must be a header field name"));
        }
        let sc = raw.scores;
        let scores = Scores {
            valid_tag: sc.valid_tag,
            our_signature: sc.our_signature,
            ledger_hit: sc.ledger_hit,
            original_sender_tagged: sc.original_sender_tagged,
            our_relay: sc.our_relay,
            bad_tag: sc.bad_tag,
            untagged: sc.untagged,
            foreign_original: sc.foreign_original,
            no_original: sc.no_original,
            bad_source: sc.bad_source,
        };
        let lg = raw.ledger;
        if lg.max_entries == 0 {
            return Err(v.err("ledger", "max_entries", "must be at least 1"));
        }
        if !sign_domains.is_empty() && !lg.state_dir.starts_with('/') {
            return Err(v.err("ledger", "state_dir", "must be an absolute path"));
        }
        let rp = raw.reputation;
        if rp.window_secs == 0 || rp.threshold == 0 {
            return Err(v.err(
                "reputation",
                if rp.window_secs == 0 {
                    "window_secs"
                } else {
                    "threshold"
                },
                "must be at least 1",
            ));
        }
        let st = raw.stats;
        let listen = if st.listen.is_empty() {
            None
        } else {
            Some(st.listen.parse::<std::net::SocketAddr>().map_err(|_| {
                v.err(
                    "stats",
                    "listen",
                    "expected IP:PORT, e.g. \"127.0.0.1:8895\" or \"[::1]:8895\"",
                )
            })?)
        };
        if listen.is_some_and(|a| !a.ip().is_loopback())
            && st.token_file.is_empty()
            && !st.allow_unauthenticated
        {
            return Err(v.err(
                "stats",
                "listen",
                "a non-loopback address needs token_file (or allow_unauthenticated = true)",
            ));
        }
        if b.learn_after == 0 {
            return Err(v.err("batv", "learn_after", "must be at least 1"));
        }
        if st.recent_decisions > MAX_RECENT_DECISIONS {
            return Err(v.err(
                "stats",
                "recent_decisions",
                "at most 100000 (each takes about half a kilobyte of memory)",
            ));
        }
        let decision_addresses = crate::decisions::AddressView::parse(&st.decision_addresses)
            .ok_or_else(|| {
                v.err(
                    "stats",
                    "decision_addresses",
                    "expected \"domain\" or \"hash\"",
                )
            })?;
        let today = crate::batv::today();
        if signing_since.is_some_and(|d| d > today) {
            return Err(v.err(
                "batv",
                "signing_since",
                "is in the future: set it to the day signing was (or is) turned on",
            ));
        }
        let backend = match lg.backend.as_str() {
            "file" => LedgerBackend::File,
            "redis" => LedgerBackend::Redis,
            _ => return Err(v.err("ledger", "backend", "expected \"file\" or \"redis\"")),
        };
        if backend == LedgerBackend::Redis {
            if let Err(e) = redis::Client::open(lg.redis_url.as_str()) {
                return Err(v.err("ledger", "redis_url", format!("not a Redis URL: {e}")));
            }
            if !(10..=10_000).contains(&lg.redis_timeout_ms) {
                return Err(v.err("ledger", "redis_timeout_ms", "must be between 10 and 10000"));
            }
        }
        if lg.grace_days > 365 {
            return Err(v.err("ledger", "grace_days", "must be between 0 and 365"));
        }
        let legacy_signature_until = if r.legacy_signature_until.is_empty() {
            None
        } else {
            let d = crate::batv::parse_date(&r.legacy_signature_until).ok_or_else(|| {
                v.err(
                    "verdict",
                    "legacy_signature_until",
                    "expected a date YYYY-MM-DD",
                )
            })?;
            let most = today + i64::from(b.lifetime_days) + i64::from(lg.grace_days);
            if d > most {
                return Err(v.err(
                    "verdict",
                    "legacy_signature_until",
                    "may be at most lifetime_days + grace_days from today: version 1 signatures are not bound to recipients",
                ));
            }
            Some(d)
        };
        if r.tag_threshold < 1 {
            return Err(v.err(
                "verdict",
                "tag_threshold",
                "must be at least 1 (at 0 or below, mail with no evidence at all would be judged)",
            ));
        }
        if mode == Mode::Enforce && sign_domains.is_empty() {
            return Err(v.err(
                "verdict",
                "mode",
                "\"enforce\" needs BATV (batv.sign_domains and a key file): without tags, signatures and the ledger nothing can prove a bounce ours, and every genuine bounce would be refused",
            ));
        }
        for (table, key, name) in [
            ("milter", "header_name", &m_header_name),
            ("verdict", "signature_header", &r.signature_header),
        ] {
            if STANDARD_HEADERS
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
                || ["list-", "resent-", "arc-", "content-"]
                    .iter()
                    .any(|p| name.to_ascii_lowercase().starts_with(p))
            {
                return Err(v.err(
                    table,
                    key,
                    format!("'{name}' is a standard header: ours would delete or shadow it"),
                ));
            }
        }
        if m_header_name.eq_ignore_ascii_case(&r.signature_header) {
            return Err(v.err(
                "verdict",
                "signature_header",
                "must differ from milter.header_name",
            ));
        }
        if l.max_body_bytes < 1024 {
            return Err(v.err("limits", "max_body_bytes", "must be at least 1024"));
        }
        if rp.max_ips == 0 {
            return Err(v.err("reputation", "max_ips", "must be at least 1"));
        }
        for (key, zero) in [
            ("max_bad_tags", b.max_bad_tags == 0),
            ("bad_tag_window_secs", b.bad_tag_window_secs == 0),
            ("bad_tag_block_secs", b.bad_tag_block_secs == 0),
        ] {
            if zero {
                return Err(v.err("batv", key, "must be at least 1"));
            }
        }
        if b.bad_tag_window_secs > 30 * 86_400 || b.bad_tag_block_secs > 30 * 86_400 {
            return Err(v.err(
                "batv",
                "bad_tag_block_secs",
                "bad_tag_window_secs and bad_tag_block_secs must be at most 30 days",
            ));
        }
        if !sign_domains.is_empty() && b.key_file.is_empty() {
            return Err(v.err(
                "batv",
                "key_file",
                "must be set when sign_domains is not empty",
            ));
        }
        Ok(Config {
            milter: MilterConfig {
                socket,
                socket_mode,
                socket_owner: Some(m.socket_owner).filter(|o| !o.is_empty()),
                max_connections: m.max_connections,
                connection_timeout: Duration::from_secs(m.connection_timeout_secs),
                shutdown_timeout: Duration::from_secs(m.shutdown_timeout_secs),
                header_name: m_header_name,
            },
            log: LogConfig {
                level,
                format,
                target,
                facility,
            },
            limits: Limits {
                max_header_bytes: l.max_header_bytes,
                max_headers: l.max_headers,
                max_body_bytes: l.max_body_bytes,
            },
            analysis: crate::dsn::Limits {
                max_bytes: a.max_bytes,
                max_parts: a.max_parts,
                max_headers: a.max_headers,
                max_recipients: a.max_recipients,
                max_text: a.max_text,
                time_budget: Duration::from_millis(a.time_budget_ms),
                concurrency: a.concurrency,
            },
            batv: BatvConfig {
                key_file: b.key_file.into(),
                lifetime_days: b.lifetime_days,
                sign_domains,
                sign_subdomains: b.sign_subdomains,
                trusted_networks,
                inbound_relays,
                sign_daemon_names: b.sign_daemon_names,
                sign_local_submission: b.sign_local_submission,
                exempt_senders,
                exempt_recipients,
                exempt_recipient_domains,
                on_invalid_tag,
                signing_since,
                tag_guard: crate::tagguard::Limits {
                    max_bad_tags: b.max_bad_tags,
                    window_secs: b.bad_tag_window_secs,
                    block_secs: b.bad_tag_block_secs,
                    ..Default::default()
                },
                learn_exemptions: b.learn_exemptions,
                learn_after: b.learn_after,
            },
            verdict: VerdictConfig {
                policy: Policy {
                    mode,
                    judge,
                    reject_threshold: r.reject_threshold,
                    quarantine_threshold: r.quarantine_threshold,
                    tag_threshold: r.tag_threshold,
                    scores,
                },
                our_relay_hosts,
                our_relay_networks,
                signature_header: r.signature_header,
                legacy_signature_until,
            },
            ledger: LedgerConfig {
                backend,
                state_dir: lg.state_dir.into(),
                max_entries: lg.max_entries,
                grace_days: lg.grace_days,
                redis_url: lg.redis_url,
                redis_prefix: lg.redis_prefix,
                redis_timeout: Duration::from_millis(lg.redis_timeout_ms),
            },
            reputation: ReputationConfig {
                window_secs: rp.window_secs,
                threshold: rp.threshold,
                max_ips: rp.max_ips,
            },
            stats: StatsConfig {
                listen,
                token_file: Some(st.token_file)
                    .filter(|t| !t.is_empty())
                    .map(PathBuf::from),
                recent_decisions: st.recent_decisions,
                decision_addresses,
            },
        })
    }
}

/// Header fields ours must never be named after.
const STANDARD_HEADERS: &[&str] = &[
    "Received",
    "Return-Path",
    "DKIM-Signature",
    "DomainKey-Signature",
    "Authentication-Results",
    "Received-SPF",
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Auto-Submitted",
    "Precedence",
    "Delivered-To",
    "X-Original-To",
    "Comments",
    "Keywords",
    "X-Failed-Recipients",
];

impl Config {
    /// Settings that are valid but probably not what the admin wants, for
    /// `--check-config` and the start-up log.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let b = &self.batv;
        if self.verdict.policy.mode == crate::verdict::Mode::Enforce
            && !b.trusted_networks.is_empty()
            && b.inbound_relays.is_empty()
        {
            w.push(
                "batv.trusted_networks: with verdict.mode = \"enforce\", null-sender mail \
                 from these networks is taken as ours going out and never judged; a backup \
                 MX or a content filter that relays inbound mail from there hides every \
                 bounce: list it in batv.inbound_relays"
                    .to_string(),
            );
        }
        if !b.inbound_relays.is_empty() && !b.enabled() {
            w.push(
                "batv.inbound_relays: has no effect while batv.sign_domains is empty \
                 (it applies to bounces to our domains)"
                    .to_string(),
            );
        }
        w
    }
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

fn domains(list: &[String]) -> Result<Vec<String>, String> {
    list.iter()
        .map(|d| {
            let n = crate::address::normalise_domain(d).filter(|n| {
                n.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
            });
            n.ok_or_else(|| format!("'{}' is not a domain name", d.trim()))
        })
        .collect()
}

fn addresses(list: &[String]) -> Result<Vec<String>, String> {
    list.iter()
        .map(|a| match crate::address::Address::parse(a) {
            Some(addr) if addr.is_address() => Ok(addr.key()),
            _ => Err(format!("'{}' is not an address (local@domain)", a.trim())),
        })
        .collect()
}

/// Builds errors that point at the line of `key` inside `[table]`.
struct Validator<'a> {
    text: &'a str,
    path: &'a str,
}

impl Validator<'_> {
    fn err(&self, table: &str, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_string(),
            key: format!("{table}.{key}"),
            line: line_of(self.text, table, key),
            problem: problem.into(),
        }
    }
}

/// The 1-based line where `key` is set inside `[table]`, if the text sets it.
fn line_of(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = name.trim().to_string();
        } else if current == table
            && let Some((k, _)) = t.split_once('=')
            && k.trim() == key
        {
            return Some(n + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_gives_defaults() {
        let c = Config::parse("", "x").unwrap();
        assert_eq!(
            c.milter.socket,
            SocketSpec::Inet("127.0.0.1:7357".parse().unwrap())
        );
        assert_eq!(c.milter.header_name, "X-Backscatter");
        assert_eq!(c.batv.lifetime_days, 7);
        assert!(!c.batv.enabled());
    }

    /// Sendmail opens the milter connection when the client connects and may leave
    /// it idle for up to an hour (its SMTP command timeout): the default timeout
    /// is libmilter's (7210 s), not Postfix's milter_content_timeout.
    #[test]
    fn defaults_fit_sendmail() {
        let c = Config::default();
        assert_eq!(c.milter.connection_timeout, Duration::from_secs(7210));
        assert!(c.milter.connection_timeout > Duration::from_secs(3600));
        // Postfix's submission convention, stock Sendmail's MSA, Debian's MSP-v4/-v6.
        assert_eq!(
            c.batv.sign_daemon_names,
            ["ORIGINATING", "MSA", "MSP-v4", "MSP-v6"]
        );
    }

    #[test]
    fn socket_notation() {
        assert_eq!(
            "inet6:[::1]:7357".parse::<SocketSpec>().unwrap(),
            SocketSpec::Inet("[::1]:7357".parse().unwrap())
        );
        assert_eq!(
            "unix:/run/x/milter.sock".parse::<SocketSpec>().unwrap(),
            SocketSpec::Unix("/run/x/milter.sock".into())
        );
        assert!("inet:127.0.0.1".parse::<SocketSpec>().is_err());
        assert!("unix:relative".parse::<SocketSpec>().is_err());
        assert!("tcp:1.2.3.4:5".parse::<SocketSpec>().is_err());
        assert!("inet6:127.0.0.1:5".parse::<SocketSpec>().is_err());
        let long = format!("unix:/{}", "a".repeat(120));
        assert!(long.parse::<SocketSpec>().is_err());
    }

    #[test]
    fn invalid_value_names_key_and_line() {
        let text = "[milter]\nheader_name = \"X-Backscatter\"\n\n[batv]\nlifetime_days = 0\n";
        let e = Config::parse(text, "m.toml").unwrap_err().to_string();
        assert_eq!(e, "m.toml:5: batv.lifetime_days: must be between 1 and 365");
    }

    #[test]
    fn unknown_key_is_refused_with_line() {
        let e = Config::parse("[milter]\nsockett = \"inet:1.2.3.4:5\"\n", "m.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `sockett`"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn subdomains() {
        let c = Config::parse(
            "[batv]\nsign_domains=[\"Example.ORG\"]\nsign_subdomains=true\n",
            "x",
        )
        .unwrap();
        assert!(c.batv.is_our_domain("example.org"));
        assert!(c.batv.is_our_domain("mail.example.org"));
        assert!(!c.batv.is_our_domain("badexample.org"));
    }
}
