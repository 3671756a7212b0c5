//! The original message a bounce returns: where it was found and what its headers say.

use regex::Regex;
use serde::Serialize;
use std::sync::LazyLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A `message/rfc822` (or `message/global`) part.
    Rfc822,
    /// A `text/rfc822-headers` part (headers only).
    Rfc822Headers,
    /// Headers quoted in the text of the report.
    Inline,
    #[default]
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DkimRef {
    pub d: String,
    pub s: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Original {
    pub source: Source,
    /// Without angle brackets.
    pub message_id: Option<String>,
    /// The address of From.
    pub from: Option<String>,
    pub to: Option<String>,
    pub subject: Option<String>,
    pub date: Option<String>,
    /// Return-Path, without angle brackets (`""` for the null sender).
    pub return_path: Option<String>,
    /// The Received chain, newest first, unfolded.
    pub received: Vec<String>,
    pub dkim: Vec<DkimRef>,
    /// Only headers, or cut short.
    pub truncated: bool,
    /// Every header field (name, unfolded value), capped, for later evidence checks.
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
}

static FIELD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([!-9;-~]{1,997}):[ \t]?(.*)$").unwrap());

/// Fields kept past the cap on header fields, so a returned original cannot hide
/// what the verdict reads (our signature header is appended last, after the
/// original's own fields) behind hundreds of others.
fn kept_past_cap(name: &str) -> bool {
    ["message-id", "date", "from", "return-path"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        || name
            .get(..13)
            .is_some_and(|p| p.eq_ignore_ascii_case("x-backscatter"))
}

/// Most fields kept past the cap.
const MAX_KEPT_PAST_CAP: usize = 32;

/// Splits a header block into unfolded fields; stops at the first empty or
/// non-header line. Returns the fields and whether a body separator was reached.
pub fn header_fields(block: &str, max: usize) -> (Vec<(String, String)>, bool) {
    let (fields, ended, _) = fields_of_lines(block.lines(), max);
    (fields, ended)
}

/// [`header_fields`] over lines; also says how many lines were read as fields
/// (the line that ended the block not counted). One step per line.
fn fields_of_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
    max: usize,
) -> (Vec<(String, String)>, bool, usize) {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut ended = false;
    let mut read = 0;
    // The field being read was dropped (past the cap): so are its continuations.
    let mut dropped = false;
    for line in lines {
        if super::budget::step(1) {
            break;
        }
        if line.trim().is_empty() {
            ended = true;
            break;
        }
        if line.starts_with([' ', '\t']) {
            if dropped {
                read += 1;
                continue;
            }
            match out.last_mut() {
                Some(last) => {
                    if last.1.len() < 4096 {
                        last.1.push(' ');
                        last.1.push_str(line.trim());
                    }
                    read += 1;
                    continue;
                }
                None => break,
            }
        }
        match FIELD.captures(line) {
            Some(c)
                if out.len() < max
                    || (out.len() < max + MAX_KEPT_PAST_CAP && kept_past_cap(&c[1])) =>
            {
                dropped = false;
                out.push((c[1].to_string(), c[2].trim().to_string()));
            }
            Some(_) => dropped = true,
            None => {
                ended = !out.is_empty();
                break;
            }
        }
        read += 1;
    }
    (out, ended, read)
}

/// The address inside `Name <addr>` or a bare `addr`.
pub fn address_of(v: &str) -> Option<String> {
    let v = v.trim();
    let inner = match (v.rfind('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split_whitespace().find(|w| w.contains('@')).unwrap_or(v),
    };
    let inner = inner.trim().trim_matches(['"', '\'', ';', ',']);
    (inner.contains('@') || inner.is_empty()).then(|| inner.to_string())
}

impl Original {
    /// Builds the original from its header fields.
    pub fn from_fields(source: Source, fields: Vec<(String, String)>, truncated: bool) -> Self {
        let get = |n: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let received = fields
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("received"))
            .map(|(_, v)| v.clone())
            .collect();
        let dkim = fields
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("dkim-signature"))
            .filter_map(|(_, v)| {
                let tag = |t: &str| {
                    v.split(';').find_map(|kv| {
                        let (k, val) = kv.split_once('=')?;
                        (k.trim() == t).then(|| val.trim().to_string())
                    })
                };
                Some(DkimRef {
                    d: tag("d")?,
                    s: tag("s").unwrap_or_default(),
                })
            })
            .collect();
        Self {
            source,
            message_id: get("message-id").map(|m| {
                let m = m.trim();
                m.split_whitespace()
                    .next()
                    .unwrap_or(m)
                    .trim_matches(['<', '>'])
                    .to_string()
            }),
            from: get("from").and_then(|f| address_of(&f)),
            to: get("to"),
            subject: get("subject"),
            date: get("date"),
            return_path: get("return-path").and_then(|r| address_of(&r)),
            received,
            dkim,
            truncated,
            headers: fields,
        }
    }

    /// Whether enough was found to call it an original message.
    pub fn is_plausible(fields: &[(String, String)]) -> bool {
        let key = |n: &str| fields.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        fields.len() >= 2
            && (key("message-id")
                || key("received")
                || (key("from") && (key("date") || key("subject") || key("to"))))
    }
}

/// Markers that introduce the returned message in a report's text.
const MARKERS: &[&str] = &[
    "this is a copy of the message, including all the headers",
    "below this line is a copy of the message",
    "original message headers",
    "original message follows",
    "unsent message follows",
    "message headers follow",
    "header of the original message",
    "headers of the original message",
    "original message header",
    "the original message was",
    "returned message",
    "copy of the original message",
    "original message",
    "rejected message",
    "undelivered message",
    "message text follows",
    "text of the message",
];

