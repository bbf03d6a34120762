//! `repro`: two full builds under different conditions — the first with this machine's caches
//! (the cached base stage, the usual stack target directory), as a release engineer's build
//! runs; the second from nothing (no cache, an empty target directory) in another build path
//! and source tree path (with a space and non-ASCII characters), creation order, TZ, locale,
//! umask, HOME/USER, hostname, on one CPU with its clock years ahead — then every output is
//! compared byte for byte. On a difference it names the files inside that differ. (A cache
//! that would change a byte is caught too.)

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::args::RecipeArgs;
use crate::{Ctx, Exit, out};

#[derive(Args, Debug)]
pub struct Repro {
    #[command(flatten)]
    pub args: RecipeArgs,
    /// Never touch the network (every input must be in the store).
    #[arg(long)]
    pub offline: bool,
    /// Keep both builds in DIR (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

/// One set of build conditions.
struct Variant {
    name: &'static str,
    tz: &'static str,
    lang: &'static str,
    umask: &'static str,
    user: &'static str,
    hostname: &'static str,
    /// Copy the source tree in reverse order to another path (directory order, build path).
    copy_tree: bool,
    /// Build from nothing: no cached stage, an empty stack target directory of its own.
    from_nothing: bool,
    /// Build on one CPU only (`taskset`) with the clock this far ahead (`faketime`).
    one_cpu_clock_ahead: Option<&'static str>,
}

const VARIANTS: [Variant; 2] = [
    Variant {
        name: "a",
        tz: "UTC",
        lang: "C.UTF-8",
        umask: "0022",
        user: "builder-a",
        hostname: "repro-a",
        copy_tree: false,
        from_nothing: false,
        one_cpu_clock_ahead: None,
    },
    Variant {
        name: "b",
        tz: "Pacific/Chatham",
        lang: "POSIX",
        umask: "0077",
        user: "someone-else",
        hostname: "a-much-longer-build-host-name-b",
        copy_tree: true,
        from_nothing: true,
        one_cpu_clock_ahead: Some("+1234d"),
    },
];

impl Repro {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let recipe = self.args.load(ctx)?;
        let mut tools = image::tools::needed(&recipe, self.offline);
        tools.extend(image::tools::used_by(&["repro"]));
        let tools = crate::deps::dedup(tools);
        crate::deps::ensure(&tools, self.offline)?;
        let tmp;
        let top = match &self.keep {
            Some(d) => {
                fs::create_dir_all(d)?;
                d.clone()
            }
            None => {
                tmp = tempfile::Builder::new().prefix("airlock-repro-").tempdir()?;
                tmp.path().to_path_buf()
            }
        };
        let rel_recipe = self.args.recipe_path(ctx);
        let rel_recipe = rel_recipe.strip_prefix(&ctx.root).unwrap_or(&rel_recipe).to_path_buf();
        let exe = std::env::current_exe()?;
        let mut outs = Vec::new();
        for v in &VARIANTS {
            let dir = top.join(v.name);
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
            fs::create_dir_all(dir.join("home"))?;
            let src = if v.copy_tree {
                // A path a real user may have: a space and non-ASCII characters.
                let s = dir.join("source tree ü");
                copy_tree_reversed(&ctx.root, &s)?;
                s
            } else {
                ctx.root.clone()
            };
            eprintln!(
                "repro: build {} ({}, TZ={}, LANG={}, umask {}, hostname {}, source {}{})",
                v.name,
                if v.from_nothing { "from nothing" } else { "with this machine's caches" },
                v.tz,
                v.lang,
                v.umask,
                v.hostname,
                src.display(),
                v.one_cpu_clock_ahead.map(|a| format!(", one CPU, clock {a}")).unwrap_or_default()
            );
            let script = "hostname \"$1\" && umask \"$2\" && shift 2 && exec \"$@\"";
            let (hostname, umask) = (v.hostname, v.umask);
            let mut prefix: Vec<String> = Vec::new();
            let mut path = std::env::var("PATH").unwrap_or_default();
            if let Some(ahead) = v.one_cpu_clock_ahead {
                // libfaketime deadlocks rustc and the rustup proxies (FIELD-NOTES.md): cargo and
                // rustc are reached through wrappers that drop the preload; everything else
                // (the builder, mmdebstrap, dpkg, tar, mksquashfs) runs with the clock skewed.
                let wrappers = clean_clock_wrappers(&dir)?;
                path = format!("{}:{path}", wrappers.display());
                prefix.extend(["taskset", "-c", "0", "faketime", "-f", ahead].map(str::to_string));
            }
            let mut build: Vec<String> =
                vec!["--json".into(), "build".into(), src.join(&rel_recipe).display().to_string()];
            if v.from_nothing {
                build.extend([
                    "--no-cache".into(),
                    "--stack-target-dir".into(),
                    dir.join("target").display().to_string(),
                ]);
            }
            for (flag, p) in [
                ("--out", dir.join("images")),
                ("--work-dir", dir.join("work")),
                ("--store", self.args.store_path(ctx)),
            ] {
                build.extend([flag.to_string(), p.display().to_string()]);
            }
            if let Some(l) = self.args.lock_path(ctx) {
                build.extend(["--lock".to_string(), l.display().to_string()]);
            }
            if self.offline {
                build.push("--offline".into());
            }
            let cargo_home = std::env::var("CARGO_HOME")
                .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
            let rustup_home = std::env::var("RUSTUP_HOME")
                .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap_or_default()));
            fs::create_dir_all(dir.join("work"))?;
            // The builder finds its checkout from the directory it runs in: the copy, for b.
            let sh = xshell::Shell::new()?;
            sh.change_dir(&src);
            let stdout =
                xshell::cmd!(sh, "unshare --uts sh -c {script} sh {hostname} {umask} {prefix...} {exe} {build...}")
                    .env("PATH", path)
                    // Only the clock is off: file times read back by stat() stay true (libfaketime
                    // would shift them too, which no real clock does).
                    .env("NO_FAKE_STAT", "1")
                    .env("DONT_FAKE_MONOTONIC", "1")
                    .env("CARGO_HOME", cargo_home)
                    .env("RUSTUP_HOME", rustup_home)
                    .env("HOME", dir.join("home"))
                    .env("USER", v.user)
                    .env("LOGNAME", v.user)
                    .env("TZ", v.tz)
                    .env("LANG", v.lang)
                    .env("LC_ALL", v.lang)
                    .env("TMPDIR", dir.join("work"))
                    .quiet()
                    .ignore_status()
                    .read()
                    .context("running the build (is util-linux's unshare installed?)")?;
            // A release build ends with exit 1 while it waits for its offline signatures: its
            // outputs are complete all the same, and its report names them.
            let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
            match report["out_dir"].as_str().map(PathBuf::from) {
                Some(d) if d.join(image::MANIFEST_NAME).exists() => outs.push(d),
                _ => bail!("build {} failed: {}", v.name, report["error"].as_str().unwrap_or("see above")),
            }
        }
        compare(&outs[0], &outs[1])?;
        // The result is evidence: recorded beside build a, and beside the published build of
        // this checkout when it is the same build; their reports are made again with it.
        let manifest = fs::read(outs[0].join(image::MANIFEST_NAME))?;
        let files = fs::read_dir(&outs[0])?.count();
        let build_key = schema::BuildFacts::parse(&String::from_utf8_lossy(&manifest))
            .ok()
            .and_then(|f| f.build_key)
            .unwrap_or_else(|| "?".to_string());
        let summary = format!(
            "`cargo xtask repro` built this image twice — once with the builder's caches, once from nothing in another path with spaces and non-ASCII characters, directory entries created in reverse order, another TZ, locale, umask, user and hostname, on one CPU with its clock years ahead — and all {files} output files were identical byte for byte (build key {build_key})."
        );
        let record =
            serde_json::json!({"reproducible": true, "files": files, "build_key": build_key, "summary": summary});
        let published = image::out_dir(&ctx.root.join("images"), &recipe);
        let mut dirs = vec![outs[0].clone()];
        if fs::read(published.join(image::MANIFEST_NAME)).ok().as_deref() == Some(&manifest[..]) {
            dirs.push(published);
        }
        let lp = crate::bundle_cmd::channel_policy(ctx, recipe.channel)?;
        for d in dirs {
            store::write_atomic(&d.join("reproducibility.json"), format!("{record:#}\n").as_bytes())?;
            image::evidence_report::make(&d, &lp, Some(summary.clone()))?;
            out!("recorded in {}", d.join("reproducibility.json").display());
        }
        Ok(())
    }
}

