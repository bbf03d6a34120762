//! Host tools the build runs — only the ones a recipe needs — and the versions of those that
//! shape output bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use recipe::{Recipe, SlotFs};
use xshell::{Shell, cmd};

/// A program the build needs on the host, and the Debian package that ships it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTool {
    pub bin: &'static str,
    pub package: &'static str,
    pub why: &'static str,
}

const MMDEBSTRAP: HostTool = HostTool {
    bin: "mmdebstrap",
    package: "mmdebstrap",
    why: "installs the base rootfs from the local apt repository",
};
const DPKG_DEB: HostTool = HostTool { bin: "dpkg-deb", package: "dpkg", why: "reads package control data" };
const DPKG_SCAN: HostTool =
    HostTool { bin: "dpkg-scanpackages", package: "dpkg-dev", why: "indexes the local apt repository" };
const TAR: HostTool = HostTool { bin: "tar", package: "tar", why: "unpacks the cached base stage" };
const CHROOT: HostTool = HostTool { bin: "chroot", package: "coreutils", why: "enables services inside the image" };
const MKSQUASHFS: HostTool =
    HostTool { bin: "mksquashfs", package: "squashfs-tools", why: "writes the squashfs slot filesystem" };
const MKFS_EROFS: HostTool =
    HostTool { bin: "mkfs.erofs", package: "erofs-utils", why: "writes the erofs slot filesystem" };
const SGDISK: HostTool = HostTool { bin: "sgdisk", package: "gdisk", why: "writes the disk's GPT" };
const MKFS_VFAT: HostTool = HostTool { bin: "mkfs.vfat", package: "dosfstools", why: "formats the ESP" };
const MCOPY: HostTool = HostTool { bin: "mcopy", package: "mtools", why: "fills the ESP without mounting it" };
const MKE2FS: HostTool = HostTool { bin: "mke2fs", package: "e2fsprogs", why: "formats the data partition" };
const DEBUGFS: HostTool =
    HostTool { bin: "debugfs", package: "e2fsprogs", why: "fixes the data partition's inode change times" };
const QEMU_IMG: HostTool = HostTool { bin: "qemu-img", package: "qemu-utils", why: "writes disk.qcow2" };
const BMAPTOOL: HostTool =
    HostTool { bin: "bmaptool", package: "bmap-tools", why: "writes disk.bmap for fast flashing" };
const APT_GET: HostTool = HostTool { bin: "apt-get", package: "apt", why: "downloads pinned packages (fetch)" };
const UNSHARE: HostTool = HostTool {
    bin: "unshare",
    package: "util-linux",
    why: "checks the generated firewall in a network namespace of its own; runs repro builds in their own hostname namespace",
};

/// What `build` runs for `recipe`: only the tools this recipe needs (`fetch` adds apt-get
/// when the build may go online).
pub fn needed(recipe: &Recipe, offline: bool) -> Vec<HostTool> {
    let mut v = vec![MMDEBSTRAP, DPKG_DEB, DPKG_SCAN, TAR, CHROOT];
    v.push(match recipe.output.slot_fs {
        SlotFs::Squashfs => MKSQUASHFS,
        SlotFs::Erofs => MKFS_EROFS,
    });
    v.extend([SGDISK, MKFS_VFAT, MCOPY, MKE2FS, DEBUGFS, QEMU_IMG, BMAPTOOL]);
    if !offline {
        v.push(APT_GET);
    }
    v
}

/// What `lock` runs.
pub fn resolve_tools() -> Vec<HostTool> {
    vec![MMDEBSTRAP, DPKG_DEB, APT_GET, UNSHARE]
}

/// What `fetch` runs.
pub fn fetch_tools() -> Vec<HostTool> {
    vec![APT_GET, DPKG_DEB]
}

/// Looks `bin` up in `$PATH` (and the sbin directories, which a non-root PATH may lack).
pub fn which(bin: &str) -> Option<PathBuf> {
    // A data file a package provides (firmware), named by its absolute path.
    if bin.starts_with('/') {
        return Some(PathBuf::from(bin)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub fn missing(tools: &[HostTool]) -> Vec<HostTool> {
    tools.iter().filter(|t| which(t.bin).is_none()).copied().collect()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// Versions of the tools whose output ends up in the image bytes. Missing tools are left out.
pub fn versions(sh: &Shell) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let mut put = |name: &str, out: Option<String>| {
        if let Some(s) = out.filter(|s| !s.is_empty()) {
            v.insert(name.to_string(), s);
        }
    };
    put("mmdebstrap", cmd!(sh, "mmdebstrap --version").quiet().ignore_stderr().read().ok().map(|s| first_line(&s)));
    put("mksquashfs", cmd!(sh, "mksquashfs -version").quiet().ignore_stderr().read().ok().map(|s| first_line(&s)));
    put(
        "mkfs.erofs",
        cmd!(sh, "mkfs.erofs -V").quiet().ignore_status().ignore_stderr().read().ok().map(|s| first_line(&s)),
    );
    put("rustc", cmd!(sh, "rustc -V").quiet().ignore_stderr().read().ok().map(|s| first_line(&s)));
    put("cargo", cmd!(sh, "cargo -V").quiet().ignore_stderr().read().ok().map(|s| first_line(&s)));
    put("libzstd", Some(zstd::zstd_safe::version_string().to_string()));
    put("sgdisk", cmd!(sh, "sgdisk --version").quiet().ignore_stderr().read().ok().map(|s| first_line(&s)));
    let version_field = "${Version}";
    put("dosfstools", cmd!(sh, "dpkg-query -W -f {version_field} dosfstools").quiet().ignore_stderr().read().ok());
    put("mtools", cmd!(sh, "mcopy --version").quiet().ignore_stderr().read().ok().map(|s| first_line(&s)));
    put("mke2fs", cmd!(sh, "mke2fs -V").quiet().ignore_status().read_stderr().ok().map(|s| first_line(&s)));
    put("qemu-img", cmd!(sh, "qemu-img --version").quiet().ignore_stderr().read().ok().map(|s| first_line(&s)));
    put("bmaptool", cmd!(sh, "bmaptool --version").quiet().ignore_stderr().read().ok().map(|s| first_line(&s)));
    put("airlock", Some(env!("CARGO_PKG_VERSION").to_string()));
    v
}
