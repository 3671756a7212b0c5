//! See `fuzz/checks.rs`: dsn_analyze.
#![no_main]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::dsn_analyze(data));