/// A directory of `cargo`, `rustc` and `rustup` wrappers that run the real tools without
/// libfaketime's preload.
fn clean_clock_wrappers(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let w = dir.join("clean-clock-bin");
    fs::create_dir_all(&w)?;
    for tool in ["cargo", "rustc", "rustup", "rustdoc"] {
        let Some(real) = image::tools::which(tool) else { continue };
        let script = w.join(tool);
        fs::write(
            &script,
            format!(
                "#!/bin/sh\nunset LD_PRELOAD FAKETIME FAKETIME_NO_CACHE DONT_FAKE_MONOTONIC\nexec '{}' \"$@\"\n",
                real.display()
            ),
        )?;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    }
    Ok(w)
}

/// Copies the files the build reads into `dest`, creating entries in reverse order.
fn copy_tree_reversed(src: &Path, dest: &Path) -> Result<()> {
    let sh = xshell::Shell::new()?;
    sh.change_dir(src);
    let files = xshell::cmd!(sh, "git ls-files -z --cached --others --exclude-standard").quiet().read()?;
    let mut files: Vec<&str> = files.split('\0').filter(|f| !f.is_empty()).collect();
    files.sort_unstable();
    files.reverse();
    for f in files {
        let from = src.join(f);
        let to = dest.join(f);
        let Ok(meta) = fs::symlink_metadata(&from) else {
            continue;
        };
        if let Some(p) = to.parent() {
            fs::create_dir_all(p)?;
        }
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else {
            fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        }
    }
    Ok(())
}

