//! Recent decisions: a bounded in-memory ring of the last judged inbound messages,
//! for admins (`GET /decisions`, the page, `backscatter-milter decisions`).
//!
//! Nothing in it names one of our users: a recipient is shown by its domain only
//! (`*@example.org`), or with a keyed hash of its local part (`h:1a2b3c4d5e6f@example.org`)
//! under a key made at start and never shown, so one user's messages can be told
//! apart without saying who they are. Remote addresses (failed recipients of our
//! mail) are shown by domain only.

use crate::{
    address::Address,
    batv::{TagError, Verified},
    dsn::Analysis,
    verdict::{Action, Verdict},
};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::{collections::VecDeque, net::IpAddr, sync::Mutex};
use zeroize::Zeroizing;

/// How our users' addresses appear in a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressView {
    /// `*@domain`.
    #[default]
    Domain,
    /// `h:HASH@domain`, HASH a keyed hash of the local part (tag removed).
    Hash,
}

impl AddressView {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "domain" => Some(Self::Domain),
            "hash" => Some(Self::Hash),
            _ => None,
        }
    }
}

/// One recipient of ours, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShownRcpt {
    pub address: String,
    /// `valid`, `expired`, `bad_mac`, ... or absent when it carries no tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<&'static str>,
}

/// One reason, with what it means in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShownReason {
    pub code: &'static str,
    pub points: i32,
    pub text: &'static str,
}

/// One judged message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Unix seconds.
    pub time: u64,
    pub queue_id: String,
    pub kind: &'static str,
    pub client_ip: Option<IpAddr>,
    pub reporting_mta: Option<String>,
    pub recipients: Vec<ShownRcpt>,
    /// Domains of the failed recipients the report names (our users' correspondents).
    pub failed_domains: Vec<String>,
    /// What the policy decided (what enforce applies).
    pub decided: &'static str,
    /// What was applied.
    pub action: &'static str,
    pub mode: &'static str,
    pub score: i32,
    pub reasons: Vec<ShownReason>,
    /// The status codes the report gives, e.g. "5.1.1".
    pub statuses: Vec<String>,
}

/// What a reason code means, in a sentence for a person.
pub fn reason_text(code: &str) -> &'static str {
    match code {
        "valid_tag" => {
            "Proof: the bounce was sent to a valid BATV tag of ours, so it answers mail we really sent."
        }
        "our_signature" => {
            "Proof: the returned message carries our signature, made for this message and recipient."
        }
        "ledger_hit" => {
            "Proof: the returned message's Message-ID is in our ledger of sent mail, sent to the address that bounced."
        }
        "bad_tag" => {
            "The recipient's BATV tag is forged, malformed, made with an unknown key or expired: we did not send mail from that address recently."
        }
        "untagged" => {
            "The bounce went to one of our addresses without a BATV tag, although we have signed outgoing mail for longer than a tag lives."
        }
        "foreign_original" => {
            "The returned message carries nothing of ours (no tag, signature or ledger entry): it was sent by someone else in our name."
        }
        "no_original" => {
            "No original message was returned, so nothing shows the bounce answers mail of ours."
        }
        "bad_source" => "The connecting server sent many bounces judged as backscatter recently.",
        "signature_replayed" => {
            "Our signature was found but made for other recipients: copied from a real message (proves nothing)."
        }
        "original_sender_tagged" => {
            "Hint: the returned message's Return-Path carries a valid tag of ours (anyone we wrote to could copy it)."
        }
        "our_relay" => "Hint: the returned message was received from one of our own networks.",
        "ledger_unbound" => {
            "Hint: the returned message's Message-ID is in our ledger, but the bounce names none of its recipients."
        }
        "signing_grace" => {
            "Signing started less than a tag lifetime ago: what would be rejected is held instead."
        }
        _ => "Unknown reason.",
    }
}

/// The ring. Locked briefly once per judged message and per request.
pub struct Decisions {
    ring: Mutex<Ring>,
    /// The key of the address hash (made at start, never shown).
    key: Zeroizing<[u8; 32]>,
}

struct Ring {
    capacity: usize,
    view: AddressView,
    items: VecDeque<Decision>,
}

impl std::fmt::Debug for Decisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decisions").finish_non_exhaustive()
    }
}

