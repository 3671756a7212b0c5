//! Which inbound mail may be a report (bounce, delay, auto-reply, challenge, feedback,
//! receipt, virus notice), judged from its top-level headers alone, so the milter
//! can tell the MTA to skip the body of everything else.
//!
//! A message needs its body analysed when its envelope sender is null (or a mail
//! system's own address, see [`null_like_sender`]), when it is
//! addressed to one of our tags, or when a header below marks it. The list is the
//! union of the header facts the classifier (`super::analyze`) reads, and
//! `tests/markers.rs` shows over the corpus that every real report either has a
//! null sender or shows one of them.

use super::text;
use mail_parser::MessageParser;

/// The first header that marks a possible report, as a short label; `None` if no
/// header does. `headers` are (name, raw value) as the MTA sent them.
pub fn report_marker<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Option<&'static str> {
    // From and Subject need decoding (RFC 2047, address syntax): collected and
    // parsed once, and only if no cheaper marker was found.
    let mut block: Vec<u8> = Vec::new();
    for (name, value) in headers {
        if let Some(m) = cheap_marker(name, value) {
            return Some(m);
        }
        if name.eq_ignore_ascii_case("From") || name.eq_ignore_ascii_case("Subject") {
            block.extend_from_slice(name.as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(value);
            block.extend_from_slice(b"\r\n");
        }
    }
    if block.is_empty() {
        return None;
    }
    block.extend_from_slice(b"\r\n");
    let msg = MessageParser::new().parse_headers(&block[..])?;
    if let Some(a) = msg.from().and_then(|a| a.first())
        && super::is_daemon_sender(a.address().unwrap_or(""), a.name().unwrap_or(""))
    {
        return Some("from-daemon");
    }
    let subject = msg.subject().unwrap_or("").to_lowercase();
    text::subject_marks(&subject).then_some("subject")
}

/// Whether an envelope sender stands for "nobody": null, or a mail system's own
/// address (MAILER-DAEMON@, postmaster@, list owners), as some MTAs write it.
pub fn null_like_sender(sender: &str) -> bool {
    let s = sender.trim().trim_matches(['<', '>']);
    s.is_empty() || super::is_daemon_sender(s, "")
}

/// Markers that need no decoding: a name, or a name and a plain value.
fn cheap_marker(name: &str, value: &[u8]) -> Option<&'static str> {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    let value = || String::from_utf8_lossy(value).trim().to_ascii_lowercase();
    if is("Auto-Submitted") {
        return (value() != "no").then_some("auto-submitted");
    }
    if is("Content-Type") {
        let v = value();
        return [
            "multipart/report",
            "message/delivery-status",
            "message/disposition-notification",
            "message/feedback-report",
        ]
        .iter()
        .any(|t| v.starts_with(t))
        .then_some("report-content-type");
    }
    if is("Precedence") {
        let v = value();
        return ["auto_reply", "bulk", "junk", "list"]
            .iter()
            .any(|p| v.starts_with(p))
            .then_some("precedence");
    }
    if is("X-Autoreply") {
        return (value() != "no").then_some("x-autoreply");
    }
    if is("X-Apple-Action") {
        return value().contains("vacation").then_some("x-apple-action");
    }
    const NAMES: &[(&str, &str)] = &[
        ("X-Autorespond", "x-autorespond"),
        ("X-Autoresponse", "x-autoresponse"),
        ("X-Auto-Reply", "x-auto-reply"),
        ("X-Autoreply-From", "x-autoreply"),
        ("X-Vacation", "x-vacation"),
        ("X-Failed-Recipients", "x-failed-recipients"),
        ("X-Challenge", "challenge"),
    ];
    if let Some((_, label)) = NAMES.iter().find(|(n, _)| is(n)) {
        return Some(label);
    }
    // Amazon SES/SNS notifications (bounce and complaint reports as JSON).
    if name.len() >= 8 && name.as_bytes()[..8].eq_ignore_ascii_case(b"x-amz-sn") {
        return Some("x-amz-sns");
    }
    const PREFIXES: &[&str] = &["x-boxbe", "x-tmda", "x-spamarrest", "x-bluebottle"];
    let lower_prefix = |p: &str| {
        name.len() >= p.len() && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    };
    PREFIXES
        .iter()
        .any(|p| lower_prefix(p))
        .then_some("challenge")
}

#[cfg(test)]
mod tests {
    use super::report_marker;

    fn m(h: &[(&str, &str)]) -> Option<&'static str> {
        report_marker(h.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn plain_mail_has_no_marker() {
        assert_eq!(
            m(&[
                ("From", "Alice <alice@example.net>"),
                ("To", "bob@example.org"),
                ("Subject", "Re: lunch on Tuesday?"),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Auto-Submitted", "no"),
            ]),
            None
        );
    }

    #[test]
    fn markers_found() {
        assert_eq!(
            m(&[("Auto-Submitted", "auto-replied")]),
            Some("auto-submitted")
        );
        assert_eq!(
            m(&[(
                "content-type",
                "Multipart/Report; report-type=delivery-status"
            )]),
            Some("report-content-type")
        );
        assert_eq!(
            m(&[("X-Failed-Recipients", "a@b")]),
            Some("x-failed-recipients")
        );
        assert_eq!(m(&[("Precedence", "junk")]), Some("precedence"));
        assert_eq!(m(&[("X-Boxbe-Challenge", "1")]), Some("challenge"));
        assert_eq!(
            m(&[("From", "Mail Delivery Subsystem <MAILER-DAEMON@x.example>")]),
            Some("from-daemon")
        );
        assert_eq!(
            m(&[("Subject", "=?UTF-8?Q?Abwesenheitsnotiz:_Hallo?=")]),
            Some("subject")
        );
        assert_eq!(
            m(&[("Subject", "=?ISO-8859-1?Q?R=E9ponse_automatique?=")]),
            Some("subject")
        );
        assert_eq!(m(&[("Subject", "Undeliverable: hello")]), Some("subject"));
    }
}
