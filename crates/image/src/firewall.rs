//! The image's firewall, generated: the recipe's zones and conduits compiled by the `zones`
//! crate into `/etc/nftables.conf` (the image's defaults, before any site profile) and the
//! model itself as `/etc/airlock/zones.toml` (what the agent compiles again with a site
//! profile). The ruleset is checked at build time by the image's own `nft -c`, so a ruleset
//! the box would fail to load never leaves the builder.

use std::fs;
use std::path::Path;

use recipe::Recipe;
use xshell::{Shell, cmd};

use crate::error::{Error, Result, io_err, tool_err};
use crate::overlay;

pub const RULESET_DEST: &str = "/etc/nftables.conf";
pub const MODEL_DEST: &str = "/etc/airlock/zones.toml";

/// The ruleset text of a recipe's image defaults.
pub fn default_ruleset(recipe: &Recipe) -> String {
    zones::ruleset(
        &recipe.zones,
        &zones::Origin { image: format!("{} {}", recipe.name, recipe.version), site: String::new() },
    )
}

/// Writes both files into the image and checks the ruleset with the image's `nft`.
pub fn install(sh: &Shell, recipe: &Recipe, root: &Path, scratch: &Path) -> Result<()> {
    for o in &recipe.overlays {
        let hand = recipe.repo_root.join(o).join(RULESET_DEST.trim_start_matches('/'));
        if fs::symlink_metadata(&hand).is_ok() {
            return Err(Error::Invalid(format!(
                "{}: the firewall is generated from the recipe's [[zone]] and [[conduit]] tables; remove this hand-written ruleset and declare its rules as conduits in {}",
                hand.display(),
                recipe.path.display()
            )));
        }
    }
    let rules = scratch.join("nftables.conf");
    fs::write(&rules, default_ruleset(recipe)).map_err(io_err(&rules))?;
    let model = scratch.join("zones.toml");
    fs::write(&model, recipe.zones.to_toml()).map_err(io_err(&model))?;
    overlay::place_file(root, RULESET_DEST, &rules, 0o755)?;
    overlay::place_file(root, MODEL_DEST, &model, 0o644)?;
    check(sh, root, RULESET_DEST)
}

/// `nft -c -f FILE` with the image's own nft (the version that will load it on the box), in a
/// network namespace of its own so that nothing on the builder is touched.
pub fn check(sh: &Shell, root: &Path, file_in_image: &str) -> Result<()> {
    if !root.join("usr/sbin/nft").exists() {
        return Err(Error::Invalid(
            "the image has no /usr/sbin/nft: add `nftables` to base.packages (the firewall is not optional)".into(),
        ));
    }
    let out = cmd!(sh, "unshare --net chroot {root} /usr/sbin/nft -c -f {file_in_image}")
        .quiet()
        .ignore_status()
        .output()
        .map_err(tool_err("unshare/chroot nft -c (checking the generated firewall)"))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "the generated firewall ({file_in_image}) does not load with the image's nft:\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
