//! The agent against a simulated device: the SECURITY.md corpus for bundles, manifests, tar and
//! compression (each fixture generated here), anti-rollback, and the power-cut matrix (with
//! power-loss simulation on: a cut loses every write that was not fsynced).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::new_without_default)]

mod agent;
mod bootfiles;
mod corpus;
mod powercut;
mod provenance;
mod site;
mod verity;

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use bundle::{Manifest, Payload};
use sideload::{Agent, Device, DeviceConfig, InstallOptions, NoProgress};
use trust::{Prehash, SecretKey, SignatureFile};

pub const PRODUCT: &str = "airlock.test.x86_64";
pub const SLOT_SIZE: u64 = 1 << 20;
pub const CHUNK: u64 = 64 << 10;

/// Waits until `child` stops at its `…:stop` failpoint (state `T`). A child that exits first
/// (it never reached the failpoint: a refusal came earlier) fails the test at once with its
/// stderr, and one that does neither within a minute fails it too: a test never hangs,
/// whatever the agent does.
pub fn wait_stopped(child: &mut Child) {
    let t = Instant::now();
    loop {
        let stat = fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        match stat.rsplit(')').next().and_then(|r| r.trim_start().chars().next()) {
            Some('T') => return,
            Some('Z') | None => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("the agent (pid {}) ended before its failpoint: {err}", child.id());
            }
            _ => {}
        }
        assert!(t.elapsed() < Duration::from_secs(60), "the agent (pid {}) never reached its failpoint", child.id());
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn key() -> SecretKey {
    SecretKey::from_seed([5; 32], [1, 2, 3, 4, 5, 6, 7, 8])
}

pub fn policy_text() -> String {
    format!(
        "version = 1\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{{ name = \"vendor\", key = \"{}\" }}]\n",
        key().public().to_base64()
    )
}

/// A slot image for a version: deterministic bytes, not compressible to nothing.
pub fn image(version: &str, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let mut i = 0u64;
    while out.len() < size {
        out.extend_from_slice(blake2b_simd::blake2b(format!("{version}:{i}").as_bytes()).as_bytes());
        i += 1;
    }
    out.truncate(size);
    out
}

/// What a bundle is made of, so tests can change any part before it is laid out.
pub struct Parts {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub sigs: Vec<(String, String)>,
    pub payload: Vec<u8>,
    /// Format 2: the provenance statement's compressed bytes (the first payload) and its
    /// DSSE signature entries.
    pub provenance: Option<(Vec<u8>, Entries)>,
}

/// Signature entries of a bundle: (name, text).
pub type Entries = Vec<(String, String)>;

pub fn parts(version: &str, security_version: u64, img: &[u8]) -> Parts {
    let mut z = Vec::new();
    let p: Payload = bundle::compress_payload("root.img", bundle::Target::Root, img, &mut z, CHUNK).unwrap();
    let manifest = Manifest {
        format: 1,
        product: PRODUCT.into(),
        version: product::Version::parse(version).unwrap(),
        security_version,
        channel: product::Channel::Release,
        previous_manifest: String::new(),
        build_manifest: format!("sha256:{}", "0".repeat(64)),
        hash: "sha256".into(),
        chunk_size: CHUNK,
        cmdline: None,
        verity: None,
        payloads: vec![p],
    };
    // Serialised without the writer's checks, so hostile manifests (an empty payload) can be made.
    let manifest_bytes = toml::to_string(&manifest).unwrap().into_bytes();
    let mut parts = Parts { manifest, manifest_bytes, sigs: Vec::new(), payload: z, provenance: None };
    parts.sign(&key(), PRODUCT, version);
    parts
}

impl Parts {
    pub fn sign(&mut self, k: &SecretKey, product: &str, version: &str) {
        let comment = format!("airlock product={product} version={version} role=release file=manifest.toml");
        let sig = SignatureFile::sign(k, &Prehash::of_bytes(&self.manifest_bytes), &comment).unwrap();
        self.sigs = vec![(format!("manifest.toml.{}.minisig", k.id()), sig.to_file())];
    }

    /// Re-serialises an edited manifest and signs it again.
    pub fn resign(&mut self) {
        self.manifest_bytes = toml::to_string(&self.manifest).unwrap().into_bytes();
        let (p, v) = (self.manifest.product.clone(), self.manifest.version.to_string());
        self.sign(&key(), &p, &v);
    }

    /// Makes this a format-2 bundle carrying `statement` as its provenance, with a DSSE
    /// signature by each of `signers`, and signs the manifest again.
    pub fn with_provenance(mut self, statement: &[u8], signers: &[&SecretKey]) -> Parts {
        let mut z = Vec::new();
        let p =
            bundle::compress_payload(bundle::PROVENANCE, bundle::Target::Provenance, statement, &mut z, CHUNK).unwrap();
        self.manifest.format = 2;
        self.manifest.payloads.insert(0, p);
        let sigs = signers
            .iter()
            .map(|k| {
                let s = trust::dsse::sign(k, trust::dsse::IN_TOTO, statement);
                (format!("{}.{}.dsse", bundle::PROVENANCE, k.id()), serde_json::to_string(&s).unwrap())
            })
            .collect();
        self.provenance = Some((z, sigs));
        self.resign();
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut r: &[u8] = &self.payload;
        let mut sigs = self.sigs.clone();
        match &self.provenance {
            None => {
                let p = &self.manifest.payloads[0];
                bundle::write_bundle(&mut out, &self.manifest_bytes, &sigs, &mut [(p, &mut r)]).unwrap();
            }
            Some((z, dsse)) => {
                sigs.extend(dsse.iter().cloned());
                let mut pr: &[u8] = z;
                let (p0, p1) = (&self.manifest.payloads[0], &self.manifest.payloads[1]);
                bundle::write_bundle(&mut out, &self.manifest_bytes, &sigs, &mut [(p0, &mut pr), (p1, &mut r)])
                    .unwrap();
            }
        }
        out
    }
}

pub fn bundle_bytes(version: &str, sv: u64, img: &[u8]) -> Vec<u8> {
    parts(version, sv, img).bytes()
}

/// A simulated device whose slot A runs v1 (security version 1).
pub struct Dev {
    pub dir: tempfile::TempDir,
    pub v1: Vec<u8>,
}

impl Dev {
    pub fn new() -> Dev {
        Dev::with_slot_size(SLOT_SIZE)
    }
    pub fn with_slot_size(slot_size: u64) -> Dev {
        Dev::made(slot_size, false)
    }
    /// A device that boots only dm-verity slots (as the appliance image is).
    pub fn verified() -> Dev {
        Dev::made(SLOT_SIZE, true)
    }
    pub fn made_with(slot_size: u64, verity: bool) -> Dev {
        Dev::made(slot_size, verity)
    }
    fn made(slot_size: u64, verity: bool) -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let v1 = image("1.0.0", 300_000);
        let img = dir.path().join("v1.img");
        fs::write(&img, &v1).unwrap();
        let cfg = DeviceConfig {
            product: PRODUCT.into(),
            channel: product::Channel::Release,
            tries: 3,
            version: None,
            security_version: None,
            cmdline: None,
            verity,
        };
        let policy = policy_text();
        Device::init_simulated(
            &dir.path().join("dev"),
            &sideload::Simulated {
                config: &cfg,
                policy: &policy,
                slot_size,
                image: &img,
                version: "1.0.0",
                security_version: 1,
                power_loss: true,
                zones: None,
                live_firewall: false,
            },
        )
        .unwrap();
        Dev { dir, v1 }
    }
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("dev")
    }
    pub fn agent(&self) -> Agent {
        Agent::open(Device::simulated(&self.root()).unwrap(), std::time::Duration::from_secs(10)).unwrap()
    }
    pub fn write_bundle(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        p
    }
    pub fn install(&self, bytes: &[u8]) -> Result<sideload::Accepted, sideload::Error> {
        let p = self.write_bundle("b.airlock", bytes);
        self.agent().install(&p, InstallOptions::default(), &mut NoProgress)
    }
    pub fn slot(&self, s: &str) -> Vec<u8> {
        fs::read(self.root().join("slots").join(format!("root-{s}"))).unwrap()
    }
    /// The device state without the audit head (which every audit record moves on).
    pub fn state(&self) -> sideload::AgentState {
        let mut s = sideload::state::load(&self.root().join("data")).unwrap().unwrap();
        s.audit = Default::default();
        s
    }
    /// Every audit record, after checking the chain against the state's head.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        let head = sideload::state::load(&self.root().join("data")).unwrap().unwrap().audit;
        let mut out = Vec::new();
        let c = sideload::audit::check(&self.root().join("data/audit.jsonl"), Some(&head), |_, v| out.push(v.clone()))
            .unwrap();
        assert_eq!(c.broken, None, "the audit chain is broken");
        out
    }
    pub fn boot(&self) -> sideload::BootState {
        use sideload::BootControl;
        sideload::SimBoot { path: self.root().join("boot/state.toml") }.state().unwrap()
    }
    /// Power cut and power on: unsynced writes are lost, then the boot loader picks a slot.
    pub fn power_on(&self) -> sideload::BootState {
        sideload::simfs::power_cut(&self.root()).unwrap();
        sideload::SimBoot { path: self.root().join("boot/state.toml") }.power_on().unwrap()
    }
}

pub fn slot_holds(slot: &[u8], img: &[u8]) -> bool {
    slot.len() >= img.len() && &slot[..img.len()] == img
}
