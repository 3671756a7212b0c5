//! What non-standard NDRs say in prose: phrases that mark a bounce, a delay, an
//! auto-reply or a challenge; status codes, recipients and diagnostics in the text.

use super::status::Status;
use regex::Regex;
use std::{collections::HashMap, sync::LazyLock};

/// Lowercased phrases of failure reports in the wild (Postfix, Sendmail, Exim, qmail,
/// Exchange/Office 365, Gmail, Yahoo, Domino, Courier, GroupWise, MDaemon, ...).
const NDR_BODY: &[&str] = &[
    "this is the mail system at host",
    "i'm sorry to have to inform you that your message could not",
    "could not be delivered to one or more recipients",
    "the following addresses had permanent fatal errors",
    "the following addresses had transient non-fatal errors",
    "this message was created automatically by mail delivery software",
    "a message that you sent could not be delivered",
    "a message that you sent has not yet been delivered",
    "this is the qmail-send program",
    "i'm afraid i wasn't able to deliver your message",
    "delivery to the following recipient failed permanently",
    "delivery to the following recipients failed",
    "delivery to the following recipient has been delayed",
    "your message wasn't delivered",
    "your message couldn't be delivered",
    "your message could not be delivered",
    "delivery has failed to these recipients",
    "diagnostic information for administrators",
    "the following recipient(s) cannot be reached",
    "did not reach the following recipient",
    "had delivery errors",
    "you are not a member of this mailing list",
    "以下のメールアドレスへの送信に失敗しました",
    "the following recipient(s) could not be reached",
    "could not be delivered to the following",
    "your message did not reach some or all of the intended recipients",
    "unable to deliver your message",
    "unable to deliver message",
    "message could not be delivered",
    "message was not delivered",
    "was not delivered to",
    "could not be delivered",
    "couldn't be delivered",
    "undeliverable",
    "undelivered mail",
    "permanent error",
    "permanent failure",
    "delivery failed",
    "delivery failure",
    "failed to deliver",
    "mail delivery failed",
    "non-delivery",
    "nondelivery",
    "transcript of session follows",
    "returned mail",
    "remote host said",
    "smtp error from remote",
    "the error that the other server returned was",
    "this is an automatically generated delivery status notification",
    "delivery status notification",
    "has been returned to you",
    "message delivery failed",
    "sorry, we were unable to deliver your message",
    "sorry, your message could not be delivered",
    "could not deliver mail to",
    "mailbox unavailable",
    "user unknown",
    "unknown user",
    "no such user",
    "mailbox not found",
    "recipient address rejected",
    "address rejected",
    "host or domain name not found",
    "message delivery to the host",
    "your message was rejected",
    "was rejected by",
    "failed recipient",
    "rejected your message",
    "has not been delivered",
    "was undeliverable",
    "bounce",
    "konnte nicht zugestellt werden",
    "nicht zugestellt",
    "unzustellbar",
    "n'a pas pu être remis",
    "non remis",
    "no se pudo entregar",
    "non è stato possibile recapitare",
    "non recapitabile",
    "не удалось доставить",
    "не может быть доставлено",
    "недоставлен",
    "配信できません",
    "送信できませんでした",
];

/// Phrases of a delay ("still trying") notice.
const DELAY: &[&str] = &[
    "has not yet been delivered",
    "not yet been delivered",
    "still trying",
    "will continue trying",
    "will keep trying",
    "will continue to try",
    "will retry",
    "will be retried",
    "could not send message for past",
    "could not send mail for past",
    "delivery has been delayed",
    "delivery is delayed",
    "message delayed",
    "delayed mail",
    "delivery delayed",
    "this is a warning message only",
    "you do not need to resend your message",
    "delivery attempts will continue",
    "(delay)",
    "temporarily deferred",
    "delivery temporarily suspended",
];

/// Phrases of a delivery (success) notice.
const DELIVERED: &[&str] = &[
    "delivery to the following recipients was successful",
    "was successfully delivered",
    "has been delivered to",
    "your message has been delivered",
    "delivery to these recipients or groups is complete",
    "successfully relayed",
    "delivery notification: delivery has been completed",
];

