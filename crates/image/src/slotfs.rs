//! The read-only slot filesystem (`root.img`): squashfs (default: smaller and faster to make,
//! measured in `cargo xtask bench build`) or erofs, with every time and id fixed.

use std::path::Path;

use recipe::{Recipe, SlotFs};
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use crate::error::{Result, tool_err};

/// A UUID derived from the recipe, so the filesystem id is the same on every build.
pub fn fixed_uuid(recipe: &Recipe, what: &str) -> String {
    let d = Sha256::digest(format!("airlock:{}:{}:{}:{what}", recipe.product, recipe.name, recipe.version));
    let h = hex::encode(&d[..16]);
    format!("{}-{}-4{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

pub fn make(recipe: &Recipe, root: &Path, dest: &Path) -> Result<()> {
    let sh = Shell::new().map_err(tool_err("shell"))?;
    let sde = recipe.source_date_epoch.to_string();
    let level = recipe.output.slot_compression_level.to_string();
    match recipe.output.slot_fs {
        SlotFs::Squashfs => {
            // SOURCE_DATE_EPOCH sets the mkfs time and every inode time (squashfs-tools 4.5).
            cmd!(sh, "mksquashfs {root} {dest} -noappend -comp zstd -Xcompression-level {level} -no-xattrs -no-progress -quiet")
                .env("SOURCE_DATE_EPOCH", &sde)
                .quiet()
                .ignore_stdout()
                .run()
                .map_err(tool_err("mksquashfs"))?;
        }
        SlotFs::Erofs => {
            let uuid = fixed_uuid(recipe, "root");
            let comp = format!("-zlz4hc,{level}");
            cmd!(sh, "mkfs.erofs --quiet {comp} -T {sde} -U {uuid} {dest} {root}")
                .env("SOURCE_DATE_EPOCH", &sde)
                .quiet()
                .ignore_stdout()
                .run()
                .map_err(tool_err("mkfs.erofs"))?;
        }
    }
    Ok(())
}
