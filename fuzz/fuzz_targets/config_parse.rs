//! See `fuzz/checks.rs`: config_parse.
#![no_main]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config_parse(data));