const NDR_SUBJECT: &[&str] = &[
    "undelivered mail",
    "undeliverable",
    "undeliverabl",
    "delivery status notification",
    "delivery notification",
    "delivery status",
    "mail delivery failed",
    "mail delivery failure",
    "delivery failure",
    "delivery failed",
    "returned mail",
    "returning message",
    "failure notice",
    "mail system error",
    "postmaster notify",
    "delivery report",
    "message delivery has failed",
    "there was an error sending your mail",
    "could not be delivered",
    "message could not be delivered",
    "non delivery",
    "non-delivery",
    "nondeliverable",
    "not delivered",
    "delayed mail",
    "delivery delayed",
    "could not send message",
    "could not send mail",
    "mail failure",
    "mail failed",
    "unzustellbar",
    "nicht zugestellt",
    "non remis",
    "non recapitabile",
    "no entregado",
    "blocked by our",
    "unsolicited bulk email",
    "loop alert",
    "are not member",
    "delivery problem",
    "недоставленное",
    "не доставлено",
    "ваше сообщение не",
];

const AUTOREPLY_SUBJECT: &[&str] = &[
    "automatic reply",
    "auto reply",
    "auto-reply",
    "autoreply",
    "auto response",
    "autorespons",
    "auto-response",
    "out of office",
    "out of the office",
    "abwesenheitsnotiz",
    "automatische antwort",
    "réponse automatique",
    "reponse automatique",
    "risposta automatica",
    "respuesta automática",
    "respuesta automatica",
    "automatiska atbilde",
    "atvaļinājums",
    "atvalinajums",
    "vacation",
    "on holiday",
    "away until",
    "away from",
    "absence",
    "abwesend",
    "urlaub",
    "自動応答",
    "不在",
];

const AUTOREPLY_BODY: &[&str] = &[
    "out of office",
    "out of the office",
    "on vacation",
    "on holiday",
    "on leave",
    "away from the office",
    "away from my desk",
    "currently away",
    "i am away",
    "i'm away",
    "will be back",
    "i will return",
    "limited access to e-mail",
    "limited access to email",
    "thank you for your email",
    "thank you for your message",
    "thanks for your message",
    "this is an automatic reply",
    "this is an automated reply",
    "this is an auto-reply",
    "i am currently out",
    "ich bin",
    "abwesend",
];

const CHALLENGE: &[&str] = &[
    "boxbe",
    "bluebottle",
    "tmda",
    "spam arrest",
    "spamarrest",
    "mailblocks",
    "sender verification",
    "verify that you are a real person",
    "verify you are a human",
    "prove that you are a human",
    "confirm that you are a real person",
    "i use a challenge",
    "challenge-response",
    "challenge/response",
    "please confirm your message",
    "please confirm your e-mail",
    "please confirm that you sent",
    "to have your message delivered",
    "your message is being held",
    "awaiting your confirmation",
    "added to my approved senders",
    "approved senders list",
    "click the link below to confirm",
    "confirm your message",
    "verify your email address to deliver",
];

const VIRUS: &[&str] = &[
    "virus found",
    "virus detected",
    "virus alert",
    "virus warning",
    "contained a virus",
    "contains a virus",
    "infected with",
    "malware detected",
    "virus infected",
];

/// Every phrase of the lists above, in one automaton: a text is scanned once for
/// all of them (not once per phrase).
static PHRASES: LazyLock<(aho_corasick::AhoCorasick, HashMap<&'static str, usize>)> =
    LazyLock::new(|| {
        let mut ids: HashMap<&'static str, usize> = HashMap::new();
        let mut patterns: Vec<&'static str> = Vec::new();
        let lists = [
            NDR_BODY,
            DELAY,
            DELIVERED,
            NDR_SUBJECT,
            AUTOREPLY_SUBJECT,
            AUTOREPLY_BODY,
            CHALLENGE,
            VIRUS,
        ];
        for p in lists
            .into_iter()
            .chain(RULES.iter().map(|(w, _)| *w))
            .flatten()
        {
            ids.entry(p).or_insert_with(|| {
                patterns.push(p);
                patterns.len() - 1
            });
        }
        let ac = aho_corasick::AhoCorasick::new(&patterns).expect("phrases build");
        (ac, ids)
    });

/// Which known phrases a (lowercase) text contains.
struct Found<'a> {
    text: &'a str,
    hit: Vec<bool>,
}

impl<'a> Found<'a> {
    fn new(text: &'a str) -> Self {
        let (ac, ids) = &*PHRASES;
        let mut hit = vec![false; ids.len()];
        for m in ac.find_overlapping_iter(text) {
            hit[m.pattern().as_usize()] = true;
        }
        Self { text, hit }
    }