/// Which decisions a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub action: Option<Action>,
    pub kind: Option<String>,
    pub limit: Option<usize>,
}

impl Filter {
    /// Parses `action=reject&kind=bounce&limit=N` (the action is the decided one).
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut f = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "action" if v.is_empty() || v == "all" => {}
                "action" => {
                    f.action = Some(
                        parse_action(v)
                            .ok_or("action: expected accept, tag, quarantine or reject")?,
                    )
                }
                "kind" if v.is_empty() || v == "all" => {}
                "kind" => {
                    if !KINDS.contains(&v) {
                        return Err(format!("kind: expected one of {}", KINDS.join(", ")));
                    }
                    f.kind = Some(v.to_string());
                }
                "limit" => {
                    f.limit = Some(v.parse().map_err(|_| "limit: expected a number")?);
                }
                _ => return Err(format!("unknown parameter {k:?}")),
            }
        }
        Ok(f)
    }

    fn matches(&self, d: &Decision) -> bool {
        self.action.is_none_or(|a| a.as_str() == d.decided)
            && self.kind.as_deref().is_none_or(|k| k == d.kind)
    }
}

/// The kinds a decision can have (those that can be judged).
pub const KINDS: &[&str] = &[
    "bounce",
    "delay",
    "delivery",
    "autoreply",
    "challenge",
    "feedback",
    "mdn",
    "virus_notice",
];

pub fn parse_action(s: &str) -> Option<Action> {
    [
        Action::Accept,
        Action::Tag,
        Action::Quarantine,
        Action::Reject,
    ]
    .into_iter()
    .find(|a| a.as_str() == s)
}

