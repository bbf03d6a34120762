//! Fuzz target: trust policies never panic; an accepted policy's thresholds can be met.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = trust::Policy::parse(text) {
            for (_, role) in p.roles() {
                assert!(role.threshold >= 1 && role.threshold <= role.keys.len());
            }
        }
    }
});
