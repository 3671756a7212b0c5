//! RFC 3464 `message/delivery-status` fields: one per-message group, then one group
//! per recipient, separated by blank lines; fields may be folded.

use super::{Recipient, status::Status};

/// The parsed report: the reporting MTA and the recipients.
#[derive(Debug, Default)]
pub struct Report {
    pub reporting_mta: Option<String>,
    pub recipients: Vec<Recipient>,
}

/// Strips an RFC 3464 type prefix (`rfc822;`, `dns;`, `smtp;`) and whitespace.
fn typed_value(v: &str) -> String {
    let v = v.trim();
    match v.split_once(';') {
        Some((t, rest)) if t.len() <= 12 && !t.contains(' ') && !t.contains('@') => rest.trim(),
        _ => v,
    }
    .trim_matches(['<', '>'])
    .to_string()
}

/// Unfolded `(name, value)` fields of one group.
fn fields(group: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in group.lines() {
        if super::budget::step(1) {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut()
                && last.1.len() < 4096
            {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

pub fn parse(text: &str, max_recipients: usize) -> Report {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut report = Report::default();
    for group in text.split("\n\n") {
        let f = fields(group);
        if f.is_empty() {
            continue;
        }
        let get = |name: &str| f.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        if let Some(mta) = get("reporting-mta") {
            report.reporting_mta.get_or_insert_with(|| typed_value(mta));
        }
        let final_rcpt = get("final-recipient")
            .map(typed_value)
            .filter(|a| !a.is_empty());
        let original = get("original-recipient")
            .map(typed_value)
            .filter(|a| !a.is_empty());
        let Some(address) = final_rcpt.clone().or_else(|| original.clone()) else {
            continue;
        };
        if report.recipients.len() >= max_recipients {
            break;
        }
        let status = get("status").and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|c| c.trim_matches(['(', ')']).parse::<Status>().ok())
        });
        let diagnostic = get("diagnostic-code")
            .map(typed_value)
            .filter(|d| !d.is_empty());
        // Some reporters write a summary Status (x.0.0, x.4.7) and put the remote's
        // real code in the diagnostic: prefer that when it has the same class. And
        // when the remote answered permanently (5.y.z) the failure is permanent,
        // whatever class the reporter wrote.
        let from_diag = diagnostic.as_deref().and_then(super::text::status_in);
        let status = match (status, from_diag) {
            (Some(s), Some(d)) if s.is_summary() && d.class == s.class => Some(d),
            (Some(s), Some(d)) if d.class != s.class && d.class == 5 => Some(d),
            (None, d) => d,
            (s, _) => s,
        };
        report.recipients.push(Recipient {
            address,
            original: original.filter(|o| Some(o) != final_rcpt.as_ref()),
            action: get("action").map(|a| a.to_ascii_lowercase()),
            status,
            meaning: None,
            remote_mta: get("remote-mta").map(typed_value),
            diagnostic,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3464_groups() {
        let text = "Reporting-MTA: dns; mx.example.net\r\nArrival-Date: x\r\n\r\n\
            Final-Recipient: rfc822; alice@example.com\r\nOriginal-Recipient: rfc822;Alice@Example.com\r\n\
            Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mail.example.com\r\n\
            Diagnostic-Code: smtp; 550 5.1.1 <alice@example.com>: Recipient address\r\n  rejected: User unknown\r\n\r\n\
            Final-Recipient: rfc822;bob@example.com\r\nAction: delayed\r\nStatus: 4.4.1\r\n";
        let r = parse(text, 10);
        assert_eq!(r.reporting_mta.as_deref(), Some("mx.example.net"));
        assert_eq!(r.recipients.len(), 2);
        let a = &r.recipients[0];
        assert_eq!(a.address, "alice@example.com");
        assert_eq!(a.original.as_deref(), Some("Alice@Example.com"));
        assert_eq!(a.action.as_deref(), Some("failed"));
        assert_eq!(a.status, Some(Status::new(5, 1, 1)));
        assert_eq!(a.remote_mta.as_deref(), Some("mail.example.com"));
        assert_eq!(
            a.diagnostic.as_deref(),
            Some("550 5.1.1 <alice@example.com>: Recipient address rejected: User unknown")
        );
        assert_eq!(r.recipients[1].status, Some(Status::new(4, 4, 1)));
        assert_eq!(parse(text, 1).recipients.len(), 1);
    }
}
