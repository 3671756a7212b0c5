//! What non-standard NDRs say in prose: phrases that mark a bounce, a delay, an
//! auto-reply or a challenge; status codes, recipients and diagnostics in the text.

use super::phrases::{
    AUTOREPLY_BODY, AUTOREPLY_SUBJECT, AUTOREPLY_SUBJECT_STRONG, CHALLENGE, CHALLENGE_STRONG,
    DELAY, NDR_BODY_INTL, NDR_SUBJECT_INTL, PERMANENT, PhraseSet, WARNING_ONLY,
};
use super::status::Status;
use regex::Regex;
use std::sync::LazyLock;

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
    // Older and less common systems, by the shape of what they write: X.400
    // gateways (RFC 2156 non-delivery reports), Sun/Oracle Messaging Server,
    // Lotus Domino, Exchange 5.5/2000/2003, list servers.
    "non-delivery report",
    "non delivery report",
    "nondelivery report",
    "delivery failure report",
    "your message cannot be delivered",
    "cannot be delivered to",
    "can't be delivered",
    "could not deliver",
    "cannot deliver",
    "can't deliver",
    "couldn't deliver",
    "failed to be delivered",
    "message not delivered",
    "not delivered to",
    "was not delivered",
    "could not be distributed",
    "was not distributed",
    "could not be forwarded",
    "could not be sent",
    "delivery has failed",
    "delivery to the following",
    "this report relates to a message you sent",
    "recipient's o/r name",
    "o/r address",
    "reason code",
    "not listed in domino directory",
    "not listed in public name",
    "the recipient's destination email system is unknown",
    "recipient address rejected",
    "error delivering",
    "returned to sender",
    "mailbox is unavailable",
    "no longer valid",
    "no longer exists",
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
    "blocked by our",
    "unsolicited bulk email",
    "loop alert",
    "are not member",
    "delivery problem",
    "non-delivered",
    "not deliverable",
    "delivery error",
    "delivery notice",
    "delivery notification",
    "returned message",
    "message returned",
    "rejected message",
    "message rejected",
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

/// Whether a lowercased subject carries any phrase the classifier reads in a
/// subject (failure, delay, delivery, auto-reply, challenge, virus, complaint), in
/// any of the languages it knows, whether or not it starts with "re:". The body of
/// mail whose headers show none of these (nor another marker) may be skipped.
pub fn subject_marks(subject: &str) -> bool {
    SUBJECT_MARKS.any(subject)
}

/// Other subjects of reports and notices, beyond the lists `phrases` reads.
const OTHER_REPORT_SUBJECT: &[&str] = &[
    "complaint about message from",
    // KDDI's "mail error notification".
    "メールエラー",
];

/// Every subject phrase the classifier reads, in one automaton.
static SUBJECT_MARKS: LazyLock<PhraseSet> = LazyLock::new(|| {
    PhraseSet::new(&[
        NDR_SUBJECT,
        NDR_SUBJECT_INTL,
        AUTOREPLY_SUBJECT,
        AUTOREPLY_SUBJECT_STRONG,
        CHALLENGE,
        CHALLENGE_STRONG,
        VIRUS,
        DELAY_SUBJECT,
        DELIVERED_SUBJECT,
        &["virus"],
        OTHER_REPORT_SUBJECT,
    ])
});

/// Delay words in subjects, in the languages of `phrases`.
const DELAY_SUBJECT: &[&str] = &[
    "delay",
    "warning: could not send",
    "still being retried",
    "verzögert",
    "retardé",
    "retrasad",
    "atrasad",
    "ritardat",
    "vertraagd",
    "opóźnion",
    "задерж",
    "遅延",
    "延迟",
    "延遲",
    "지연",
];

