//! BATV tags: `prvs=KDDDSSSSSS=local@domain`.
//!
//! - `K`: key id, one digit, picks the secret;
//! - `DDD`: expiry day, (days since 1970-01-01 UTC on the signing day + lifetime) mod 1000;
//! - `SSSSSS`: the first 3 bytes, lowercase hex, of
//!   HMAC-SHA256(secret, "K" + "DDD" + the original address lowercased).
//!
//! A tag is valid iff its MAC matches under key K and (DDD - today) mod 1000 <= lifetime.
//! Everything here is pure: the day is a parameter, only the milter reads the clock.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::{fmt, path::Path};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Longest address we sign or check (RFC 5321: 64 local + 255 domain, plus room).
const MAX_ADDRESS_LEN: usize = 512;
const MIN_SECRET_LEN: usize = 16;

/// The secrets. The first key signs; every key verifies. Never printed.
#[derive(Clone, Default)]
pub struct Keys {
    /// The secrets are wiped from memory when the keys are dropped.
    keys: Vec<(u8, Zeroizing<Vec<u8>>)>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("Keys")
            .field("ids", &ids)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("cannot read key file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "key file {path} is readable or writable by group or others (mode {mode:04o}); run chmod 600 {path}"
    )]
    Permissions { path: String, mode: u32 },
    #[error("key file line {line}: {problem}")]
    Line { line: usize, problem: &'static str },
    #[error("key file has no keys")]
    Empty,
}

impl Keys {
    /// Parses `K base64-secret` lines; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        use base64::Engine as _;
        let mut keys: Vec<(u8, Zeroizing<Vec<u8>>)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |problem| KeyError::Line {
                line: n + 1,
                problem,
            };
            let mut fields = line.split_whitespace();
            let (Some(id), Some(secret), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(err("expected 'K base64-secret'"));
            };
            let id = match id.as_bytes() {
                [d @ b'0'..=b'9'] => d - b'0',
                _ => return Err(err("the key id must be one digit 0-9")),
            };
            let secret = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(secret)
                    .map_err(|_| err("the secret is not valid base64"))?,
            );
            if secret.len() < MIN_SECRET_LEN {
                return Err(err("the secret must be at least 16 bytes"));
            }
            if keys.iter().any(|(k, _)| *k == id) {
                return Err(err("duplicate key id"));
            }
            keys.push((id, secret));
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// Reads a key file, refusing one that group or others may read or write.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let p = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| KeyError::Read {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o066 != 0 {
            return Err(KeyError::Permissions { path: p, mode });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| KeyError::Read {
            path: p,
            reason: e.to_string(),
        })?);
        Self::parse(&text)
    }

    /// The key ids, signing key first.
    pub fn ids(&self) -> Vec<u8> {
        self.keys.iter().map(|(id, _)| *id).collect()
    }

    /// The signing key: its id and secret.
    pub(crate) fn signing(&self) -> (u8, &[u8]) {
        let (id, secret) = self.keys.first().expect("Keys is never empty");
        (*id, secret.as_slice())
    }

    pub(crate) fn get(&self, id: u8) -> Option<&[u8]> {
        self.keys
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, s)| s.as_slice())
    }
}

/// A fresh key line `K base64-secret` from 32 bytes of the system's randomness.
pub fn keygen(id: u8) -> std::io::Result<String> {
    use base64::Engine as _;
    use std::io::Read;
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(format!(
        "{id} {}",
        base64::engine::general_purpose::STANDARD.encode(secret)
    ))
}

/// Why an address cannot be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("not an address (local@domain)")]
    NotAnAddress,
    #[error("address is too long")]
    TooLong,
    #[error("address is already tagged")]
    AlreadyTagged,
}

/// Why a tag does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("address carries no prvs tag")]
    NotTagged,
    #[error("malformed tag")]
    Malformed,
    #[error("unknown key id {0}")]
    UnknownKey(u8),
    #[error("bad signature")]
    BadMac,
    #[error("tag expired")]
    Expired,
}

impl TagError {
    /// A short name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotTagged => "missing",
            Self::Malformed => "malformed",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadMac => "bad_mac",
            Self::Expired => "expired",
        }
    }
}

