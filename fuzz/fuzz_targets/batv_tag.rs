//! BATV tags: parse and verify arbitrary addresses; a tag we sign verifies.
#![no_main]
use backscatter_milter::batv::{self, Keys};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    Keys::parse("1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").expect("test key")
});

fuzz_target!(|data: &[u8]| {
    let Ok(addr) = std::str::from_utf8(data) else {
        return;
    };
    let _ = batv::is_tagged(addr);
    let _ = batv::parse(addr);
    let today = 20_000;
    let _ = batv::verify(&KEYS, addr, today, 7);
    if let Ok(tagged) = batv::sign(&KEYS, addr, today, 7) {
        let v = batv::verify(&KEYS, &tagged, today, 7).expect("our own tag verifies");
        assert_eq!(v.plain.to_ascii_lowercase(), addr.to_ascii_lowercase());
    }
});