    /// Whether the text contains `needle` (a phrase outside the lists is searched).
    fn has(&self, needle: &str) -> bool {
        match PHRASES.1.get(needle) {
            Some(&i) => self.hit[i],
            None => self.text.contains(needle),
        }
    }
}

fn any(found: &Found<'_>, needles: &[&str]) -> bool {
    needles.iter().any(|n| found.has(n))
}

fn count(found: &Found<'_>, needles: &[&str]) -> usize {
    needles.iter().filter(|n| found.has(n)).count()
}

/// Lowercased text facts used by the classifier.
pub struct Phrases {
    pub ndr_body: usize,
    pub ndr_subject: bool,
    pub delay: bool,
    pub delivered: bool,
    pub autoreply_subject: bool,
    pub autoreply_body: bool,
    /// How many challenge-response phrases occur.
    pub challenge: usize,
    pub virus: bool,
}

/// `subject` and `body` must already be lowercase.
pub fn phrases(subject: &str, body: &str) -> Phrases {
    let (subject, body) = (&Found::new(subject), &Found::new(body));
    let replying = subject.text.starts_with("re:") || subject.text.starts_with("aw:");
    Phrases {
        ndr_body: count(body, NDR_BODY),
        ndr_subject: !replying && any(subject, NDR_SUBJECT),
        delay: any(body, DELAY)
            || any(
                subject,
                &["delay", "warning: could not send", "still being retried"],
            ),
        delivered: any(body, DELIVERED)
            || any(
                subject,
                &[
                    "(success)",
                    "(relay)",
                    "delivery has been completed",
                    "successful delivery",
                ],
            ),
        autoreply_subject: !replying && any(subject, AUTOREPLY_SUBJECT),
        autoreply_body: any(body, AUTOREPLY_BODY),
        challenge: count(subject, CHALLENGE) + count(body, CHALLENGE),
        virus: any(subject, VIRUS) || any(subject, &["virus"]) && any(body, VIRUS),
    }
}

