//! Our signature header on outbound mail: an HMAC over the Message-ID and Date, so a
//! bounce that returns the original (even headers only) proves we sent it, on any
//! server that shares the BATV keys. Stateless: no ledger needed.
//!
//! `X-Backscatter-Sig: v=1; k=K; m=HEX` where HEX is the first 8 bytes (16 hex
//! digits) of HMAC-SHA256(secret K, "bsig1" NUL message-id NUL date), the Message-ID
//! without angle brackets and the Date with runs of whitespace folded to one space.

use crate::batv::Keys;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

fn fold(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn mac(secret: &[u8], message_id: &str, date: &str) -> [u8; 8] {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    m.update(b"bsig1\0");
    m.update(message_id.trim().trim_matches(['<', '>']).as_bytes());
    m.update(b"\0");
    m.update(fold(date).as_bytes());
    let out = m.finalize().into_bytes();
    let mut r = [0u8; 8];
    r.copy_from_slice(&out[..8]);
    r
}

/// The header value for a message with this Message-ID and Date.
pub fn sign(keys: &Keys, message_id: &str, date: &str) -> String {
    let (id, secret) = keys.signing();
    let m = mac(secret, message_id, date);
    let hex: String = m.iter().map(|b| format!("{b:02x}")).collect();
    format!("v=1; k={id}; m={hex}")
}

/// Whether `value` is our valid signature for this Message-ID and Date.
pub fn verify(keys: &Keys, value: &str, message_id: &str, date: &str) -> bool {
    let tag = |t: &str| {
        value.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == t).then(|| v.trim())
        })
    };
    let (Some("1"), Some(k), Some(m)) = (tag("v"), tag("k"), tag("m")) else {
        return false;
    };
    let Some(id) = k.parse::<u8>().ok().filter(|&i| i <= 9) else {
        return false;
    };
    let Some(secret) = keys.get(id) else {
        return false;
    };
    if m.len() != 16 || !m.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let mut got = [0u8; 8];
    for (i, b) in got.iter_mut().enumerate() {
        *b = u8::from_str_radix(&m[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    bool::from(mac(secret, message_id, date).ct_eq(&got))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify() {
        let keys = Keys::parse("3 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
        let v = sign(
            &keys,
            "<abc@example.org>",
            "Thu, 19 Nov 2026 11:39:50 +0100",
        );
        assert!(v.starts_with("v=1; k=3; m="));
        assert!(verify(
            &keys,
            &v,
            "abc@example.org",
            "Thu, 19 Nov 2026\r\n 11:39:50 +0100"
        ));
        assert!(!verify(
            &keys,
            &v,
            "abd@example.org",
            "Thu, 19 Nov 2026 11:39:50 +0100"
        ));
        assert!(!verify(
            &keys,
            &v,
            "abc@example.org",
            "Thu, 19 Nov 2026 11:39:51 +0100"
        ));
        assert!(!verify(&keys, "v=1; k=3; m=zz", "abc@example.org", ""));
        assert!(!verify(
            &keys,
            "v=1; k=4; m=0011223344556677",
            "abc@example.org",
            ""
        ));
        assert!(!verify(&keys, "garbage", "", ""));
    }
}
