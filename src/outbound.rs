//! Which mail is ours to sign, and with what envelope sender (pure).

use crate::{
    batv::{self, Keys},
    config::BatvConfig,
};
use std::net::IpAddr;

/// Where a message came from, as the MTA told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// `{auth_authen}` was set: the client authenticated.
    pub authenticated: bool,
    pub client_addr: Option<IpAddr>,
    /// `{daemon_name}`, Postfix's service name (`ORIGINATING` on submission, say).
    pub daemon_name: Option<String>,
    /// Submitted locally (Postfix `sendmail`, through `non_smtpd_milters`).
    pub local_submission: bool,
}

/// The decision for one message's envelope sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// Rewrite the envelope sender to this tagged address.
    Sign(String),
    /// Leave it alone, and why (a closed set, usable as a metric label).
    Skip(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// No sign_domains configured.
    Disabled,
    /// Not authenticated, not trusted, not a signing service.
    NotOriginating,
    NullSender,
    AlreadyTagged,
    Srs,
    ForeignDomain,
    ExemptSender,
    ExemptRecipient,
    Unsignable,
}

impl SkipReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::NotOriginating => "not_originating",
            Self::NullSender => "null_sender",
            Self::AlreadyTagged => "already_tagged",
            Self::Srs => "srs",
            Self::ForeignDomain => "foreign_domain",
            Self::ExemptSender => "exempt_sender",
            Self::ExemptRecipient => "exempt_recipient",
            Self::Unsignable => "unsignable",
        }
    }
}

/// Whether the origin makes this message ours (outbound).
pub fn is_originating(cfg: &BatvConfig, origin: &Origin) -> bool {
    origin.authenticated
        || (origin.local_submission && cfg.sign_local_submission)
        || origin
            .client_addr
            .is_some_and(|ip| cfg.trusted_networks.iter().any(|n| n.contains(ip)))
        || origin
            .daemon_name
            .as_deref()
            .is_some_and(|d| cfg.sign_daemon_names.iter().any(|n| n == d))
}

/// Whether a message is ours going out: originating, unless it is null-sender mail
/// from one of `batv.inbound_relays` (a backup MX, a content filter) to one of our
/// domains: a bounce they pass on to us, judged as inbound.
pub fn is_outbound<'a>(
    cfg: &BatvConfig,
    origin: &Origin,
    sender: &str,
    mut rcpts: impl Iterator<Item = &'a str>,
) -> bool {
    let relayed_bounce = sender.is_empty()
        && origin
            .client_addr
            .is_some_and(|ip| cfg.inbound_relays.iter().any(|n| n.contains(ip)))
        && rcpts.any(|r| domain_of(r).is_some_and(|d| cfg.is_our_domain(&d)));
    is_originating(cfg, origin) && !relayed_bounce
}

/// The normalised domain of an address (lowercase, no trailing dot, A-labels).
fn domain_of(addr: &str) -> Option<String> {
    crate::address::Address::parse(addr)
        .filter(crate::address::Address::is_address)
        .map(|a| a.domain().to_string())
}

