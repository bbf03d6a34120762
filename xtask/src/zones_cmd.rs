//! `zones`: shows a recipe's IEC 62443 zones and conduits and the firewall they compile to —
//! the image's defaults, or with a site profile applied (as the agent would on the box) — and
//! checks the ruleset with `nft -c` in a network namespace of its own.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::args::RecipeArgs;
use crate::{Ctx, Exit, out};

#[derive(Args, Debug)]
pub struct ZonesCmd {
    /// The recipe (default: recipes/parking-controller.toml).
    pub recipe: Option<PathBuf>,
    /// A site profile to apply on top of the image's model (its signatures are not checked
    /// here: `cargo xtask verify --role approval` does that).
    #[arg(long)]
    pub site: Option<PathBuf>,
    /// Print the generated nftables ruleset.
    #[arg(long)]
    pub rules: bool,
    /// Print the model as the image carries it (/etc/airlock/zones.toml), and nothing else.
    #[arg(long, conflicts_with_all = ["rules", "site"])]
    pub model: bool,
    /// Check the ruleset with the host's `nft -c` (root; nothing on the host changes).
    #[arg(long)]
    pub check: bool,
}

impl ZonesCmd {
    pub fn run(&self, ctx: &Ctx) -> Result<()> {
        let args = RecipeArgs { recipe: self.recipe.clone(), lock: None, store: None };
        let recipe = args.load(ctx)?;
        let mut model = recipe.zones.clone();
        let mut origin = zones::Origin { image: format!("{} {}", recipe.name, recipe.version), site: String::new() };
        if let Some(p) = &self.site {
            let p = ctx.path(p);
            let bytes = std::fs::read(&p).with_context(|| format!("{}: cannot read", p.display()))?;
            let site = zones::SiteProfile::parse(&bytes).map_err(|e| Exit(1, format!("{}: {e}", p.display())))?;
            model = site.apply(&model, &recipe.product).map_err(|ps| {
                Exit(1, format!("{}: does not fit {}:\n  {}", p.display(), recipe.path.display(), ps.join("\n  ")))
            })?;
            origin.site = format!("site {}, serial {}", site.site, site.serial);
        }
        if self.model {
            out!("{}", model.to_toml().trim_end());
            return Ok(());
        }
        let rules = zones::ruleset(&model, &origin);
        if self.check {
            let dir = tempfile::tempdir()?;
            let f = dir.path().join("nftables.conf");
            std::fs::write(&f, &rules)?;
            let sh = xshell::Shell::new()?;
            let o = xshell::cmd!(sh, "unshare --net nft -c -f {f}")
                .quiet()
                .ignore_status()
                .output()
                .context("unshare --net nft -c (apt-get install -y nftables util-linux; run as root)")?;
            if !o.status.success() {
                return Err(Exit(
                    1,
                    format!("nft -c refused the ruleset:\n{}", String::from_utf8_lossy(&o.stderr).trim()),
                )
                .into());
            }
        }
        if ctx.json {
            out!(
                "{}",
                serde_json::json!({
                    "recipe": recipe.path,
                    "zones": model.zones,
                    "conduits": model.conduits,
                    "ruleset": rules,
                    "checked": self.check,
                })
            );
            return Ok(());
        }
        for line in model.describe() {
            out!("{line}");
        }
        if self.check {
            out!("ruleset: {} bytes, {} lines; nft -c: loads", rules.len(), rules.lines().count());
        }
        if self.rules {
            out!("\n{rules}");
        }
        Ok(())
    }
}
