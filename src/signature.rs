//! Our signature header on outbound mail, so a bounce or auto-reply that returns the
//! original (even headers only) proves we sent it, on any server that shares the
//! BATV keys. Stateless: no ledger needed.
//!
//! Version 2 (written): `X-Backscatter-Sig: v=2; k=K; e=DAY; r=TOKENS; m=HEX`
//! - `e`: the last day (days since 1970) the signature counts: the signing day plus
//!   the tag lifetime plus the ledger's grace days;
//! - `r`: one 4-byte token per recipient of the message (at most
//!   [`MAX_RECIPIENTS`]), base64 without padding: the first 4 bytes of
//!   HMAC-SHA256(K, "bsig2r" NUL message-id NUL recipient-lowercased). Tokens reveal
//!   nothing about the recipients to whoever reads the header;
//! - `m`: the first 8 bytes of HMAC-SHA256(K, "bsig2" NUL e NUL message-id NUL date
//!   NUL from-address NUL r), so none of the parts can be swapped.
//!
//! A signature vouches only for the message it was made for and only for one of its
//! recipients: a returned original carrying it counts as ours when the failed
//! recipient (or the auto-replier) is one of the recipients it was made for, and
//! only until day `e`. Copying a signed header set from a list archive into spam
//! therefore proves nothing for the spam's recipients.
//!
//! Version 1 (`v=1; k=K; m=HEX`, an HMAC over Message-ID and Date only, no expiry,
//! no recipients) is no longer written; it is verified only while
//! `[verdict] legacy_signature_until` is set and not past (the migration window).

use crate::batv::Keys;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Most recipients a signature carries tokens for; mail to more is not signed (the
/// ledger covers it).
pub const MAX_RECIPIENTS: usize = 50;
const TOKEN: usize = 4;

/// The message fields a signature covers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    pub message_id: &'a str,
    pub date: &'a str,
    /// The From header's address.
    pub from: &'a str,
}

fn fold(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn id(s: &str) -> &str {
    s.trim().trim_matches(['<', '>']).trim()
}

fn hmac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("any key length")
}

fn token(secret: &[u8], message_id: &str, rcpt: &str) -> [u8; TOKEN] {
    let mut m = hmac(secret);
    m.update(b"bsig2r\0");
    m.update(id(message_id).as_bytes());
    m.update(b"\0");
    m.update(rcpt.trim().to_lowercase().as_bytes());
    let out = m.finalize().into_bytes();
    let mut t = [0u8; TOKEN];
    t.copy_from_slice(&out[..TOKEN]);
    t
}

fn mac2(secret: &[u8], expiry: i64, f: &Fields<'_>, r: &str) -> [u8; 8] {
    let mut m = hmac(secret);
    m.update(b"bsig2\0");
    m.update(expiry.to_string().as_bytes());
    for part in [
        id(f.message_id),
        &fold(f.date),
        &f.from.trim().to_lowercase(),
        r,
    ] {
        m.update(b"\0");
        m.update(part.as_bytes());
    }
    let out = m.finalize().into_bytes();
    let mut r = [0u8; 8];
    r.copy_from_slice(&out[..8]);
    r
}

fn mac1(secret: &[u8], message_id: &str, date: &str) -> [u8; 8] {
    let mut m = hmac(secret);
    m.update(b"bsig1\0");
    m.update(id(message_id).as_bytes());
    m.update(b"\0");
    m.update(fold(date).as_bytes());
    let out = m.finalize().into_bytes();
    let mut r = [0u8; 8];
    r.copy_from_slice(&out[..8]);
    r
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex8(s: &str) -> Option<[u8; 8]> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut got = [0u8; 8];
    for (i, b) in got.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(got)
}

/// The header value for a message with these fields and recipients, valid until day
/// `expiry`; `None` when there are no recipients or more than [`MAX_RECIPIENTS`].
pub fn sign(keys: &Keys, f: &Fields<'_>, recipients: &[String], expiry: i64) -> Option<String> {
    if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
        return None;
    }
    let (k, secret) = keys.signing();
    let mut raw = Vec::with_capacity(recipients.len() * TOKEN);
    for r in recipients {
        raw.extend_from_slice(&token(secret, f.message_id, r));
    }
    let r = base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw);
    let m = mac2(secret, expiry, f, &r);
    Some(format!("v=2; k={k}; e={expiry}; r={r}; m={}", hex(&m)))
}

fn tag<'a>(value: &'a str, t: &str) -> Option<&'a str> {
    value.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == t).then(|| v.trim())
    })
}

/// What a signature header proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Ours, for this message, unexpired, and made for one of the claimants.
    Valid,
    /// Ours for this message, but made for none of the claimants (a replay).
    OtherRecipient,
    /// Ours for this message, but past its last day.
    Expired,
    /// A version 1 signature outside the migration window.
    Legacy,
    /// Not ours, or not for this message.
    Invalid,
}