fn compare(a: &Path, b: &Path) -> Result<()> {
    let mut names: Vec<String> =
        fs::read_dir(a)?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut differ = Vec::new();
    for n in &names {
        let (da, sa) = store::sha256_file(&a.join(n))?;
        let pb = b.join(n);
        if !pb.exists() {
            differ.push(format!("{n}: only in build a"));
            continue;
        }
        let (db, sb) = store::sha256_file(&pb)?;
        if da == db {
            out!("identical  {n:<24} {sa:>12} bytes  sha256:{da}");
        } else {
            out!(
                "DIFFERENT  {n:<24} a: {sa} bytes sha256:{da}\n                                    b: {sb} bytes sha256:{db}"
            );
            differ.push(n.clone());
        }
    }
    for e in fs::read_dir(b)?.filter_map(|e| e.ok()) {
        let n = e.file_name().to_string_lossy().into_owned();
        if !names.contains(&n) {
            differ.push(format!("{n}: only in build b"));
        }
    }
    if differ.is_empty() {
        out!("reproducible: both builds gave identical outputs");
        return Ok(());
    }
    for n in &differ {
        if n == image::ROOTFS_NAME {
            for line in image::archive::diff(&a.join(n), &b.join(n))?.iter().take(50) {
                out!("  {line}");
            }
        }
    }
    if image::tools::which("diffoscope").is_some() {
        out!("for details: diffoscope {} {}", a.display(), b.display());
    }
    Err(Exit(1, format!("not reproducible: {} differ", differ.join(", "))).into())
}
