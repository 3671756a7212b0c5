//! RFC 3463 enhanced status codes (`class.subject.detail`) and what the common ones mean.

use std::{fmt, str::FromStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl Status {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    pub fn is_permanent(&self) -> bool {
        self.class == 5
    }

    pub fn is_temporary(&self) -> bool {
        self.class == 4
    }

    /// A summary a reporter writes when the remote's own code says more: x.0.0
    /// (undefined) and x.4.7 (gave up after retrying).
    pub fn is_summary(&self) -> bool {
        matches!((self.subject, self.detail), (0, 0) | (4, 7))
    }

    /// A short human meaning for common codes (RFC 3463, RFC 7372 and Office 365).
    pub fn meaning(&self) -> Option<&'static str> {
        let m = match (self.subject, self.detail) {
            (0, 0) => "other or undefined status",
            (1, 0) => "other address status",
            (1, 1) => "bad destination mailbox",
            (1, 2) => "bad destination system (domain)",
            (1, 3) => "bad destination mailbox address syntax",
            (1, 4) => "ambiguous destination mailbox",
            (1, 6) => "mailbox has moved",
            (1, 7) => "bad sender mailbox syntax",
            (1, 8) => "bad sender system address",
            (1, 10) => "recipient address has null MX",
            (2, 0) => "other mailbox status",
            (2, 1) => "mailbox disabled",
            (2, 2) => "mailbox full",
            (2, 3) => "message too large for mailbox",
            (2, 4) => "mailing list expansion problem",
            (3, 0) => "other mail system status",
            (3, 1) => "mail system full",
            (3, 2) => "system not accepting messages",
            (3, 4) => "message too big for system",
            (3, 5) => "system incorrectly configured",
            (4, 0) => "other network or routing status",
            (4, 1) => "no answer from host",
            (4, 2) => "bad connection",
            (4, 3) => "directory server failure",
            (4, 4) => "unable to route",
            (4, 6) => "routing loop detected",
            (4, 7) => "delivery time expired",
            (5, 0) => "other protocol status",
            (5, 1) => "invalid command",
            (5, 2) => "syntax error",
            (5, 3) => "too many recipients",
            (6, 0) => "other media error",
            (6, 1) => "media not supported",
            (7, 0) => "other security or policy status",
            (7, 1) => "delivery not authorized, message refused",
            (7, 7) => "message integrity failure",
            (7, 8) => "authentication credentials invalid",
            (7, 9) => "authentication mechanism is too weak",
            (7, 23) => "SPF validation failed",
            (7, 24) => "SPF validation error",
            (7, 25) => "reverse DNS validation failed",
            (7, 26) => "multiple authentication checks failed",
            (7, 27) => "sender address has null MX",
            (7, 509) => "Office 365: sender domain fails DMARC",
            (7, 606) | (7, 607) | (7, 608) => "Office 365: sending IP on a block list",
            (7, 708) => "Office 365: sending IP has a poor reputation",
            (4, 316) => "Office 365: message expired (no connection to remote server)",
            (7, 133) | (7, 134) | (7, 135) | (7, 136) => {
                "Office 365: sender not allowed to send to this group"
            }
            _ => return None,
        };
        Some(m)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl FromStr for Status {
    type Err = ();

    /// Parses `x.y.z` exactly: class 2, 4 or 5; subject and detail 0-999.
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut it = s.trim().splitn(3, '.');
        let class: u8 = num(it.next().ok_or(())?, 1)?;
        let subject: u16 = num(it.next().ok_or(())?, 3)?;
        let detail: u16 = num(it.next().ok_or(())?, 3)?;
        if !matches!(class, 2 | 4 | 5) {
            return Err(());
        }
        Ok(Self::new(class, subject, detail))
    }
}

fn num<T: FromStr>(s: &str, max_len: usize) -> Result<T, ()> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    s.parse().map_err(|_| ())
}

impl serde::Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_meaning() {
        let s: Status = "5.1.1".parse().unwrap();
        assert_eq!(s, Status::new(5, 1, 1));
        assert_eq!(s.meaning(), Some("bad destination mailbox"));
        assert_eq!(
            "4.4.7".parse::<Status>().unwrap().meaning(),
            Some("delivery time expired")
        );
        assert_eq!(
            "5.7.509".parse::<Status>().unwrap().meaning(),
            Some("Office 365: sender domain fails DMARC")
        );
        assert_eq!("5.2.2".parse::<Status>().unwrap().to_string(), "5.2.2");
        for bad in [
            "", "5.1", "6.1.1", "5.1.1.1", "5.a.1", "5.1.1000", "55.1.1", " . . ",
        ] {
            assert!(bad.parse::<Status>().is_err(), "{bad}");
        }
    }
}