/// Checks `value` against the returned original's fields. `claimants` are the
/// addresses the bounce or auto-reply speaks for (failed recipients, the replier);
/// `today` in days since 1970; `legacy_until` the last day v1 still counts.
pub fn verify(
    keys: &Keys,
    value: &str,
    f: &Fields<'_>,
    claimants: &[String],
    today: i64,
    legacy_until: Option<i64>,
) -> Check {
    let Some(secret) = tag(value, "k")
        .and_then(|k| k.parse::<u8>().ok())
        .filter(|&i| i <= 9)
        .and_then(|i| keys.get(i))
    else {
        return Check::Invalid;
    };
    let Some(m) = tag(value, "m").and_then(unhex8) else {
        return Check::Invalid;
    };
    match tag(value, "v") {
        Some("1") => {
            if !bool::from(mac1(secret, f.message_id, f.date).ct_eq(&m)) {
                Check::Invalid
            } else if legacy_until.is_some_and(|d| today <= d) {
                Check::Valid
            } else {
                Check::Legacy
            }
        }
        Some("2") => {
            let (Some(e), Some(r)) = (
                tag(value, "e").and_then(|e| e.parse().ok()),
                tag(value, "r"),
            ) else {
                return Check::Invalid;
            };
            if !bool::from(mac2(secret, e, f, r).ct_eq(&m)) {
                return Check::Invalid;
            }
            if today > e {
                return Check::Expired;
            }
            let Ok(raw) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(r) else {
                return Check::Invalid;
            };
            let ours = claimants.iter().any(|c| {
                let t = token(secret, f.message_id, c);
                raw.chunks_exact(TOKEN)
                    .fold(false, |hit, chunk| hit | bool::from(chunk.ct_eq(&t)))
            });
            if ours {
                Check::Valid
            } else {
                Check::OtherRecipient
            }
        }
        _ => Check::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::parse("3 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap()
    }

    const F: Fields<'static> = Fields {
        message_id: "<abc@example.org>",
        date: "Thu, 19 Nov 2026 11:39:50 +0100",
        from: "alice@example.org",
    };

    #[test]
    fn bound_to_message_recipient_and_lifetime() {
        let k = keys();
        let rcpts = vec![
            "bob@remote.example".to_string(),
            "Carol@Other.example".into(),
        ];
        let v = sign(&k, &F, &rcpts, 20_100).unwrap();
        assert!(v.starts_with("v=2; k=3; e=20100; r="), "{v}");
        let bob = ["bob@remote.example".to_string()];
        let carol = ["carol@other.example".to_string()];
        let mallory = ["victim@spam.example".to_string()];
        assert_eq!(verify(&k, &v, &F, &bob, 20_000, None), Check::Valid);
        assert_eq!(verify(&k, &v, &F, &carol, 20_100, None), Check::Valid);
        // Folding in the Date does not matter.
        let folded = Fields {
            date: "Thu, 19 Nov 2026\r\n 11:39:50 +0100",
            message_id: "abc@example.org",
            ..F
        };
        assert_eq!(verify(&k, &v, &folded, &bob, 20_000, None), Check::Valid);
        // Replayed for another recipient, after its last day, on another message.
        assert_eq!(
            verify(&k, &v, &F, &mallory, 20_000, None),
            Check::OtherRecipient
        );
        assert_eq!(verify(&k, &v, &F, &bob, 20_101, None), Check::Expired);
        for other in [
            Fields {
                message_id: "<abd@example.org>",
                ..F
            },
            Fields {
                from: "eve@example.org",
                ..F
            },
        ] {
            assert_eq!(verify(&k, &v, &other, &bob, 20_000, None), Check::Invalid);
        }
        // The expiry cannot be moved, nor tokens swapped in.
        let later = v.replace("e=20100", "e=29100");
        assert_eq!(verify(&k, &later, &F, &bob, 20_000, None), Check::Invalid);
        assert_eq!(verify(&k, "garbage", &F, &bob, 0, None), Check::Invalid);
        assert_eq!(
            verify(
                &k,
                "v=2; k=4; e=1; r=; m=0011223344556677",
                &F,
                &bob,
                0,
                None
            ),
            Check::Invalid
        );
        // Too many recipients: no signature.
        let many: Vec<String> = (0..=MAX_RECIPIENTS)
            .map(|i| format!("r{i}@x.example"))
            .collect();
        assert!(sign(&k, &F, &many, 1).is_none());
    }

    #[test]
    fn version_1_only_in_the_migration_window() {
        let k = keys();
        let (id, secret) = k.signing();
        let v1 = format!(
            "v=1; k={id}; m={}",
            hex(&mac1(secret, F.message_id, F.date))
        );
        let anyone = ["victim@spam.example".to_string()];
        assert_eq!(verify(&k, &v1, &F, &anyone, 20_000, None), Check::Legacy);
        assert_eq!(
            verify(&k, &v1, &F, &anyone, 20_000, Some(20_000)),
            Check::Valid
        );
        assert_eq!(
            verify(&k, &v1, &F, &anyone, 20_001, Some(20_000)),
            Check::Legacy
        );
    }
}
