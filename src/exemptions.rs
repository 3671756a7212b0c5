//! Destinations that refuse our tagged senders, learned from their bounces.
//!
//! A bounce to a *valid* tag of ours answers mail we sent; when its status or text
//! says the *sender* was refused (RFC 3463 x.1.7/x.1.8, x.7.1 with sender wording,
//! a list's "not a member", SPF or sender verification), the failed recipient's
//! domain refuses our tag. Those domains are counted, with a sample diagnostic, and
//! suggested for `exempt_recipient_domains`; with `[batv] learn_exemptions` on, a
//! domain that refused `learn_after` times is exempted (its mail leaves unsigned)
//! until an admin revokes it. The counts live in `refusing-domains.json` in the
//! state directory, rewritten (atomically) at each refusal; a file changed by
//! `exemptions forget` is read back at the next reload.

use crate::{
    address::Address,
    dsn::{Analysis, Kind, status::Status},
    outbound::{Signing, SkipReason},
};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

/// The file in the state directory.
pub const FILE: &str = "refusing-domains.json";
/// Domains tracked at most (the least recently seen go first).
const MAX_DOMAINS: usize = 10_000;
/// Characters of a sample diagnostic kept.
const MAX_SAMPLE: usize = 300;

/// Whether a failed recipient's report says our sender was refused.
pub fn sender_refused(status: Option<Status>, diagnostic: Option<&str>) -> bool {
    let diag = diagnostic.unwrap_or("").to_ascii_lowercase();
    if let Some(s) = status {
        if s.class != 5 {
            return false;
        }
        // Addressing status: the sender's mailbox (x.1.7) or system (x.1.8).
        if s.subject == 1 && (s.detail == 7 || s.detail == 8) {
            return true;
        }
        // The destination mailbox's address (x.1.1-x.1.6) or state (x.2.*) is not
        // about our sender.
        if (s.subject == 1 && (1..=6).contains(&s.detail)) || s.subject == 2 {
            return phrase(&diag, MEMBERSHIP);
        }
        if s.subject == 7 && s.detail == 1 && diag.contains("sender") {
            return true;
        }
    }
    phrase(&diag, MEMBERSHIP) || phrase(&diag, SENDER_CHECKS)
}

fn phrase(diag: &str, list: &[&str]) -> bool {
    list.iter().any(|p| diag.contains(p))
}

/// A list refusing a non-member (the sender is what it checks).
const MEMBERSHIP: &[&str] = &[
    "not a member",
    "non-member",
    "nonmember",
    "not subscribed",
    "only members",
    "members only",
    "only accepts mail from members",
    "not on the list of allowed senders",
];

/// Sender checks at the destination.
const SENDER_CHECKS: &[&str] = &[
    "sender address rejected",
    "sender rejected",
    "sender verify failed",
    "sender verification",
    "unverified sender",
    "sender not allowed",
    "sender denied",
    "spf check failed",
    "spf fail",
    "failed spf",
    "spf validation",
    "envelope sender",
];

/// A diagnostic as kept: no control characters, at most `MAX_SAMPLE` characters,
/// and no local part of any address (it often quotes our user's tagged sender).
pub fn redact(diagnostic: &str) -> String {
    static ADDRESS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"[^\s<>()\[\]"',;:@]+@"#).expect("a valid regex")
    });
    let short: String = diagnostic
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_SAMPLE)
        .collect();
    ADDRESS.replace_all(&short, "*@").into_owned()
}

/// One refusing domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub refusals: u64,
    /// Unix seconds.
    pub first: u64,
    pub last: u64,
    /// One diagnostic, as the destination gave it (control characters removed).
    pub sample: String,
    /// An admin revoked it: never exempted on its own again (still counted).
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    domains: BTreeMap<String, Entry>,
}

/// The learner, shared across reloads.
pub struct Learner {
    domains: Mutex<BTreeMap<String, Entry>>,
    learn: AtomicBool,
    after: std::sync::atomic::AtomicU32,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learner").finish_non_exhaustive()
    }
}

/// Reads the file (missing: empty).
pub fn read(path: &Path) -> Result<BTreeMap<String, Entry>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str::<File>(&t)
            .map(|f| f.domains)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write(path: &Path, domains: &BTreeMap<String, Entry>) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(&serde_json::json!({ "domains": domains }))?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