/// Lowercased text facts used by the classifier.
#[derive(Debug, PartialEq, Eq)]
pub struct Phrases {
    pub ndr_body: usize,
    pub ndr_subject: bool,
    pub delay: bool,
    /// A failure stated as final (not "if delivery fails permanently").
    pub permanent: bool,
    pub delivered: bool,
    pub autoreply_subject: bool,
    /// A subject that names an automatic reply on its own ("Automatic reply:").
    pub autoreply_subject_strong: bool,
    pub autoreply_body: bool,
    /// How many challenge-response phrases occur.
    pub challenge: usize,
    /// A request to confirm or verify before a held message is delivered.
    pub challenge_strong: bool,
    pub virus: bool,
}

/// A subject that answers or forwards another message: its words are the
/// original's, not this message's.
fn is_reply_subject(subject: &str) -> bool {
    const PREFIXES: &[&str] = &["re:", "aw:", "fw:", "fwd:", "wg:", "tr:", "rv:", "antw:"];
    PREFIXES.iter().any(|p| subject.starts_with(p))
}

/// The body lists [`phrases`] reads, in one automaton; `B_*` index its groups.
static BODY_SET: LazyLock<PhraseSet> = LazyLock::new(|| {
    PhraseSet::new(&[
        NDR_BODY,
        NDR_BODY_INTL,
        DELAY,
        PERMANENT,
        WARNING_ONLY,
        DELIVERED,
        AUTOREPLY_BODY,
        CHALLENGE,
        CHALLENGE_STRONG,
        VIRUS,
    ])
});
const B_NDR: usize = 0;
const B_NDR_INTL: usize = 1;
const B_DELAY: usize = 2;
const B_PERMANENT: usize = 3;
const B_WARNING_ONLY: usize = 4;
const B_DELIVERED: usize = 5;
const B_AUTOREPLY: usize = 6;
const B_CHALLENGE: usize = 7;
const B_CHALLENGE_STRONG: usize = 8;
const B_VIRUS: usize = 9;

/// Subjects that report a delivery.
const DELIVERED_SUBJECT: &[&str] = &[
    "(success)",
    "(relay)",
    "delivery has been completed",
    "successful delivery",
];

/// The subject lists [`phrases`] reads; `S_*` index its groups.
static SUBJECT_SET: LazyLock<PhraseSet> = LazyLock::new(|| {
    PhraseSet::new(&[
        NDR_SUBJECT,
        NDR_SUBJECT_INTL,
        DELAY_SUBJECT,
        DELIVERED_SUBJECT,
        AUTOREPLY_SUBJECT,
        AUTOREPLY_SUBJECT_STRONG,
        CHALLENGE,
        CHALLENGE_STRONG,
        VIRUS,
        &["virus"],
    ])
});
const S_NDR: usize = 0;
const S_NDR_INTL: usize = 1;
const S_DELAY: usize = 2;
const S_DELIVERED: usize = 3;
const S_AUTOREPLY: usize = 4;
const S_AUTOREPLY_STRONG: usize = 5;
const S_CHALLENGE: usize = 6;
const S_CHALLENGE_STRONG: usize = 7;
const S_VIRUS: usize = 8;
const S_VIRUS_WORD: usize = 9;

/// `subject` and `body` must already be lowercase. Each is read once.
pub fn phrases(subject: &str, body: &str) -> Phrases {
    let replying = is_reply_subject(subject);
    let b = BODY_SET.counts(body);
    let s = SUBJECT_SET.counts(subject);
    let has = |v: &[usize], g: usize| v[g] > 0;
    Phrases {
        ndr_body: b[B_NDR] + b[B_NDR_INTL],
        ndr_subject: !replying && (has(&s, S_NDR) || has(&s, S_NDR_INTL)),
        delay: has(&b, B_DELAY) || has(&s, S_DELAY),
        permanent: has(&b, B_PERMANENT) && !has(&b, B_WARNING_ONLY),
        delivered: has(&b, B_DELIVERED) || has(&s, S_DELIVERED),
        autoreply_subject: !replying && has(&s, S_AUTOREPLY),
        autoreply_subject_strong: !replying && has(&s, S_AUTOREPLY_STRONG),
        autoreply_body: has(&b, B_AUTOREPLY),
        challenge: s[S_CHALLENGE] + b[B_CHALLENGE],
        challenge_strong: has(&b, B_CHALLENGE_STRONG) || has(&s, S_CHALLENGE_STRONG),
        virus: has(&s, S_VIRUS) || has(&s, S_VIRUS_WORD) && has(&b, B_VIRUS),
    }
}

