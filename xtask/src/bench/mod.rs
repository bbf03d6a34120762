//! `cargo xtask bench build | verify | install | boot`: Airlock's figures side by side with the
//! reference tools (mmdebstrap, zstd, xz, mksquashfs, mkfs.erofs, minisign, b2sum, sha256sum,
//! openssl, rauc, dd, bmaptool), from the same run, as ratios. Timed figures are medians of
//! `--runs` runs (at least 3) with their spread. Measurements, not tests: nothing here fails
//! on a slow machine. README ("Benchmarks") says how each figure is made.

mod api;
mod boot;
mod firewall;
mod install;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::args::RecipeArgs;
use crate::{Ctx, out};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Which {
    Build,
    Verify,
    Install,
    Boot,
    Firewall,
    /// The parking controller's API under floods (wrk as the honest client).
    Api,
}

#[derive(Args, Debug)]
pub struct Bench {
    /// What to measure (default: build, verify and install).
    pub which: Option<Which>,
    #[command(flatten)]
    pub args: RecipeArgs,
    /// Size of the verify benchmark's file, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub verify_mib: u64,
    /// Size of the install benchmark's root.img, in MiB (a second run uses a quarter of it).
    #[arg(long, default_value_t = 256)]
    pub install_mib: u64,
    /// Runs per timed figure (the median is shown, with the spread).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// `bench api`: the controller binary to measure (default: this checkout's, built).
    #[arg(long)]
    pub controller: Option<std::path::PathBuf>,
    /// `bench api`: seconds of wrk per figure.
    #[arg(long, default_value_t = 5)]
    pub api_secs: u32,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Runs a command, returns its wall time; fails if it fails.
pub fn time_cmd(c: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let out = c.stdout(Stdio::null()).stderr(Stdio::piped()).output().with_context(|| format!("{c:?}"))?;
    if !out.status.success() {
        bail!("{c:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(t.elapsed())
}

/// Median and spread (min, max) of `n` timed runs of `f`.
pub struct Timed {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Timed {
    pub fn of(n: usize, mut f: impl FnMut(usize) -> Result<Duration>) -> Result<Timed> {
        let mut v: Vec<f64> = (0..n.max(1)).map(|i| f(i).map(secs)).collect::<Result<_>>()?;
        v.sort_by(f64::total_cmp);
        Ok(Timed { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1] })
    }

    /// The median and spread of figures already measured (seconds).
    pub fn of_values(mut v: Vec<f64>) -> Timed {
        v.sort_by(f64::total_cmp);
        let (min, max) = (v.first().copied().unwrap_or(0.0), v.last().copied().unwrap_or(0.0));
        Timed { median: v.get(v.len() / 2).copied().unwrap_or(0.0), min, max }
    }

    pub fn spread(&self) -> String {
        format!("[{:.2}–{:.2}]", self.min, self.max)
    }
}

fn row(what: &str, airlock: f64, reference: &str, refv: f64, unit: &str) {
    let ratio = if refv > 0.0 { airlock / refv } else { f64::NAN };
    out!("  {what:<38} airlock {airlock:>9.2} {unit:<5} {reference:<30} {refv:>9.2} {unit:<5} ratio {ratio:>5.2}");
}

fn trow(what: &str, airlock: &Timed, reference: &str, refv: &Timed) {
    out!(
        "  {what:<30} airlock {:>7.2} s {:<15} {reference:<28} {:>7.2} s {:<15} ratio {:>5.2}",
        airlock.median,
        airlock.spread(),
        refv.median,
        refv.spread(),
        airlock.median / refv.median
    );
}

/// Runs `cargo xtask build …` as a user does; returns its wall time and its JSON report.
fn xtask_build(ctx: &Ctx, args: &[&str], extra: &[&Path]) -> Result<(Duration, serde_json::Value)> {
    let mut c = Command::new(std::env::current_exe()?);
    c.arg("--json").arg("build").args(args).args(extra).current_dir(&ctx.root).stderr(Stdio::null());
    let t = Instant::now();
    let o = c.output()?;
    let d = t.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    if !o.status.success() && v["out_dir"].is_null() {
        bail!("cargo xtask build {args:?} failed: {v}");
    }
    Ok((d, v))
}

impl Bench {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let recipe = self.args.load(ctx)?;
        let mut tools = image::tools::needed(&recipe, false);
        tools.extend(image::tools::used_by(&["bench"]));
        crate::deps::ensure(&crate::deps::dedup(tools), false)?;
        match self.which {
            Some(Which::Build) => self.build(ctx),
            Some(Which::Verify) => self.verify(),
            Some(Which::Install) => install::run(ctx, self.install_mib),
            Some(Which::Boot) => boot::run(ctx, self.runs),
            Some(Which::Firewall) => firewall::run(ctx, &recipe, self.runs),
            Some(Which::Api) => api::run(self.controller.clone(), self.api_secs),
            None => {
                self.build(ctx)?;
                self.verify()?;
                install::run(ctx, self.install_mib)
            }
        }
    }

    fn build(&self, ctx: &Ctx) -> Result<()> {
        let tmp = tempfile::Builder::new().prefix("airlock-bench-").tempdir_in(ctx.root.join("target"))?;
        let recipe = self.args.load(ctx)?;
        let recipe_arg = self.args.recipe_path(ctx).display().to_string();
        let n = self.runs.max(3);
        eprintln!(
            "bench build: {n} full builds, each with a cold stack compile (its own target directory) and no stage cache…"
        );
        let mut last = serde_json::Value::Null;
        let full = Timed::of(n, |i| {
            let out = tmp.path().join(format!("images-{i}"));
            let target = tmp.path().join(format!("stack-target-{i}"));
            let (d, v) = xtask_build(
                ctx,
                &[&recipe_arg, "--no-cache", "--out"],
                &[&out, Path::new("--stack-target-dir"), &target],
            )?;
            last = v;
            let _ = fs::remove_dir_all(&target);
            Ok(d)
        })?;
        out!(
            "build: the whole `cargo xtask build` (cold stack compile, no stage cache, publish, bundle, signing), {n} runs:"
        );
        out!("  median {:.1} s {}", full.median, full.spread());
        let stages: Vec<(String, f64)> = last["timings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| (t["stage"].as_str().unwrap_or("").to_string(), t["seconds"].as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default();
        out!(
            "  stages of the last run: {}",
            stages.iter().map(|(s, t)| format!("{s} {t:.1}s")).collect::<Vec<_>>().join(", ")
        );
        let base = stages.iter().find(|(s, _)| s == "base").map_or(0.0, |s| s.1);
        let after_base = full.median - base - stages.iter().take_while(|(s, _)| s != "base").map(|s| s.1).sum::<f64>();

        // mmdebstrap alone: the base stage's own invocation, same repository.
        let (recipe_v, lock, _) = image::load(&image::BuildOptions {
            recipe: self.args.recipe_path(ctx),
            repo_root: ctx.root.clone(),
            lock: self.args.lock_path(ctx),
            store: self.args.store_path(ctx),
            images_dir: tmp.path().to_path_buf(),
            offline: true,
            use_cache: false,
            force: false,
            stack_target_dir: tmp.path().join("unused"),
            work_parent: None,
            interactive: false,
            hint_args: String::new(),
        })?;
        let store = store::Store::open(&self.args.store_path(ctx))?;
        let repo = tmp.path().join("repo");
        store::write_apt_repo(&store, &lock, &repo)?;
        let mm = Timed::of(n, |i| {
            let out = tmp.path().join(format!("mm-{i}.tar"));
            let t = Instant::now();
            image::base::mmdebstrap(&recipe_v, &repo, &out, tmp.path())?;
            let d = t.elapsed();
            let _ = fs::remove_file(&out);
            Ok(d)
        })?;
        out!(
            "reference: mmdebstrap alone, the base stage's own options and repository: median {:.1} s {}",
            mm.median,
            mm.spread()
        );
        out!(
            "  everything a user waits for besides mmdebstrap: {:.1} s = {:.0}% of mmdebstrap's own time",
            after_base,
            100.0 * after_base / mm.median
        );

        // Compression, the same I/O shape on both sides: a tar file in, a .zst file out.
        let out_dir = Path::new(last["out_dir"].as_str().context("no out_dir")?).to_path_buf();
        let tar_zst = out_dir.join(image::ROOTFS_NAME);
        let raw = tmp.path().join("rootfs.tar");
        std::io::copy(&mut zstd::stream::Decoder::new(fs::File::open(&tar_zst)?)?, &mut fs::File::create(&raw)?)?;
        let raw_size = fs::metadata(&raw)?.len() as f64;
        let level = recipe.output.compression_level;
        let ours_out = tmp.path().join("ours.zst");
        let ours = Timed::of(n, |_| {
            let t = Instant::now();
            let mut input = std::io::BufReader::with_capacity(1 << 20, fs::File::open(&raw)?);
            let out = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(&ours_out)?);
            let mut enc = zstd::stream::Encoder::new(out, level)?;
            enc.multithread(image::archive::ZSTD_WORKERS)?;
            enc.include_checksum(true)?;
            std::io::copy(&mut input, &mut enc)?;
            enc.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok(t.elapsed())
        })?;
        let ours_size = fs::metadata(&ours_out)?.len() as f64;
        let cli = |args: &[&str], ext: &str| -> Result<(Timed, f64)> {
            let out = tmp.path().join(format!("rootfs.tar.{ext}"));
            let t = Timed::of(n, |_| time_cmd(Command::new(args[0]).args(&args[1..]).arg("-o").arg(&out).arg(&raw)))?;
            Ok((t, fs::metadata(&out)?.len() as f64))
        };
        let (z3, z3_size) = cli(&["zstd", "-q", "-f", &format!("-{level}"), "-T2"], "z3")?;
        let (z19, z19_size) = cli(&["zstd", "-q", "-f", "-19", "-T2"], "z19")?;
        let xz_out = tmp.path().join("rootfs.tar.xz");
        let t = Instant::now();
        let xz = Command::new("xz").args(["-6", "-T2", "-c"]).arg(&raw).stdout(fs::File::create(&xz_out)?).status()?;
        let xz_t = t.elapsed();
        if !xz.success() {
            bail!("xz failed");
        }
        let xz_size = fs::metadata(&xz_out)?.len() as f64;
        out!("rootfs.tar ({:.0} MB uncompressed), file to file on both sides, 2 threads:", raw_size / 1e6);
        trow(&format!("zstd -{level}"), &ours, &format!("zstd -{level} -T2 (CLI)"), &z3);
        row(
            "size, % of the tar",
            100.0 * ours_size / raw_size,
            &format!("zstd -{level} -T2"),
            100.0 * z3_size / raw_size,
            "%",
        );
        row("size, % of the tar", 100.0 * ours_size / raw_size, "zstd -19 -T2", 100.0 * z19_size / raw_size, "%");
        row("size, % of the tar", 100.0 * ours_size / raw_size, "xz -6 -T2", 100.0 * xz_size / raw_size, "%");
        out!("  (zstd -19 -T2 took {:.1} s, xz -6 -T2 {:.1} s)", z19.median, secs(xz_t));

        // Slot filesystems on the same tree.
        let tree = tmp.path().join("tree");
        fs::create_dir_all(&tree)?;
        time_cmd(Command::new("tar").args(["-xpf"]).arg(&raw).arg("-C").arg(&tree).arg("--numeric-owner"))?;
        let slot_t = stages.iter().find(|(s, _)| s == "slotfs").map_or(0.0, |s| s.1);
        let slot_size = fs::metadata(out_dir.join(image::SLOT_NAME))?.len() as f64;
        let sq = tmp.path().join("ref.squashfs");
        let sde = recipe.source_date_epoch.to_string();
        let lvl = recipe.output.slot_compression_level.to_string();
        let sq_t = Timed::of(n, |_| {
            time_cmd(
                Command::new("mksquashfs")
                    .arg(&tree)
                    .arg(&sq)
                    .args([
                        "-noappend",
                        "-comp",
                        "zstd",
                        "-Xcompression-level",
                        &lvl,
                        "-no-xattrs",
                        "-quiet",
                        "-no-progress",
                    ])
                    .env("SOURCE_DATE_EPOCH", &sde),
            )
        })?;
        let er = tmp.path().join("ref.erofs");
        let er_t = time_cmd(
            Command::new("mkfs.erofs")
                .args(["--quiet", "-zlz4hc,9", "-T", &sde, "-U", "00000000-0000-4000-8000-000000000000"])
                .arg(&er)
                .arg(&tree),
        )?;
        out!("root.img ({}):", recipe.output.slot_fs.as_str());
        row("slot fs time (in the build)", slot_t, "mksquashfs CLI, same tree", sq_t.median, "s");
        row("slot fs size", slot_size / 1e6, "mksquashfs CLI, same tree", fs::metadata(&sq)?.len() as f64 / 1e6, "MB");
        row("slot fs time (in the build)", slot_t, "mkfs.erofs -zlz4hc,9", secs(er_t), "s");
        row("slot fs size", slot_size / 1e6, "mkfs.erofs -zlz4hc,9", fs::metadata(&er)?.len() as f64 / 1e6, "MB");

        // A rebuild with nothing changed: the whole command again (up-to-date check, signature
        // and bundle included).
        let images = tmp.path().join("images-noop");
        xtask_build(ctx, &[&recipe_arg, "--out"], &[&images])?;
        let noop = Timed::of(n, |_| xtask_build(ctx, &[&recipe_arg, "--out"], &[&images]).map(|r| r.0))?;
        out!(
            "rebuild with nothing changed (`cargo xtask build`, bundle included): median {:.2} s {}, {:.1}% of the full build (target ≤ 10%)",
            noop.median,
            noop.spread(),
            100.0 * noop.median / full.median
        );
        Ok(())
    }

    fn verify(&self) -> Result<()> {
        let tmp = tempfile::Builder::new().prefix("airlock-bench-").tempdir()?;
        let file = tmp.path().join("payload.bin");
        let size = self.verify_mib << 20;
        {
            // Incompressible-looking content, made quickly: a BLAKE2b keystream.
            let mut f = std::io::BufWriter::new(fs::File::create(&file)?);
            let mut block = [0u8; 1 << 20];
            for i in 0..self.verify_mib {
                for (j, chunk) in block.chunks_mut(64).enumerate() {
                    chunk.copy_from_slice(
                        blake2b_simd::blake2b(&[i.to_le_bytes(), (j as u64).to_le_bytes()].concat()).as_bytes(),
                    );
                }
                f.write_all(&block)?;
            }
            f.flush()?;
        }
        let key = trust::SecretKey::from_seed([42; 32], [1, 2, 3, 4, 5, 6, 7, 8]);
        let pk = tmp.path().join("bench.pub");
        fs::write(&pk, key.public().to_file())?;
        let policy = tmp.path().join("trust.toml");
        fs::write(
            &policy,
            format!(
                "version = 1\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{{ name = \"b\", key = \"{}\" }}]\n",
                key.public().to_base64()
            ),
        )?;
        let sig = release::sign_file(&file, &key, trust::Role::Release, Some("bench"), Some("1"))?;
        // Warm the page cache so every reader starts equal.
        let _ = std::io::copy(&mut fs::File::open(&file)?, &mut std::io::sink())?;
        let n = self.runs.max(3);
        let gb = size as f64 / 1e9;
        let exe = std::env::current_exe()?;
        // The whole `cargo xtask verify` command, as a user runs it.
        let ours = Timed::of(n, |_| time_cmd(Command::new(&exe).arg("verify").arg(&file).arg("--trust").arg(&policy)))?;
        let mini = Timed::of(n, |_| {
            time_cmd(Command::new("minisign").arg("-Vm").arg(&file).arg("-x").arg(&sig).arg("-p").arg(&pk))
        })?;
        let b2 = Timed::of(n, |_| time_cmd(Command::new("b2sum").arg(&file)))?;
        let rate = |t: &Timed| gb / t.median;
        out!("verify, {} MiB file ({n} runs each, medians; GB/s, higher is better):", self.verify_mib);
        row("cargo xtask verify (BLAKE2b prehash)", rate(&ours), "minisign -V", rate(&mini), "GB/s");
        row("cargo xtask verify (BLAKE2b prehash)", rate(&ours), "b2sum", rate(&b2), "GB/s");
        let rss = |args: &[&std::ffi::OsStr]| -> Result<u64> {
            let o = Command::new("/usr/bin/time").arg("-f").arg("%M").args(args).stdout(Stdio::null()).output()?;
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
                .context("GNU time printed no RSS")
        };
        let ours_rss =
            rss(&[exe.as_os_str(), "verify".as_ref(), file.as_os_str(), "--trust".as_ref(), policy.as_os_str()])?;
        let mini_rss = rss(&[
            "minisign".as_ref(),
            "-Vm".as_ref(),
            file.as_os_str(),
            "-x".as_ref(),
            sig.as_os_str(),
            "-p".as_ref(),
            pk.as_os_str(),
        ])?;
        row("peak RSS of the whole command", ours_rss as f64 / 1024.0, "minisign -V", mini_rss as f64 / 1024.0, "MiB");
        // The payload digest the bundle manifest uses: sha256, as the store and agent compute it.
        let ours_sha = Timed::of(n, |_| {
            let t = Instant::now();
            store::sha256_file(&file)?;
            Ok(t.elapsed())
        })?;
        let coreutils = Timed::of(n, |_| time_cmd(Command::new("sha256sum").arg(&file)))?;
        row("payload digest (sha256)", rate(&ours_sha), "sha256sum (coreutils)", rate(&coreutils), "GB/s");
        if image::tools::which("openssl").is_some() {
            let ossl = Timed::of(n, |_| time_cmd(Command::new("openssl").args(["dgst", "-sha256"]).arg(&file)))?;
            row("payload digest (sha256)", rate(&ours_sha), "openssl dgst -sha256", rate(&ossl), "GB/s");
        }
        Ok(())
    }
}
