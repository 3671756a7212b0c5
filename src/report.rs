//! The observe-mode report: what enforce would have done, from the endpoint's
//! `/stats` and `/decisions`, and whether it is safe to switch. Pure: the JSON and
//! the clock come in, text and a verdict go out.

use serde_json::Value;
use std::collections::BTreeMap;

/// Parses `30m`, `12h`, `7d`, `90s` (or plain seconds).
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (n, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// What the report concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub line: String,
}

const PROOFS: [&str; 3] = ["valid_tag", "our_signature", "ledger_hit"];

fn codes(d: &Value) -> Vec<&str> {
    d["reasons"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["code"].as_str()).collect())
        .unwrap_or_default()
}

fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// The report. `since`: only decisions at most this many seconds old; `min_judged`:
/// how many judged messages the window needs before a verdict of ready.
pub fn render(
    stats: &Value,
    decisions: &Value,
    now: u64,
    since: Option<u64>,
    min_judged: usize,
) -> (String, Readiness) {
    let empty = Vec::new();
    let all = decisions["decisions"].as_array().unwrap_or(&empty);
    let list: Vec<&Value> = all
        .iter()
        .filter(|d| since.is_none_or(|s| d["time"].as_u64().unwrap_or(0) + s >= now))
        .collect();
    let mut out = String::new();
    let mode = stats["mode"].as_str().unwrap_or("?");
    out.push_str(&format!(
        "backscatter-milter {}: mode {mode}, up {} s\n",
        stats["version"].as_str().unwrap_or(""),
        stats["uptime_seconds"].as_u64().unwrap_or(0)
    ));
    let oldest = list.iter().filter_map(|d| d["time"].as_u64()).min();
    out.push_str(&format!(
        "Window: {} judged message(s) of the last {} remembered{}{}\n",
        list.len(),
        decisions["capacity"].as_u64().unwrap_or(0),
        since.map_or(String::new(), |s| format!(", at most {s} s old")),
        oldest.map_or(String::new(), |t| format!(
            ", since {} UTC",
            crate::decisions::utc(t)
        )),
    ));

    // What enforce would do, and what was done.
    let mut by_action: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut by_reason: BTreeMap<&str, u64> = BTreeMap::new();
    let mut ips: BTreeMap<String, u64> = BTreeMap::new();
    let mut mtas: BTreeMap<String, u64> = BTreeMap::new();
    let mut saved: BTreeMap<&str, u64> = BTreeMap::new();
    let mut refused_valid: Vec<&Value> = Vec::new();
    for d in &list {
        let decided = d["decided"].as_str().unwrap_or("?");
        let e = by_action.entry(decided).or_default();
        e.0 += 1;
        if d["action"] == d["decided"] {
            e.1 += 1;
        }
        let cs = codes(d);
        for c in &cs {
            *by_reason.entry(c).or_default() += 1;
        }
        let stopped = decided == "reject" || decided == "quarantine";
        if stopped {
            if let Some(ip) = d["client_ip"].as_str() {
                *ips.entry(ip.to_string()).or_default() += 1;
            }
            if let Some(m) = d["reporting_mta"].as_str() {
                *mtas.entry(printable(m)).or_default() += 1;
            }
        }
        // A bounce to a valid tag answers our own mail: enforce must never stop it.
        let to_valid_tag = d["recipients"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["tag"] == "valid"));
        if to_valid_tag && stopped {
            refused_valid.push(d);
        }
        if decided == "accept"
            && let Some(p) = cs.iter().find(|c| PROOFS.contains(c))
        {
            *saved.entry(p).or_default() += 1;
        }
    }
    out.push_str("\nWhat enforce does with them (decided; applied now):\n");
    for a in ["reject", "quarantine", "tag", "accept"] {
        let (n, applied) = by_action.get(a).copied().unwrap_or_default();
        out.push_str(&format!(
            "  {a:<11} {n:>6}  ({applied} applied as decided)\n"
        ));
    }
    out.push_str("\nReasons:\n");
    let mut reasons: Vec<_> = by_reason.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (c, n) in &reasons {
        out.push_str(&format!(
            "  {c:<23} {n:>6}  {}\n",
            crate::decisions::reason_text(c)
        ));
    }
    if reasons.is_empty() {
        out.push_str("  (none)\n");
    }
    out.push_str("\nTop sources of what enforce would stop:\n");
    for (label, map) in [("client", &ips), ("reporting MTA", &mtas)] {
        let mut v: Vec<_> = map.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (s, n) in v.into_iter().take(5) {
            out.push_str(&format!("  {label:<14} {s:<40} {n:>6}\n"));
        }
    }
    if ips.is_empty() && mtas.is_empty() {
        out.push_str("  (none)\n");
    }
    out.push_str("\nGenuine bounces and replies saved by proof:\n");
    for p in PROOFS {
        out.push_str(&format!(
            "  {p:<14} {:>6}\n",
            saved.get(p).copied().unwrap_or(0)
        ));
    }
    out.push_str(&format!(
        "\nBounces to a valid tag of ours that enforce would stop: {}\n",
        refused_valid.len()
    ));
    for d in &refused_valid {
        out.push_str(&format!(
            "  {} {} decided {} ({})\n",
            crate::decisions::utc(d["time"].as_u64().unwrap_or(0)),
            printable(d["queue_id"].as_str().unwrap_or("")),
            d["decided"].as_str().unwrap_or(""),
            codes(d).join(",")
        ));
    }
    let errors = stats["errors"].as_u64().unwrap_or(0);
    let readiness = if !refused_valid.is_empty() {
        Readiness {
            ready: false,
            line: format!(
                "NOT READY: {} bounce(s) to a valid tag would be stopped; look at them before enforcing",
                refused_valid.len()
            ),
        }
    } else if list.len() < min_judged {
        Readiness {
            ready: false,
            line: format!(
                "NOT READY: only {} judged message(s) seen, at least {min_judged} wanted; keep observing",
                list.len()
            ),
        }
    } else if errors > 0 {
        Readiness {
            ready: false,
            line: format!("NOT READY: {errors} internal error(s); see the log"),
        }
    } else if mode == "enforce" {
        Readiness {
            ready: true,
            line: "ENFORCING: no genuine bounce was stopped".to_string(),
        }
    } else {
        Readiness {
            ready: true,
            line: format!(
                "READY: no genuine bounce would be stopped; enforce would reject {} and hold {} of {} judged; set [verdict] mode = \"enforce\"",
                by_action.get("reject").map_or(0, |x| x.0),
                by_action.get("quarantine").map_or(0, |x| x.0),
                list.len()
            ),
        }
    };
    out.push('\n');
    out.push_str(&readiness.line);
    out.push('\n');
    (out, readiness)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(t: u64, decided: &str, codes: &[&str], tag: Option<&str>) -> Value {
        json!({
            "time": t, "queue_id": "Q", "kind": "bounce", "client_ip": "192.0.2.1",
            "reporting_mta": "mx.remote.example",
            "recipients": [{"address": "*@example.org", "tag": tag}],
            "decided": decided, "action": "tag", "mode": "observe", "score": 1,
            "reasons": codes.iter().map(|c| json!({"code": c, "points": 1})).collect::<Vec<_>>(),
            "statuses": [],
        })
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("5y"), None);
    }

    #[test]
    fn a_stopped_bounce_to_a_valid_tag_blocks_readiness() {
        let stats = json!({"mode": "observe", "errors": 0});
        let ok = json!({"capacity": 10, "decisions": [
            d(1000, "reject", &["untagged", "foreign_original"], None),
            d(1000, "accept", &["valid_tag"], Some("valid")),
        ]});
        let (text, r) = render(&stats, &ok, 1000, None, 2);
        assert!(r.ready, "{text}");
        assert!(text.contains("valid_tag           1"), "{text}");
        assert!(text.contains("stop: 0"), "{text}");
        let (_, r) = render(&stats, &ok, 1000, None, 3);
        assert!(!r.ready && r.line.contains("only 2"));
        let bad = json!({"capacity": 10, "decisions": [
            d(1000, "reject", &["bad_tag"], Some("valid")),
            d(1000, "reject", &["untagged"], None),
        ]});
        let (text, r) = render(&stats, &bad, 1000, None, 0);
        assert!(!r.ready, "{text}");
        assert!(text.contains("stop: 1"), "{text}");
        // Out of the window: not counted.
        let (_, r) = render(&stats, &bad, 100_000, Some(3600), 0);
        assert!(r.ready);
    }
}
