//! The signature header: arbitrary values never verify, our own always do.
#![no_main]
use backscatter_milter::{batv::Keys, signature};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    Keys::parse("1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").expect("test key")
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // value \0 message-id \0 date
    let mut it = text.splitn(3, '\0');
    let (value, mid, date) = (
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
    );
    let _ = signature::verify(&KEYS, value, mid, date);
    let ours = signature::sign(&KEYS, mid, date);
    assert!(signature::verify(&KEYS, &ours, mid, date));
});
