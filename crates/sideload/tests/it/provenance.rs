//! The provenance a bundle brings (format 2): checked against the device's own policy before
//! anything changes, kept on the data partition for the slot it describes, shown by
//! `sideload status --provenance` once that slot is booted, and forgotten when the slot is
//! overwritten.

use std::fs;

use serde_json::Value;

use crate::corpus::refused;
use crate::powercut::{boot, sideload};
use crate::{Dev, image, key, parts};

/// An in-toto statement whose subject is `image` (the root payload), as a build writes it.
fn statement(image: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"root.img","digest":{{"sha256":"{}"}}}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{{"buildDefinition":{{}}}}}}"#,
        hex::encode(sha2::Sha256::digest(image))
    )
    .into_bytes()
}

fn stranger() -> trust::SecretKey {
    trust::SecretKey::from_seed([7; 32], [7, 7, 7, 7, 7, 7, 7, 7])
}

fn envelope_of(v: &Value) -> (Vec<u8>, Vec<String>) {
    let env: trust::dsse::Envelope = serde_json::from_value(v.clone()).unwrap();
    (env.payload_bytes().unwrap(), env.signatures.into_iter().map(|s| s.keyid).collect())
}

#[test]
fn the_installed_slots_provenance_is_kept_and_shown_once_it_is_booted() {
    let dev = Dev::new();
    // The factory image came with no bundle: nothing to show, and it says why.
    let (code, _, err) = sideload(&dev, &["status", "--provenance"], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("slot a has no provenance: the bundle that installed it carried none"), "{err}");

    let v2 = image("2.0.0", 400_000);
    let stmt = statement(&v2);
    let b = parts("2.0.0", 2, &v2).with_provenance(&stmt, &[&key(), &stranger()]).bytes();
    // `sideload verify` says what signed it.
    let path = dev.write_bundle("v2.airlock", &b);
    let (code, out, err) = sideload(&dev, &["verify", path.to_str().unwrap()], None);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("provenance (in-toto statement) signed: release 1/1"), "{out}");

    dev.install(&b).unwrap();
    assert!(crate::slot_holds(&dev.slot("b"), &v2));
    let kept = dev.root().join("data/evidence/b/provenance.intoto.json");
    let text = fs::read_to_string(&kept).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["payloadType"], "application/vnd.in-toto+json");
    let (payload, ids) = envelope_of(&v);
    assert_eq!(payload, stmt);
    assert_eq!(ids, [key().id().to_string()], "only the signature this device's policy counted");

    // Still slot a's (none) until slot b is booted; then slot b's, as kept, byte for byte.
    let (code, _, _) = sideload(&dev, &["status", "--provenance"], None);
    assert_eq!(code, Some(2));
    boot(&dev);
    let (code, out, err) = sideload(&dev, &["status", "--provenance"], None);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, text);
    let (code, out, _) = sideload(&dev, &["--json", "status", "--provenance"], None);
    assert_eq!(code, Some(0));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), v);
    // The envelope stands on its own against the device's policy.
    let policy = trust::Policy::parse(&crate::policy_text()).unwrap();
    let sigs: Vec<trust::dsse::Signature> = serde_json::from_value(v["signatures"].clone()).unwrap();
    assert!(policy.verify_dsse(trust::dsse::IN_TOTO, &payload, &sigs).accepted());
}

#[test]
fn a_slot_written_again_forgets_the_provenance_of_the_image_it_held() {
    let dev = Dev::new();
    let v2 = image("2.0.0", 300_000);
    dev.install(&parts("2.0.0", 2, &v2).with_provenance(&statement(&v2), &[&key()]).bytes()).unwrap();
    let kept = dev.root().join("data/evidence/b/provenance.intoto.json");
    assert!(kept.is_file());
    // A format-1 bundle (no provenance) into the same slot: the old statement must not be
    // shown for the new image.
    let v3 = image("2.0.1", 300_000);
    dev.install(&parts("2.0.1", 2, &v3).bytes()).unwrap();
    assert!(crate::slot_holds(&dev.slot("b"), &v3));
    assert!(!kept.exists(), "slot b still shows the provenance of the image it no longer holds");
    boot(&dev);
    let (code, _, err) = sideload(&dev, &["status", "--provenance"], None);
    assert_eq!(code, Some(2));
    assert!(err.contains("slot b has no provenance"), "{err}");
}

#[test]
fn provenance_not_signed_to_the_devices_policy_refuses_the_bundle_before_anything_changes() {
    let dev = Dev::new();
    let v2 = image("2.0.0", 300_000);
    let stmt = statement(&v2);
    let slot_b = dev.slot("b");
    let mut other = stmt.clone();
    other[3] ^= 1;
    for (what, b) in [
        ("unsigned", parts("2.0.0", 2, &v2).with_provenance(&stmt, &[]).bytes()),
        ("a stranger's signature", parts("2.0.0", 2, &v2).with_provenance(&stmt, &[&stranger()]).bytes()),
        ("a signature over other bytes", {
            let mut p = parts("2.0.0", 2, &v2).with_provenance(&stmt, &[&key()]);
            let good = parts("2.0.0", 2, &v2).with_provenance(&other, &[&key()]);
            p.provenance.as_mut().unwrap().1 = good.provenance.unwrap().1;
            p.bytes()
        }),
    ] {
        let msg = refused(&dev, &b, "bad-signature");
        assert!(msg.starts_with("the provenance's DSSE signatures do not meet the trust policy"), "{what}: {msg}");
        assert_eq!(dev.slot("b"), slot_b, "{what}: a byte reached the inactive slot");
        assert!(!dev.root().join("data/evidence/b").exists(), "{what}: evidence kept");
    }
}

