//! The manifest check on its own, field by field and at every bound: what the agent accepts is
//! exactly what SECURITY.md says, one byte either side of each limit. Also the stable reason
//! codes, the name escaper and the rejection summary an operator reads.

use bundle::{Code, Manifest, Payload, Target};

const KI: u64 = 1 << 10;
const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

fn digest(c: char) -> String {
    c.to_string().repeat(64)
}

fn payload(name: &str, target: Target, size: u64, chunk: u64) -> Payload {
    Payload {
        name: name.into(),
        target,
        compression: "zstd".into(),
        size,
        compressed_size: size / 2,
        sha256: digest('a'),
        chunks: (0..size.div_ceil(chunk)).map(|_| digest('b')).collect(),
    }
}

fn good() -> Manifest {
    Manifest {
        format: 1,
        product: "parking-controller".into(),
        version: product::Version::parse("2.0.0").unwrap(),
        security_version: 2,
        channel: product::Channel::Release,
        previous_manifest: String::new(),
        build_manifest: format!("sha256:{}", digest('0')),
        hash: "sha256".into(),
        chunk_size: MI,
        cmdline: None,
        verity: None,
        payloads: vec![payload("root.img", Target::Root, 3 * MI + 1, MI)],
    }
}

fn refused(m: &Manifest) -> String {
    let e = m.check().expect_err("must be refused");
    assert!(matches!(e.code(), Code::BadManifest | Code::TooLarge | Code::EmptyPayload), "{e}");
    e.to_string()
}

#[test]
fn a_good_manifest_round_trips_through_its_signed_text() {
    let m = good();
    let text = m.to_toml().unwrap();
    assert!(text.contains("product = \"parking-controller\""), "{text}");
    assert_eq!(Manifest::parse(text.as_bytes()).unwrap(), m);
    // All three targets, each once, with distinct names.
    let mut three = good();
    three.payloads.push(payload("vmlinuz", Target::Kernel, 5 * MI, MI));
    three.payloads.push(payload("initrd.img", Target::Initrd, 1, MI));
    three.check().unwrap();
    assert_eq!(Manifest::parse(three.to_toml().unwrap().as_bytes()).unwrap(), three);
}

#[test]
fn to_toml_refuses_a_manifest_it_would_refuse_to_read() {
    let mut m = good();
    m.hash = "md5".into();
    assert!(m.to_toml().is_err());
}

#[test]
fn chunk_size_is_bounded_at_64_kib_and_16_mib_inclusive() {
    // The writer's default lies inside the bounds: 1 MiB (a 512 MiB slot lists 512 chunk hashes).
    assert_eq!(bundle::DEFAULT_CHUNK, MI);
    for (chunk, ok) in [(64 * KI - 1, false), (64 * KI, true), (16 * MI, true), (16 * MI + 1, false), (0, false)] {
        let mut m = good();
        m.chunk_size = chunk;
        m.payloads = vec![payload("root.img", Target::Root, 3 * MI + 1, chunk.max(1))];
        match m.check() {
            Ok(()) => assert!(ok, "chunk_size {chunk} accepted"),
            Err(e) => {
                assert!(!ok, "chunk_size {chunk} refused: {e}");
                assert_eq!(e.to_string(), format!("manifest: chunk_size {chunk} is outside 65536..=16777216"));
            }
        }
    }
}

#[test]
fn the_chunk_list_must_cover_the_payload_exactly() {
    let mut m = good();
    m.payloads[0].chunks.pop();
    assert_eq!(
        refused(&m),
        "manifest: payload `root.img`: 3 chunk hashes for 3145729 bytes in chunks of 1048576 (expected 4)"
    );
    let mut m = good();
    m.payloads[0].chunks.push(digest('c'));
    assert!(refused(&m).contains("5 chunk hashes"));
    // A payload of exactly n chunks has n hashes, not n+1.
    let mut m = good();
    m.payloads = vec![payload("root.img", Target::Root, 4 * MI, MI)];
    assert_eq!(m.payloads[0].chunks.len(), 4);
    m.check().unwrap();
}

#[test]
fn digests_are_64_lowercase_hex_digits_and_nothing_else() {
    let bad =
        ["a".repeat(63), "a".repeat(65), "A".repeat(64), "g".repeat(64), format!("{} ", "a".repeat(63)), String::new()];
    for d in &bad {
        let mut m = good();
        m.payloads[0].sha256 = d.clone();
        assert_eq!(refused(&m), "manifest: payload `root.img`: digests must be 64 lowercase hex digits", "{d:?}");
        let mut m = good();
        m.payloads[0].chunks[2] = d.clone();
        assert_eq!(refused(&m), "manifest: payload `root.img`: digests must be 64 lowercase hex digits", "{d:?}");
    }
    for d in ["0123456789abcdef".repeat(4), "f".repeat(64), "9".repeat(64)] {
        let mut m = good();
        m.payloads[0].sha256 = d.clone();
        m.payloads[0].chunks[0] = d;
        m.check().unwrap();
    }
}