static HEADER_START: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:>\s?)?(?:return-path|received|message-id|from|date|subject|to|dkim-signature|mime-version|x-[a-z0-9-]+):").unwrap()
});

fn unquote(line: &str) -> &str {
    line.strip_prefix("> ")
        .or_else(|| line.strip_prefix('>'))
        .unwrap_or(line)
}

/// Headers quoted in the text: after a marker, else the first header-like block.
/// Returns where the quoted headers start (a byte offset) and what they say.
/// Headers quoted in a report's text, and where.
pub struct Quoted {
    /// Byte offsets of the header block.
    pub start: usize,
    pub end: usize,
    /// Found after a marker such as "This is a copy of the message": everything
    /// from `start` on is the original (headers and body).
    pub after_marker: bool,
    pub original: Original,
}

/// `ascii` is `text` with ASCII letters lowercased (`str::to_ascii_lowercase`:
/// every byte offset is the same in both).
pub fn inline(text: &str, ascii: &str, max_headers: usize) -> Option<Quoted> {
    debug_assert_eq!(text.len(), ascii.len());
    // Where each marker first occurs, in one pass over the text.
    static MARKER_SET: LazyLock<aho_corasick::AhoCorasick> = LazyLock::new(|| {
        aho_corasick::AhoCorasick::new(MARKERS).expect("markers build an automaton")
    });
    let mut first: Vec<Option<usize>> = vec![None; MARKERS.len()];
    for m in MARKER_SET.find_overlapping_iter(ascii) {
        // Same-length matches of one marker come in order: the first is its leftmost.
        first[m.pattern().as_usize()].get_or_insert(m.start());
    }
    let mut candidates: Vec<usize> = first.into_iter().flatten().collect();
    candidates.sort_unstable();
    for start in candidates {
        // From the line after the marker, look for the header block.
        let after = text[start..]
            .find('\n')
            .map_or(text.len(), |n| start + n + 1);
        if let Some(mut found) = scan(text, after, max_headers, 40, false) {
            found.after_marker = true;
            return Some(found);
        }
    }
    // Without a marker, only a block with a Message-ID or Received counts: a
    // summary such as "Your message: From: ... Subject: ..." is not the original.
    scan(text, 0, max_headers, usize::MAX, true)
}

/// Looks for a plausible header block starting within `max_lines` lines of `from`.
///
/// Linear: a block that is not plausible is skipped whole (its lines are never
/// read again as the start of another block), and a block is read line by line
/// from `text`, never copied.
fn scan(
    text: &str,
    from: usize,
    max_headers: usize,
    max_lines: usize,
    strict: bool,
) -> Option<Quoted> {
    let mut offset = from;
    let mut skip = 0usize;
    for (n, line) in text[from..].split_inclusive('\n').enumerate() {
        if n >= max_lines || super::budget::step(1) {
            break;
        }
        let here = offset;
        offset += line.len();
        if skip > 0 {
            skip -= 1;
            continue;
        }
        let trimmed = line.trim_start_matches([' ', '\t']);
        if !HEADER_START.is_match(trimmed) {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let quoted = trimmed.starts_with('>');
        let lines = text[here..].lines().map(|l| {
            let l = match l.get(..indent) {
                Some(p) if p.trim().is_empty() => &l[indent..],
                _ => l,
            };
            if quoted { unquote(l) } else { l }
        });
        let (fields, _, read) = fields_of_lines(lines, max_headers);
        let has = |n: &str| fields.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if Original::is_plausible(&fields) && (!strict || has("message-id") || has("received")) {
            let end = text[here..]
                .find("\n\n")
                .map_or(text.len(), |e| here + e + 1);
            return Some(Quoted {
                start: here,
                end,
                after_marker: false,
                original: Original::from_fields(Source::Inline, fields, true),
            });
        }
        skip = read.saturating_sub(1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exim_inline_copy() {
        let text = "This message was created automatically by mail delivery software.\n\n\
            A message that you sent could not be delivered to one or more of its\n\
            recipients. This is a permanent error.\n\n  bob@remote.example\n    SMTP error\n\n\
            ------ This is a copy of the message, including all the headers. ------\n\n\
            Return-path: <alice@ours.example>\nReceived: from a by b\n\tid 1\n\
            Message-Id: <abc@ours.example>\nFrom: Alice <alice@ours.example>\nSubject: hi\n\nbody\n";
        let q = inline(text, &text.to_ascii_lowercase(), 100).unwrap();
        assert!(text[q.start..].starts_with("Return-path:"));
        assert!(q.after_marker);
        let o = q.original;
        assert_eq!(o.message_id.as_deref(), Some("abc@ours.example"));
        assert_eq!(o.from.as_deref(), Some("alice@ours.example"));
        assert_eq!(o.return_path.as_deref(), Some("alice@ours.example"));
        assert_eq!(o.received, vec!["from a by b id 1"]);
    }

    #[test]
    fn quoted_headers() {
        let text = "Your mail could not be delivered.\n\n> Received: from x by y\n> Message-ID: <q@ours.example>\n> From: a@ours.example\n";
        let q = inline(text, &text.to_ascii_lowercase(), 100).unwrap();
        assert!(!q.after_marker);
        assert_eq!(q.original.message_id.as_deref(), Some("q@ours.example"));
    }

    #[test]
    fn dkim_and_null_return_path() {
        let (f, ended) = header_fields(
            "Return-Path: <>\nDKIM-Signature: v=1; a=rsa-sha256; d=ours.example;\n s=sel1; b=xx\n\nbody",
            10,
        );
        assert!(ended);
        let o = Original::from_fields(Source::Rfc822, f, false);
        assert_eq!(o.return_path.as_deref(), Some(""));
        assert_eq!(
            o.dkim,
            vec![DkimRef {
                d: "ours.example".into(),
                s: "sel1".into()
            }]
        );
    }
}
