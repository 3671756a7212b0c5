//! Gathers the evidence for one inbound message: from the analysis of its content,
//! its envelope, our keys and our ledger. No clock: `today` and `now` are parameters.

use crate::{
    address::Address,
    batv::{self, Keys, TagError, Verified},
    config::Config,
    dsn::{Analysis, Kind, Source},
    ledger::Ledger,
    net::Cidr,
    signature,
    verdict::Evidence,
};
use std::net::IpAddr;

/// One envelope recipient and what its tag said at RCPT.
pub struct RcptTag<'a> {
    pub address: &'a Address,
    pub tag: Option<&'a Result<Verified, TagError>>,
}

impl RcptTag<'_> {
    /// The address the message is for: the plain address inside a valid or expired
    /// tag, else the address itself.
    fn plain(&self) -> Address {
        match batv::parse(&self.address.to_string()) {
            Ok(t) => Address::parse(t.plain).unwrap_or_default(),
            Err(_) => self.address.clone(),
        }
    }
}

/// What the evidence is gathered against.
pub struct Context<'a> {
    pub config: &'a Config,
    pub keys: Option<&'a Keys>,
    pub ledger: Option<&'a dyn Ledger>,
    /// Days since 1970 (BATV, signatures), and unix seconds (ledger).
    pub today: i64,
    pub now: u64,
    pub bad_source: bool,
}

/// Whether the newest Received line of a returned original shows one of our
/// networks as the client: the bracketed address the remote MTA wrote itself. Host
/// names (HELO, reverse DNS) and every older line are the sender's to write, so they
/// are never looked at.
pub fn received_is_ours(newest: &str, nets: &[Cidr]) -> bool {
    let head = newest.split(';').next().unwrap_or("").to_ascii_lowercase();
    // Only the `from` clause, up to `by`, without its first word (the HELO name
    // in Postfix's and Sendmail's form) and without Exim's `helo=` (also the client's).
    let from = head
        .trim_start()
        .strip_prefix("from ")
        .unwrap_or("")
        .split(" by ")
        .next()
        .unwrap_or("");
    let rest = from
        .trim_start()
        .split_once(char::is_whitespace)
        .map_or("", |(_, r)| r);
    rest.split(['(', ')', ' '])
        .filter(|w| !w.starts_with("helo="))
        .flat_map(|w| w.split(['[', ']']).skip(1).step_by(2))
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
    let ev = gather(&analysis, sender, rcpts, ctx);
    let v = crate::verdict::decide(&ev, &ctx.config.verdict.policy);
    (analysis, ev, v)
}

/// The addresses a bounce or auto-reply speaks for, normalised: the failed
/// recipients it reports (and their original forms), and for a reply its author
/// (its From and its envelope sender). Only these can be bound to a proof.
pub fn claimants(a: &Analysis, sender: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: &str| {
        if let Some(addr) = Address::parse(s).filter(Address::is_address) {
            let k = addr.key();
            if !out.contains(&k) {
                out.push(k);
            }
        }
    };
    for r in a.recipients.iter().take(50) {
        push(&r.address);
        if let Some(o) = &r.original {
            push(o.trim_start_matches("rfc822;").trim());
        }
    }
    if matches!(a.kind, Kind::Autoreply | Kind::Challenge | Kind::Mdn) {
        if let Some(f) = &a.from {
            push(f);
        }
        if let Some(s) = sender {
            push(s);
        }
    }
    out
}

fn bounce_like(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Bounce | Kind::Delay | Kind::Delivery | Kind::VirusNotice
    )
}

