//! Fuzz target: lock files never panic, and an accepted lock holds only safe names.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(lock) = recipe::Lock::parse(std::path::Path::new("fuzz.lock"), text) {
            for p in &lock.packages {
                assert!(recipe::valid_package_name(&p.name));
                assert!(!p.version.contains(|c: char| c.is_whitespace() || c == ';' || c == '$'));
            }
        }
    }
});