#[test]
fn provenance_digests_are_tagged_and_only_the_previous_one_may_be_empty() {
    let msg = "manifest: previous_manifest and build_manifest must be `sha256:` and 64 lowercase hex digits";
    let mut m = good();
    m.previous_manifest = format!("sha256:{}", digest('1'));
    m.check().unwrap();
    for bad in [digest('1'), format!("sha512:{}", digest('1')), format!("sha256:{}", "1".repeat(63)), "sha256:".into()]
    {
        let mut m = good();
        m.previous_manifest = bad.clone();
        assert_eq!(refused(&m), msg, "previous {bad:?}");
        let mut m = good();
        m.build_manifest = bad.clone();
        assert_eq!(refused(&m), msg, "build {bad:?}");
    }
    let mut m = good();
    m.build_manifest = String::new();
    assert_eq!(refused(&m), msg, "the build manifest is never optional");
}

#[test]
fn product_names_are_plain_and_at_most_128_bytes() {
    let msg = "manifest: product has characters outside A-Z a-z 0-9 . _ + ~ -";
    for ok in ["a".repeat(128), "A.b_c+d~e-9".into()] {
        let mut m = good();
        m.product = ok;
        m.check().unwrap();
    }
    for bad in ["a".repeat(129), String::new(), "a b".into(), "a/b".into(), "a\u{1b}[31m".into(), "é".into()] {
        let mut m = good();
        m.product = bad.clone();
        assert_eq!(refused(&m), msg, "{bad:?}");
    }
}

#[test]
fn format_hash_and_compression_are_known_values_only() {
    for f in [0, 5, u32::MAX] {
        let mut m = good();
        m.format = f;
        assert_eq!(refused(&m), format!("manifest: format {f} is not known (this agent reads formats 1 to 4)"));
    }
    // Format 1 (no provenance) is still read, and so are 2, 3 and 4.
    for f in [1, 2, 3, 4] {
        let mut m = good();
        m.format = f;
        m.check().unwrap();
    }
    let mut m = good();
    m.hash = "sha\n256".into();
    assert_eq!(refused(&m), "manifest: hash algorithm `sha\\n256` is not known (sha256 is)");
    let mut m = good();
    m.payloads[0].compression = "xz".into();
    assert_eq!(refused(&m), "manifest: payload `root.img`: compression `xz` is not known (zstd is)");
}

#[test]
fn payload_count_targets_and_names() {
    let mut m = good();
    m.payloads.clear();
    assert_eq!(refused(&m), "manifest: 0 payloads: a bundle has 1 to 8");
    let mut m = good();
    for i in 0..8 {
        m.payloads.push(payload(&format!("p{i}"), Target::Kernel, 1, MI));
    }
    assert_eq!(refused(&m), "manifest: 9 payloads: a bundle has 1 to 8");
    let mut m = good();
    for i in 0..7 {
        m.payloads.push(payload(&format!("p{i}"), Target::Kernel, 1, MI));
    }
    assert_eq!(refused(&m), "manifest: two payloads for target Kernel", "eight payloads pass the count");
    let mut m = good();
    m.payloads[0].target = Target::Kernel;
    assert_eq!(
        refused(&m),
        "manifest: the first payload must be the root slot (target = \"root\"), after the provenance statement if any"
    );
    let mut m = good();
    m.payloads.push(payload("root.img", Target::Kernel, 1, MI));
    assert_eq!(refused(&m), "manifest: payload `root.img` is listed twice");
    let mut m = good();
    m.payloads[0].name = "../etc/passwd".into();
    assert!(refused(&m).starts_with("manifest: payload 0: entry `../etc/passwd.zst`"), "{}", refused(&m));
}

