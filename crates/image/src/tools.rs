//! Host tools the build runs — only the ones a recipe needs — and the versions of those that
//! shape output bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use recipe::{Recipe, SlotFs};
use xshell::{Shell, cmd};

/// A program (or data file) Airlock runs on the host, and the Debian package that ships it:
/// one entry of `host-tools.toml`, the one list every command and CI install from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTool {
    pub bin: String,
    pub package: String,
    pub used_by: Vec<String>,
    pub why: String,
}

/// The list's text, as committed (`.ci/host-packages` reads the same file).
pub const HOST_TOOLS_TOML: &str = include_str!("../host-tools.toml");

/// The commands and conditions a tool can be listed for (`used_by`).
pub const USES: &[&str] = &["build", "squashfs", "erofs", "fetch", "lock", "repro", "boot", "test", "bench"];

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolList {
    tool: Vec<HostTool>,
}

/// Every entry of the list, in its order. The file is part of the source: a broken entry is
/// a bug caught by the tests, so it panics here, naming the file.
pub fn all() -> &'static [HostTool] {
    static ALL: std::sync::LazyLock<Vec<HostTool>> = std::sync::LazyLock::new(|| {
        let list: ToolList =
            toml::from_str(HOST_TOOLS_TOML).unwrap_or_else(|e| panic!("crates/image/host-tools.toml: {e}"));
        for t in &list.tool {
            if let Some(u) = t.used_by.iter().find(|u| !USES.contains(&u.as_str())) {
                panic!("crates/image/host-tools.toml: {}: unknown use {u:?} (one of {USES:?})", t.bin);
            }
        }
        list.tool
    });
    &ALL
}

/// The entries listed for any of `uses`.
pub fn used_by(uses: &[&str]) -> Vec<HostTool> {
    all().iter().filter(|t| t.used_by.iter().any(|u| uses.contains(&u.as_str()))).cloned().collect()
}

/// The entry for `bin` (a program the code runs by that name).
pub fn tool(bin: &str) -> Option<&'static HostTool> {
    all().iter().find(|t| t.bin == bin)
}

/// What `build` runs for `recipe`: only the tools this recipe needs (`fetch`'s too when the
/// build may go online).
pub fn needed(recipe: &Recipe, offline: bool) -> Vec<HostTool> {
    let fs = match recipe.output.slot_fs {
        SlotFs::Squashfs => "squashfs",
        SlotFs::Erofs => "erofs",
    };
    let mut uses = vec!["build", fs];
    if !offline {
        uses.push("fetch");
    }
    used_by(&uses)
}

/// What `lock` runs.
pub fn resolve_tools() -> Vec<HostTool> {
    used_by(&["lock"])
}

/// What `fetch` runs.
pub fn fetch_tools() -> Vec<HostTool> {
    used_by(&["fetch"])
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
    tools.iter().filter(|t| which(&t.bin).is_none()).cloned().collect()
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
    put("veritysetup", cmd!(sh, "veritysetup --version").quiet().ignore_stderr().read().ok().map(|s| first_line(&s)));
    put("airlock", Some(env!("CARGO_PKG_VERSION").to_string()));
    v
}