/// Decides whether to sign `sender` (without angle brackets) for `recipients`.
pub fn decide(
    cfg: &BatvConfig,
    keys: Option<&Keys>,
    origin: &Origin,
    sender: &str,
    recipients: &[String],
    today: i64,
) -> Signing {
    use SkipReason::*;
    let Some(keys) = keys.filter(|_| cfg.enabled()) else {
        return Signing::Skip(Disabled);
    };
    if sender.is_empty() {
        return Signing::Skip(NullSender);
    }
    if !is_originating(cfg, origin) {
        return Signing::Skip(NotOriginating);
    }
    let lower = sender.to_ascii_lowercase();
    if batv::is_tagged(&lower) {
        return Signing::Skip(AlreadyTagged);
    }
    if lower.starts_with("srs0=") || lower.starts_with("srs1=") {
        return Signing::Skip(Srs);
    }
    match domain_of(&lower) {
        Some(d) if cfg.is_our_domain(&d) => {}
        _ => return Signing::Skip(ForeignDomain),
    }
    if cfg.exempt_senders.contains(&lower) {
        return Signing::Skip(ExemptSender);
    }
    let exempt_rcpt = recipients.iter().any(|r| {
        let r = r.to_ascii_lowercase();
        cfg.exempt_recipients.contains(&r)
            || domain_of(&r).is_some_and(|d| {
                cfg.exempt_recipient_domains
                    .iter()
                    .any(|e| d == *e || d.ends_with(&format!(".{e}")))
            })
    });
    if exempt_rcpt {
        return Signing::Skip(ExemptRecipient);
    }
    match batv::sign(keys, sender, today, cfg.lifetime_days) {
        Ok(tagged) => Signing::Sign(tagged),
        Err(_) => Signing::Skip(Unsignable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg() -> BatvConfig {
        Config::parse(
            r#"[batv]
sign_domains = ["example.org"]
trusted_networks = ["192.0.2.0/24"]
exempt_senders = ["noreply@example.org"]
exempt_recipients = ["list@lists.example.net"]
exempt_recipient_domains = ["partner.example"]
"#,
            "t",
        )
        .unwrap()
        .batv
    }

    fn keys() -> Keys {
        Keys::parse("1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap()
    }

    fn trusted() -> Origin {
        Origin {
            client_addr: Some("192.0.2.5".parse().unwrap()),
            ..Default::default()
        }
    }

    fn d(origin: &Origin, sender: &str, rcpt: &str) -> Signing {
        decide(
            &cfg(),
            Some(&keys()),
            origin,
            sender,
            &[rcpt.to_string()],
            20000,
        )
    }

    #[test]
    fn signs_originating_mail_of_our_domains() {
        let Signing::Sign(t) = d(&trusted(), "user@example.org", "x@remote.example") else {
            panic!("not signed");
        };
        assert!(batv::verify(&keys(), &t, 20000, 7).is_ok());
        let auth = Origin {
            authenticated: true,
            client_addr: Some("203.0.113.9".parse().unwrap()),
            ..Default::default()
        };
        assert!(matches!(
            d(&auth, "user@example.org", "x@r.example"),
            Signing::Sign(_)
        ));
        let submission = Origin {
            daemon_name: Some("ORIGINATING".into()),
            ..Default::default()
        };
        assert!(matches!(
            d(&submission, "user@example.org", "x@r.example"),
            Signing::Sign(_)
        ));
    }

    #[test]
    fn inbound_relays_pass_bounces_to_us_as_inbound() {
        let mut c = cfg();
        c.inbound_relays = vec!["192.0.2.5/32".parse().unwrap()];
        let relay = trusted();
        let ours = ["User@Example.org"];
        // A bounce the relay passes on to one of our domains: inbound.
        assert!(!is_outbound(&c, &relay, "", ours.into_iter()));
        // Everything else from it is still ours going out.
        assert!(is_outbound(
            &c,
            &relay,
            "user@example.org",
            ours.into_iter()
        ));
        assert!(is_outbound(
            &c,
            &relay,
            "",
            ["x@remote.example"].into_iter()
        ));
        // Without inbound_relays, a trusted client's bounce is outbound (unjudged).
        assert!(is_outbound(&cfg(), &relay, "", ours.into_iter()));
        // An authenticated relay's bounce to us is inbound too; a stranger's always.
        let stranger = Origin {
            client_addr: Some("203.0.113.9".parse().unwrap()),
            ..Default::default()
        };
        assert!(!is_outbound(&c, &stranger, "", ours.into_iter()));
    }

    #[test]
    fn skips_with_reasons() {
        use SkipReason::*;
        let stranger = Origin {
            client_addr: Some("203.0.113.9".parse().unwrap()),
            ..Default::default()
        };
        let t = trusted();
        assert_eq!(
            d(&stranger, "user@example.org", "x@r.example"),
            Signing::Skip(NotOriginating)
        );
        assert_eq!(d(&t, "", "x@r.example"), Signing::Skip(NullSender));
        assert_eq!(
            d(&t, "prvs=1234abcdef=user@example.org", "x@r.example"),
            Signing::Skip(AlreadyTagged)
        );
        assert_eq!(
            d(
                &t,
                "SRS0=abcd=xx=other.example=u@example.org",
                "x@r.example"
            ),
            Signing::Skip(Srs)
        );
        assert_eq!(
            d(&t, "user@other.example", "x@r.example"),
            Signing::Skip(ForeignDomain)
        );
        assert_eq!(
            d(&t, "NoReply@example.org", "x@r.example"),
            Signing::Skip(ExemptSender)
        );
        assert_eq!(
            d(&t, "user@example.org", "List@lists.example.net"),
            Signing::Skip(ExemptRecipient)
        );
        assert_eq!(
            d(&t, "user@example.org", "a@mx.partner.example"),
            Signing::Skip(ExemptRecipient)
        );
        assert_eq!(
            decide(&cfg(), None, &t, "user@example.org", &[], 0),
            Signing::Skip(Disabled)
        );
    }
}
