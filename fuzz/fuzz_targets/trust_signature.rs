//! Fuzz target: signature files never panic, never verify against a fixed message and key
//! unless they are the real signature, and what parses round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(sig) = trust::SignatureFile::parse_bytes(data) else { return };
    let again = trust::SignatureFile::parse(&sig.to_file()).expect("a parsed signature re-parses");
    assert_eq!(again, sig);
    let key = trust::SecretKey::from_seed([1; 32], [1; 8]);
    let prehash = trust::Prehash::of_bytes(b"fuzz");
    if sig.verify(&key.public(), &prehash).is_ok() {
        let real = trust::SignatureFile::sign(&key, &prehash, sig.trusted_comment()).expect("signing");
        assert_eq!(real.signature(), sig.signature(), "a forged signature verified");
    }
});
