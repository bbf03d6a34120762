//! The slot's dm-verity hash tree (`root.verity`): `veritysetup format` over `root.img`, with
//! the salt and superblock UUID derived from the recipe, so two builds of the same inputs make
//! the same tree and the same root hash (`repro` compares both). The slot on the disk, and as
//! the agent writes it, is `root.img` then the tree at `hash_offset` (the filesystem's size,
//! padded to a 4 KiB block); the initrd opens it with the root hash from the boot entry.

use std::fs::{self, OpenOptions};
use std::path::Path;

use recipe::Recipe;
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use crate::error::{Error, Result, io_err, tool_err};

pub use bundle::{VERITY_BLOCK, VERITY_FILE, Verity};

/// The salt, derived from the recipe (hex of 32 bytes).
fn salt(recipe: &Recipe) -> String {
    hex::encode(Sha256::digest(format!("airlock-verity:{}:{}:{}", recipe.product, recipe.name, recipe.version)))
}

/// Pads `img` with zeros to a whole number of verity blocks; returns its size.
fn pad_to_block(img: &Path) -> Result<u64> {
    let f = OpenOptions::new().write(true).open(img).map_err(io_err(img))?;
    let len = f.metadata().map_err(io_err(img))?.len();
    let padded = len.div_ceil(VERITY_BLOCK) * VERITY_BLOCK;
    if padded != len {
        f.set_len(padded).map_err(io_err(img))?;
        f.sync_all().map_err(io_err(img))?;
    }
    Ok(padded)
}

/// Makes `tree` for the slot image `img` (padded first), and returns the table the manifests
/// carry.
pub fn make(recipe: &Recipe, img: &Path, tree: &Path) -> Result<Verity> {
    let sh = Shell::new().map_err(tool_err("shell"))?;
    let size = pad_to_block(img)?;
    let salt = salt(recipe);
    let uuid = crate::slotfs::fixed_uuid(recipe, "verity");
    let _ = fs::remove_file(tree);
    fs::write(tree, b"").map_err(io_err(tree))?;
    let block = VERITY_BLOCK.to_string();
    let out = cmd!(
        sh,
        "veritysetup format --hash=sha256 --data-block-size={block} --hash-block-size={block} --salt={salt} --uuid={uuid} {img} {tree}"
    )
    .quiet()
    .read()
    .map_err(tool_err("veritysetup format (the slot's hash tree)"))?;
    let root_hash = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_string())
        .ok_or_else(|| Error::Invalid(format!("veritysetup format printed no root hash:\n{out}")))?;
    let tree_size = fs::metadata(tree).map_err(io_err(tree))?.len();
    let v =
        Verity { root_hash, hash_offset: size, hash: bundle::VERITY_HASH.into(), block_size: VERITY_BLOCK, salt, uuid };
    bundle::check_verity(&v, size, tree_size).map_err(|e| Error::Invalid(format!("{}: {e}", tree.display())))?;
    fs::set_permissions(tree, std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(io_err(tree))?;
    Ok(v)
}