/// [`phrases`] the plain way, one pass per phrase: what the automata must agree with.
#[cfg(test)]
pub fn phrases_naive(subject: &str, body: &str) -> Phrases {
    use super::phrases::any;
    let replying = is_reply_subject(subject);
    let challenge_strong = any(body, CHALLENGE_STRONG) || any(subject, CHALLENGE_STRONG);
    Phrases {
        ndr_body: super::phrases::count(body, NDR_BODY)
            + super::phrases::count(body, NDR_BODY_INTL),
        ndr_subject: !replying && (any(subject, NDR_SUBJECT) || any(subject, NDR_SUBJECT_INTL)),
        delay: any(body, DELAY) || any(subject, DELAY_SUBJECT),
        permanent: any(body, PERMANENT) && !any(body, WARNING_ONLY),
        delivered: any(body, DELIVERED) || any(subject, DELIVERED_SUBJECT),
        autoreply_subject: !replying && any(subject, AUTOREPLY_SUBJECT),
        autoreply_subject_strong: !replying && any(subject, AUTOREPLY_SUBJECT_STRONG),
        autoreply_body: any(body, AUTOREPLY_BODY),
        challenge: super::phrases::count(subject, CHALLENGE)
            + super::phrases::count(body, CHALLENGE),
        challenge_strong,
        virus: any(subject, VIRUS) || any(subject, &["virus"]) && any(body, VIRUS),
    }
}

