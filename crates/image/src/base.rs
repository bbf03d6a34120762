//! The base stage: mmdebstrap installs the recipe's packages from a local apt repository made
//! of store objects, offline, with SOURCE_DATE_EPOCH set. Its tar is cached by input digest.

use std::fs;
use std::path::{Path, PathBuf};

use recipe::{Lock, Recipe};
use sha2::{Digest, Sha256};
use store::Store;
use xshell::{Shell, cmd};

use crate::error::{Error, Result, io_err, tool_err};

/// Kernel modules the initrd holds: what mounts a squashfs or erofs root from the disks an
/// appliance boots from (SATA, NVMe, eMMC, USB, virtio), and nothing else (`MODULES=list`: a
/// small initrd that does not depend on the build host; FIELD-NOTES.md). Written before the
/// kernel is installed, so the initrd made inside mmdebstrap already follows them.
const INITRD_MODULES: &str = "squashfs\nerofs\noverlay\nvirtio_pci\nvirtio_blk\nvirtio_scsi\nsd_mod\nahci\nnvme\nmmc_block\nsdhci_pci\nxhci_pci\nehci_pci\nusb_storage\nuas\nvfat\nnls_cp437\nnls_ascii\ndm-mod\ndm-verity\n";

/// The initramfs-tools hook that puts `veritysetup` (from the image's own `cryptsetup-bin`)
/// into the initrd, and the local-top script that opens the slot through dm-verity before it is
/// mounted. Written into the tree before any package is installed, so the initrd made inside
/// mmdebstrap already holds them.
const VERITY_HOOK: &str = include_str!("../initramfs/hook-airlock-verity");
const VERITY_SCRIPT: &str = include_str!("../initramfs/local-top-airlock-verity");
/// Where they go in the image.
const VERITY_HOOK_PATH: &str = "usr/share/initramfs-tools/hooks/airlock-verity";
const VERITY_SCRIPT_PATH: &str = "usr/share/initramfs-tools/scripts/local-top/airlock-verity";

/// Bumped whenever the way the base stage is made changes, so that old caches are not reused.
const BASE_RECIPE_VERSION: &str = "airlock-base-4";

/// dpkg path filters: an appliance needs no manuals, docs or translations; copyright files
/// stay (license evidence).
const DPKG_FILTERS: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
];

