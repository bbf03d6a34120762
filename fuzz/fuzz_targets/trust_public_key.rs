//! Fuzz target: minisign public key files never panic, and what parses round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(k) = trust::PublicKey::parse(text) {
            assert_eq!(trust::PublicKey::parse(&k.to_file()).ok(), Some(k));
        }
    }
});
