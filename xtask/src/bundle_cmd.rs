//! `bundle`: packs a built image into `NAME-VERSION.airlock` beside it — root.img compressed,
//! chunk-hashed, a signed bundle manifest. Dev recipes are signed with the dev key; release
//! bundles are assembled once the offline signers' `.minisig` files are beside the manifest.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use sha2::Digest;

use crate::build::RecipeArgs;
use crate::{Exit, repo_root};

pub const BUNDLE_MANIFEST: &str = "bundle-manifest.toml";

#[derive(Args, Debug)]
pub struct BundleCmd {
    #[command(flatten)]
    pub args: RecipeArgs,
    /// Output root the image was built into (default: images/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The previous release's bundle manifest, to chain releases.
    #[arg(long)]
    pub previous: Option<PathBuf>,
}

/// Writes the bundle for the image in `dir`; returns its path, or `None` when a release
/// bundle still waits for its signatures.
pub fn make_bundle(dir: &Path, previous: Option<&Path>) -> Result<Option<PathBuf>> {
    let build_manifest_path = dir.join(image::MANIFEST_NAME);
    let text = fs::read_to_string(&build_manifest_path)
        .with_context(|| format!("reading {}", build_manifest_path.display()))?;
    let bm = image::manifest::BuildManifest::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", build_manifest_path.display()))?;
    let previous_manifest = match previous {
        Some(p) => format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(fs::read(p).with_context(|| p.display().to_string())?))
        ),
        None => String::new(),
    };
    let zst = dir.join(".root.img.zst.part");
    let payload = {
        let input = fs::File::open(dir.join(image::SLOT_NAME)).context("opening root.img")?;
        let out = std::io::BufWriter::new(fs::File::create(&zst)?);
        bundle::compress_payload("root.img", std::io::BufReader::new(input), out, bundle::DEFAULT_CHUNK)?
    };
    let manifest = bundle::Manifest {
        format: bundle::FORMAT,
        product: bm.image.product.clone(),
        version: bm.image.version.clone(),
        security_version: bm.image.security_version,
        channel: bm.image.channel.clone(),
        previous_manifest,
        build_manifest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(text.as_bytes()))),
        hash: "sha256".into(),
        chunk_size: bundle::DEFAULT_CHUNK,
        payloads: vec![payload],
    };
    let mpath = dir.join(BUNDLE_MANIFEST);
    let mtext = manifest.to_toml()?;
    let unchanged = fs::read_to_string(&mpath).is_ok_and(|t| t == mtext);
    if !unchanged {
        // A new manifest: signatures of an older one no longer apply.
        for s in crate::keys::signature_files(&mpath).unwrap_or_default() {
            fs::remove_file(&s)?;
        }
        store::write_atomic(&mpath, mtext.as_bytes())?;
    }
    if manifest.channel == "dev" {
        let key = crate::keys::dev_secret()?;
        crate::keys::sign_file(&mpath, &key, "release", &manifest.product, &manifest.version)?;
    }
    let policy = crate::keys::load_policy(&crate::keys::default_policy(manifest.channel == "dev"))?;
    // Inside the bundle, `bundle-manifest.toml.KEYID.minisig` becomes `manifest.toml.KEYID.minisig`.
    let sigs: Vec<(String, String)> = crate::keys::read_signatures(&mpath)?
        .into_iter()
        .map(|(name, text)| (name.replacen(BUNDLE_MANIFEST, bundle::MANIFEST_ENTRY, 1), text))
        .collect();
    let refs = crate::keys::sig_refs(&sigs);
    let expect = trust::Expect { product: Some(&manifest.product), version: Some(&manifest.version) };
    let report = policy.verify(&trust::Prehash::of_bytes(mtext.as_bytes()), &refs, &expect);
    if !report.accepted {
        let _ = fs::remove_file(&zst);
        eprintln!(
            "{}: release bundle waits for signatures ({} of {} release signers so far).",
            mpath.display(),
            report.roles[0].valid,
            report.roles[0].threshold
        );
        eprintln!(
            "Carry it to the offline signing machine; each signer runs `cargo xtask sign {BUNDLE_MANIFEST} --key THEIR.key`;"
        );
        eprintln!("bring the .minisig files back beside it and run `cargo xtask bundle` again.");
        return Ok(None);
    }
    let name = format!("{}-{}.airlock", bm.image.name, bm.image.version);
    let dest = dir.join(&name);
    let tmp = dir.join(format!(".{name}.part"));
    {
        let out = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?);
        let mut z = fs::File::open(&zst)?;
        let p = &manifest.payloads[0];
        bundle::write_bundle(out, mtext.as_bytes(), &sigs, &mut [(p, &mut z)])?;
    }
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, &dest)?;
    fs::remove_file(&zst)?;
    store::sync_dir(dir)?;
    Ok(Some(dest))
}

impl BundleCmd {
    pub fn run(self) -> Result<()> {
        let recipe = self.args.load()?;
        let dir =
            self.out.clone().unwrap_or_else(|| repo_root().join("images")).join(&recipe.name).join(&recipe.version);
        if !dir.join(image::MANIFEST_NAME).exists() {
            bail!("{}: no build here: run `cargo xtask build` first", dir.display());
        }
        match make_bundle(&dir, self.previous.as_deref())? {
            Some(p) => {
                println!("{} ({} bytes)", p.display(), fs::metadata(&p)?.len());
                Ok(())
            }
            None => Err(Exit(1, String::new()).into()),
        }
    }
}