/// Senders that write reports beyond the classic daemons: X.400 and other mail
/// gateways, mail administrators, bounce handlers (by role, not by vendor).
pub fn reporter_sender(addr: &str, name: &str) -> bool {
    let local = addr.split('@').next().unwrap_or("").to_ascii_lowercase();
    let name = name.to_lowercase();
    matches!(
        local.as_str(),
        "mailer" | "x400" | "mailadmin" | "mail-admin" | "smtp" | "mta" | "mailsystem" | "mail"
    ) || local.starts_with("bounce")
        || local.contains("x400")
        || local.contains("gateway")
        || [
            "gateway",
            "delivery",
            "administrator",
            "mail server",
            "messaging",
            "mailer",
        ]
        .iter()
        .any(|w| name.contains(w))
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
    static SET: LazyLock<PhraseSet> = LazyLock::new(|| {
        PhraseSet::new(&RULES.iter().map(|(words, _)| *words).collect::<Vec<_>>())
    });
    let class = if temporary { 4 } else { 5 };
    // The first rule (in order) any of whose words occur.
    let counts = SET.counts(lower);
    let (s, d) = RULES
        .iter()
        .zip(counts)
        .find_map(|((_, code), n)| (n > 0).then_some(*code))?;
    // Expiry is a temporary condition reported as final: sisimai and RFC
    // 3463 both write it 4.4.7 even in a failure report.
    let c = if (s, d) == (4, 7) { 4 } else { class };
    Some(Status::new(c, s, d))
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

/// An address as gateways write it, made plain: X.400 `RFC-822=` values with
/// RFC 2156 escapes (`(a)` for `@`), Exchange's `IMCEASMTP-` encapsulation
/// (`+40` for `@`), `smtp=`/`SMTP:`/`rfc822;` prefixes, `<>`, quotes and
/// comments. Returns `None` when no address is left.
pub fn normalise_address(raw: &str) -> Option<String> {
    let mut a = raw.trim();
    // A comment: "user@dom (Full Name)".
    if let Some(i) = a.find('(')
        && a[..i].contains('@')
    {
        a = &a[..i];
    }
    let mut a = a
        .trim()
        .trim_matches(['<', '>', '"', '\'', ' ', ',', ';'])
        .trim_end_matches('.');
    // Prefixes: a type label before the address.
    loop {
        let lower = a.to_ascii_lowercase();
        let Some(p) = [
            "rfc-822=", "rfc822=", "rfc822;", "smtp=", "smtp:", "mailto:", "x400:",
        ]
        .iter()
        .find(|p| lower.starts_with(*p)) else {
            break;
        };
        a = a[p.len()..].trim_start_matches(['<', ' ']);
    }
    let mut out = a.trim_end_matches(['>', '/']).to_string();
    let lower = out.to_ascii_lowercase();
    if lower.starts_with("imceaex-") {
        // An Exchange-internal X.500 name, never a deliverable address.
        return None;
    }
    if let Some(rest) = lower.strip_prefix("imceasmtp-") {
        // IMCEASMTP-user+40example+2Ecom@exchange.local: decode the local part.
        let enc = rest.split('@').next().unwrap_or("");
        let mut dec = String::with_capacity(enc.len());
        let b = enc.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'+'
                && i + 2 < b.len()
                && let Ok(v) = u8::from_str_radix(&enc[i + 1..i + 3], 16)
            {
                dec.push(v as char);
                i += 3;
            } else {
                dec.push(b[i] as char);
                i += 1;
            }
        }
        out = dec;
    } else if !out.contains('@') && out.contains("(a)") {
        // RFC 2156: (a) @, (p) %, (b) !, (q) ", (u) _, (l) (, (r) ).
        out = out
            .replace("(a)", "@")
            .replace("(p)", "%")
            .replace("(b)", "!")
            .replace("(q)", "\"")
            .replace("(u)", "_")
            .replace("(l)", "(")
            .replace("(r)", ")");
    }
    let (local, domain) = out.split_once('@')?;
    (!local.is_empty() && domain.contains('.') && !domain.contains('@')).then_some(out)
}

/// The X.400 `RFC-822=` value on a line (`/RFC-822=user(a)example.com/`), decoded.
fn x400_address(line: &str) -> Option<String> {
    let lower = line.to_ascii_lowercase();
    let i = lower.find("rfc-822=").or_else(|| lower.find("rfc822="))?;
    let rest = &line[i..];
    let end = rest[4..]
        .find(['/', ';', ' ', '\t', '>', ','])
        .map_or(rest.len(), |e| e + 4);
    normalise_address(&rest[..end])
}

/// Header fields of a message (the returned original's, pasted into the report):
/// addresses on them are not failed recipients.
fn is_header_line(lower_line: &str) -> bool {
    const FIELDS: &[&str] = &[
        "from:",
        "reply-to:",
        "sender:",
        "return-path:",
        "received:",
        "cc:",
        "bcc:",
        "message-id:",
        "in-reply-to:",
        "references:",
        "dkim-signature:",
        "list-",
        "errors-to:",
        "disposition-notification-to:",
    ];
    let l = lower_line.trim_start();
    FIELDS.iter().any(|f| l.starts_with(f))
}

/// Words on a line that make the address on it, or on the next line, a failed
/// recipient (any of the languages in `phrases`' failure lists).
fn says_failure(lower_line: &str) -> bool {
    const WORDS: &[&str] = &[
        "failed",
        "failure",
        "not delivered",
        "undeliverable",
        "could not",
        "couldn't",
        "cannot",
        "unable to",
        "rejected",
        "unknown",
        "recipient",
        "not reach",
        "not listed",
        "does not exist",
        "zugestellt",
        "empfänger",
        "destinataire",
        "destinatario",
        "destinatário",
        "ontvanger",
        "odbiorca",
        "получател",
        "адресат",
        "宛先",
        "收件人",
        "수신자",
        "alıcı",
        "mottagare",
        "příjemce",
    ];
    WORDS.iter().any(|w| lower_line.contains(w))
}

