//! The hold queue from our side: the messages we quarantined, with our reasons, and
//! releasing or deleting them through the MTA's own commands.
//!
//! Postfix: `postqueue -j` lists the queue (the `hold` queue is ours to look at),
//! `postcat -h -q ID` shows a message's headers (our header says the verdict: the
//! milter removes every copy that arrives from outside, so the one in the queue is
//! ours), `postsuper -H ID` releases (then `postqueue -i ID` delivers it now) and
//! `postsuper -d ID hold` deletes. Sendmail: `mailq -qQ` lists its quarantine,
//! `sendmail -qQ -qI<ID> -Q` releases; a quarantined message is deleted by removing
//! its queue files, which the MTA has no command for: not offered.

use serde::Serialize;
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Which MTA holds the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mta {
    Postfix,
    Sendmail,
}

/// What our header says about a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OurVerdict {
    pub kind: Option<String>,
    pub verdict: Option<String>,
    pub mode: Option<String>,
    pub score: Option<i32>,
    /// `(code, points)` as the header gives them.
    pub reasons: Vec<(String, i32)>,
}

/// Parses our header's value:
/// `null-sender=yes; rcpts=1; kind=bounce; verdict=quarantine; score=8; mode=enforce; reasons=untagged(+5),no_original(+3)`.
pub fn parse_header(value: &str) -> OurVerdict {
    let mut v = OurVerdict::default();
    for field in value.split(';') {
        let Some((k, val)) = field.trim().split_once('=') else {
            continue;
        };
        let val = val.trim();
        match k.trim() {
            "kind" => v.kind = Some(val.to_string()),
            "verdict" => v.verdict = Some(val.to_string()),
            "mode" => v.mode = Some(val.to_string()),
            "score" => v.score = val.parse().ok(),
            "reasons" => {
                v.reasons = val
                    .split(',')
                    .filter_map(|r| {
                        let (code, rest) = r.trim().split_once('(')?;
                        let points = rest.strip_suffix(')')?.parse().ok()?;
                        Some((code.to_string(), points))
                    })
                    .collect();
            }
            _ => {}
        }
    }
    v
}

