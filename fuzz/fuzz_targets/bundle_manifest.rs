//! Fuzz target: the bundle manifest parser never panics; an accepted manifest is consistent.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(m) = bundle::Manifest::parse(data) {
        for p in &m.payloads {
            assert_eq!(p.chunks.len() as u64, p.size.div_ceil(m.chunk_size));
            assert!(bundle::EntryName::new(&p.entry_name()).is_ok());
        }
    }
});
