//! Bounce anatomy: bytes in, a typed analysis out. No milter, no IO, no clock.
//!
//! `analyze` finds what kind of message this is (bounce, delay, delivery, auto-reply,
//! challenge, feedback, read receipt, virus notice, or other), which recipients
//! failed with which RFC 3463 status, who reported it, and the original message it
//! returns. Every walk is bounded by [`Limits`].
//!
//! # Work is linear in the input (audit, issue 10)
//!
//! Every loop below was checked to visit each byte or line a bounded number of
//! times; `budget::step` counts lines, parts and fields so tests can bound the work
//! (`tests::header_like_lines_cost_linear_work`) and the milter can stop at a
//! deadline. `benches/worstcase.rs` measures 13 hostile shapes from 16 KiB to 1 MiB.
//! - `strip_mbox_line`, `normalise_newlines`, `strip_html`, `lossy`, `cut`: one pass.
//! - `repair_boundary`: `memchr`/`memmem` searches (linear, any boundary length;
//!   was an O(body x boundary) window compare); one pass over at most 64 KiB of
//!   lines; one copy. Offsets are taken from and used on the raw bytes only.
//! - `read_top`: one pass over the header fields; `replied_to` capped at 20.
//! - `walk`: at most `max_parts` parts; a nested message's own parts at most
//!   `max_parts` each, and sibling messages' bytes are disjoint.
//! - `classify`: text cut to `max_text`; lowercased twice (ASCII copy for offsets,
//!   Unicode copy for phrases); `str::find` (two-way, linear) for markers.
//! - `original::inline`: 17 markers, each one `scan`; `scan` reads each line once:
//!   a header block is parsed line by line in place, and a rejected block is skipped
//!   whole (it used to rebuild the rest of the text per header-like line: quadratic).
//! - `original::header_fields`: one pass, values capped at 4 KiB, `FIELD` regex
//!   per line (the regex crate is linear in the haystack).
//! - `report::parse`: two `replace` passes, one pass per group, a fixed number of
//!   field look-ups per group; values capped at 4 KiB.
//! - `text::phrases`, `text::infer_status`: one Aho-Corasick pass over the text for
//!   all phrases (was one search per phrase, ~300 passes).
//! - `text::recipients_in`: at most 2000 lines, regexes per line, set look-ups for
//!   exclusions and duplicates, lists stop at `max_recipients`.
//! - `text::diagnostics_for`: one Aho-Corasick pass for every recipient at once
//!   (was one pass per recipient), line found by binary search, each cut to 1 KiB.
//! - `text::status_in`, `smtp_code_in`, `*_mta_in`, `ses_notification`: regex
//!   searches (linear); per recipient only on its diagnostic (at most ~7 KiB).

pub mod budget;
pub mod markers;
pub mod original;
pub mod phrases;
pub mod report;
pub mod status;
pub mod text;

pub use original::{Original, Source};
pub use status::Status;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Bounce,
    Delay,
    Delivery,
    Autoreply,
    Challenge,
    Feedback,
    Mdn,
    VirusNotice,
    #[default]
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bounce => "bounce",
            Self::Delay => "delay",
            Self::Delivery => "delivery",
            Self::Autoreply => "autoreply",
            Self::Challenge => "challenge",
            Self::Feedback => "feedback",
            Self::Mdn => "mdn",
            Self::VirusNotice => "virus_notice",
            Self::Other => "other",
        }
    }
}

/// One recipient of a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recipient {
    /// The final recipient.
    pub address: String,
    /// The original recipient, when the report gives a different one.
    pub original: Option<String>,
    /// RFC 3464 action: failed, delayed, delivered, relayed, expanded.
    pub action: Option<String>,
    pub status: Option<Status>,
    /// What the status means, for the common codes ("bad destination mailbox").
    pub meaning: Option<&'static str>,
    pub remote_mta: Option<String>,
    /// The diagnostic text (usually the remote SMTP reply).
    pub diagnostic: Option<String>,
}

