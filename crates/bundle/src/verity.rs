//! A slot's dm-verity parameters as the signed manifests carry them ([`Verity`], whose one
//! owner is the `schema` crate), checked here, and the two kernel command-line words that hand
//! them to the initrd (`airlock.roothash=`, `airlock.hashoffset=`; read by the image's
//! `local-top/airlock-verity`). The words come only from a signed table, never from a
//! bundle's own `cmdline` (which may not hold them).

pub use schema::build_manifest::Verity;

/// The data and hash block size every slot uses.
pub const VERITY_BLOCK: u64 = 4096;
/// The only hash algorithm accepted.
pub const VERITY_HASH: &str = "sha256";
/// The command-line word prefixes the initrd reads.
pub const ROOTHASH_WORD: &str = "airlock.roothash=";
pub const HASHOFFSET_WORD: &str = "airlock.hashoffset=";
/// The name of the slot's tree: a build output and a bundle payload.
pub const VERITY_FILE: &str = "root.verity";

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5 && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| is_hex(g, n))
}

/// The largest tree a slot of `data` bytes has: one 32-byte hash per 4 KiB block at each
/// level (1/128 of the level below, each level rounded up to a block), plus the superblock.
pub fn max_tree_size(data: u64) -> u64 {
    let mut total = VERITY_BLOCK;
    let mut level = data.div_ceil(VERITY_BLOCK);
    loop {
        let blocks = (level * 32).div_ceil(VERITY_BLOCK);
        total += blocks * VERITY_BLOCK;
        if blocks <= 1 {
            return total;
        }
        level = blocks;
    }
}

/// Checks a verity table for a root filesystem of `root_size` bytes and a tree of
/// `tree_size`: the tree starts right after the filesystem, on a block boundary, and is no
/// larger than a tree of that filesystem can be.
pub fn check(v: &Verity, root_size: u64, tree_size: u64) -> Result<(), String> {
    if !is_hex(&v.root_hash, 64) {
        return Err("verity.root_hash: 64 lowercase hex digits".into());
    }
    if !is_hex(&v.salt, 64) {
        return Err("verity.salt: 64 lowercase hex digits".into());
    }
    if !is_uuid(&v.uuid) {
        return Err("verity.uuid: a lowercase UUID (8-4-4-4-12 hex digits)".into());
    }
    if v.hash != VERITY_HASH {
        return Err(format!("verity.hash `{}` is not known ({VERITY_HASH} is)", v.hash.escape_debug()));
    }
    if v.block_size != VERITY_BLOCK {
        return Err(format!("verity.block_size {} is not {VERITY_BLOCK}", v.block_size));
    }
    if v.hash_offset == 0 || !v.hash_offset.is_multiple_of(VERITY_BLOCK) || v.hash_offset != root_size {
        return Err(format!(
            "verity.hash_offset {} must be the root payload's size ({root_size}), a multiple of {VERITY_BLOCK}",
            v.hash_offset
        ));
    }
    let max = max_tree_size(root_size);
    if tree_size == 0 || !tree_size.is_multiple_of(VERITY_BLOCK) || tree_size > max {
        return Err(format!(
            "the verity tree is {tree_size} bytes: a tree of a {root_size}-byte slot is whole blocks of {VERITY_BLOCK}, at most {max}"
        ));
    }
    Ok(())
}

/// The kernel command-line words that open the slot through dm-verity.
pub fn cmdline_words(v: &Verity) -> String {
    format!("{ROOTHASH_WORD}{} {HASHOFFSET_WORD}{}", v.root_hash, v.hash_offset)
}

/// A slot's command line after `root=`: the verity words of its signed table, when it has one,
/// then `tail` (the image's own words). The one place both the builder's first entry and the
/// agent's entries get them from.
pub fn slot_cmdline(verity: Option<&Verity>, tail: &str) -> String {
    match verity {
        Some(v) => format!("{} {tail}", cmdline_words(v)),
        None => tail.to_string(),
    }
}

/// Whether a command-line word is one of the verity words (a bundle's `cmdline` may not hold
/// them: they come from the signed table).
pub fn is_verity_word(w: &str) -> bool {
    w.starts_with(ROOTHASH_WORD) || w.starts_with(HASHOFFSET_WORD)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn good() -> Verity {
        Verity {
            root_hash: "ab".repeat(32),
            hash_offset: 1 << 20,
            hash: "sha256".into(),
            block_size: 4096,
            salt: "cd".repeat(32),
            uuid: "01234567-89ab-4cde-8f01-23456789abcd".into(),
        }
    }

    #[test]
    fn a_table_is_checked_field_by_field_against_the_payloads() {
        let v = good();
        let tree = 3 * 4096;
        assert_eq!(check(&v, 1 << 20, tree), Ok(()));
        assert_eq!(cmdline_words(&v), format!("airlock.roothash={} airlock.hashoffset=1048576", "ab".repeat(32)));
        assert_eq!(slot_cmdline(Some(&v), "ro quiet"), format!("{} ro quiet", cmdline_words(&v)));
        assert_eq!(slot_cmdline(None, "ro quiet"), "ro quiet");
        let bad: Vec<(Verity, u64, u64, &str)> = vec![
            (Verity { root_hash: "AB".repeat(32), ..good() }, 1 << 20, tree, "root_hash"),
            (Verity { root_hash: "ab".repeat(31), ..good() }, 1 << 20, tree, "root_hash"),
            (Verity { salt: "x".repeat(64), ..good() }, 1 << 20, tree, "salt"),
            (Verity { uuid: "0123".into(), ..good() }, 1 << 20, tree, "uuid"),
            (Verity { hash: "sha1".into(), ..good() }, 1 << 20, tree, "sha1"),
            (Verity { block_size: 512, ..good() }, 1 << 20, tree, "block_size"),
            (good(), (1 << 20) + 4096, tree, "hash_offset"),
            (Verity { hash_offset: (1 << 20) + 1, ..good() }, (1 << 20) + 1, tree, "hash_offset"),
            (Verity { hash_offset: 0, ..good() }, 0, tree, "hash_offset"),
            (good(), 1 << 20, 0, "tree"),
            (good(), 1 << 20, tree + 1, "tree"),
            (good(), 1 << 20, 1 << 20, "tree"),
        ];
        for (v, root, tree, what) in bad {
            let e = check(&v, root, tree).unwrap_err();
            assert!(e.contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn the_tree_bound_is_what_veritysetup_makes_and_not_more() {
        // veritysetup format (sha256, 4 KiB blocks): a 1 MiB slot (256 blocks) has two hash
        // blocks, their one parent and the superblock; 128 data blocks fill one hash block.
        assert_eq!(max_tree_size(1 << 20), 4 * 4096);
        assert_eq!(max_tree_size(128 * 4096), 2 * 4096);
        assert_eq!(max_tree_size(129 * 4096), 4 * 4096);
        // 169 MiB (the default image): 43,264 blocks → 338 + 3 + 1 hash blocks.
        assert_eq!(max_tree_size(169 << 20), (1 + 338 + 3 + 1) * 4096);
        assert!(is_verity_word("airlock.roothash=x") && is_verity_word("airlock.hashoffset=1"));
        assert!(!is_verity_word("airlock.other=1") && !is_verity_word("ro"));
    }
}