pub fn gather(
    a: &Analysis,
    sender: Option<&str>,
    rcpts: &[RcptTag<'_>],
    ctx: &Context<'_>,
) -> Evidence {
    let cfg = ctx.config;
    let b = &cfg.batv;
    let ours: Vec<&RcptTag<'_>> = rcpts
        .iter()
        .filter(|r| b.is_our_domain(r.address.domain()))
        .collect();
    // A valid tag vouches only for its own recipient: all of ours must carry one.
    let valid_tag = !ours.is_empty() && ours.iter().all(|r| matches!(r.tag, Some(Ok(_))));
    let bad_tag = rcpts.iter().find_map(|r| match r.tag {
        Some(Err(e)) => Some(e.label()),
        _ => None,
    });
    let claimants = claimants(a, sender);
    let exempt_destination = claimants.iter().any(|c| {
        b.exempt_recipients.contains(c)
            || Address::parse(c).is_some_and(|addr| {
                b.exempt_recipient_domains
                    .iter()
                    .any(|e| addr.domain() == e || addr.domain().ends_with(&format!(".{e}")))
            })
    });
    // `untagged` counts only against senders we tag, for destinations we tag for.
    let untagged = b.enabled()
        && !exempt_destination
        && ours
            .iter()
            .any(|r| r.tag.is_none() && !b.exempt_senders.contains(&r.address.key()));
    let o = &a.original;
    let fields = signature::Fields {
        message_id: o.message_id.as_deref().unwrap_or(""),
        date: o.date.as_deref().unwrap_or(""),
        from: o.from.as_deref().unwrap_or(""),
    };
    let mut signature_replayed = false;
    let our_signature = ctx.keys.is_some_and(|keys| {
        o.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&cfg.verdict.signature_header))
            .take(10)
            .any(|(_, v)| {
                match signature::verify(
                    keys,
                    v,
                    &fields,
                    &claimants,
                    ctx.today,
                    cfg.verdict.legacy_signature_until,
                ) {
                    signature::Check::Valid => true,
                    signature::Check::OtherRecipient | signature::Check::Legacy => {
                        signature_replayed = true;
                        false
                    }
                    _ => false,
                }
            })
    });
    // The ledger: the returned original's Message-ID (or, for a reply, the one it
    // answers) sent by us, to one of the claimants, and for a bounce by the
    // recipient the bounce is addressed to.
    let plains: Vec<Address> = ours.iter().map(|r| r.plain()).collect();
    let entries: Vec<crate::ledger::Entry> = ctx.ledger.map_or_else(Vec::new, |l| {
        o.message_id
            .iter()
            .chain(a.replied_to.iter())
            .take(20)
            .filter_map(|id| l.lookup(id, ctx.now))
            .collect()
    });
    let to_sender = |e: &crate::ledger::Entry| plains.iter().any(|p| e.sent_by(&p.key()));
    let ledger_hit = entries
        .iter()
        .any(|e| claimants.iter().any(|c| e.has_rcpt(c)) && (!bounce_like(a.kind) || to_sender(e)));
    let ledger_unbound = !ledger_hit
        && claimants.is_empty()
        && o.message_id.is_some()
        && entries.iter().any(to_sender);
    let original_sender_tagged = ctx.keys.is_some_and(|keys| {
        o.return_path.as_deref().is_some_and(|rp| {
            Address::parse(rp).is_some_and(|addr| {
                b.is_our_domain(addr.domain())
                    && batv::verify(keys, &addr.to_string(), ctx.today, b.lifetime_days).is_ok()
            })
        })
    });
    let our_relay = o
        .received
        .first()
        .is_some_and(|r| received_is_ours(r, &cfg.verdict.our_relay_networks));
    let signing_mature = b
        .signing_since
        .is_none_or(|since| ctx.today >= since + i64::from(b.lifetime_days));
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
        signature_replayed,
        ledger_unbound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_remote_written_client_address_counts() {
        let nets: Vec<Cidr> = vec!["198.51.100.0/24".parse().unwrap()];
        assert!(received_is_ours(
            "from mail.example.org (mail.example.org [198.51.100.25]) by mx.remote.example (Postfix) with ESMTPS id 1",
            &nets
        ));
        // A HELO or reverse-DNS name of ours proves nothing; nor does an address
        // after `by` or in the date part.
        for forged in [
            "from mx.example.org (mx.example.org [203.0.113.5]) by mx.remote.example",
            "from spam.example ([203.0.113.5]) by [198.51.100.1]; Thu, 1 Jan 2026 [198.51.100.1]",
            "from [198.51.100.1] (unknown [203.0.113.5]) by mx.remote.example",
            "from x.example ([203.0.113.5] helo=[198.51.100.1]) by mx.remote.example",
        ] {
            assert!(!received_is_ours(forged, &nets), "{forged}");
        }
    }
}