#[test]
fn the_provenance_statement_is_format_2_named_first_and_small() {
    let with_provenance = |size: u64| {
        let mut m = good();
        m.format = 2;
        m.payloads.insert(0, payload(bundle::PROVENANCE, Target::Provenance, size, MI));
        m
    };
    with_provenance(40 << 10).check().unwrap();
    // Largest statement a DSSE envelope takes, and one byte more.
    with_provenance(trust::dsse::MAX_PAYLOAD as u64).check().unwrap();
    let e = with_provenance(trust::dsse::MAX_PAYLOAD as u64 + 1).check().unwrap_err();
    assert_eq!(
        (e.code(), e.to_string()),
        (Code::TooLarge, "payload `provenance.json` is 4194305 bytes, more than the 4194304 accepted".into())
    );
    // A format-1 manifest has no provenance payload (a format-1 agent does not know it).
    let mut m = with_provenance(100);
    m.format = 1;
    assert_eq!(refused(&m), "manifest: a provenance payload needs format 2");
    // Its name is fixed: the DSSE signature entries are named after it.
    let mut m = with_provenance(100);
    m.payloads[0].name = "evil.json".into();
    assert_eq!(refused(&m), "manifest: the provenance payload is named `evil.json`, not `provenance.json`");
    // It comes first, before the root slot, and only once.
    let mut m = with_provenance(100);
    m.payloads.swap(0, 1);
    assert_eq!(refused(&m), "manifest: the provenance statement is the first payload");
    let mut m = with_provenance(100);
    m.payloads.push(payload("other.json", Target::Provenance, 1, MI));
    assert_eq!(refused(&m), "manifest: two payloads for target Provenance");
    // A statement alone installs nothing.
    let mut m = with_provenance(100);
    m.payloads.truncate(1);
    assert_eq!(
        refused(&m),
        "manifest: the first payload must be the root slot (target = \"root\"), after the provenance statement if any"
    );
}

#[test]
fn payload_sizes_are_bounded_before_anything_is_allocated() {
    let max = bundle::MAX_PAYLOAD_SIZE;
    assert_eq!(max, 64 * GI);
    let mut m = good();
    m.chunk_size = 16 * MI;
    m.payloads = vec![payload("root.img", Target::Root, max, 16 * MI)];
    m.payloads[0].compressed_size = max + max / 128;
    m.check().unwrap();
    m.payloads[0].compressed_size += 1;
    let e = m.check().unwrap_err();
    assert_eq!(e.code(), Code::TooLarge);
    let mut m = good();
    m.chunk_size = 16 * MI;
    m.payloads = vec![payload("root.img", Target::Root, max + 1, 16 * MI)];
    let e = m.check().unwrap_err();
    assert_eq!(
        (e.code(), e.to_string()),
        (Code::TooLarge, "payload `root.img` is 68719476737 bytes, more than the 68719476736 accepted".into())
    );
    let mut m = good();
    m.payloads = vec![payload("root.img", Target::Root, 0, MI)];
    assert_eq!(m.check().unwrap_err().code(), Code::EmptyPayload);
}

#[test]
fn a_manifest_is_read_up_to_2_mib_and_not_one_byte_more() {
    let max = bundle::MAX_MANIFEST as usize;
    assert_eq!(max, 2 << 20);
    let text = good().to_toml().unwrap();
    let mut padded = text.clone().into_bytes();
    padded.extend_from_slice(b"#");
    padded.resize(max - 1, b'x');
    padded.push(b'\n');
    assert_eq!(padded.len(), max);
    assert_eq!(Manifest::parse(&padded).unwrap(), good());
    padded.insert(text.len() + 1, b'x');
    let e = Manifest::parse(&padded).unwrap_err();
    assert_eq!(e.to_string(), "manifest is 2097153 bytes, more than the 2097152 accepted");
    assert_eq!(Manifest::parse(b"\xff").unwrap_err().to_string(), "manifest: not UTF-8");
    let e = Manifest::parse(b"format = 1\nsurprise = true\n").unwrap_err();
    assert_eq!(e.code(), Code::BadManifest);
}

#[test]
fn reason_codes_are_stable_strings() {
    let names: Vec<String> = Code::ALL.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        names,
        [
            "truncated",
            "bad-tar",
            "undeclared-entry",
            "duplicate-entry",
            "too-large",
            "size-mismatch",
            "hash-mismatch",
            "corrupt-payload",
            "trailing-data",
            "bad-signature",
            "wrong-product",
            "bad-manifest",
            "empty-payload",
            "io"
        ]
    );
    for c in Code::ALL {
        assert_eq!(c.as_str(), c.to_string());
    }
    assert_eq!(Code::ALL.len(), 14);
}

