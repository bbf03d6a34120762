//! What a bundle can carry, in one table: each payload kind's target, its file name (in the
//! build directory, in the signed manifest, and as the `.zst` entry of the bundle), where the
//! agent puts it, and whether a device that boots each slot's own kernel needs it. The bundle
//! writer (release's assembly), the reader's checks, the agent, the evidence report and
//! README's test all read this table: adding a kind is a row here, its `Target`, and its test.

use crate::manifest::Target;

/// Where the agent puts a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Streamed into the inactive root slot.
    Slot,
    /// Streamed into the inactive root slot after the filesystem, at the signed
    /// `[verity] hash_offset`.
    SlotTree,
    /// A file of that name on the ESP, in the slot's own folder (`ESP/a/`, `ESP/b/`), written
    /// once every byte of it matched.
    Esp(&'static str),
    /// Kept on the data partition as the slot's evidence, once its signatures met the policy.
    Evidence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadKind {
    pub target: Target,
    /// The file's name in the build directory and the manifest (`root.img`).
    pub name: &'static str,
    pub placement: Placement,
    /// A device that boots each slot's own kernel refuses a bundle without it.
    pub appliance_needs: bool,
    /// What it is, for people (README's table).
    pub what: &'static str,
}

/// The kernel's and the initrd's file names (build outputs, manifest payloads, ESP files).
pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRD_FILE: &str = "initrd.img";

/// Every kind, in the order a bundle carries them (the provenance statement first: its
/// signatures are checked before a byte of the slot is written; then the root).
pub const PAYLOAD_KINDS: &[PayloadKind] = &[
    PayloadKind {
        target: Target::Provenance,
        name: crate::manifest::PROVENANCE,
        placement: Placement::Evidence,
        appliance_needs: false,
        what: "the build's in-toto statement, checked against its DSSE signatures and kept for the slot",
    },
    PayloadKind {
        target: Target::Root,
        name: "root.img",
        placement: Placement::Slot,
        appliance_needs: true,
        what: "the read-only root filesystem, streamed into the inactive slot",
    },
    PayloadKind {
        target: Target::Verity,
        name: crate::VERITY_FILE,
        placement: Placement::SlotTree,
        appliance_needs: false,
        what: "the root slot's dm-verity hash tree, written after the filesystem; the initrd opens the slot with its signed root hash",
    },
    PayloadKind {
        target: Target::Kernel,
        name: KERNEL_FILE,
        placement: Placement::Esp(KERNEL_FILE),
        appliance_needs: true,
        what: "the slot's kernel, on the ESP beside its boot entry",
    },
    PayloadKind {
        target: Target::Initrd,
        name: INITRD_FILE,
        placement: Placement::Esp(INITRD_FILE),
        appliance_needs: true,
        what: "the slot's initrd, on the ESP beside its boot entry",
    },
];

/// The row of `target`.
pub fn kind(target: Target) -> &'static PayloadKind {
    // Every Target has its row (checked by the crate's tests).
    PAYLOAD_KINDS.iter().find(|k| k.target == target).unwrap_or(&PAYLOAD_KINDS[1])
}

/// The ESP file name a kind is written as, if it goes on the ESP.
pub fn esp_name(target: Target) -> Option<&'static str> {
    match kind(target).placement {
        Placement::Esp(n) => Some(n),
        _ => None,
    }
}

/// The kinds a device that boots each slot's own kernel needs beyond the root.
pub fn boot_files() -> impl Iterator<Item = &'static PayloadKind> {
    PAYLOAD_KINDS.iter().filter(|k| k.appliance_needs && matches!(k.placement, Placement::Esp(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_one_row_and_names_are_unique() {
        for t in [Target::Root, Target::Verity, Target::Kernel, Target::Initrd, Target::Provenance] {
            assert_eq!(PAYLOAD_KINDS.iter().filter(|k| k.target == t).count(), 1, "{t:?}");
            assert_eq!(kind(t).target, t);
        }
        for (i, k) in PAYLOAD_KINDS.iter().enumerate() {
            assert!(PAYLOAD_KINDS[..i].iter().all(|o| o.name != k.name), "{}", k.name);
        }
        assert_eq!(PAYLOAD_KINDS[0].target, Target::Provenance);
        assert_eq!(PAYLOAD_KINDS[1].target, Target::Root);
        assert_eq!(boot_files().map(|k| k.name).collect::<Vec<_>>(), ["vmlinuz", "initrd.img"]);
        assert_eq!(esp_name(Target::Kernel), Some("vmlinuz"));
        assert_eq!(esp_name(Target::Root), None);
    }
}
