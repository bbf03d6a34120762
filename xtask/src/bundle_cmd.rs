//! `bundle`: packs a built image into `NAME-VERSION.airlock` beside it (the work is
//! `release::assemble`). Dev bundles are signed with the dev key; release bundles are written
//! once the offline signers' `bundle-manifest.toml.KEYID.minisig` files meet the policy.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use product::Channel;
use release::{Assembled, PolicySource};

use crate::args::RecipeArgs;
use crate::{Ctx, Exit, out};

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
    /// Replace a signed bundle manifest that differs (deletes its signatures, and says so).
    #[arg(long)]
    pub force: bool,
}

/// The signature state of one signed file, for people and for `--json`.
pub struct Round {
    pub file: PathBuf,
    pub report: trust::Report,
}

impl Round {
    pub fn json(&self) -> serde_json::Value {
        let (signers, roles) = bundle::signer_lines(&self.report);
        serde_json::json!({
            "file": self.file,
            "accepted": self.report.accepted(),
            "summary": self.report.summary(),
            "signers": signers,
            "roles": roles,
            "hints": release::policy::hints(&self.report, &self.file),
        })
    }

    /// Each signer with its reason, every role's count, and what is still needed.
    pub fn lines(&self) -> Vec<String> {
        let name = self.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut v = vec![format!("{name}: {}", self.report.summary())];
        for s in self.report.signers() {
            let id = s.key_id.map(|k| k.to_string()).unwrap_or_else(|| "?".into());
            v.push(match (&s.role, &s.reason) {
                (Some(r), _) => format!(
                    "  signed by {id} ({r}{})",
                    s.key_name.as_deref().map(|n| format!(" `{n}`")).unwrap_or_default()
                ),
                (None, why) => format!("  {} from {id} does not count: {}", s.file, why.as_deref().unwrap_or("?")),
            });
        }
        v.extend(release::policy::hints(&self.report, &self.file).into_iter().map(|h| format!("  {h}")));
        v
    }
}

/// The policy a channel's artefacts are checked against: the builder's choice, by channel.
pub fn channel_policy(ctx: &Ctx, channel: Channel) -> Result<release::LoadedPolicy> {
    Ok(release::policy::load(&ctx.root, &PolicySource::for_channel(channel))?)
}

/// Assembles the bundle of the build in `dir`: (bundle path if written, the signature rounds:
/// the bundle manifest's, then the provenance statement's when the build made one).
pub fn make_bundle(
    ctx: &Ctx,
    dir: &Path,
    channel: Channel,
    previous: Option<&Path>,
    force: bool,
) -> Result<(Option<PathBuf>, Vec<Round>)> {
    let lp = channel_policy(ctx, channel)?;
    let dev_keys = if channel == Channel::Dev { crate::keys::dev_secrets(&ctx.root)? } else { Vec::new() };
    let dev_keys: Vec<(trust::Role, &trust::SecretKey)> = dev_keys.iter().map(|(r, k)| (*r, k)).collect();
    let (path, manifest, report, provenance) = match release::assemble(dir, previous, &lp.policy, &dev_keys, force)? {
        Assembled::Written { path, manifest, report, provenance } => (Some(path), manifest, report, provenance),
        Assembled::Waiting { manifest, report, provenance } => (None, manifest, report, provenance),
    };
    let mut rounds = vec![Round { file: manifest, report }];
    rounds.extend(provenance.map(|report| Round { file: dir.join(bundle::PROVENANCE), report }));
    Ok((path, rounds))
}

impl BundleCmd {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let recipe = self.args.load(ctx)?;
        let images = self.out.as_deref().map(|o| ctx.path(o)).unwrap_or_else(|| ctx.root.join("images"));
        let dir = image::out_dir(&images, &recipe);
        if !dir.join(image::MANIFEST_NAME).exists() {
            return Err(Exit(
                2,
                format!("{}: no build here: run `cargo xtask build {}` first", dir.display(), self.args.shown(ctx)),
            )
            .into());
        }
        let previous = self.previous.as_deref().map(|p| ctx.path(p));
        let (bundle, rounds) = make_bundle(ctx, &dir, recipe.channel, previous.as_deref(), self.force)?;
        // The evidence again, now with the signers' provenance signatures (if any came back).
        let lp = channel_policy(ctx, recipe.channel)?;
        let evidence = image::evidence_report::make(&dir, &lp, image::evidence_report::reproducibility(&dir))?;
        if ctx.json {
            out!(
                "{}",
                serde_json::json!({"ok": bundle.is_some(), "bundle": bundle, "bundle_manifest": rounds[0].json(), "provenance": rounds.get(1).map(Round::json)})
            );
        } else {
            for l in rounds.iter().flat_map(Round::lines) {
                out!("{l}");
            }
            out!("evidence: {}", evidence.report_html.display());
            match &bundle {
                Some(p) => out!("{} ({} bytes)", p.display(), std::fs::metadata(p)?.len()),
                None => out!(
                    "waiting for signatures: bring the .minisig (and provenance .dsse) files back beside {} and run `cargo xtask bundle {}` again",
                    rounds[0].file.display(),
                    self.args.shown(ctx)
                ),
            }
        }
        if bundle.is_some() { Ok(()) } else { Err(Exit(1, String::new()).into()) }
    }
}