static SMTP_AND_STATUS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[^0-9.])[245][0-9][0-9][ -]['#]?([245]\.[0-9]{1,3}\.[0-9]{1,3})(?:$|[^0-9.])")
        .unwrap()
});
static HASH_STATUS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"#([245]\.[0-9]{1,3}\.[0-9]{1,3})(?:$|[^0-9.])").unwrap());
static LABELLED_STATUS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:status|code)[:= ]+\(?([245]\.[0-9]{1,3}\.[0-9]{1,3})(?:$|[^0-9.])").unwrap()
});
static BARE_STATUS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[\s(\[<:;,=])([45]\.[0-9]{1,3}\.[0-9]{1,3})(?:$|[\s)\]>.,;:])").unwrap()
});
static SMTP_CODE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[\s:(\[<#]|said:? |error:? )([45][0-5][0-9])(?:[ -]|$)").unwrap()
});

/// The first failure code (class 4 or 5) the pattern finds; if that is only a
/// summary (x.0.0, or x.4.7 "gave up"), a later specific code of the same class
/// in the same text (the remote's reply quoted after it) wins.
fn first_status(re: &Regex, text: &str) -> Option<Status> {
    let mut codes = re
        .captures_iter(text)
        .filter_map(|c| c.get(1)?.as_str().parse::<Status>().ok())
        .filter(|s| s.class != 2);
    let first = codes.next()?;
    if first.is_summary()
        && let Some(specific) = codes.find(|s| s.class == first.class && !s.is_summary())
    {
        return Some(specific);
    }
    Some(first)
}

/// The most credible enhanced status code in `text`: one following an SMTP reply
/// code, then Exchange's `#x.y.z`, then one labelled as a status, then any 4/5.y.z.
pub fn status_in(text: &str) -> Option<Status> {
    first_status(&SMTP_AND_STATUS, text)
        .or_else(|| first_status(&HASH_STATUS, text))
        .or_else(|| first_status(&LABELLED_STATUS, text))
        .or_else(|| first_status(&BARE_STATUS, text))
}

/// The first SMTP reply code (4xx/5xx) in `text`.
pub fn smtp_code_in(text: &str) -> Option<u16> {
    SMTP_CODE
        .captures(text)
        .and_then(|c| c.get(1)?.as_str().parse().ok())
}

/// What real NDRs say when they give no code, and the RFC 3463 subject.detail.
const RULES: &[(&[&str], (u16, u16))] = &[
    (
        &[
            "mailbox full",
            "mailbox is full",
            "over quota",
            "quota exceeded",
            "exceeded storage",
            "insufficient storage",
            "mailbox size limit",
            "exceeds the quota",
            "is over its quota",
            "quota exceed",
            "disk quota",
        ],
        (2, 2),
    ),
    (
        &[
            "message too large",
            "message size exceeds",
            "message is too large",
            "size limit",
            "too big",
            "exceeds the maximum size",
            "message length exceeds",
        ],
        (3, 4),
    ),
    (
        &[
            "user unknown",
            "unknown user",
            "no such user",
            "does not exist",
            "mailbox unavailable",
            "invalid recipient",
            "recipient address rejected",
            "unknown recipient",
            "no mailbox",
            "mailbox not found",
            "not a valid mailbox",
            "address rejected",
            "unknown address",
            "no such recipient",
            "user not found",
            "invalid mailbox",
            "not our customer",
            "account does not exist",
            "no such mailbox",
            "unrouteable address",
            "recipient not found",
            "addressee unknown",
            "bad destination mailbox",
            "user doesn't have",
            "isn't a valid",
            "account has been disabled",
            "mailbox disabled",
            "account is disabled",
            "inactive",
            "suspended",
            "is not a known user",
            "user is unknown",
            "unknown local part",
            "unknown or illegal alias",
            "not listed in",
        ],
        (1, 1),
    ),
    (
        &[
            "host not found",
            "domain not found",
            "host unknown",
            "no mx",
            "name server",
            "unrouteable mail domain",
            "domain does not exist",
            "host or domain name not found",
            "no such domain",
            "nxdomain",
            "unknown host",
            "dns error",
            "domain name not found",
        ],
        (1, 2),
    ),
    (
        &[
            "timed out",
            "timeout",
            "expired",
            "too long",
            "retry time",
            "could not send message for past",
            "could not send mail for past",
            "giving up",
            "deferred",
            "was not delivered within",
        ],
        (4, 7),
    ),
    (&["relay", "relaying"], (7, 1)),
    (
        &[
            "spam",
            "blocked",
            "blacklist",
            "block list",
            "blocklist",
            "rejected for policy",
            "policy",
            "not authorized",
            "not permitted",
            "access denied",
            "refused",
            "denied",
            "rejected",
            "reputation",
            "dnsbl",
            "rbl",
        ],
        (7, 1),
    ),
    (&["loop", "too many hops", "hop count exceeded"], (4, 6)),
    (
        &["connection refused", "no route to host", "connect to"],
        (4, 1),
    ),
];

/// A status inferred from what the text says when it gives no code: the reasons
/// real NDRs give, mapped to their RFC 3463 codes. `lower` must be lowercase.
pub fn infer_status(lower: &str, temporary: bool) -> Option<Status> {
    let class = if temporary { 4 } else { 5 };
    let found = Found::new(lower);
    RULES.iter().find_map(|(words, (s, d))| {
        any(&found, words).then(|| {
            // Expiry is a temporary condition reported as final: sisimai and RFC
            // 3463 both write it 4.4.7 even in a failure report.
            let c = if (*s, *d) == (4, 7) { 4 } else { class };
            Status::new(c, *s, *d)
        })
    })
}

static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9][A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+").unwrap()
});

