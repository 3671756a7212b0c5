//! See `fuzz/checks.rs`: batv_tag.
#![no_main]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::batv_tag(data));
