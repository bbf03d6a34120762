//! `cargo xtask lock`: resolves a recipe's packages to their full dependency closure with the
//! host's configured apt sources (mmdebstrap's own resolver, so the closure is exactly what the
//! build installs) and pins every .deb. The downloaded .debs go straight into the store.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use recipe::{LOCK_FORMAT, Lock, LockedPackage, Recipe};
use store::Store;
use xshell::{Shell, cmd};

use crate::error::{Error, Result, io_err, tool_err};

/// The host's apt source files, as mmdebstrap takes them (one mirror argument each).
pub fn host_sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let main = PathBuf::from("/etc/apt/sources.list");
    if fs::metadata(&main).is_ok_and(|m| m.len() > 0) {
        out.push(main);
    }
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut extra: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"))
            .collect();
        extra.sort();
        out.extend(extra);
    }
    out
}

/// Resolves the recipe's closure online and returns the lock; every .deb is added to `store`.
pub fn resolve(recipe: &Recipe, store: &Store) -> Result<Lock> {
    let sources = host_sources();
    if sources.is_empty() {
        return Err(Error::Invalid(
            "no apt sources configured on this host (/etc/apt/sources.list or sources.list.d): `lock` resolves packages from them".into(),
        ));
    }
    let sh = Shell::new().map_err(tool_err("shell"))?;
    let tmp_root = store.root().join("tmp");
    let tmp = tempfile::tempdir_in(&tmp_root).map_err(io_err(&tmp_root))?;
    let debs = tmp.path().join("debs");
    let lists = tmp.path().join("lists");
    fs::create_dir_all(&debs).map_err(io_err(&debs))?;
    fs::create_dir_all(&lists).map_err(io_err(&lists))?;
    let base = &recipe.base;
    let variant = format!("--variant={}", base.variant);
    let arch = format!("--architectures={}", base.architecture);
    let include = format!("--include={}", base.packages.join(","));
    let hook_debs = format!("--customize-hook=sync-out /var/cache/apt/archives {}", debs.display());
    let hook_lists = format!("--customize-hook=sync-out /var/lib/apt/lists {}", lists.display());
    let suite = &base.suite;
    let out = cmd!(
        sh,
        "mmdebstrap -q {variant} {arch} {include} --skip=essential/unlink {hook_debs} {hook_lists} {suite} /dev/null {sources...}"
    )
    .quiet()
    .ignore_status()
    .output()
    .map_err(tool_err("mmdebstrap (resolving the package closure)"))?;
    if !out.status.success() {
        // apt's own words ("Unable to locate package …"), not mmdebstrap's command line.
        let err = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("E:") || l.contains("Unable to locate") || l.contains("unmet"))
            .take(10)
            .collect();
        let said = if said.is_empty() {
            err.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect()
        } else {
            said
        };
        return Err(Error::Tool {
            what: "resolving the package closure (mmdebstrap with the host's apt sources)".into(),
            message: said.join("\n  "),
        });
    }

    let index = archive_index(&lists)?;
    let mut packages = Vec::new();
    let mut files: Vec<PathBuf> = fs::read_dir(&debs)
        .map_err(io_err(&debs))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    files.sort();
    for f in files {
        let fields = cmd!(sh, "dpkg-deb -f {f} Package Version Architecture")
            .quiet()
            .read()
            .map_err(tool_err(format!("dpkg-deb -f {}", f.display())))?;
        let get = |k: &str| {
            fields
                .lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_string()))
        };
        let (Some(name), Some(version), Some(architecture)) = (get("Package"), get("Version"), get("Architecture"))
        else {
            return Err(Error::Invalid(format!(
                "{}: no Package/Version/Architecture in its control file",
                f.display()
            )));
        };
        let (priority, section) =
            index.get(&(name.clone(), version.clone(), architecture.clone())).cloned().ok_or_else(|| {
                Error::Invalid(format!(
                    "{name}={version} ({architecture}) was installed but is in no apt list: cannot pin its priority"
                ))
            })?;
        let what = format!("{name}={version} ({architecture})");
        let sha256 = store.insert(&f, &what, None)?;
        let size = fs::metadata(&f).map_err(io_err(&f))?.len();
        packages.push(LockedPackage { name, version, architecture, sha256, size, priority, section });
    }
    packages.sort();
    let mut tools = crate::tools::versions(&sh);
    tools.retain(|k, _| k == "mmdebstrap");
    let apt = cmd!(sh, "apt-get --version").quiet().read().unwrap_or_default();
    tools.insert("apt".into(), apt.lines().next().unwrap_or("").to_string());
    Ok(Lock {
        format: LOCK_FORMAT,
        recipe_digest: base.digest(),
        suite: base.suite.clone(),
        architecture: base.architecture.clone(),
        tools,
        packages,
        requested: base.packages.clone(),
    })
}

/// Checks the recipe's package names against the host's apt lists before resolving, so a
/// typo is named at once with a suggestion (`nftabels` → `nftables`) instead of after a
/// minute of mmdebstrap. Skipped when the host's lists are for another suite or empty.
pub fn check_names(recipe: &Recipe) -> Result<()> {
    let base = &recipe.base;
    let codename = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_default();
    if codename != base.suite {
        return Ok(());
    }
    let sh = Shell::new().map_err(tool_err("shell"))?;
    let names = cmd!(sh, "apt-cache pkgnames").quiet().ignore_stderr().read().unwrap_or_default();
    let known: std::collections::BTreeSet<&str> = names.lines().collect();
    if known.len() < 1000 {
        return Ok(());
    }
    for p in &base.packages {
        if known.contains(p.as_str()) {
            continue;
        }
        let best = known
            .iter()
            .filter(|k| k.len().abs_diff(p.len()) <= 2)
            .map(|k| (strsim::levenshtein(p, k), *k))
            .filter(|(d, _)| *d <= 2)
            .min();
        let hint = best.map(|(_, k)| format!(" (did you mean `{k}`?)")).unwrap_or_default();
        let at = recipe
            .files
            .iter()
            .find_map(|f| {
                let text = fs::read_to_string(f).ok()?;
                let off = text.find(&format!("\"{p}\""))?;
                Some(recipe::Location::from_offset(f, &text, off + 1).to_string())
            })
            .unwrap_or_else(|| recipe.path.display().to_string());
        return Err(Error::Invalid(format!(
            "{at}: package `{p}` not found in {}/{}{hint}; fix the recipe, or run `apt-get update` if the host's package lists are old",
            base.suite, base.architecture
        )));
    }
    Ok(())
}

/// (Package, Version, Architecture) → (Priority, Section).
type ArchiveIndex = BTreeMap<(String, String, String), (String, String)>;

/// The archive's priority and section of every package in apt's list files.
fn archive_index(lists: &Path) -> Result<ArchiveIndex> {
    let mut index = BTreeMap::new();
    let mut files: Vec<PathBuf> = fs::read_dir(lists)
        .map_err(io_err(lists))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with("_Packages")))
        .collect();
    files.sort();
    for f in files {
        let text = fs::read_to_string(&f).map_err(io_err(&f))?;
        for stanza in text.split("\n\n") {
            let get = |k: &str| {
                stanza.lines().find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(": ")).map(str::to_string))
            };
            if let (Some(p), Some(v), Some(a)) = (get("Package"), get("Version"), get("Architecture")) {
                let prio = get("Priority").unwrap_or_else(|| "optional".into());
                let section = get("Section").unwrap_or_else(|| "misc".into());
                index.entry((p, v, a)).or_insert((prio, section));
            }
        }
    }
    Ok(index)
}
