//! Fuzz target: the streaming bundle reader never panics, never hangs and never allocates
//! without bound, whatever the bytes; a bundle signed by an unknown key is never accepted.
#![no_main]

use std::sync::OnceLock;

fn policy() -> &'static trust::Policy {
    static P: OnceLock<trust::Policy> = OnceLock::new();
    P.get_or_init(|| {
        let k = trust::SecretKey::from_seed([3; 32], [3; 8]);
        let text = format!(
            "version = 1\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{{ name = \"k\", key = \"{}\" }}]\n",
            k.public().to_base64()
        );
        trust::Policy::parse(&text).expect("policy")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(mut vb) = bundle::open(data, policy(), trust::Expect::default()) else { return };
    // Only a bundle signed by the fuzz key could get here; the fuzzer cannot forge one.
    let mut buf = Vec::new();
    while let Ok(Some(mut p)) = vb.next_payload() {
        while let Ok(true) = p.next_chunk(&mut buf) {}
    }
    panic!("an unsigned input passed signature verification");
});