impl Learner {
    /// `state_dir`: where the counts are kept (`None`: in memory only).
    pub fn open(state_dir: Option<&Path>, learn: bool, after: u32) -> Self {
        let path = state_dir.map(|d| d.join(FILE));
        let domains = path
            .as_deref()
            .map(|p| {
                read(p).unwrap_or_else(|e| {
                    tracing::warn!("exemptions: {e}; starting afresh");
                    BTreeMap::new()
                })
            })
            .unwrap_or_default();
        Self {
            domains: Mutex::new(domains),
            learn: AtomicBool::new(learn),
            after: after.into(),
            path,
        }
    }

    /// After a reload: the new settings, and the file as an admin may have changed it.
    pub fn reload(&self, learn: bool, after: u32) {
        self.learn.store(learn, Ordering::Relaxed);
        self.after.store(after, Ordering::Relaxed);
        if let Some(p) = &self.path {
            match read(p) {
                Ok(d) => *self.lock() = d,
                Err(e) => tracing::warn!("exemptions: {e}; keeping what was in memory"),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.domains.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks at one inbound message: a bounce to a valid tag of ours (`valid_tag`)
    /// whose failed recipients say our sender was refused. Returns the domains
    /// counted.
    pub fn observe(&self, analysis: &Analysis, valid_tag: bool, now: u64) -> Vec<String> {
        if !valid_tag || analysis.kind != Kind::Bounce {
            return Vec::new();
        }
        let mut counted: Vec<(String, String)> = Vec::new();
        for r in &analysis.recipients {
            if !sender_refused(r.status, r.diagnostic.as_deref()) {
                continue;
            }
            let Some(a) = Address::parse(&r.address).filter(Address::is_address) else {
                continue;
            };
            let domain = a.domain().to_string();
            if !counted.iter().any(|(d, _)| *d == domain) {
                let sample = redact(r.diagnostic.as_deref().unwrap_or(""));
                counted.push((domain, sample));
            }
        }
        if counted.is_empty() {
            return Vec::new();
        }
        let mut domains = self.lock();
        for (domain, sample) in &counted {
            if !domains.contains_key(domain) && domains.len() >= MAX_DOMAINS {
                let oldest = domains
                    .iter()
                    .min_by_key(|(_, e)| e.last)
                    .map(|(d, _)| d.clone());
                if let Some(o) = oldest {
                    domains.remove(&o);
                }
            }
            let e = domains.entry(domain.clone()).or_insert_with(|| Entry {
                first: now,
                ..Default::default()
            });
            e.refusals += 1;
            e.last = now;
            if e.sample.is_empty() || !sample.is_empty() {
                e.sample = sample.clone();
            }
            tracing::info!(
                "exemptions: {domain} refused our tagged sender ({} time(s)): {}",
                e.refusals,
                e.sample.escape_debug()
            );
        }
        if let Some(p) = &self.path
            && let Err(e) = write(p, &domains)
        {
            tracing::warn!("exemptions: cannot write {}: {e}", p.display());
        }
        counted.into_iter().map(|(d, _)| d).collect()
    }

    /// Whether mail to `domain` now leaves unsigned (learning on, refused often
    /// enough, not revoked); a subdomain of a learned domain counts.
    pub fn is_learned(&self, domain: &str) -> bool {
        if !self.learn.load(Ordering::Relaxed) {
            return false;
        }
        let after = u64::from(self.after.load(Ordering::Relaxed));
        let domains = self.lock();
        let mut d = domain;
        loop {
            if domains
                .get(d)
                .is_some_and(|e| !e.revoked && e.refusals >= after)
            {
                return true;
            }
            match d.split_once('.') {
                Some((_, rest)) if rest.contains('.') => d = rest,
                _ => return false,
            }
        }
    }

    /// The outbound hook: a message that would be signed leaves unsigned when one
    /// of its recipients is at a learned domain.
    pub fn apply(&self, signing: Signing, recipients: &[String]) -> Signing {
        if !matches!(signing, Signing::Sign(_)) || !self.learn.load(Ordering::Relaxed) {
            return signing;
        }
        let learned = recipients.iter().any(|r| {
            Address::parse(r)
                .filter(Address::is_address)
                .is_some_and(|a| self.is_learned(a.domain()))
        });
        if learned {
            Signing::Skip(SkipReason::ExemptRecipient)
        } else {
            signing
        }
    }

    /// For `/stats`: each domain, its counts and sample, whether it is exempted now,
    /// and the line to add to milter.toml.
    pub fn snapshot(&self, configured: &[String]) -> serde_json::Value {
        let learn = self.learn.load(Ordering::Relaxed);
        let after = u64::from(self.after.load(Ordering::Relaxed));
        let domains = self.lock();
        let mut list: Vec<_> = domains.iter().collect();
        list.sort_by(|a, b| b.1.refusals.cmp(&a.1.refusals).then(a.0.cmp(b.0)));
        let list: Vec<_> = list
            .into_iter()
            .map(|(d, e)| {
                serde_json::json!({
                    "domain": d,
                    "refusals": e.refusals,
                    "first": e.first,
                    "last": e.last,
                    "sample": e.sample,
                    "revoked": e.revoked,
                    "exempted": learn && !e.revoked && e.refusals >= after,
                    "configured": configured.iter().any(|c| c == d),
                })
            })
            .collect();
        let names: Vec<String> = domains.keys().cloned().collect();
        serde_json::json!({
            "learn": learn,
            "learn_after": after,
            "domains": list,
            "suggested_line": suggestion_line(configured, &names),
        })
    }
}

/// The `exempt_recipient_domains = [...]` line: what is configured plus `new`.
pub fn suggestion_line(configured: &[String], new: &[String]) -> String {
    let mut all: Vec<&str> = configured.iter().map(String::as_str).collect();
    for d in new {
        if !all.contains(&d.as_str()) {
            all.push(d);
        }
    }
    let quoted: Vec<String> = all
        .iter()
        .map(|d| serde_json::to_string(d).unwrap_or_default())
        .collect();
    format!("exempt_recipient_domains = [{}]", quoted.join(", "))
}

/// `exemptions forget DOMAIN`: marks it revoked in the file (the milter reads it at
/// its next reload). Returns whether the domain was known.
pub fn forget(state_dir: &Path, domain: &str) -> Result<bool, String> {
    let path = state_dir.join(FILE);
    let mut domains = read(&path)?;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let Some(e) = domains.get_mut(&domain) else {
        return Ok(false);
    };
    e.revoked = true;
    e.refusals = 0;
    write(&path, &domains).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(s: &str) -> Option<Status> {
        s.parse().ok()
    }

    #[test]
    fn what_counts_as_a_refused_sender() {
        let yes = [
            ("5.1.7", "550 5.1.7 bad sender mailbox"),
            ("5.1.8", ""),
            (
                "5.7.1",
                "554 5.7.1 <prvs=1234abcdef=u@example.org>: Sender address rejected: Access denied",
            ),
            ("5.0.0", "You are not a member of this list"),
            ("5.7.23", "550 5.7.23 SPF validation failed"),
            ("5.1.0", "Sender verify failed"),
        ];
        for (s, d) in yes {
            assert!(sender_refused(st(s), Some(d)), "{s} {d}");
        }
        let no = [
            (
                "5.1.1",
                "550 5.1.1 <x@remote.example>: Recipient address rejected: User unknown",
            ),
            ("5.1.1", "Sender address rejected"),
            ("4.7.1", "Sender address rejected: try later"),
            ("5.7.1", "550 5.7.1 Message rejected as spam"),
            ("5.2.2", "mailbox full"),
        ];
        for (s, d) in no {
            assert!(!sender_refused(st(s), Some(d)), "{s} {d}");
        }
        assert!(sender_refused(
            None,
            Some("Only members may post to this list")
        ));
    }

    #[test]
    fn learns_after_n_and_revokes() {
        let dir = tempfile::tempdir().unwrap();
        let l = Learner::open(Some(dir.path()), true, 2);
        let sign = || Signing::Sign("prvs=x=u@example.org".into());
        let rcpts = ["a@lists.strict.example".to_string()];
        let e = Entry {
            refusals: 1,
            ..Default::default()
        };
        l.lock().insert("strict.example".into(), e);
        assert_eq!(l.apply(sign(), &rcpts), sign());
        l.lock().get_mut("strict.example").unwrap().refusals = 2;
        assert_eq!(
            l.apply(sign(), &rcpts),
            Signing::Skip(SkipReason::ExemptRecipient),
            "a subdomain of a learned domain"
        );
        assert!(!l.is_learned("example"));
        write(&dir.path().join(FILE), &l.lock()).unwrap();
        assert!(forget(dir.path(), "Strict.Example.").unwrap());
        assert!(!forget(dir.path(), "unknown.example").unwrap());
        l.reload(true, 2);
        assert!(!l.is_learned("strict.example"), "revoked");
        let snap = l.snapshot(&["partner.example".into()]);
        assert_eq!(
            snap["suggested_line"],
            "exempt_recipient_domains = [\"partner.example\", \"strict.example\"]"
        );
        l.reload(false, 2);
        l.lock().get_mut("strict.example").unwrap().revoked = false;
        l.lock().get_mut("strict.example").unwrap().refusals = 9;
        assert!(!l.is_learned("strict.example"), "learning off");
    }
}
