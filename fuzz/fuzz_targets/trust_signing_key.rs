//! Fuzz target: (encrypted) signing key files never panic and never allocate without bound (scrypt cost is
//! bounded before it runs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Encrypted keys are only parsed for their header here: scrypt at the accepted
        // maximum is slow, not unbounded, and would starve the fuzzer.
        if trust::SecretKey::is_encrypted(text) == Ok(false) {
            let _ = trust::SecretKey::parse(text, None);
        }
    }
});