impl Decisions {
    pub fn new(capacity: usize, view: AddressView) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        // A fresh key per process: the hashes only need to agree while the ring lives.
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            use std::io::Read;
            let _ = f.read_exact(&mut key[..]);
        }
        Self {
            ring: Mutex::new(Ring {
                capacity,
                view,
                items: VecDeque::new(),
            }),
            key,
        }
    }

    /// After a reload: the new size and address view (the oldest go if it shrank).
    pub fn configure(&self, capacity: usize, view: AddressView) {
        let mut r = self.lock();
        r.capacity = capacity;
        r.view = view;
        while r.items.len() > capacity {
            r.items.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one inbound message (only judged ones are kept).
    pub fn record<'a>(
        &self,
        now: u64,
        queue_id: Option<&str>,
        client_ip: Option<IpAddr>,
        rcpts: impl Iterator<Item = (&'a Address, Option<&'a Result<Verified, TagError>>)>,
        analysis: &Analysis,
        v: &Verdict,
    ) {
        let (capacity, view) = {
            let r = self.lock();
            (r.capacity, r.view)
        };
        if capacity == 0 || !v.judged {
            return;
        }
        let recipients = rcpts
            .map(|(a, tag)| ShownRcpt {
                address: self.show(a, view),
                tag: tag.map(|t| t.as_ref().map_or_else(|e| e.label(), |_| "valid")),
            })
            .collect();
        let mut failed_domains: Vec<String> = Vec::new();
        for r in &analysis.recipients {
            if let Some(a) = Address::parse(&r.address)
                && a.is_address()
                && !failed_domains.iter().any(|d| d == a.domain())
            {
                failed_domains.push(a.domain().to_string());
            }
        }
        let d = Decision {
            time: now,
            queue_id: queue_id.unwrap_or("NOQUEUE").to_string(),
            kind: analysis.kind.as_str(),
            client_ip,
            reporting_mta: analysis.reporting_mta.clone(),
            recipients,
            failed_domains,
            decided: v.decided.as_str(),
            action: v.action.as_str(),
            mode: v.mode.as_str(),
            score: v.score,
            reasons: v
                .reasons
                .iter()
                .map(|r| ShownReason {
                    code: r.code,
                    points: r.points,
                    text: reason_text(r.code),
                })
                .collect(),
            statuses: analysis
                .recipients
                .iter()
                .filter_map(|r| r.status.map(|s| s.to_string()))
                .collect(),
        };
        let mut r = self.lock();
        while r.items.len() >= r.capacity.max(1) {
            r.items.pop_front();
        }
        r.items.push_back(d);
    }

    /// Newest first, filtered.
    pub fn list(&self, f: &Filter) -> Vec<Decision> {
        let r = self.lock();
        r.items
            .iter()
            .rev()
            .filter(|d| f.matches(d))
            .take(f.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    fn show(&self, a: &Address, view: AddressView) -> String {
        if !a.is_address() {
            return "(none)".to_string();
        }
        match view {
            AddressView::Domain => format!("*@{}", a.domain()),
            AddressView::Hash => {
                let local = a.local();
                // The tag is not part of who the user is: prvs=KDDDSSSSSS=local.
                let plain = if crate::batv::is_tagged(local) {
                    local.splitn(3, '=').nth(2).unwrap_or(local)
                } else {
                    local
                };
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(&self.key[..]).expect("any key length");
                mac.update(plain.to_ascii_lowercase().as_bytes());
                let h = mac.finalize().into_bytes();
                let hex: String = h[..6].iter().map(|b| format!("{b:02x}")).collect();
                format!("h:{hex}@{}", a.domain())
            }
        }
    }
}

/// The JSON served at `/decisions`.
pub fn to_json(d: &Decisions, f: &Filter) -> serde_json::Value {
    serde_json::json!({
        "capacity": d.capacity(),
        "decisions": d.list(f),
    })
}

/// Seconds since 1970 as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn utc(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let s = t % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Control characters escaped, so nothing read from mail can steer a terminal.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A table for a terminal, from `/decisions` JSON; with `reasons`, each reason in
/// words under its row.
pub fn table(json: &serde_json::Value, reasons: bool) -> String {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => printable(s),
        other => other.to_string(),
    };
    let empty = Vec::new();
    let list = json["decisions"].as_array().unwrap_or(&empty);
    let mut rows = vec![[
        "TIME (UTC)".to_string(),
        "QUEUE ID".into(),
        "KIND".into(),
        "DECIDED".into(),
        "APPLIED".into(),
        "SCORE".into(),
        "CLIENT".into(),
        "REPORTING MTA".into(),
        "STATUS".into(),
        "REASONS".into(),
    ]];
    let mut notes = vec![Vec::new()];
    for d in list {
        let join = |v: &serde_json::Value, field: Option<&str>| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| s(field.map_or(x, |f| &x[f])))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "-".into())
        };
        let reasons_short = d["reasons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| format!("{}({:+})", s(&r["code"]), r["points"].as_i64().unwrap_or(0)))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        rows.push([
            utc(d["time"].as_u64().unwrap_or(0)),
            s(&d["queue_id"]),
            s(&d["kind"]),
            s(&d["decided"]),
            s(&d["action"]),
            s(&d["score"]),
            s(&d["client_ip"]),
            s(&d["reporting_mta"]),
            join(&d["statuses"], None),
            reasons_short,
        ]);
        notes.push(
            d["reasons"]
                .as_array()
                .map(|a| a.iter().map(|r| s(&r["text"])).collect())
                .unwrap_or_default(),
        );
    }
    let widths: Vec<usize> = (0..10)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (row, notes) in rows.iter().zip(&notes) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if reasons {
            for n in notes {
                out.push_str(&format!("    - {n}\n"));
            }
        }
    }
    if list.is_empty() {
        out.push_str("(no decisions recorded)\n");
    }
    out
}

/// Where the endpoint of a config is, and its token: for the admin commands that
/// read it.
pub struct Client {
    pub addr: std::net::SocketAddr,
    pub token: Option<Zeroizing<String>>,
}

impl Client {
    pub fn from_config(c: &crate::config::Config) -> Result<Self, String> {
        let mut addr = c
            .stats
            .listen
            .ok_or("stats.listen is empty: the endpoint is off, nothing to read")?;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let token = c
            .stats
            .token_file
            .as_deref()
            .map(crate::http::load_token)
            .transpose()?;
        Ok(Self { addr, token })
    }