/// Caps that make a hostile message cost no more than a normal one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the message looked at; the rest is ignored.
    pub max_bytes: usize,
    /// MIME parts looked at.
    pub max_parts: usize,
    /// Header fields read from the original message.
    pub max_headers: usize,
    /// Recipients reported.
    pub max_recipients: usize,
    /// Characters of report text scanned for phrases, codes and addresses.
    pub max_text: usize,
    /// Time one analysis may take in the milter (see [`budget`]); past it the
    /// message is decided on what was found so far.
    pub time_budget: std::time::Duration,
    /// Analyses the milter runs at once (0: one per CPU).
    pub concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            max_parts: 100,
            max_headers: 200,
            max_recipients: 50,
            max_text: 64 * 1024,
            time_budget: std::time::Duration::from_millis(250),
            concurrency: 0,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Analysis {
    pub kind: Kind,
    /// Short words saying why this kind was chosen.
    pub evidence: Vec<&'static str>,
    pub recipients: Vec<Recipient>,
    pub reporting_mta: Option<String>,
    pub original: Original,
    /// Message-IDs this message answers (In-Reply-To, References), without brackets.
    pub replied_to: Vec<String>,
    /// The address in this message's own From (an auto-replier's address).
    pub from: Option<String>,
    /// A cap was reached: the analysis is of what was seen.
    pub truncated: bool,
}

/// What the top-level headers say.
#[derive(Default)]
struct Top {
    subject: String,
    from_addr: String,
    from_name: String,
    null_sender: bool,
    report_type: Option<String>,
    auto_submitted: Option<String>,
    precedence: Option<String>,
    autoreply_header: bool,
    challenge_header: bool,
    in_reply_to: bool,
    /// The bounce's own To: the original sender, never a failed recipient.
    to_addrs: Vec<String>,
    /// X-Failed-Recipients (Exim, Gmail).
    failed_recipients: Vec<String>,
    /// No message headers at all: a bare report text (from a log or a ticket).
    headerless: bool,
    replied_to: Vec<String>,
}

/// What the MIME walk collected.
#[derive(Default)]
struct Parts {
    dsn: Option<String>,
    /// A delivery-status part inside the returned message (some gateways wrap the
    /// real DSN in a message/rfc822 part and write only prose outside).
    nested_dsn: Option<String>,
    feedback: bool,
    mdn: bool,
    text: String,
    html: String,
    original: Option<Original>,
    parts_truncated: bool,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Drops leading blank lines (some Exchange servers start with junk) and an mbox
/// `From ` line that precedes the headers in many archives.
fn strip_mbox_line(raw: &[u8]) -> &[u8] {
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(raw.len());
    let raw = &raw[start..];
    if raw.starts_with(b"From ")
        && let Some(n) = raw.iter().position(|&b| b == b'\n')
    {
        return &raw[n + 1..];
    }
    raw
}

/// Normalises CR-only and CRLF line ends to LF (some archives store either).
fn normalise_newlines(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !raw.contains(&b'\r') {
        return raw.into();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {}
            b'\r' => out.push(b'\n'),
            b => out.push(b),
        }
        i += 1;
    }
    out.into()
}

fn strip_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

pub(crate) fn is_daemon_sender(addr: &str, name: &str) -> bool {
    let local = addr.split('@').next().unwrap_or("").to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    matches!(
        local.as_str(),
        "mailer-daemon"
            | "mailerdaemon"
            | "mail-daemon"
            | "postmaster"
            | "post_master"
            | "poostmaster"
            | "mail.delivery.system"
            | "mdaemon"
            | "daemon"
            | "mail-delivery-system"
            | "maildelivery"
    ) || local.starts_with("mailer-daemon")
        // Mailing-list managers (fml, Mailman, ezmlm) answer automatically too.
        || local.ends_with("-admin")
        || local.ends_with("-owner")
        || local.starts_with("owner-")
        || local.starts_with("postmaster")
        || name.contains("mail delivery")
        || name.contains("mailer-daemon")
        || name.contains("mailer daemon")
        || name.contains("mail deliver")
        || name.contains("postmaster")
        || name.contains("mail system")
        || name.contains("delivery subsystem")
}

