//! Fuzz target: the streaming bundle reader, past the signature check. The harness signs
//! whatever manifest the input makes with its own fuzz key (which the policy trusts), so the
//! fuzzer reaches the manifest checks, the payload headers, zstd decoding with a bounded
//! window, the chunk and whole-payload hashes and the end of the archive. It must never
//! panic, hang or allocate without bound; whatever it hands out matched the signed hashes.
//!
//! Input: a mode byte, then — mode 0: the manifest text (template payload); mode 1: the
//! payload entry's bytes (template manifest, sizes adjusted); mode 2: byte edits
//! (position, value) applied to the template manifest; mode 3: the bytes after the signatures;
//! mode 4: a format-2 bundle carrying a provenance statement, the input being the entries
//! between the manifest's signature and the payloads (where its DSSE signatures go) — the
//! envelope the reader hands out must meet the policy.
#![no_main]

use std::sync::OnceLock;

use sha2::Digest;

struct Fixture {
    key: trust::SecretKey,
    policy: trust::Policy,
    manifest: bundle::Manifest,
    payload_zst: Vec<u8>,
    /// Format 2: the provenance statement first, then the same root payload.
    manifest2: bundle::Manifest,
    statement_zst: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = trust::SecretKey::from_seed([3; 32], [3; 8]);
        let text = format!(
            "version = 1\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{{ name = \"k\", key = \"{}\" }}]\n",
            key.public().to_base64()
        );
        let policy = trust::Policy::parse(&text).expect("policy");
        let img: Vec<u8> = (0..70_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let mut payload_zst = Vec::new();
        let p = bundle::compress_payload("root.img", bundle::Target::Root, &img[..], &mut payload_zst, 64 << 10)
            .expect("payload");
        let manifest = bundle::Manifest {
            format: 1,
            product: "p".into(),
            version: product::Version::parse("2.0.0").expect("version"),
            security_version: 2,
            channel: product::Channel::Release,
            previous_manifest: String::new(),
            build_manifest: format!("sha256:{}", "0".repeat(64)),
            hash: "sha256".into(),
            chunk_size: 64 << 10,
            cmdline: None,
            verity: None,
            payloads: vec![p.clone()],
        };
        // The statement names the root image (a bundle whose statement does not is refused).
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"root.img","digest":{{"sha256":"{}"}}}}]}}"#,
            p.sha256
        );
        let statement = statement.as_bytes();
        let mut statement_zst = Vec::new();
        let sp = bundle::compress_payload(
            bundle::PROVENANCE,
            bundle::Target::Provenance,
            &statement[..],
            &mut statement_zst,
            64 << 10,
        )
        .expect("statement");
        let mut manifest2 = manifest.clone();
        manifest2.format = 2;
        manifest2.payloads.insert(0, sp);
        Fixture { key, policy, manifest, payload_zst, manifest2, statement_zst }
    })
}

fn entry(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let name = bundle::EntryName::new(name).expect("name");
    bundle::tar::write_header(out, &name, data.len() as u64).expect("header");
    out.extend_from_slice(data);
    bundle::tar::write_padding(out, data.len() as u64).expect("padding");
}

fn layout(manifest: &[u8], rest: &[u8]) -> Vec<u8> {
    let f = fixture();
    let sig = trust::SignatureFile::sign(&f.key, &trust::Prehash::of_bytes(manifest), "airlock role=release").expect("sign");
    let mut out = Vec::new();
    entry(&mut out, "manifest.toml", manifest);
    entry(&mut out, &format!("manifest.toml.{}.minisig", f.key.id()), sig.to_file().as_bytes());
    out.extend_from_slice(rest);
    out
}

fn payload_tail(zst: &[u8], name: &str) -> Vec<u8> {
    let mut rest = Vec::new();
    entry(&mut rest, name, zst);
    bundle::tar::write_end(&mut rest).expect("end");
    rest
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let f = fixture();
    let template = toml::to_string(&f.manifest).expect("template");
    let bytes = match mode % 5 {
        0 => layout(input, &payload_tail(&f.payload_zst, "root.img.zst")),
        1 => {
            let mut m = f.manifest.clone();
            m.payloads[0].compressed_size = input.len() as u64;
            layout(toml::to_string(&m).expect("manifest").as_bytes(), &payload_tail(input, "root.img.zst"))
        }
        2 => {
            let mut t = template.clone().into_bytes();
            for e in input.chunks_exact(3) {
                let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % t.len();
                t[at] = e[2];
            }
            layout(&t, &payload_tail(&f.payload_zst, "root.img.zst"))
        }
        3 => layout(template.as_bytes(), input),
        _ => {
            let mut rest = input.to_vec();
            entry(&mut rest, "provenance.json.zst", &f.statement_zst);
            entry(&mut rest, "root.img.zst", &f.payload_zst);
            bundle::tar::write_end(&mut rest).expect("end");
            layout(toml::to_string(&f.manifest2).expect("manifest").as_bytes(), &rest)
        }
    };
    let Ok(mut vb) = bundle::open(&bytes[..], &f.policy, trust::Expect::default()) else { return };
    let mut buf = Vec::new();
    while let Ok(Some(mut p)) = vb.next_payload() {
        let chunks = p.payload.chunks.clone();
        let mut i = 0;
        while let Ok(true) = p.next_chunk(&mut buf) {
            // Whatever is handed out matched its signed hash.
            assert_eq!(hex::encode(sha2::Sha256::digest(&buf)), chunks[i]);
            i += 1;
        }
        drop(p);
        if let Some((env, _)) = vb.provenance() {
            // An envelope is handed out only when its signatures met the policy.
            let payload = env.payload_bytes().expect("base64");
            assert!(f.policy.verify_dsse(&env.payload_type, &payload, &env.signatures).accepted());
        }
    }
});