    /// GET `path`: the body of a 200 reply as JSON.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value, String> {
        use std::io::{Read, Write};
        let timeout = std::time::Duration::from_secs(10);
        let mut s = std::net::TcpStream::connect_timeout(&self.addr, timeout)
            .map_err(|e| format!("{}: {e}", self.addr))?;
        s.set_read_timeout(Some(timeout)).ok();
        s.set_write_timeout(Some(timeout)).ok();
        let auth = self
            .token
            .as_ref()
            .map(|t| Zeroizing::new(format!("Authorization: Bearer {}\r\n", t.as_str())))
            .unwrap_or_default();
        let req = Zeroizing::new(format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{}Connection: close\r\n\r\n",
            self.addr,
            auth.as_str()
        ));
        s.write_all(req.as_bytes())
            .map_err(|e| format!("{}: {e}", self.addr))?;
        let mut buf = Vec::new();
        s.take(64 << 20)
            .read_to_end(&mut buf)
            .map_err(|e| format!("{}: {e}", self.addr))?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{}: not an HTTP reply", self.addr))?;
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            return Err(format!(
                "http://{}{path}: {}",
                self.addr,
                body.lines().next().unwrap_or(status)
            ));
        }
        serde_json::from_str(body).map_err(|e| format!("http://{}{path}: {e}", self.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Mode, Reason};

    fn verdict(decided: Action) -> Verdict {
        Verdict {
            judged: true,
            action: decided.min(Action::Tag),
            decided,
            mode: Mode::Observe,
            score: 8,
            reasons: vec![Reason {
                code: "untagged",
                points: 5,
            }],
        }
    }

    fn analysis() -> Analysis {
        let a = crate::dsn::analyze(
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/corpus/sisimai/maildir/bsd/lhost-postfix-01.eml"
            ))
            .unwrap()
            .as_slice(),
            Some(""),
            &Default::default(),
        );
        assert_eq!(a.kind, crate::dsn::Kind::Bounce);
        a
    }

    #[test]
    fn the_ring_keeps_the_newest_and_hides_local_parts() {
        let d = Decisions::new(2, AddressView::Domain);
        let a = Address::parse("alice@example.org").unwrap();
        for (i, act) in [Action::Reject, Action::Quarantine, Action::Reject]
            .into_iter()
            .enumerate()
        {
            d.record(
                i as u64,
                Some(&format!("Q{i}")),
                None,
                std::iter::once((&a, None)),
                &analysis(),
                &verdict(act),
            );
        }
        let all = d.list(&Filter::default());
        assert_eq!(
            all.iter().map(|d| d.queue_id.as_str()).collect::<Vec<_>>(),
            ["Q2", "Q1"]
        );
        assert_eq!(all[0].recipients[0].address, "*@example.org");
        let f = Filter::parse("action=quarantine&kind=bounce").unwrap();
        assert_eq!(d.list(&f).len(), 1);
        assert!(Filter::parse("action=nope").is_err());
        assert!(Filter::parse("kind=bogus").is_err());
        assert_eq!(d.list(&Filter::parse("limit=1").unwrap()).len(), 1);
        let json = serde_json::to_string(&all).unwrap();
        assert!(!json.contains("alice"), "{json}");
        d.configure(0, AddressView::Domain);
        assert!(d.list(&Filter::default()).is_empty());
    }

    #[test]
    fn hashes_are_keyed_and_ignore_the_tag() {
        let d = Decisions::new(1, AddressView::Hash);
        let a = Address::parse("alice@example.org").unwrap();
        let t = Address::parse("prvs=1234abcdef=Alice@example.org").unwrap();
        let b = Address::parse("bob@example.org").unwrap();
        let (ha, ht, hb) = (
            d.show(&a, AddressView::Hash),
            d.show(&t, AddressView::Hash),
            d.show(&b, AddressView::Hash),
        );
        assert_eq!(ha, ht);
        assert_ne!(ha, hb);
        assert!(ha.starts_with("h:") && ha.ends_with("@example.org") && !ha.contains("alice"));
        let other = Decisions::new(1, AddressView::Hash);
        assert_ne!(other.show(&a, AddressView::Hash), ha, "a key per process");
    }

    #[test]
    fn every_reason_code_has_words() {
        for code in [
            "valid_tag",
            "our_signature",
            "ledger_hit",
            "bad_tag",
            "untagged",
            "foreign_original",
            "no_original",
            "bad_source",
            "signature_replayed",
            "original_sender_tagged",
            "our_relay",
            "ledger_unbound",
            "signing_grace",
        ] {
            assert_ne!(reason_text(code), "Unknown reason.", "{code}");
        }
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06:40");
    }
}
