//! Fuzz target: trust policies never panic; an accepted policy's thresholds can be met.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = trust::Policy::parse(text) {
            let mut ids = std::collections::BTreeMap::new();
            let mut keys = Vec::new();
            for (r, role) in p.roles() {
                assert!(role.threshold() >= 1 && role.threshold() <= role.keys().len());
                for k in role.keys() {
                    // One key holds one role; one id names one key.
                    assert!(!keys.contains(&k.public().bytes()), "a key in two roles");
                    keys.push(k.public().bytes());
                    for id in k.ids() {
                        assert!(ids.insert(*id, (r, k.public().bytes())).is_none_or(|(_, b)| b == k.public().bytes()));
                    }
                }
            }
        }
    }
});