/// Analyses one message. `envelope_sender` is the SMTP MAIL FROM when known
/// (`Some("")` for the null sender).
pub fn analyze(raw: &[u8], envelope_sender: Option<&str>, limits: &Limits) -> Analysis {
    let mut truncated = raw.len() > limits.max_bytes;
    let raw = &raw[..raw.len().min(limits.max_bytes)];
    let mut raw = normalise_newlines(strip_mbox_line(raw));
    if let Some(fixed) = repair_boundary(&raw) {
        raw = fixed.into();
    }
    let parsed = MessageParser::default().parse(raw.as_ref());

    let mut top = Top {
        null_sender: envelope_sender.is_some_and(|s| s.trim_matches(['<', '>']).is_empty()),
        ..Default::default()
    };
    let mut parts = Parts::default();
    const STANDARD: &[&str] = &[
        "from",
        "date",
        "subject",
        "to",
        "received",
        "message-id",
        "return-path",
        "content-type",
        "mime-version",
    ];
    match &parsed {
        Some(msg)
            if msg
                .headers()
                .iter()
                .any(|h| STANDARD.iter().any(|n| h.name().eq_ignore_ascii_case(n))) =>
        {
            read_top(msg, &mut top);
            walk(msg, limits, &mut parts);
            if parts.text.trim().is_empty() && parts.html.trim().is_empty() {
                // Broken MIME (a boundary lost to a bad fold): read the raw body.
                let body = msg.root_part().raw_body_offset() as usize;
                parts.text = lossy(raw.get(body..).unwrap_or_default());
            }
        }
        _ => {
            // Headerless (a bare NDR body): the whole input is report text.
            top.headerless = true;
            parts.text = lossy(&raw);
        }
    }
    truncated |= parts.parts_truncated;
    let mut a = classify(top, parts, truncated, limits);
    // Over the time budget: decided on what was gathered so far.
    a.truncated |= budget::exceeded();
    a
}

/// A multipart message whose declared boundary never occurs in the body (mangled
/// by a relay or an anonymiser) gets the boundary its body really uses.
///
/// Works on the raw bytes throughout: every offset is found in, and used on, the
/// same byte string (a lossy or lowercased copy can differ in length).
fn repair_boundary(raw: &[u8]) -> Option<Vec<u8>> {
    let head_end = memchr::memmem::find(raw, b"\n\n")?;
    let head = &raw[..head_end];
    let i = find_ascii_nocase(head, b"boundary=")? + b"boundary=".len();
    let rest = &head[i..];
    let (start, declared) = if let Some(q) = rest.strip_prefix(b"\"") {
        (i + 1, &q[..memchr::memchr(b'"', q)?])
    } else {
        let end = rest
            .iter()
            .position(|b| matches!(b, b';' | b' ' | b'\n' | b'\t'))
            .unwrap_or(rest.len());
        (i, &rest[..end])
    };
    // RFC 2046: at most 70 characters; anything longer is not worth repairing.
    if declared.is_empty() || declared.len() > 200 {
        return None;
    }
    let body = &raw[head_end..];
    let mut marker = b"\n--".to_vec();
    marker.extend_from_slice(declared);
    if memchr::memmem::find(body, &marker).is_some() {
        return None;
    }
    let scan = &body[..body.len().min(64 * 1024)];
    let real = scan.split(|&b| b == b'\n').find_map(|l| {
        let b = l.strip_prefix(b"--")?.trim_ascii_end();
        (!b.is_empty() && b.len() <= 70 && !b.contains(&b' ') && !b.ends_with(b"--")).then_some(b)
    })?;
    let mut out = Vec::with_capacity(raw.len() + real.len());
    out.extend_from_slice(&head[..start]);
    out.extend_from_slice(real);
    out.extend_from_slice(&head[start + declared.len()..]);
    out.extend_from_slice(body);
    Some(out)
}