/// A tag that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The address without the tag, as it appeared (case kept).
    pub plain: String,
    pub key_id: u8,
    /// The expiry day, mod 1000.
    pub expiry: u16,
}

/// The parts of a `prvs=` address, parsed but not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag<'a> {
    pub key_id: u8,
    pub day: u16,
    pub mac: [u8; 3],
    pub plain: &'a str,
}

/// Days since 1970-01-01 for a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD` into days since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    (1..=days_in_month)
        .contains(&d)
        .then(|| days_from_civil(y, m, d))
}

/// Today, in days since 1970-01-01 UTC, from the system clock.
pub fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i64
}

fn mac(secret: &[u8], key_id: u8, day: u16, address: &str) -> [u8; 3] {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(&[b'0' + key_id]);
    m.update(format!("{day:03}").as_bytes());
    m.update(address.to_lowercase().as_bytes());
    let out = m.finalize().into_bytes();
    [out[0], out[1], out[2]]
}

fn split_address(addr: &str) -> Option<(&str, &str)> {
    let (local, domain) = addr.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then_some((local, domain))
}

/// Whether the address's local part starts with a BATV `prvs=` tag (any case).
pub fn is_tagged(addr: &str) -> bool {
    addr.get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("prvs="))
}

/// Tags `addr` with the signing key, signed on day `today` (days since 1970).
pub fn sign(keys: &Keys, addr: &str, today: i64, lifetime_days: u16) -> Result<String, SignError> {
    // The tagged form (16 bytes longer: "prvs=KDDDSSSSSS=") must still parse.
    if addr.len() + 16 > MAX_ADDRESS_LEN {
        return Err(SignError::TooLong);
    }
    split_address(addr).ok_or(SignError::NotAnAddress)?;
    if is_tagged(addr) {
        return Err(SignError::AlreadyTagged);
    }
    let (id, secret) = keys.keys.first().expect("Keys is never empty");
    let day = (today + i64::from(lifetime_days)).rem_euclid(1000) as u16;
    let m = mac(secret, *id, day, addr);
    Ok(format!(
        "prvs={id}{day:03}{:02x}{:02x}{:02x}={addr}",
        m[0], m[1], m[2]
    ))
}

/// Splits a `prvs=` address into its parts without checking the MAC.
pub fn parse(addr: &str) -> Result<Tag<'_>, TagError> {
    if !is_tagged(addr) {
        return Err(TagError::NotTagged);
    }
    if addr.len() > MAX_ADDRESS_LEN {
        return Err(TagError::Malformed);
    }
    let rest = &addr[5..];
    let (tag, plain) = rest.split_once('=').ok_or(TagError::Malformed)?;
    let t = tag.as_bytes();
    if t.len() != 10 || !t[..4].iter().all(u8::is_ascii_digit) {
        return Err(TagError::Malformed);
    }
    let mut mac = [0u8; 3];
    for (i, byte) in mac.iter_mut().enumerate() {
        let hex = std::str::from_utf8(&t[4 + 2 * i..6 + 2 * i]).map_err(|_| TagError::Malformed)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TagError::Malformed);
        }
        *byte = u8::from_str_radix(hex, 16).map_err(|_| TagError::Malformed)?;
    }
    split_address(plain).ok_or(TagError::Malformed)?;
    Ok(Tag {
        key_id: t[0] - b'0',
        day: (u16::from(t[1] - b'0') * 100) + u16::from(t[2] - b'0') * 10 + u16::from(t[3] - b'0'),
        mac,
        plain,
    })
}