#[test]
fn a_kept_envelope_up_to_its_bound_reads_back_whole_and_one_byte_more_is_refused() {
    let dev = Dev::new();
    let d = sideload::Device::simulated(&dev.root()).unwrap();
    // A statement at its largest, base64 in its envelope: up to twice its bound is read.
    let max = 2 * trust::dsse::MAX_PAYLOAD;
    let text = "x".repeat(max);
    sideload::evidence::keep(&d, sideload::Slot::B, &text).unwrap();
    assert_eq!(sideload::evidence::read(&d, sideload::Slot::B).unwrap().map(|t| t.len()), Some(max));
    sideload::evidence::keep(&d, sideload::Slot::B, &format!("{text}x")).unwrap();
    let e = sideload::evidence::read(&d, sideload::Slot::B).unwrap_err();
    assert!(e.to_string().contains(&format!("larger than {max} bytes")), "{e}");
    assert_eq!(sideload::evidence::read(&d, sideload::Slot::A).unwrap(), None, "slot a's image came with none");
    // Forgetting what is not there is nothing; a file that cannot be removed is an error.
    sideload::evidence::forget(&d, sideload::Slot::A).unwrap();
    sideload::evidence::forget(&d, sideload::Slot::B).unwrap();
    assert_eq!(sideload::evidence::read(&d, sideload::Slot::B).unwrap(), None);
    let stuck = dev.root().join("data/evidence/b").join(sideload::evidence::ENVELOPE);
    fs::create_dir_all(stuck.join("x")).unwrap();
    let e = sideload::evidence::forget(&d, sideload::Slot::B).unwrap_err();
    assert!(e.to_string().contains(&stuck.display().to_string()), "{e}");
    // Only "not there" means "none": a path that cannot be read is an error.
    fs::write(dev.root().join("data/evidence/a"), b"not a folder").unwrap();
    let e = sideload::evidence::read(&d, sideload::Slot::A).unwrap_err();
    assert!(e.to_string().contains("evidence/a/provenance.intoto.json"), "{e}");
}

#[test]
fn a_statement_of_another_image_is_refused_before_anything_changes() {
    let dev = Dev::new();
    let v2 = image("2.0.0", 300_000);
    let slot_b = dev.slot("b");
    // Validly signed, for another build: it does not describe the image this bundle installs.
    let b = parts("2.0.0", 2, &v2).with_provenance(&statement(b"another image"), &[&key()]).bytes();
    let msg = refused(&dev, &b, "hash-mismatch");
    assert!(msg.contains("the provenance statement does not describe this bundle's image"), "{msg}");
    assert_eq!(dev.slot("b"), slot_b);
    assert!(!dev.root().join("data/evidence/b").exists());
}

#[test]
fn a_kept_envelope_edited_or_swapped_on_the_data_partition_is_never_shown_as_verified() {
    let dev = Dev::new();
    let v2 = image("2.0.0", 300_000);
    dev.install(&parts("2.0.0", 2, &v2).with_provenance(&statement(&v2), &[&key()]).bytes()).unwrap();
    boot(&dev);
    let kept = dev.root().join("data/evidence/b/provenance.intoto.json");
    let good = fs::read_to_string(&kept).unwrap();
    let (code, out, _) = sideload(&dev, &["status", "--provenance"], None);
    assert_eq!((code, out.as_str()), (Some(0), good.as_str()));
    let mut env: Value = serde_json::from_str(&good).unwrap();
    // A builder's claim rewritten, the signatures kept.
    let payload = String::from_utf8(envelope_of(&env).0).unwrap().replace("buildDefinition", "builtByAnyoneAtAll");
    env["payload"] = Value::from(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, payload));
    let edited = serde_json::to_string_pretty(&env).unwrap();
    // Another image's statement, validly signed by the vendor, in its place.
    let other = parts("2.0.0", 2, &v2).with_provenance(&statement(b"another image"), &[&key()]);
    let dsse = other.provenance.unwrap().1[0].1.clone();
    let sig: trust::dsse::Signature = serde_json::from_str(&dsse).unwrap();
    let swapped = serde_json::to_string_pretty(&trust::dsse::Envelope::new(
        trust::dsse::IN_TOTO,
        &statement(b"another image"),
        vec![sig],
    ))
    .unwrap();
    for (what, text, reason) in [
        ("an edited statement", edited, "bad-signature"),
        ("another image's statement", swapped, "hash-mismatch"),
        ("not an envelope", "{\"payload\": 3}".to_string(), "bad-manifest"),
    ] {
        fs::write(&kept, &text).unwrap();
        let (code, out, err) = sideload(&dev, &["--json", "status", "--provenance"], None);
        assert_eq!(code, Some(1), "{what}: {out}{err}");
        let j: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| serde_json::from_str(err.trim()).unwrap());
        assert_eq!(j["reason"], reason, "{what}: {j}");
        assert!(!out.contains("predicate") || j["ok"] == false, "{what}: the envelope was shown");
    }
}