/// The first offset of `needle` (lowercase ASCII) in `hay`, ignoring ASCII case.
fn find_ascii_nocase(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut from = 0;
    // memchr2 on both cases of the first byte, then a bounded comparison: O(n * |needle|).
    while let Some(p) = memchr::memchr2(first, first.to_ascii_uppercase(), &hay[from..]) {
        let at = from + p;
        if hay.len() - at < needle.len() {
            return None;
        }
        if hay[at..at + needle.len()].eq_ignore_ascii_case(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn read_top(msg: &mail_parser::Message<'_>, top: &mut Top) {
    top.subject = msg.subject().unwrap_or("").to_lowercase();
    if let Some(a) = msg.from().and_then(|a| a.first()) {
        top.from_addr = a.address().unwrap_or("").to_string();
        top.from_name = a.name().unwrap_or("").to_string();
    }
    let raw = |n: &str| msg.header_raw(n).map(|v| v.trim().to_ascii_lowercase());
    if let Some(rp) = raw("Return-Path")
        && (rp.trim_matches(['<', '>', ' ']).is_empty() || rp.contains("mailer-daemon"))
    {
        top.null_sender = true;
    }
    if let Some(ct) = msg.root_part().content_type()
        && ct.ctype().eq_ignore_ascii_case("multipart")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    {
        top.report_type = ct.attribute("report-type").map(|r| r.to_ascii_lowercase());
    }
    top.auto_submitted = raw("Auto-Submitted");
    top.precedence = raw("Precedence");
    top.autoreply_header = raw("X-Autoreply").is_some_and(|v| v != "no")
        || raw("X-Autorespond").is_some()
        || raw("X-Autoresponse").is_some()
        || raw("X-Auto-Reply").is_some()
        || raw("X-Vacation").is_some()
        || raw("X-Apple-Action").is_some_and(|v| v.contains("vacation"))
        || top.precedence.as_deref() == Some("auto_reply")
        || top
            .auto_submitted
            .as_deref()
            .is_some_and(|a| a.starts_with("auto-replied"));
    top.challenge_header = msg.headers().iter().any(|h| {
        let n = h.name().to_ascii_lowercase();
        n.starts_with("x-boxbe")
            || n.starts_with("x-tmda")
            || n.starts_with("x-spamarrest")
            || n.starts_with("x-bluebottle")
            || n == "x-challenge"
    });
    top.in_reply_to = msg.header_raw("In-Reply-To").is_some();
    for name in ["In-Reply-To", "References"] {
        if let Some(v) = msg.header_raw(name) {
            for id in v.split(['<', '>', ' ', '\t', '\r', '\n', ',']) {
                if id.contains('@')
                    && top.replied_to.len() < 20
                    && !top.replied_to.iter().any(|x| x == id)
                {
                    top.replied_to.push(id.to_string());
                }
            }
        }
    }
    if let Some(to) = msg.to() {
        top.to_addrs = to
            .iter()
            .filter_map(|a| a.address().map(str::to_string))
            .collect();
    }
    top.failed_recipients = msg
        .header_values("X-Failed-Recipients")
        .filter_map(|v| v.as_text())
        .flat_map(|v| v.split(','))
        .filter_map(text::normalise_address)
        .collect();
}

fn walk(msg: &mail_parser::Message<'_>, limits: &Limits, out: &mut Parts) {
    if msg.parts.len() > limits.max_parts {
        out.parts_truncated = true;
    }
    for part in msg.parts.iter().take(limits.max_parts) {
        if budget::step(1) {
            out.parts_truncated = true;
            break;
        }
        let (ctype, sub) = part
            .content_type()
            .map(|c| {
                (
                    c.ctype().to_ascii_lowercase(),
                    c.subtype().unwrap_or("").to_ascii_lowercase(),
                )
            })
            .unwrap_or_else(|| ("text".into(), "plain".into()));
        match (ctype.as_str(), sub.as_str(), &part.body) {
            (_, _, PartType::Multipart(_)) => {}
            (_, _, PartType::Message(m)) => {
                if out.nested_dsn.is_none() {
                    out.nested_dsn = m
                        .parts
                        .iter()
                        .take(limits.max_parts)
                        .find(|p| {
                            p.content_type().is_some_and(|c| {
                                c.ctype().eq_ignore_ascii_case("message")
                                    && c.subtype()
                                        .is_some_and(|s| s.eq_ignore_ascii_case("delivery-status"))
                            })
                        })
                        .map(|p| lossy(p.contents()));
                }
                if out.original.is_none() {
                    let (fields, ended) =
                        original::header_fields(&lossy(m.raw_message()), limits.max_headers);
                    if !fields.is_empty() {
                        out.original = Some(Original::from_fields(Source::Rfc822, fields, !ended));
                    }
                }
            }
            ("message", "delivery-status" | "global-delivery-status", _) => {
                out.dsn
                    .get_or_insert_with(String::new)
                    .push_str(&lossy(part.contents()));
            }
            ("message", "feedback-report", _) => out.feedback = true,
            ("message", "disposition-notification", _) => out.mdn = true,
            ("text", "rfc822-headers", _) | ("message", "rfc822-headers", _)
                if out.original.is_none() => {
                    let (fields, _) =
                        original::header_fields(&lossy(part.contents()), limits.max_headers);
                    if Original::is_plausible(&fields) {
                        out.original =
                            Some(Original::from_fields(Source::Rfc822Headers, fields, true));
                    }
                }
            ("message", "rfc822" | "global", _)
                // A message part mail-parser could not parse: read what headers it has.
                if out.original.is_none() => {
                    let (fields, ended) =
                        original::header_fields(&lossy(part.contents()), limits.max_headers);
                    if Original::is_plausible(&fields) {
                        out.original = Some(Original::from_fields(Source::Rfc822, fields, !ended));
                    }
                }
            ("text", "html", _) => {
                if out.html.len() < limits.max_text
                    && let Some(t) = part.text_contents() {
                        out.html.push_str(&strip_html(t));
                        out.html.push('\n');
                    }
            }
            ("text", _, _) => {
                if out.text.len() < limits.max_text
                    && let Some(t) = part.text_contents() {
                        out.text.push_str(t);
                        out.text.push('\n');
                    }
            }
            _ => {}
        }
    }
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn classify(top: Top, mut parts: Parts, truncated: bool, limits: &Limits) -> Analysis {
    let mut evidence: Vec<&'static str> = Vec::new();
    if parts.text.trim().is_empty() {
        parts.text = std::mem::take(&mut parts.html);
    }
    // The report's own text: cut where a quoted original starts.
    let mut text = cut(&parts.text, limits.max_text).to_string();
    // `ascii` is `text` with ASCII letters lowercased: the same length and the same
    // char boundaries, so offsets found in it index `text`. Markers and field names
    // are ASCII. Phrases in other scripts are matched in `lower` (full Unicode
    // lowercasing, whose length may differ), where no offset is ever taken.
    let mut ascii = text.to_ascii_lowercase();
    if parts.dsn.is_none() {
        // RFC 3464 fields pasted into the text (some Sendmail and Notes versions).
        if let Some(i) = ascii.find("\nfinal-recipient:") {
            let start = ascii[..i].rfind("\nreporting-mta:").unwrap_or(i);
            parts.dsn = Some(text[start..].to_string());
        }
    }
    if parts.original.is_none()
        && let Some(q) = original::inline(&text, &ascii, limits.max_headers)
    {
        parts.original = Some(q.original);
        let edit = |s: &mut String| {
            if q.after_marker {
                // Everything from here on is the returned message.
                s.truncate(q.start);
            } else {
                // A header summary inside the report: leave out just the block.
                s.replace_range(q.start..q.end, "");
            }
        };
        edit(&mut text);
        edit(&mut ascii);
    }
    drop(ascii);
    let lower = text.to_lowercase();
    let p = text::phrases(&top.subject, &lower);
    let daemon = is_daemon_sender(&top.from_addr, &top.from_name)
        || text::reporter_sender(&top.from_addr, &top.from_name);

    // 1. Structured reports.
    let report = parts
        .dsn
        .as_deref()
        .map(|d| report::parse(d, limits.max_recipients));
    let mut kind = if top.report_type.as_deref() == Some("feedback-report")
        || parts.feedback
        // Hotmail's pre-ARF complaint format.
        || top.subject.starts_with("complaint about message from")
    {
        evidence.push("arf");
        Kind::Feedback
    } else if top.report_type.as_deref() == Some("disposition-notification") || parts.mdn {
        evidence.push("mdn");
        Kind::Mdn
    } else if let Some(r) = report.as_ref().filter(|r| !r.recipients.is_empty()) {
        evidence.push("rfc3464");
        let has = |a: &str| {
            r.recipients
                .iter()
                .any(|x| x.action.as_deref().is_some_and(|v| v.starts_with(a)))
        };
        let permanent = r
            .recipients
            .iter()
            .any(|x| x.status.is_some_and(|s| s.is_permanent()));
        if has("failed") || permanent && !has("delivered") && !has("relayed") {
            Kind::Bounce
        } else if has("delayed")
            || r.recipients
                .iter()
                .any(|x| x.status.is_some_and(|s| s.is_temporary()))
        {
            Kind::Delay
        } else if has("deliver")
            || has("relayed")
            || has("expanded")
            || r.recipients
                .iter()
                .all(|x| x.status.is_some_and(|s| s.class == 2))
        {
            Kind::Delivery
        } else {
            Kind::Bounce
        }
    } else {
        Kind::Other
    };

    // Amazon SES notifications (JSON).
    let ses = if kind == Kind::Other {
        text::ses_notification(&text)
    } else {
        None
    };
    if let Some(n) = &ses {
        evidence.push("amazon-ses");
        kind = match n.kind.as_str() {
            "Bounce" => Kind::Bounce,
            "Delivery" => Kind::Delivery,
            "Complaint" => Kind::Feedback,
            _ => Kind::Other,
        };
    }

    // 2. Prose reports and other automatic replies.
    if kind == Kind::Other {
        let bounce_like = top.report_type.as_deref() == Some("delivery-status")
            || ((daemon || top.null_sender) && (p.ndr_subject || p.ndr_body > 0))
            // A bare report text; tab-separated data (a log, a table) is not one.
            || (top.headerless
                && text.matches('\t').count() < text.lines().count()
                && (p.ndr_body > 0 || text::smtp_code_in(&lower).is_some()))
            || (p.ndr_body >= 2 && parts.original.is_some())
            // A report's shape without a daemon sender (gateways, old systems): a
            // failure subject and text, a status code or a returned message, and
            // an address the text says failed.
            || (p.ndr_subject
                && (p.ndr_body >= 2
                    || p.ndr_body >= 1
                        && (parts.original.is_some() || text::status_in(&lower).is_some()))
                && text::names_failed_address(&text, std::slice::from_ref(&top.from_addr)))
            // A delay warning from a daemon or the null sender.
            || ((daemon || top.null_sender)
                && p.delay
                && !top.autoreply_header
                && !p.autoreply_subject);
        if p.virus && (daemon || top.null_sender || p.ndr_subject) {
            evidence.push("virus");
            kind = Kind::VirusNotice;
        } else if top.challenge_header
            // A request to confirm before a held message is delivered, with no
            // status code: a challenge even from a daemon, not a delay.
            || p.challenge_strong && text::status_in(&lower).is_none()
            || !bounce_like
                && (p.challenge >= 2
                    || p.challenge >= 1
                        && (top.null_sender || top.auto_submitted.is_some() || p.autoreply_subject))
        {
            evidence.push("challenge");
            kind = Kind::Challenge;
        } else if bounce_like {
            if daemon {
                evidence.push("daemon-sender");
            }
            if top.null_sender {
                evidence.push("null-sender");
            }
            if p.ndr_subject {
                evidence.push("ndr-subject");
            }
            if p.ndr_body > 0 {
                evidence.push("ndr-text");
            }
            let permanent_code = text::status_in(&lower).is_some_and(|s| s.is_permanent())
                || p.permanent
                || text::smtp_code_in(&lower).is_some_and(|c| c >= 500);
            kind = if p.delivered && !permanent_code && p.ndr_body <= 2 {
                Kind::Delivery
            } else if p.delay && !permanent_code {
                Kind::Delay
            } else {
                Kind::Bounce
            };
        } else if top.autoreply_header
            || p.autoreply_subject
                && (p.autoreply_body
                    || top.in_reply_to
                    || top.auto_submitted.is_some()
                    || top.null_sender)
            || top
                .auto_submitted
                .as_deref()
                .is_some_and(|a| a.starts_with("auto-generated"))
                && p.autoreply_body
                && p.autoreply_subject
        {
            evidence.push("autoreply");
            kind = Kind::Autoreply;
        } else if p.autoreply_subject_strong {
            evidence.push("autoreply-subject");
            kind = Kind::Autoreply;
        }
    }

    // 3. Recipients, statuses, the reporting MTA.
    let mut recipients = report
        .as_ref()
        .map(|r| r.recipients.clone())
        .unwrap_or_default();
    let mut reporting_mta = report
        .and_then(|r| r.reporting_mta)
        .or_else(|| text::reporting_mta_in(&text));
    let is_report = matches!(
        kind,
        Kind::Bounce | Kind::Delay | Kind::Delivery | Kind::VirusNotice
    );
    if is_report {
        let mut exclude: Vec<String> = vec![top.from_addr.clone()];
        exclude.extend(top.to_addrs.iter().cloned());
        if let Some(o) = &parts.original {
            exclude.extend(o.from.iter().cloned());
            exclude.extend(o.return_path.iter().cloned());
        }
        if recipients.is_empty() {
            let found = if top.failed_recipients.is_empty() {
                let f = text::recipients_in(&text, &exclude, limits.max_recipients);
                if f.is_empty() {
                    // "Undeliverable: mail to alice@example.com"
                    text::recipients_in(&top.subject, &exclude, limits.max_recipients)
                } else {
                    f
                }
            } else {
                let mut f = top.failed_recipients.clone();
                f.truncate(limits.max_recipients);
                f
            };
            if found.is_empty()
                && let Some(nested) = parts.nested_dsn.as_deref()
            {
                recipients = report::parse(nested, limits.max_recipients).recipients;
            }
            let diagnostics = text::diagnostics_for(&text, &found);
            for (address, diagnostic) in found.into_iter().zip(diagnostics) {
                recipients.push(Recipient {
                    diagnostic,
                    address,
                    action: Some(match kind {
                        Kind::Delay => "delayed".into(),
                        Kind::Delivery => "delivered".into(),
                        _ => "failed".into(),
                    }),
                    ..Default::default()
                });
            }
        }
        let temporary = kind == Kind::Delay;
        let whole_status = text::status_in(&text);
        let inferred = text::infer_status(&lower, temporary);
        for r in &mut recipients {
            if r.status.is_none() {
                let diag = r.diagnostic.clone().unwrap_or_default();
                r.status = text::status_in(&diag)
                    .or(whole_status)
                    .or_else(|| text::infer_status(&diag.to_lowercase(), temporary))
                    .or(inferred)
                    .or(match kind {
                        Kind::Bounce => Some(Status::new(5, 0, 0)),
                        Kind::Delay => Some(Status::new(4, 0, 0)),
                        _ => None,
                    });
            }
            if r.remote_mta.is_none() {
                r.remote_mta = r.diagnostic.as_deref().and_then(text::remote_mta_in);
            }
        }
        if reporting_mta.is_none() && daemon {
            reporting_mta = top.from_addr.split_once('@').map(|(_, d)| d.to_string());
        }
    } else {
        recipients.clear();
    }
    for r in &mut recipients {
        r.meaning = r.status.and_then(|s| s.meaning());
    }
    let original = parts.original.unwrap_or_default();
    Analysis {
        kind,
        evidence,
        recipients,
        reporting_mta,
        original,
        replied_to: top.replied_to,
        from: Some(top.from_addr).filter(|f| f.contains('@')),
        truncated,
    }
}

/// A human-readable summary of an analysis, for `classify` without `--json`.
pub fn describe(file: &str, a: &Analysis) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{file}: {} ({})", a.kind.as_str(), a.evidence.join(", "));
    if let Some(m) = &a.reporting_mta {
        let _ = writeln!(s, "  reporting MTA: {m}");
    }
    for r in &a.recipients {
        let status = r
            .status
            .map_or_else(|| "-".to_string(), |st| st.to_string());
        let meaning = r.status.and_then(|st| st.meaning()).unwrap_or("");
        let _ = writeln!(
            s,
            "  recipient: {} action={} status={status} {meaning}",
            r.address,
            r.action.as_deref().unwrap_or("-")
        );
        if let Some(d) = &r.diagnostic {
            let _ = writeln!(s, "    diagnostic: {d}");
        }
    }
    let o = &a.original;
    let _ = writeln!(s, "  original: {:?}", o.source);
    for (k, v) in [
        ("message-id", &o.message_id),
        ("from", &o.from),
        ("return-path", &o.return_path),
        ("subject", &o.subject),
    ] {
        if let Some(v) = v {
            let _ = writeln!(s, "    {k}: {v}");
        }
    }
    if !o.received.is_empty() {
        let _ = writeln!(s, "    received: {} hop(s)", o.received.len());
    }
    if a.truncated {
        let _ = writeln!(s, "  (truncated: a limit was reached)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lowercasing the Kelvin sign (3 bytes) gives `k` (1 byte), `Ⱥ` (2 bytes) gives
    /// `ⱥ` (3 bytes): the same total length, shifted offsets in between.
    #[test]
    fn lowercase_that_shifts_offsets_does_not_panic() {
        let raw = "\u{212A}\nFinal-Recipient: rfc822; bob@remote.example\nAction: failed\n\
                   Status: 5.1.1\n\u{23A}\u{23A}\n";
        assert_eq!(raw.len(), raw.to_lowercase().len());
        let a = analyze(raw.as_bytes(), Some(""), &Limits::default());
        assert_eq!(a.kind, Kind::Bounce);
        assert_eq!(a.recipients[0].address, "bob@remote.example");
    }

    /// A Latin-1 byte in the header (three bytes once made lossy UTF-8) and a
    /// declared boundary the body never uses.
    #[test]
    fn latin1_header_and_mismatched_boundary_do_not_panic() {
        let mut raw = b"From: MAILER-DAEMON@remote.example\nSubject: caf\xe9\xe9\n\
            Content-Type: multipart/report; report-type=delivery-status; boundary=XYZ"
            .to_vec();
        raw.extend_from_slice(
            b"\n\n--real\nContent-Type: text/plain\n\nYour message could not be delivered.\n\
            <bob@remote.example>: user unknown\n\
            --real\nContent-Type: message/delivery-status\n\n\
            Reporting-MTA: dns; mx.remote.example\n\n\
            Final-Recipient: rfc822; bob@remote.example\nAction: failed\nStatus: 5.1.1\n\
            --real--\n",
        );
        let a = analyze(&raw, Some(""), &Limits::default());
        assert_eq!(a.kind, Kind::Bounce);
        assert_eq!(a.recipients[0].address, "bob@remote.example");
        assert_eq!(a.recipients[0].status, Some(Status::new(5, 1, 1)));
    }

    /// The work (steps counted by `budget`) of analysing `lines` header-like lines.
    fn work(line: &str, bytes: usize) -> u64 {
        let text = line.repeat(bytes / line.len());
        let ((), usage) = budget::run(None, || {
            analyze(text.as_bytes(), Some(""), &Limits::default());
        });
        usage.steps
    }

    /// 64 KiB of `x-a: b` lines once cost seconds: every header-like line rebuilt
    /// the rest of the text. Eight times the input must cost about eight times the
    /// work, not sixty-four.
    #[test]
    fn header_like_lines_cost_linear_work() {
        for line in ["x-a: b\n", "  x-a: b\n", "> x-a: b\n", "x-a: b\n c\n"] {
            let small = work(line, 4 * 1024);
            let big = work(line, 32 * 1024);
            assert!(small > 0);
            assert!(
                big <= small * 8 * 3 / 2,
                "{line:?}: {small} steps at 4 KiB, {big} at 32 KiB"
            );
        }
    }
}
