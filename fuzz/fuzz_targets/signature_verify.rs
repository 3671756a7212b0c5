//! See `fuzz/checks.rs`: signature_verify.
#![no_main]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::signature_verify(data));