/// Failed recipients named in an NDR's text, most credible first: addresses on
/// failure lines (or just after one), else every address, minus `exclude` (the
/// sender's own addresses), the reporting system's daemons, quoted lines (`>`)
/// and the header fields of a pasted original. Addresses are normalised
/// ([`normalise_address`]). One pass over the lines.
pub fn recipients_in(text: &str, exclude: &[String], max: usize) -> Vec<String> {
    let (strong, weak, quoted) = candidates(text, exclude);
    let mut out = if !strong.is_empty() {
        strong
    } else if !weak.is_empty() {
        weak
    } else {
        quoted
    };
    out.truncate(max);
    out
}

/// Whether the report's own text names an address on a failure line (not in a
/// quote, not in pasted headers): part of a report's shape.
pub fn names_failed_address(text: &str, exclude: &[String]) -> bool {
    !candidates(text, exclude).0.is_empty()
}

/// At most this many addresses of each sort are collected.
const MAX_CANDIDATES: usize = 256;

/// The last `max` bytes of `s` (or fewer, to keep a char boundary).
fn tail(s: &str, max: usize) -> &str {
    let mut i = s.len().saturating_sub(max);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// Addresses on failure lines, other addresses, addresses in quoted lines.
type Candidates = (Vec<String>, Vec<String>, Vec<String>);

fn candidates(text: &str, exclude: &[String]) -> Candidates {
    let mut strong: Vec<String> = Vec::new();
    let mut weak: Vec<String> = Vec::new();
    let mut quoted_list: Vec<String> = Vec::new();
    let mut after_failure = false;
    for line in text.lines().take(2000) {
        let lower = line.to_lowercase();
        let trimmed = line.trim_start();
        // A quoted line ("> ..."), not an SMTP transcript (">>> RCPT TO:<...>").
        let quoted = trimmed.starts_with('>') && !trimmed.starts_with(">>>");
        if lower.contains("message-id") || is_header_line(&lower) {
            after_failure = false;
            continue;
        }
        if quoted {
            // Kept apart: used only when the report itself names nobody (a
            // whole report forwarded as a quote).
            for m in ADDRESS.find_iter(line) {
                if let Some(a) = normalise_address(m.as_str())
                    && !is_daemon_local(a.split('@').next().unwrap_or(""))
                    && !exclude.iter().any(|e| e.eq_ignore_ascii_case(&a))
                    && quoted_list.len() < MAX_CANDIDATES
                    && !quoted_list
                        .iter()
                        .any(|x: &String| x.eq_ignore_ascii_case(&a))
                {
                    quoted_list.push(a);
                }
            }
            continue;
        }
        let is_strong = after_failure || STRONG_LINE.is_match(line);
        let mut push = |a: String, strong_here: bool| {
            let local = a.split('@').next().unwrap_or("");
            if is_daemon_local(local) || exclude.iter().any(|e| e.eq_ignore_ascii_case(&a)) {
                return;
            }
            let list = if strong_here { &mut strong } else { &mut weak };
            // Capped: the duplicate check stays cheap on hostile input.
            if list.len() < MAX_CANDIDATES && !list.iter().any(|x| x.eq_ignore_ascii_case(&a)) {
                list.push(a);
            }
        };
        if let Some(a) = x400_address(line) {
            push(a, true);
        } else {
            for m in ADDRESS.find_iter(line) {
                // Skip URLs (user@host right after "//") and the address an alias
                // was expanded from (Exim's "(generated from alias@dom)").
                // Only a bounded stretch before the match is looked at: linear.
                let before = tail(&line[..m.start()], 64);
                if before.ends_with("//")
                    || before
                        .trim_end()
                        .to_ascii_lowercase()
                        .ends_with("generated from")
                {
                    continue;
                }
                // IMCEA forms (Exchange encapsulation): the whole token counts.
                let window = tail(&line[..m.start()], 256);
                let start = m.start() - window.len()
                    + window
                        .rfind(|c: char| {
                            c.is_whitespace() || matches!(c, '<' | '"' | '\'' | '(' | '[')
                        })
                        // Past the separator, whatever its width (U+00A0 is 2 bytes).
                        .map_or(0, |i| {
                            i + window[i..].chars().next().map_or(1, char::len_utf8)
                        });
                let raw = if line[start..]
                    .get(..5)
                    .is_some_and(|p| p.eq_ignore_ascii_case("imcea"))
                {
                    &line[start..m.end()]
                } else {
                    m.as_str()
                };
                if let Some(a) = normalise_address(raw) {
                    push(a, is_strong);
                }
            }
        }
        // A failure phrase introducing a list ("was not delivered to:") makes the
        // addresses after it strong, up to the next line of other text.
        if !line.trim().is_empty() && !ADDRESS.is_match(line) {
            after_failure = line.trim_end().ends_with(':') && says_failure(&lower);
        }
    }
    (strong, weak, quoted_list)
}

/// The diagnostic text for `addr`: its line and the indented lines that follow.
pub fn diagnostic_for(text: &str, addr: &str) -> Option<String> {
    diagnostics_for(text, &[addr.to_string()]).pop().flatten()
}

/// A diagnostic is cut here (a single line can be the whole text).
const MAX_DIAGNOSTIC: usize = 1024;

/// Where each of `needles` first occurs in `text`, ASCII case ignored. A few
/// needles (the usual one or two failed recipients) are each found by a SIMD
/// substring search in a lowercased copy; more go through one Aho-Corasick pass,
/// so the work stays linear in the text whatever their number.
fn first_occurrences(text: &str, needles: &[String]) -> Vec<Option<usize>> {
    const FEW: usize = 8;
    let mut first: Vec<Option<usize>> = vec![None; needles.len()];
    if needles.len() <= FEW {
        let lower = text.to_ascii_lowercase();
        for (slot, n) in first.iter_mut().zip(needles) {
            if super::budget::step(1) {
                break;
            }
            *slot = memchr::memmem::find(lower.as_bytes(), n.to_ascii_lowercase().as_bytes());
        }
        return first;
    }
    // An NFA: microseconds to build, where the DFA the builder picks for small
    // sets costs more to build than the one search it serves.
    let Ok(ac) = aho_corasick::AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
        .build(needles)
    else {
        return first;
    };
    let mut left = needles.len();
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
    first
}

/// [`diagnostic_for`] each address, in one pass over the text whatever their
/// number: the first line that contains the address (ASCII case ignored) and the
/// lines that follow it.
pub fn diagnostics_for(text: &str, addrs: &[String]) -> Vec<Option<String>> {
    let mut out = vec![None; addrs.len()];
    let first = first_occurrences(text, addrs);
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
    use crate::dsn::phrases::any;

    /// Every fixture file under tests/fixtures (the corpus copies, MTA and
    /// documented reports), lowercased.
    fn fixture_texts() -> Vec<String> {
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if let Ok(b) = std::fs::read(&p) {
                    out.push(String::from_utf8_lossy(&b).to_lowercase());
                }
            }
        }
        let mut out = Vec::new();
        walk(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")),
            &mut out,
        );
        out
    }

    /// Both ways of finding addresses agree with a plain case-insensitive search,
    /// below and above the few-needles limit.
    #[test]
    fn first_occurrences_agree_with_plain_search() {
        let text = "Delivery to Bob@Example.COM failed.\nalice@example.org: unknown\nBOB@example.com again\n";
        let plain = |n: &str| text.to_ascii_lowercase().find(&n.to_ascii_lowercase());
        for k in [1usize, 3, 8, 9, 20] {
            let mut needles: Vec<String> =
                (0..k).map(|i| format!("user{i}@nowhere.example")).collect();
            needles[0] = "bob@example.com".into();
            if k > 1 {
                needles[1] = "ALICE@example.org".into();
            }
            let got = first_occurrences(text, &needles);
            let want: Vec<Option<usize>> = needles.iter().map(|n| plain(n)).collect();
            assert_eq!(got, want, "{k} needles");
            assert_eq!(got[0], Some(12));
        }
    }

    /// The automata find exactly what one `contains` per phrase finds: for each
    /// fixture as a body with its subject, and for every line of every fixture as
    /// a subject and as a diagnostic (subject marks, inferred status).
    #[test]
    fn phrase_automata_agree_with_plain_search() {
        let texts = fixture_texts();
        assert!(texts.len() > 150, "{} fixtures", texts.len());
        let subject_marks_naive = |s: &str| {
            any(s, NDR_SUBJECT)
                || any(s, NDR_SUBJECT_INTL)
                || any(s, AUTOREPLY_SUBJECT)
                || any(s, AUTOREPLY_SUBJECT_STRONG)
                || any(s, CHALLENGE)
                || any(s, CHALLENGE_STRONG)
                || any(s, VIRUS)
                || any(s, DELAY_SUBJECT)
                || any(s, DELIVERED_SUBJECT)
                || any(s, &["virus"])
                || any(s, OTHER_REPORT_SUBJECT)
        };
        let infer_naive = |lower: &str, temporary: bool| {
            let class = if temporary { 4 } else { 5 };
            RULES.iter().find_map(|(words, (s, d))| {
                any(lower, words).then(|| {
                    let c = if (*s, *d) == (4, 7) { 4 } else { class };
                    Status::new(c, *s, *d)
                })
            })
        };
        let (mut marked, mut inferred, mut found) = (0, 0, 0);
        for text in &texts {
            let subject = text
                .lines()
                .find_map(|l| l.strip_prefix("subject:"))
                .unwrap_or("")
                .trim();
            let p = phrases(subject, text);
            assert_eq!(p, phrases_naive(subject, text), "subject {subject:?}");
            found += usize::from(p.ndr_body > 0 || p.autoreply_body || p.challenge > 0);
            for line in text.lines() {
                let m = subject_marks(line);
                assert_eq!(m, subject_marks_naive(line), "{line:?}");
                marked += usize::from(m);
                let st = infer_status(line, false);
                assert_eq!(st, infer_naive(line, false), "{line:?}");
                inferred += usize::from(st.is_some());
            }
        }
        // The comparison saw phrases, not just their absence.
        assert!(
            found > 100 && marked > 100 && inferred > 50,
            "{found} {marked} {inferred}"
        );
    }

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
    fn recipient_forms_are_normalised() {
        for (raw, want) in [
            ("<smtp=a@b.example>", Some("a@b.example")),
            ("SMTP:a@b.example", Some("a@b.example")),
            (
                "RFC-822=jean(u)paul(a)b.example",
                Some("jean_paul@b.example"),
            ),
            ("rfc822;a@b.example", Some("a@b.example")),
            ("IMCEASMTP-c+40p+2Eexample@corp.local", Some("c@p.example")),
            ("IMCEAEX-_O=CORP_cn=Recipients_cn=bob@corp.local", None),
            ("a@b.example (Alice)", Some("a@b.example")),
            ("nodomain", None),
        ] {
            assert_eq!(normalise_address(raw).as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn a_hostile_line_of_addresses_stays_bounded() {
        let line = "x@y.example,".repeat(5000);
        let text = format!("could not be delivered to:\n{line}\n");
        assert_eq!(recipients_in(&text, &[], 50), vec!["x@y.example"]);
        let many: String = (0..3000).map(|i| format!("u{i}@d.example ")).collect();
        assert_eq!(recipients_in(&many, &[], 1000).len(), MAX_CANDIDATES);
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