#[test]
fn escape_keeps_printable_text_and_defuses_everything_else() {
    use bundle::escape;
    assert_eq!(escape("root.img v2 (final)"), "root.img v2 (final)");
    assert_eq!(escape(r#"it's "quoted" \ raw"#), r#"it's "quoted" \ raw"#, "printable ASCII is kept as it is");
    assert_eq!(escape("a\nb\x1b[31m\u{7f}é"), "a\\nb\\u{1b}[31m\\u{7f}\\u{e9}");
    assert_eq!(escape(&"x".repeat(120)), "x".repeat(120));
    assert_eq!(escape(&"x".repeat(121)), format!("{}…", "x".repeat(120)));
    assert_eq!(escape(&"é".repeat(121)).matches("\\u{e9}").count(), 120, "counted in characters, not bytes");
    let n = bundle::EntryName::new("root.img.zst").unwrap();
    assert_eq!((n.to_string(), n.as_str()), ("root.img.zst".to_string(), "root.img.zst"));
}

#[test]
fn the_kernel_command_line_is_format_3_plain_words_and_names_no_root() {
    let mut m = good();
    m.cmdline = Some("rootfstype=squashfs ro quiet panic=10".into());
    assert_eq!(refused(&m), "manifest: a cmdline needs format 3");
    m.format = 3;
    m.check().unwrap();
    for (bad, msg) in [
        ("ro\ninit=/bin/sh", "cmdline: words of printable ASCII separated by single spaces"),
        ("ro  quiet", "cmdline: words of printable ASCII separated by single spaces"),
        (" ro", "cmdline: words of printable ASCII separated by single spaces"),
        ("ro\u{1b}[2J", "cmdline: words of printable ASCII separated by single spaces"),
        ("ro root=/dev/sda1", "cmdline: no `root=` (the agent names the slot it writes)"),
        ("", "cmdline: 1 to 2048 bytes"),
    ] {
        m.cmdline = Some(bad.into());
        assert_eq!(refused(&m), format!("manifest: {msg}"), "{bad:?}");
    }
    // At its bound, and one byte past it.
    m.cmdline = Some("x".repeat(bundle::MAX_CMDLINE));
    m.check().unwrap();
    m.cmdline = Some("x".repeat(bundle::MAX_CMDLINE + 1));
    assert_eq!(refused(&m), "manifest: cmdline: 1 to 2048 bytes");
}

fn verity_table(root_size: u64) -> bundle::Verity {
    bundle::Verity {
        root_hash: digest('c'),
        hash_offset: root_size,
        hash: "sha256".into(),
        block_size: 4096,
        salt: digest('d'),
        uuid: "01234567-89ab-4cde-8f01-23456789abcd".into(),
    }
}

/// Format 4: the root slot's verity tree right after the root, with its table.
fn with_verity() -> Manifest {
    let mut m = good();
    m.format = 4;
    m.payloads =
        vec![payload("root.img", Target::Root, 3 * MI, MI), payload("root.verity", Target::Verity, 8 * 4096, MI)];
    m.verity = Some(verity_table(3 * MI));
    m
}

#[test]
fn a_verity_tree_comes_with_its_table_after_the_root_and_fits_it() {
    let m = with_verity();
    m.check().unwrap();
    assert_eq!(Manifest::parse(m.to_toml().unwrap().as_bytes()).unwrap(), m);

    let mut old = with_verity();
    old.format = 3;
    assert_eq!(refused(&old), "manifest: a verity table and tree need format 4");
    let mut no_table = with_verity();
    no_table.verity = None;
    assert_eq!(refused(&no_table), "manifest: a verity tree without its [verity] table");
    let mut no_tree = with_verity();
    no_tree.payloads.pop();
    assert_eq!(refused(&no_tree), "manifest: a [verity] table without its tree (payload root.verity)");
    let mut late = with_verity();
    late.payloads.insert(1, payload("vmlinuz", Target::Kernel, MI, MI));
    assert_eq!(refused(&late), "manifest: the verity tree comes right after the root payload");
    // The tree starts where the root ends, on a block, and is no larger than its tree can be.
    let mut off = with_verity();
    off.verity.as_mut().unwrap().hash_offset += 4096;
    assert!(refused(&off).contains("verity.hash_offset"), "{}", refused(&off));
    let mut unaligned = with_verity();
    unaligned.payloads[0] = payload("root.img", Target::Root, 3 * MI + 1, MI);
    unaligned.verity = Some(verity_table(3 * MI + 1));
    assert!(refused(&unaligned).contains("multiple of 4096"), "{}", refused(&unaligned));
    let mut huge = with_verity();
    huge.payloads[1] = payload("root.verity", Target::Verity, 64 * MI, MI);
    assert!(refused(&huge).contains("the verity tree is 67108864 bytes"), "{}", refused(&huge));
    let mut weak = with_verity();
    weak.verity.as_mut().unwrap().hash = "sha1".into();
    assert!(refused(&weak).contains("verity.hash `sha1` is not known"), "{}", refused(&weak));
    // The table is strict: an unknown field is refused by the parser.
    let text = m.to_toml().unwrap().replace("[verity]\n", "[verity]\nrestart_on_corruption = false\n");
    assert!(Manifest::parse(text.as_bytes()).is_err());
}

#[test]
fn a_bundles_cmdline_cannot_carry_the_verity_words() {
    for bad in ["ro airlock.roothash=00", "airlock.hashoffset=4096 ro"] {
        let mut m = with_verity();
        m.cmdline = Some(bad.into());
        assert!(refused(&m).contains("they come from the signed [verity] table"), "{bad}");
    }
    let mut m = with_verity();
    m.cmdline = Some("ro airlock.other=1".into());
    m.check().unwrap();
}