/// Lines on which an address is most likely the failed recipient.
static STRONG_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?ix)
        ^\s*<[^>\s]+@[^>\s]+>                               # <user@dom>: ... (Postfix, qmail, Sendmail)
      | ^\s*"?[^\s@"]+@[^\s@"]+"?\s*(?:$|[:(]|\.\.\.)       # user@dom alone, or user@dom: / (...) / ...
      | ^\s*(?:final-|original-)?recipient[^:]*:            # Recipient: user@dom
      | (?:delivered|deliver|delivery)\s+to\s               # could not be delivered to user@dom
      | (?:message|mail)\s+(?:to|for)\s+<?[^\s@]+@          # your message to user@dom
      | (?:failed|rejected|unknown|invalid)[^@\n]{0,40}<?[^\s@<]+@   # ... user@dom
      | ^\s*[^\s@]+@[^\s@]+\s+(?:on\s|\[)                    # user@dom on <date> (Exchange), user@dom [reason]
      | ^\s*address(?:es)?:?\s
      | ^\s*user\s
    "#)
    .unwrap()
});

fn is_daemon_local(local: &str) -> bool {
    let l = local.to_ascii_lowercase();
    matches!(
        l.as_str(),
        "mailer-daemon"
            | "postmaster"
            | "mailerdaemon"
            | "mail-daemon"
            | "post_master"
            | "poostmaster"
    )
}

/// Failed recipients named in an NDR's text, most credible first: addresses on
/// failure lines, else every address, minus `exclude` (the sender's own addresses)
/// and the reporting system's daemons.
pub fn recipients_in(text: &str, exclude: &[String], max: usize) -> Vec<String> {
    let exclude: std::collections::HashSet<String> =
        exclude.iter().map(|e| e.to_ascii_lowercase()).collect();
    // Lowercased addresses already listed: a lookup, not a walk of the list.
    let mut seen: std::collections::HashSet<(bool, String)> = Default::default();
    let mut strong: Vec<String> = Vec::new();
    let mut weak: Vec<String> = Vec::new();
    for line in text.lines().take(2000) {
        if super::budget::step(1) {
            break;
        }
        if line.to_ascii_lowercase().contains("message-id") {
            continue;
        }
        let is_strong = STRONG_LINE.is_match(line);
        for m in ADDRESS.find_iter(line) {
            let a = m.as_str().trim_end_matches('.');
            // Skip message ids and URLs: <...@...> right after "<" with no "mailto".
            let local = a.split('@').next().unwrap_or("");
            let key = a.to_ascii_lowercase();
            if is_daemon_local(local) || exclude.contains(&key) || line[..m.start()].ends_with("//")
            {
                continue;
            }
            let list = if is_strong { &mut strong } else { &mut weak };
            // Only the first `max` of a list are ever returned.
            if list.len() < max && seen.insert((is_strong, key)) {
                list.push(a.to_string());
            }
        }
    }
    let mut out = if strong.is_empty() { weak } else { strong };
    out.truncate(max);
    out
}

/// The diagnostic text for `addr`: its line and the indented lines that follow.
pub fn diagnostic_for(text: &str, addr: &str) -> Option<String> {
    diagnostics_for(text, &[addr.to_string()]).pop().flatten()
}

/// A diagnostic is cut here (a single line can be the whole text).
const MAX_DIAGNOSTIC: usize = 1024;

/// [`diagnostic_for`] each address, in one pass over the text whatever their
/// number: the first line that contains the address (ASCII case ignored) and the
/// lines that follow it.
pub fn diagnostics_for(text: &str, addrs: &[String]) -> Vec<Option<String>> {
    let mut out = vec![None; addrs.len()];
    let Ok(ac) = aho_corasick::AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(addrs)
    else {
        return out;
    };
    let mut first: Vec<Option<usize>> = vec![None; addrs.len()];
    let mut left = addrs.len();
    for m in ac.find_overlapping_iter(text) {
        if super::budget::step(1) {
            break;
        }
        let slot = &mut first[m.pattern().as_usize()];
        if slot.is_none() {
            *slot = Some(m.start());
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    // Where each line starts, to find an offset's line without walking back.
    let starts: Vec<usize> = std::iter::once(0)
        .chain(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1))
        .collect();
    for ((slot, at), addr) in out.iter_mut().zip(first).zip(addrs) {
        let Some(at) = at else { continue };
        let line = starts[starts.partition_point(|&s| s <= at) - 1];
        let mut lines = text[line..].lines();
        let mut d = super::cut(lines.next().unwrap_or("").trim(), MAX_DIAGNOSTIC).to_string();
        for l in lines.take(6) {
            if l.trim().is_empty() {
                if d.len() > addr.len() + 4 {
                    break;
                }
                continue;
            }
            if d.len() > 600 {
                break;
            }
            d.push(' ');
            d.push_str(super::cut(l.trim(), MAX_DIAGNOSTIC));
        }
        *slot = Some(d);
    }
    out
}

static POSTFIX_HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)this is the (?:mail system|postfix program) at host ([A-Za-z0-9.-]+)").unwrap()
});
static REMOTE_HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:host|remote server|server)\s+([A-Za-z0-9][A-Za-z0-9.-]+\.[A-Za-z]{2,})\s*\[[0-9a-f.:]+\]").unwrap()
});

