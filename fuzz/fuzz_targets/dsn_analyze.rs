//! Raw bytes into the bounce analysis, with and without an envelope sender.
#![no_main]
use backscatter_milter::dsn::{Limits, analyze};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let sender = match data.first() {
        Some(b) if b % 3 == 0 => None,
        Some(b) if b % 3 == 1 => Some(""),
        _ => Some("someone@example.org"),
    };
    let a = analyze(data, sender, &limits);
    assert!(a.recipients.len() <= limits.max_recipients);
    let _ = backscatter_milter::dsn::describe("fuzz", &a);
});