/// The (unfolded) value of header `name` in a header block, e.g. `postcat -h`'s.
pub fn header_value(headers: &str, name: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for line in headers.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(f) = found.as_mut() {
                f.push(' ');
                f.push_str(line.trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// One held message of ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    pub id: String,
    /// Unix seconds.
    pub arrival: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    pub size: u64,
    pub ours: OurVerdict,
}

/// A queue id as the MTAs write them (letters and digits): anything else is
/// refused before it reaches a command line.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `postqueue -j` output: the held messages' (id, arrival, sender, recipients, size).
pub fn parse_postqueue(json_lines: &str) -> Vec<Held> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["queue_name"] == "hold")
        .filter_map(|v| {
            let id = v["queue_id"].as_str()?.to_string();
            valid_id(&id).then(|| Held {
                id,
                arrival: v["arrival_time"].as_u64().unwrap_or(0),
                sender: v["sender"].as_str().unwrap_or("").to_string(),
                recipients: v["recipients"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|r| r["address"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                size: v["message_size"].as_u64().unwrap_or(0),
                ours: OurVerdict::default(),
            })
        })
        .collect()
}

/// Sendmail's `mailq -qQ` output: its queue directory and the quarantined messages
/// whose reason is ours ("backscatter-milter: suspected backscatter (score N:
/// reasons)"). mailq cuts the reason short: `read_queue_file` completes it.
pub fn parse_mailq(text: &str) -> (Option<PathBuf>, Vec<Held>) {
    let mut dir = None;
    let mut out: Vec<(Held, bool)> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('/') {
            if let Some((d, _)) = t.split_once(" (") {
                dir = Some(PathBuf::from(d));
            }
            continue;
        }
        if t.is_empty() || t.starts_with('-') || t.starts_with("Total") {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            // "ID[*]   size Date time <sender>"
            let mut it = t.split_whitespace();
            let id = it.next().unwrap_or("").trim_end_matches('*');
            if !valid_id(id) {
                continue;
            }
            let size = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let sender = t
                .rsplit_once(' ')
                .map(|(_, s)| s.trim_matches(['<', '>']).to_string())
                .unwrap_or_default();
            out.push((
                Held {
                    id: id.to_string(),
                    arrival: 0,
                    sender,
                    recipients: Vec::new(),
                    size,
                    ours: OurVerdict::default(),
                },
                false,
            ));
        } else if let Some((h, ours)) = out.last_mut() {
            if let Some(reason) = t.strip_prefix("QUARANTINE:") {
                *ours = reason.trim().starts_with("backscatter-milter:");
                h.ours = parse_reason(reason.trim());
            } else if !t.starts_with('(') {
                h.recipients.push(t.trim_matches(['<', '>']).to_string());
            }
        }
    }
    (
        dir,
        out.into_iter()
            .filter(|(_, o)| *o)
            .map(|(h, _)| h)
            .collect(),
    )
}

/// Our quarantine reason, as far as it goes.
fn parse_reason(reason: &str) -> OurVerdict {
    let inner = reason
        .strip_prefix("backscatter-milter: suspected backscatter (score ")
        .unwrap_or("");
    let inner = inner.strip_suffix(')').unwrap_or(inner);
    let (score, reasons) = inner.split_once(": ").unwrap_or((inner, ""));
    let mut v = parse_header(&format!("score={score}; reasons={reasons}"));
    v.verdict = Some("quarantine".into());
    v
}

/// A Sendmail queue file (qf, or hf once quarantined): our header's verdict, from
/// its `H` lines (`H??Name: value`, continued on tab-indented lines).
pub fn read_queue_file(qf: &str, header_name: &str) -> Option<OurVerdict> {
    let mut headers = String::new();
    let mut in_header = false;
    for line in qf.lines() {
        if let Some(h) = line.strip_prefix('H') {
            // An optional ?flags? or ?${macro}? condition before the name.
            let h = match h.strip_prefix('?') {
                Some(rest) => rest.split_once('?').map_or(rest, |(_, r)| r),
                None => h,
            };
            headers.push_str(h);
            headers.push('\n');
            in_header = true;
        } else if in_header && line.starts_with(['\t', ' ']) {
            headers.push_str(line);
            headers.push('\n');
        } else {
            in_header = false;
        }
    }
    header_value(&headers, header_name)
        .map(|v| parse_header(&v))
        .filter(|v| v.verdict.is_some())
}

/// The MTA's commands.
pub struct Queue {
    pub mta: Mta,
    /// Postfix's configuration directory (`-c`), when not the default.
    pub postfix_config: Option<PathBuf>,
    /// Our header's name (`[milter] header_name`).
    pub header_name: String,
}

fn tool(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", cmd.get_program().to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            cmd.get_program().to_string_lossy(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Queue {
    fn postfix(&self, name: &str) -> Command {
        let mut c = Command::new(tool(name));
        if let Some(d) = &self.postfix_config {
            c.arg("-c").arg(d);
        }
        c
    }

    /// The messages we held, oldest first.
    pub fn list(&self) -> Result<Vec<Held>, String> {
        match self.mta {
            Mta::Postfix => {
                let mut held = parse_postqueue(&run(self.postfix("postqueue").arg("-j"))?);
                held.retain_mut(|h| {
                    let Ok(headers) = run(self.postfix("postcat").args(["-h", "-q", &h.id])) else {
                        return false; // gone meanwhile
                    };
                    match header_value(&headers, &self.header_name) {
                        Some(v) => {
                            h.ours = parse_header(&v);
                            h.ours.verdict.is_some()
                        }
                        None => false,
                    }
                });
                held.sort_by_key(|h| h.arrival);
                Ok(held)
            }
            Mta::Sendmail => {
                let (dir, mut held) = parse_mailq(&run(Command::new(tool("mailq")).arg("-qQ"))?);
                for h in &mut held {
                    let file = dir.as_ref().and_then(|d| {
                        std::fs::read_to_string(d.join(format!("hf{}", h.id)))
                            .or_else(|_| std::fs::read_to_string(d.join(format!("qf{}", h.id))))
                            .ok()
                    });
                    if let Some(v) = file.and_then(|f| read_queue_file(&f, &self.header_name)) {
                        h.ours = v;
                    }
                }
                Ok(held)
            }
        }
    }

    fn ours(&self, id: &str) -> Result<Held, String> {
        if !valid_id(id) {
            return Err(format!("{id:?} is not a queue id"));
        }
        self.list()?
            .into_iter()
            .find(|h| h.id == id)
            .ok_or_else(|| format!("{id} is not a message we hold"))
    }

    /// Releases a message we held: the MTA delivers it now.
    pub fn release(&self, id: &str) -> Result<Held, String> {
        let h = self.ours(id)?;
        match self.mta {
            Mta::Postfix => {
                run(self.postfix("postsuper").args(["-H", id]))?;
                // Deliver now rather than at the next queue scan (best effort).
                let _ = run(self.postfix("postqueue").args(["-i", id]));
            }
            Mta::Sendmail => {
                run(Command::new(tool("sendmail")).args(["-qQ", &format!("-qI{id}"), "-Q"]))?;
                let _ = run(Command::new(tool("sendmail")).args(["-q", &format!("-qI{id}")]));
            }
        }
        Ok(h)
    }

    /// Deletes a message we held.
    pub fn delete(&self, id: &str) -> Result<Held, String> {
        let h = self.ours(id)?;
        match self.mta {
            Mta::Postfix => {
                run(self.postfix("postsuper").args(["-d", id, "hold"]))?;
            }
            Mta::Sendmail => {
                return Err(
                    "Sendmail has no command to delete one message: release it, or remove its qf and df files"
                        .into(),
                );
            }
        }
        Ok(h)
    }
}

/// A table for a terminal; with `explain`, each reason in words under its row.
pub fn table(held: &[Held], explain: bool) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    };
    let mut rows = vec![[
        "QUEUE ID".to_string(),
        "ARRIVED (UTC)".into(),
        "SENDER".into(),
        "RECIPIENTS".into(),
        "KIND".into(),
        "SCORE".into(),
        "REASONS".into(),
    ]];
    for h in held {
        rows.push([
            h.id.clone(),
            if h.arrival == 0 {
                "-".into()
            } else {
                crate::decisions::utc(h.arrival)
            },
            if h.sender.is_empty() {
                "<>".into()
            } else {
                clean(&h.sender)
            },
            clean(&h.recipients.join(",")),
            clean(h.ours.kind.as_deref().unwrap_or("-")),
            h.ours.score.map_or("-".into(), |s| s.to_string()),
            h.ours
                .reasons
                .iter()
                .map(|(c, p)| format!("{}({p:+})", clean(c)))
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if explain && n > 0 {
            for (code, _) in &held[n - 1].ours.reasons {
                out.push_str(&format!("    - {}\n", crate::decisions::reason_text(code)));
            }
        }
    }
    if held.is_empty() {
        out.push_str("(nothing held by backscatter-milter)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_header_parses() {
        let v = parse_header(
            "null-sender=yes; rcpts=1; kind=bounce; verdict=quarantine; score=8; mode=enforce; reasons=untagged(+5),no_original(+3)",
        );
        assert_eq!(v.kind.as_deref(), Some("bounce"));
        assert_eq!(v.verdict.as_deref(), Some("quarantine"));
        assert_eq!(v.score, Some(8));
        assert_eq!(
            v.reasons,
            [("untagged".to_string(), 5), ("no_original".to_string(), 3)]
        );
        assert_eq!(parse_header("garbage; ;=;reasons=x(").reasons, []);
    }

    #[test]
    fn folded_headers_unfold() {
        let h = "Received: from x\n\tby y\nX-Backscatter: null-sender=yes; verdict=quarantine;\n\tscore=8\nSubject: s\n\nbody: X-Backscatter: no";
        assert_eq!(
            header_value(h, "x-backscatter").as_deref(),
            Some("null-sender=yes; verdict=quarantine; score=8")
        );
        assert_eq!(header_value(h, "To"), None);
    }

    #[test]
    fn only_the_hold_queue_and_sane_ids() {
        let j = r#"{"queue_name": "hold", "queue_id": "4B2F49A9358", "arrival_time": 1795000000, "message_size": 900, "sender": "", "recipients": [{"address": "u@example.org"}]}
{"queue_name": "deferred", "queue_id": "ABC", "arrival_time": 1, "message_size": 1, "sender": "", "recipients": []}
{"queue_name": "hold", "queue_id": "-x", "arrival_time": 1, "message_size": 1, "sender": "", "recipients": []}
not json"#;
        let h = parse_postqueue(j);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].id, "4B2F49A9358");
        assert_eq!(h[0].recipients, ["u@example.org"]);
        assert!(!valid_id("-d") && !valid_id("") && valid_id("4B2F49A9358"));
    }

    #[test]
    fn sendmail_quarantine_listing() {
        let q = "\t\t/var/spool/mqueue (1 request)\n-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------\n5AQ0Gx1a000123     1234 Thu Nov 26 03:16 <>\n     QUARANTINE: backscatter-milter: suspected backscatter (score 8: untagged(+5),no_original(+3))\n                                         <user@example.org>\n5AQ0Gx1a000124     1234 Thu Nov 26 03:16 <a@b.example>\n     QUARANTINE: held by someone else\n                                         <user@example.org>\n\t\tTotal requests: 2\n";
        let (dir, h) = parse_mailq(q);
        assert_eq!(dir.as_deref(), Some(Path::new("/var/spool/mqueue")));
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].id, "5AQ0Gx1a000123");
        assert_eq!(h[0].recipients, ["user@example.org"]);
        assert_eq!(h[0].ours.score, Some(8));
        assert_eq!(h[0].ours.reasons.len(), 2);
        let qf = "V8\nT1795000000\nqbackscatter-milter: x\nH?P?Return-Path: <>\nH??X-Backscatter: null-sender=yes; kind=bounce; verdict=quarantine;\n\tscore=15; reasons=untagged(+5),foreign_original(+10)\nH??Subject: s\n.\n";
        let v = read_queue_file(qf, "X-Backscatter").unwrap();
        assert_eq!(v.score, Some(15));
        assert_eq!(v.kind.as_deref(), Some("bounce"));
        assert_eq!(v.reasons.len(), 2);
    }
}