/// The reporting MTA named in an NDR's prose (Postfix's "at host X").
pub fn reporting_mta_in(text: &str) -> Option<String> {
    POSTFIX_HOST
        .captures(text)
        .map(|c| c[1].trim_end_matches('.').to_string())
}

/// The remote MTA named in a diagnostic (`host mx.example[192.0.2.1] said: ...`).
pub fn remote_mta_in(text: &str) -> Option<String> {
    REMOTE_HOST.captures(text).map(|c| c[1].to_string())
}

static SES_TYPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""notificationType"\s*:\s*"(\w+)""#).unwrap());
static SES_RCPT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"\{[^{}]*"emailAddress"\s*:\s*"([^"]+)"[^{}]*\}"#).unwrap());
static SES_STATUS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""status"\s*:\s*"([^"]+)""#).unwrap());
static SES_DIAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""diagnosticCode"\s*:\s*"([^"]+)""#).unwrap());
static SES_DELIVERED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""recipients"\s*:\s*\[([^\]]*)\]"#).unwrap());

/// An Amazon SES notification (JSON, often inside an SNS envelope).
pub struct SesNotice {
    /// Bounce, Delivery or Complaint.
    pub kind: String,
    pub recipients: Vec<(String, Option<Status>, Option<String>)>,
}

pub fn ses_notification(text: &str) -> Option<SesNotice> {
    if !text.contains("notificationType") {
        return None;
    }
    let t = text.replace("\\\"", "\"").replace("\n ", "");
    let kind = SES_TYPE.captures(&t)?[1].to_string();
    let mut recipients = Vec::new();
    for c in SES_RCPT.captures_iter(&t) {
        let obj = c.get(0).map_or("", |m| m.as_str());
        let status = SES_STATUS
            .captures(obj)
            .and_then(|s| s[1].parse::<Status>().ok());
        let diag = SES_DIAG.captures(obj).map(|d| d[1].to_string());
        recipients.push((c[1].to_string(), status, diag));
    }
    if recipients.is_empty()
        && kind == "Delivery"
        && let Some(list) = SES_DELIVERED.captures(&t)
    {
        for a in list[1].split(',') {
            let a = a.trim().trim_matches('"');
            if a.contains('@') {
                recipients.push((a.to_string(), Some(Status::new(2, 0, 0)), None));
            }
        }
    }
    Some(SesNotice { kind, recipients })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_in_prose() {
        assert_eq!(
            status_in("said: 550 5.1.1 <a@b.c>: unknown")
                .unwrap()
                .to_string(),
            "5.1.1"
        );
        assert_eq!(
            status_in("Remote Server returned '550 #5.1.1 RESOLVER'")
                .unwrap()
                .to_string(),
            "5.1.1"
        );
        assert_eq!(status_in("Status: 4.4.7").unwrap().to_string(), "4.4.7");
        // Versions in Received lines are not status codes.
        assert_eq!(
            status_in("by mx (8.13.8/8.13.8) with ESMTP; Postfix 2.5.5"),
            None
        );
        assert_eq!(status_in("host 192.168.5.1 said"), None);
        assert_eq!(smtp_code_in("host x said: 552 sorry"), Some(552));
    }

    #[test]
    fn inferred_statuses() {
        assert_eq!(
            infer_status("550 user unknown", false),
            Some(Status::new(5, 1, 1))
        );
        assert_eq!(
            infer_status("mailbox full", true),
            Some(Status::new(4, 2, 2))
        );
        assert_eq!(infer_status("nothing to see", false), None);
    }

    #[test]
    fn recipients_from_postfix_text() {
        let text = "This is the mail system at host mx.example.net.\n\n\
                    <alice@example.com>: host mail.example.com[192.0.2.1] said: 550 5.1.1\n    \
                    <alice@example.com>: Recipient address rejected\n";
        assert_eq!(recipients_in(text, &[], 10), vec!["alice@example.com"]);
        assert_eq!(reporting_mta_in(text).as_deref(), Some("mx.example.net"));
        assert_eq!(remote_mta_in(text).as_deref(), Some("mail.example.com"));
        let d = diagnostic_for(text, "alice@example.com").unwrap();
        assert!(
            d.contains("550 5.1.1") && d.contains("Recipient address rejected"),
            "{d}"
        );
        // The sender's own address is excluded.
        let t2 = "From: me@ours.example\nTo: you@there.example\n";
        assert_eq!(
            recipients_in(t2, &["me@ours.example".into()], 10),
            vec!["you@there.example"]
        );
    }
}
