//! `build`: flags in, calls into `image` and `release`, a summary out.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use product::Channel;

use crate::args::RecipeArgs;
use crate::bundle_cmd::{Round, channel_policy, make_bundle};
use crate::output::capped;
use crate::{Ctx, Exit, out};

#[derive(Args, Debug)]
pub struct Build {
    #[command(flatten)]
    pub args: RecipeArgs,
    /// Never touch the network: every input must already be in the store, and missing host
    /// tools are named with the command that installs them (nothing is installed).
    #[arg(long)]
    pub offline: bool,
    /// Rebuild every stage, ignoring caches.
    #[arg(long)]
    pub no_cache: bool,
    /// Replace a published version built from other inputs (deletes it, its signatures and
    /// its bundle, and says so).
    #[arg(long)]
    pub force: bool,
    /// Output root (default: images/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Parent of the scratch directory (default: the output directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Cargo target directory for the stack crates (default: target/airlock-stack).
    #[arg(long)]
    pub stack_target_dir: Option<PathBuf>,
}

impl Build {
    pub fn options(&self, ctx: &Ctx) -> image::BuildOptions {
        image::BuildOptions {
            recipe: self.args.recipe_path(ctx),
            repo_root: ctx.root.clone(),
            lock: self.args.lock_path(ctx),
            store: self.args.store_path(ctx),
            images_dir: self.out.as_deref().map(|o| ctx.path(o)).unwrap_or_else(|| ctx.root.join("images")),
            offline: self.offline,
            use_cache: !self.no_cache,
            force: self.force,
            stack_target_dir: self
                .stack_target_dir
                .as_deref()
                .map(|d| ctx.path(d))
                .unwrap_or_else(|| ctx.root.join("target/airlock-stack")),
            work_parent: self.work_dir.as_deref().map(|d| ctx.path(d)),
            interactive: std::io::stderr().is_terminal() && !ctx.json,
            hint_args: self.args.shown(ctx),
        }
    }

    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let recipe = self.args.load(ctx)?;
        crate::deps::ensure(&image::tools::needed(&recipe, self.offline), self.offline)?;
        let report = image::build(&self.options(ctx))?;
        let m = &report.manifest;
        let manifest_path = report.out_dir.join(image::MANIFEST_NAME);
        let channel = recipe.channel;
        if channel == Channel::Dev {
            // dev recipes: signed with the INSECURE dev keys (both roles), verifiable with
            // keys/dev/trust.toml.
            let statement = report.out_dir.join(evidence::STATEMENT_NAME);
            for (role, key) in crate::keys::dev_secrets(&ctx.root)? {
                release::sign_file(&manifest_path, &key, role, None, None)?;
                release::sign_file(&statement, &key, role, None, None)?;
            }
        }
        let lp = channel_policy(ctx, channel)?;
        let build_round =
            Round { file: manifest_path.clone(), report: release::verify_file(&manifest_path, &lp)?.report().clone() };
        let (bundle, bundle_rounds) = make_bundle(ctx, &report.out_dir, channel, None, false)?;
        // The evidence (provenance envelope, report) from the published directory itself.
        let evidence = image::evidence_report::make(
            &report.out_dir,
            &lp,
            image::evidence_report::reproducibility(&report.out_dir),
        )?;

        let complete = build_round.report.accepted() && bundle.is_some();
        if ctx.json {
            let out = serde_json::json!({
                "ok": complete,
                "out_dir": report.out_dir,
                "channel": channel,
                "up_to_date": report.up_to_date,
                "bundle": bundle,
                "build_key": m.build_key,
                "outputs": m.outputs.iter().map(|(k, o)| (k.clone(), serde_json::json!({"sha256": o.sha256, "size": o.size}))).collect::<serde_json::Map<_, _>>(),
                "build_manifest": build_round.json(),
                "bundle_manifest": bundle_rounds[0].json(),
                "provenance_signatures": bundle_rounds.get(1).map(Round::json),
                "timings": report.timings.iter().map(|(k, d)| serde_json::json!({"stage": k, "seconds": d.as_secs_f64()})).collect::<Vec<_>>(),
                "report": evidence.report_html,
                "provenance": evidence.envelope,
            });
            out!("{out}");
        } else {
            let total: f64 = report.timings.iter().map(|(_, d)| d.as_secs_f64()).sum();
            let state = if report.up_to_date { "up to date" } else { "built" };
            out!(
                "{} {} ({}, channel {channel}) {state} in {total:.1}s",
                m.image.name,
                m.image.version,
                m.image.product
            );
            out!("  {}", report.out_dir.display());
            for (name, o) in &m.outputs {
                out!("  {name:<16} {:>12} bytes  sha256:{}", o.size, o.sha256);
            }
            out!("  {:<16} build key {}", image::MANIFEST_NAME, m.build_key);
            if lp.policy.trusts_dev_key() {
                out!("  signed with the INSECURE dev key (channel dev): anyone can sign with it");
            }
            for l in std::iter::once(&build_round).chain(&bundle_rounds).flat_map(Round::lines) {
                out!("  {l}");
            }
            out!("  evidence         {}", evidence.report_html.display());
            match &bundle {
                Some(b) => out!("  update bundle    {}", b.display()),
                None => {
                    out!("  waiting for the offline signers (README, \"The release flow\"): carry");
                    out!(
                        "    {}",
                        capped(
                            &std::iter::once(&build_round)
                                .chain(&bundle_rounds)
                                .map(|r| r.file.display().to_string())
                                .collect::<Vec<_>>(),
                            3,
                            ""
                        )
                        .replace('\n', "\n    ")
                    );
                    out!(
                        "  to the signing machine, bring the .minisig and .dsse files back beside them, then run `{}`",
                        crate::args::command("bundle", &self.args.shown(ctx))
                    );
                }
            }
        }
        if complete { Ok(()) } else { Err(Exit(1, String::new()).into()) }
    }
}
