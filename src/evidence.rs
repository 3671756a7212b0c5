//! Gathers the evidence for one inbound message: from the analysis of its content,
//! its envelope, our keys and our ledger. No clock: `today` and `now` are parameters.

use crate::{
    batv::{self, Keys, TagError, Verified},
    config::Config,
    dsn::{Analysis, Source},
    ledger::Ledger,
    net::Cidr,
    signature,
    verdict::Evidence,
};
use std::net::IpAddr;

/// One envelope recipient and what its tag said at RCPT.
pub struct RcptTag<'a> {
    pub address: &'a str,
    pub tag: Option<&'a Result<Verified, TagError>>,
}

/// What the evidence is gathered against.
pub struct Context<'a> {
    pub config: &'a Config,
    pub keys: Option<&'a Keys>,
    pub ledger: Option<&'a dyn Ledger>,
    /// The MTA's own hostname (Postfix's `j` macro), one of our relays.
    pub local_hostname: Option<&'a str>,
    /// Days since 1970 (BATV), and unix seconds (ledger).
    pub today: i64,
    pub now: u64,
    pub bad_source: bool,
}

fn domain(addr: &str) -> String {
    addr.rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>').to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether a Received header names one of our relays: `by HOST` or `from HOST`
/// matching a hostname, or a bracketed address inside one of our networks.
pub fn received_is_ours(received: &str, hosts: &[String], nets: &[Cidr]) -> bool {
    let lower = received.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    let named = words.windows(2).any(|w| {
        (w[0] == "by" || w[0] == "from") && hosts.iter().any(|h| w[1].trim_end_matches('.') == h)
    });
    named
        || lower
            .split(['[', ']'])
            .skip(1)
            .step_by(2)
            .filter_map(|ip| ip.trim_start_matches("ipv6:").parse::<IpAddr>().ok())
            .any(|ip| nets.iter().any(|n| n.contains(ip)))
}

/// Analyses a message, gathers the evidence and decides: what the milter does at
/// end of message and what `classify --config` prints.
pub fn assess(
    raw: &[u8],
    sender: Option<&str>,
    rcpts: &[RcptTag<'_>],
    ctx: &Context<'_>,
) -> (crate::dsn::Analysis, Evidence, crate::verdict::Verdict) {
    let analysis = crate::dsn::analyze(raw, sender, &ctx.config.analysis);
    let ev = gather(&analysis, rcpts, ctx);
    let v = crate::verdict::decide(&ev, &ctx.config.verdict.policy);
    (analysis, ev, v)
}

pub fn gather(a: &Analysis, rcpts: &[RcptTag<'_>], ctx: &Context<'_>) -> Evidence {
    let cfg = ctx.config;
    let valid_tag = rcpts.iter().any(|r| matches!(r.tag, Some(Ok(_))));
    let bad_tag = rcpts.iter().find_map(|r| match r.tag {
        Some(Err(e)) => Some(e.label()),
        _ => None,
    });
    let untagged = cfg.batv.enabled()
        && rcpts
            .iter()
            .any(|r| r.tag.is_none() && cfg.batv.is_our_domain(&domain(r.address)));
    let o = &a.original;
    let our_signature = ctx.keys.is_some_and(|keys| {
        o.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&cfg.verdict.signature_header))
            .any(|(_, v)| {
                signature::verify(
                    keys,
                    v,
                    o.message_id.as_deref().unwrap_or(""),
                    o.date.as_deref().unwrap_or(""),
                )
            })
    });
    let ledger_hit = ctx.ledger.is_some_and(|l| {
        o.message_id
            .iter()
            .chain(a.replied_to.iter())
            .take(20)
            .any(|id| l.contains(id, ctx.now))
    });
    let original_sender_tagged = ctx.keys.is_some_and(|keys| {
        o.return_path.as_deref().is_some_and(|rp| {
            cfg.batv.is_our_domain(&domain(rp))
                && batv::verify(keys, rp, ctx.today, cfg.batv.lifetime_days).is_ok()
        })
    });
    let mut hosts = cfg.verdict.our_relay_hosts.clone();
    if let Some(j) = ctx.local_hostname {
        hosts.push(j.to_ascii_lowercase());
    }
    let our_relay = o
        .received
        .iter()
        .any(|r| received_is_ours(r, &hosts, &cfg.verdict.our_relay_networks));
    let signing_mature = cfg
        .batv
        .signing_since
        .is_none_or(|since| ctx.today >= since + i64::from(cfg.batv.lifetime_days));
    Evidence {
        kind: a.kind,
        valid_tag,
        our_signature,
        ledger_hit,
        original_sender_tagged,
        our_relay,
        bad_tag,
        untagged,
        signing_mature,
        original_present: o.source != Source::None,
        bad_source: ctx.bad_source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_relays_in_received() {
        let hosts = vec!["mx.example.org".to_string()];
        let nets: Vec<Cidr> = vec!["198.51.100.0/24".parse().unwrap()];
        assert!(received_is_ours(
            "from [10.0.0.12] (unknown [10.0.0.12]) by mx.example.org (Postfix) with ESMTPSA id 0AB1",
            &hosts,
            &nets
        ));
        assert!(received_is_ours(
            "from mail.example.org (mail.example.org [198.51.100.25]) by mx.remote.example",
            &hosts,
            &nets
        ));
        assert!(!received_is_ours(
            "from spam.example (spam.example [203.0.113.5]) by mx.remote.example; mx.example.org.fake",
            &hosts,
            &nets
        ));
    }
}