/// Checks a tagged address on day `today`. The MAC is compared in constant time.
pub fn verify(
    keys: &Keys,
    addr: &str,
    today: i64,
    lifetime_days: u16,
) -> Result<Verified, TagError> {
    let tag = parse(addr)?;
    let secret = keys
        .get(tag.key_id)
        .ok_or(TagError::UnknownKey(tag.key_id))?;
    let expected = mac(secret, tag.key_id, tag.day, tag.plain);
    if !bool::from(expected.ct_eq(&tag.mac)) {
        return Err(TagError::BadMac);
    }
    let left = (i64::from(tag.day) - today).rem_euclid(1000);
    if left > i64::from(lifetime_days) {
        return Err(TagError::Expired);
    }
    Ok(Verified {
        plain: tag.plain.to_string(),
        key_id: tag.key_id,
        expiry: tag.day,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Key 1: base64 of the ASCII bytes "0123456789abcdef0123456789abcdef".
    const KEYS: &str = "# test keys\n1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n\
                        2 c2Vjb25kLWtleS1zZWNvbmQta2V5IQ==  # older\n";

    fn keys() -> Keys {
        Keys::parse(KEYS).unwrap()
    }

    /// Known answers from an independent implementation, Python's hmac:
    /// python3 -c 'import hmac,hashlib;k=b"0123456789abcdef0123456789abcdef";
    ///   print(hmac.new(k,b"1"+b"%03d"%((20417+7)%1000)+b"user@example.org",hashlib.sha256).hexdigest()[:6])'
    /// (2025-11-25 is day 20417 since 1970).
    #[test]
    fn known_answers() {
        assert_eq!(parse_date("2025-11-25"), Some(20417));
        let k = keys();
        assert_eq!(
            sign(&k, "user@example.org", 20417, 7).unwrap(),
            format!("prvs=1424{}=user@example.org", KAT_USER)
        );
        assert_eq!(
            sign(&k, "John.Doe@Example.ORG", 20994, 7).unwrap(),
            format!("prvs=1001{}=John.Doe@Example.ORG", KAT_JOHN)
        );
    }
    /// `..."1"+b"424"+b"user@example.org"...` -> 04e546;
    /// `..."1"+b"001"+"John.Doe@Example.ORG".lower().encode()...` -> 217c0b.
    const KAT_USER: &str = "04e546";
    const KAT_JOHN: &str = "217c0b";

    #[test]
    fn round_trip_and_rotation() {
        let k = keys();
        let t = sign(&k, "a@b.example", 20000, 7).unwrap();
        let v = verify(&k, &t, 20000, 7).unwrap();
        assert_eq!(v.plain, "a@b.example");
        assert_eq!(v.key_id, 1);
        // An old key still verifies after rotation puts a new one first.
        let rotated =
            Keys::parse("3 bmV3LWtleS1uZXcta2V5LW5ldyE=\n2 c2Vjb25kLWtleS1zZWNvbmQta2V5IQ==\n")
                .unwrap();
        let old_only = Keys::parse("2 c2Vjb25kLWtleS1zZWNvbmQta2V5IQ==\n").unwrap();
        let t2 = sign(&old_only, "a@b.example", 20000, 7).unwrap();
        assert_eq!(verify(&rotated, &t2, 20001, 7).unwrap().key_id, 2);
        assert_eq!(
            verify(
                &old_only,
                &sign(&rotated, "a@b.example", 20000, 7).unwrap(),
                20000,
                7
            ),
            Err(TagError::UnknownKey(3))
        );
    }

    #[test]
    fn expiry_and_day_wrap() {
        let k = keys();
        // Signed on day 995 with lifetime 7: expiry day 2 (wrapped past 999).
        let t = sign(&k, "x@y.example", 995, 7).unwrap();
        assert!(t.starts_with("prvs=1002"), "{t}");
        for day in 995..=1002 {
            assert!(verify(&k, &t, day, 7).is_ok(), "day {day}");
        }
        assert_eq!(verify(&k, &t, 1003, 7), Err(TagError::Expired));
        assert_eq!(verify(&k, &t, 1500, 7), Err(TagError::Expired));
    }

    #[test]
    fn case_folding() {
        let k = keys();
        let t = sign(&k, "User@Example.org", 20000, 7).unwrap();
        assert!(verify(&k, &t.to_uppercase(), 20000, 7).is_ok());
        assert!(verify(&k, &t.to_lowercase(), 20000, 7).is_ok());
    }

    #[test]
    fn garbage_gives_defined_errors() {
        let k = keys();
        let cases: &[(&str, TagError)] = &[
            ("user@example.org", TagError::NotTagged),
            ("", TagError::NotTagged),
            ("prvs=", TagError::Malformed),
            ("prvs=1234abcdef", TagError::Malformed),
            ("prvs=1234abcdeg=u@d", TagError::Malformed),
            ("prvs=1234abcde=u@d", TagError::Malformed),
            ("prvs=x234abcdef=u@d", TagError::Malformed),
            ("prvs=1234abcdef=@d", TagError::Malformed),
            ("prvs=1234abcdef=u@", TagError::Malformed),
            ("prvs=1234abcdef=nodomain", TagError::Malformed),
            ("prvs=1234äbcdef=u@d", TagError::Malformed),
            ("prvs=12ä4abcdef=u@d", TagError::Malformed),
            ("prvs=9234abcdef=u@d", TagError::UnknownKey(9)),
            ("prvs=1234abcdef=a@b@c", TagError::BadMac),
            ("prvs=1234abcdef=\"quoted local\"@d", TagError::BadMac),
            ("prvs=1234abcdef=üser@dömain", TagError::BadMac),
        ];
        for (input, want) in cases {
            assert_eq!(verify(&k, input, 20000, 7).unwrap_err(), *want, "{input:?}");
        }
        let huge = format!("prvs=1234abcdef={}@d", "a".repeat(100_000));
        assert_eq!(verify(&k, &huge, 0, 7), Err(TagError::Malformed));
        assert_eq!(sign(&k, &huge[16..], 0, 7), Err(SignError::TooLong));
        assert_eq!(sign(&k, "nodomain", 0, 7), Err(SignError::NotAnAddress));
        assert_eq!(
            sign(&k, "PRVS=1234abcdef=u@d", 0, 7),
            Err(SignError::AlreadyTagged)
        );
    }

    #[test]
    fn key_file_errors() {
        assert_eq!(Keys::parse("# nothing\n"), Err(KeyError::Empty));
        assert!(matches!(
            Keys::parse("12 abc"),
            Err(KeyError::Line { line: 1, .. })
        ));
        assert!(matches!(
            Keys::parse("1 c2hvcnQ="),
            Err(KeyError::Line { line: 1, .. })
        ));
        assert!(matches!(
            Keys::parse("1 !!!notbase64"),
            Err(KeyError::Line { line: 1, .. })
        ));
        let dup = "1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        assert!(matches!(
            Keys::parse(dup),
            Err(KeyError::Line { line: 2, .. })
        ));
        // Debug never shows secret bytes.
        let dbg = format!("{:?}", keys());
        assert!(!dbg.contains("MDEy") && !dbg.contains("48, 49"), "{dbg}");
    }

    #[test]
    fn keygen_makes_a_loadable_line() {
        let line = keygen(4).unwrap();
        let k = Keys::parse(&line).unwrap();
        assert_eq!(k.ids(), vec![4]);
    }

    impl PartialEq for Keys {
        fn eq(&self, other: &Self) -> bool {
            self.keys == other.keys
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> Keys {
        Keys::parse("5 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap()
    }

    proptest! {
        #[test]
        fn sign_verify_round_trips(local in "[a-zA-Z0-9._+-]{1,64}", domain in "[a-z0-9-]{1,20}\\.[a-z]{2,6}",
                                   day in 0i64..40_000, age in 0i64..=7) {
            let k = keys();
            let addr = format!("{local}@{domain}");
            let t = sign(&k, &addr, day, 7).unwrap();
            let v = verify(&k, &t, day + age, 7).unwrap();
            prop_assert_eq!(v.plain, addr);
        }

        #[test]
        fn any_changed_character_fails(local in "[a-z0-9]{1,20}", pos in 5usize..15, day in 0i64..40_000) {
            let k = keys();
            let t = sign(&k, &format!("{local}@example.org"), day, 7).unwrap();
            let mut b = t.clone().into_bytes();
            // Change one character of the tag to another of the same class.
            b[pos] = match b[pos] { b'0'..=b'8' => b[pos] + 1, b'9' => b'0', b'a'..=b'e' => b[pos] + 1, _ => b'a' };
            let changed = String::from_utf8(b).unwrap();
            prop_assert!(verify(&k, &changed, day, 7).is_err());
            // And a changed address under a valid tag fails too.
            let other = t.replacen(&format!("={local}@"), &format!("={local}x@"), 1);
            prop_assert!(verify(&k, &other, day, 7).is_err());
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}", day in -5000i64..50_000) {
            let _ = verify(&keys(), &s, day, 7);
            let _ = verify(&keys(), &format!("prvs={s}"), day, 7);
            let _ = sign(&keys(), &s, day, 7);
        }
    }
}