/// The digest every cached base tar is named by.
pub fn base_key(recipe: &Recipe, lock: &Lock, mmdebstrap_version: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        BASE_RECIPE_VERSION,
        &lock.to_toml(),
        &recipe.base.digest(),
        &recipe.source_date_epoch.to_string(),
        mmdebstrap_version,
        INITRD_MODULES,
        VERITY_HOOK,
        VERITY_SCRIPT,
        &DPKG_FILTERS.join("\n"),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Returns the cached base tar for `key`, building it first when it is not cached.
pub fn ensure_base(
    recipe: &Recipe,
    lock: &Lock,
    store: &Store,
    key: &str,
    use_cache: bool,
    scratch: &Path,
) -> Result<(PathBuf, bool)> {
    let stages = store.root().join("stages");
    fs::create_dir_all(&stages).map_err(io_err(&stages))?;
    let cached = stages.join(format!("base-{key}.tar"));
    if use_cache && cached.is_file() && verify_cached(&cached)? {
        return Ok((cached, true));
    }
    let out = if use_cache { cached } else { scratch.join("base.tar") };
    build_base(recipe, lock, store, &out, scratch)?;
    Ok((out, false))
}

/// A cached tar is used only if it still matches the digest recorded beside it.
fn verify_cached(tar: &Path) -> Result<bool> {
    let side = tar.with_extension("tar.sha256");
    let Ok(recorded) = fs::read_to_string(&side) else {
        return Ok(false);
    };
    let (actual, _) = store::sha256_file(tar)?;
    Ok(recorded.trim() == actual)
}

fn build_base(recipe: &Recipe, lock: &Lock, store: &Store, out: &Path, scratch: &Path) -> Result<()> {
    let repo = scratch.join("apt-repo");
    store::write_apt_repo(store, lock, &repo)?;
    let tmp_out = out.with_extension("tar.part");
    mmdebstrap(recipe, &repo, &tmp_out, scratch)?;
    let (digest, _) = store::sha256_file(&tmp_out)?;
    fs::File::open(&tmp_out).and_then(|f| f.sync_all()).map_err(io_err(&tmp_out))?;
    store::write_atomic(&out.with_extension("tar.sha256"), format!("{digest}\n").as_bytes())?;
    fs::rename(&tmp_out, out).map_err(io_err(out))?;
    let _ = fs::remove_dir_all(&repo);
    Ok(())
}

/// The base stage's mmdebstrap run, exactly as the build runs it (also `bench build`'s
/// reference): the recipe's packages from the local repository `repo`, offline, into the tar
/// `out`.
pub fn mmdebstrap(recipe: &Recipe, repo: &Path, out: &Path, scratch: &Path) -> Result<()> {
    let sh = Shell::new().map_err(tool_err("shell"))?;
    let base = &recipe.base;
    let variant = format!("--variant={}", base.variant);
    let arch = format!("--architectures={}", base.architecture);
    let include = format!("--include={}", base.packages.join(","));
    let modules = INITRD_MODULES.replace('\n', " ");
    let setup = format!(
        "--setup-hook=mkdir -p \"$1/usr/share/initramfs-tools/modules.d\" \"$1/etc/initramfs-tools/conf.d\" && printf '%s\\n' {modules} > \"$1/usr/share/initramfs-tools/modules.d/airlock-root.conf\" && printf 'MODULES=list\\n' > \"$1/etc/initramfs-tools/conf.d/airlock\""
    );
    // The initrd's dm-verity hook and script, copied in (mode kept) before any package.
    let initramfs = scratch.join("initramfs-airlock");
    for (rel, text) in [(VERITY_HOOK_PATH, VERITY_HOOK), (VERITY_SCRIPT_PATH, VERITY_SCRIPT)] {
        let f = initramfs.join(rel);
        if let Some(dir) = f.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        fs::write(&f, text).map_err(io_err(&f))?;
        fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(io_err(&f))?;
    }
    let copy_in = format!("--setup-hook=tar -C {} -c usr | tar -C \"$1\" -x --no-same-owner", initramfs.display());
    let dpkgopts: Vec<String> = DPKG_FILTERS.iter().map(|f| format!("--dpkgopt={f}")).collect();
    let source = format!("deb [trusted=yes] copy://{} ./", repo.display());
    let suite = &base.suite;
    let sde = recipe.source_date_epoch.to_string();
    cmd!(
        sh,
        "mmdebstrap -q --mode=root --format=tar {variant} {arch} {include} {dpkgopts...} {setup} {copy_in} {suite} {out} {source}"
    )
    .env("SOURCE_DATE_EPOCH", &sde)
    .env("TMPDIR", scratch)
    .env("LC_ALL", "C.UTF-8")
    .env("TZ", "UTC")
    .quiet()
    .ignore_stdout()
    .run()
    .map_err(tool_err("mmdebstrap (base stage)"))?;
    Ok(())
}

/// Unpacks the base tar into `root` (GNU tar: owners numeric, modes kept). Images carry no
/// xattrs: the only ones in the base are systemd-tmpfiles ACLs that boot re-creates.
pub fn unpack(tar: &Path, root: &Path) -> Result<()> {
    fs::create_dir_all(root).map_err(io_err(root))?;
    let sh = Shell::new().map_err(tool_err("shell"))?;
    cmd!(sh, "tar -xpf {tar} -C {root} --numeric-owner --no-xattrs --no-acls --no-selinux")
        .quiet()
        .ignore_stdout()
        .run()
        .map_err(tool_err(format!("unpacking {}", tar.display())))?;
    Ok(())
}

pub fn check_lock_matches(lock: &Lock, recipe: &Recipe) -> Result<()> {
    if lock.suite != recipe.base.suite || lock.architecture != recipe.base.architecture {
        return Err(Error::Invalid(format!(
            "the lock is for {}/{}, the recipe asks for {}/{}: run `cargo xtask lock`",
            lock.suite, lock.architecture, recipe.base.suite, recipe.base.architecture
        )));
    }
    Ok(())
}
