//! Envelope addresses, parsed once at MAIL and RCPT into one normalised form that
//! every check uses (signing, tag verification, our-domain, exemptions, ledger):
//!
//! - one pair of angle brackets and an RFC 5321 source route (`<@a,@b:user@d>`)
//!   removed;
//! - the domain lowercased, a trailing dot removed (`example.org.` is
//!   `example.org`: Postfix strips it and delivers), internationalised names turned
//!   into A-labels (`bücher.example` is `xn--bcher-kva.example`);
//! - the local part kept as written (quotes included), compared without case.
//!
//! An address that does not parse (no `@`, empty parts, over the RFC 5321 sizes)
//! is kept as text but is never one of ours.

use std::fmt;

/// RFC 5321: 64 octets of local part, 255 of domain.
const MAX_LOCAL: usize = 64 * 4;
const MAX_DOMAIN: usize = 255;

/// One envelope address, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Address {
    /// The local part as written (quotes kept), or the whole text when not an address.
    local: String,
    /// Lowercase A-labels without a trailing dot; empty when not an address.
    domain: String,
}

impl Address {
    /// Parses an envelope argument (`<user@example.org.>`, `user@Example.ORG`,
    /// `<@relay:user@d>`). The null sender `<>` gives `None`.
    pub fn parse(arg: &str) -> Option<Self> {
        let s = arg.trim();
        let s = s
            .strip_prefix('<')
            .map(|r| r.strip_suffix('>').unwrap_or(r))
            .unwrap_or(s)
            .trim();
        // Source route: `@a,@b:user@domain`.
        let s = match s.strip_prefix('@') {
            Some(_) => s.split_once(':').map_or(s, |(_, rest)| rest),
            None => s,
        };
        if s.is_empty() {
            return None;
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Some(Self::opaque(s));
        };
        let domain = normalise_domain(domain);
        match domain {
            Some(d) if !local.is_empty() && local.len() <= MAX_LOCAL => Some(Self {
                local: local.to_string(),
                domain: d,
            }),
            _ => Some(Self::opaque(s)),
        }
    }

    fn opaque(s: &str) -> Self {
        Self {
            local: s.to_string(),
            domain: String::new(),
        }
    }

    /// Whether this is `local@domain` (not opaque text).
    pub fn is_address(&self) -> bool {
        !self.domain.is_empty()
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    /// The normalised domain (empty for opaque text).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The whole address lowercased: what comparisons, exemptions and the ledger use.
    pub fn key(&self) -> String {
        self.to_string().to_lowercase()
    }

    /// The same local part with another domain-normalised form: the plain address
    /// inside a `prvs=` tag, as an `Address`.
    pub fn with_local(&self, local: &str) -> Self {
        Self {
            local: local.to_string(),
            domain: self.domain.clone(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            f.write_str(&self.local)
        } else {
            write!(f, "{}@{}", self.local, self.domain)
        }
    }
}

/// Lowercase A-labels, no trailing dot; `None` when not a domain (or an address
/// literal, which is never one of ours but still parses).
pub fn normalise_domain(d: &str) -> Option<String> {
    let d = d.trim().strip_suffix('.').unwrap_or(d.trim());
    if d.is_empty() || d.len() > MAX_DOMAIN * 4 || d.ends_with('.') {
        return None;
    }
    if d.starts_with('[') {
        return d.ends_with(']').then(|| d.to_ascii_lowercase());
    }
    let ascii = if d.is_ascii() {
        d.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(d).ok()?
    };
    (!ascii.is_empty() && ascii.len() <= MAX_DOMAIN && !ascii.contains(['@', ' ', '\t']))
        .then_some(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_forms() {
        let a = Address::parse("<Bob@Example.ORG.>").unwrap();
        assert_eq!((a.local(), a.domain()), ("Bob", "example.org"));
        assert_eq!(a.to_string(), "Bob@example.org");
        assert_eq!(a.key(), "bob@example.org");
        let a = Address::parse("<@relay.example,@b.example:user@d.example>").unwrap();
        assert_eq!(a.to_string(), "user@d.example");
        let a = Address::parse("\"john doe\"@bücher.example").unwrap();
        assert_eq!(a.to_string(), "\"john doe\"@xn--bcher-kva.example");
        assert_eq!(Address::parse("<>"), None);
        assert_eq!(Address::parse("  "), None);
        for bad in ["postmaster", "@example.org", "a@", "a@b..", "a@.", "a@b c"] {
            let a = Address::parse(bad).unwrap();
            assert!(!a.is_address(), "{bad}");
            assert_eq!(a.domain(), "");
        }
        assert_eq!(
            Address::parse("x@[192.0.2.1]").unwrap().domain(),
            "[192.0.2.1]"
        );
    }
}
