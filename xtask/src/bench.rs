//! `cargo xtask bench build | verify`: Airlock's figures side by side with the reference tools
//! (mmdebstrap, zstd, xz, mksquashfs, mkfs.erofs, minisign, b2sum, sha256sum, openssl), from the
//! same run, as ratios. Measurements, not tests: nothing here fails on a slow machine.

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::build::{Build, RecipeArgs};
use crate::{Ctx, out};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Which {
    Build,
    Verify,
    Install,
}

#[derive(Args, Debug)]
pub struct Bench {
    /// What to measure (default: both).
    pub which: Option<Which>,
    #[command(flatten)]
    pub args: RecipeArgs,
    /// Size of the verify benchmark's file, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub verify_mib: u64,
    /// Size of the install benchmark's root.img, in MiB (a second run uses a quarter of it).
    #[arg(long, default_value_t = 256)]
    pub install_mib: u64,
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

fn row(what: &str, airlock: f64, reference: &str, refv: f64, unit: &str) {
    let ratio = if refv > 0.0 { airlock / refv } else { f64::NAN };
    out!("  {what:<38} airlock {airlock:>9.2} {unit:<5} {reference:<28} {refv:>9.2} {unit:<5} ratio {ratio:>5.2}");
}

impl Bench {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let recipe = self.args.load(ctx)?;
        let mut tools = image::tools::needed(&recipe, false);
        tools.extend(crate::deps::TEST_TOOLS.iter().copied());
        crate::deps::ensure(&tools, false)?;
        match self.which {
            Some(Which::Build) => self.build(ctx),
            Some(Which::Verify) => self.verify(),
            Some(Which::Install) => crate::bench_install::run(ctx, self.install_mib),
            None => {
                self.build(ctx)?;
                self.verify()?;
                crate::bench_install::run(ctx, self.install_mib)
            }
        }
    }

    fn build(&self, ctx: &Ctx) -> Result<()> {
        let tmp = tempfile::Builder::new().prefix("airlock-bench-").tempdir()?;
        let b = Build {
            args: self.args.clone(),
            offline: false,
            no_cache: true,
            force: false,
            out: Some(tmp.path().join("images")),
            work_dir: None,
            stack_target_dir: None,
        };
        let mut opts = b.options(ctx);
        opts.interactive = false;
        eprintln!("bench build: full build from a warm store (no stage cache)…");
        let full = image::build(&opts)?;
        let total: f64 = full.timings.iter().map(|(_, d)| secs(*d)).sum();
        out!("build, split by stage ({}):", full.out_dir.display());
        for (n, d) in &full.timings {
            out!("  {n:<12} {:>7.2} s", secs(*d));
        }
        let after_base: f64 =
            full.timings.iter().skip_while(|(n, _)| *n != "base").skip(1).map(|(_, d)| secs(*d)).sum();
        out!("  {:<12} {total:>7.2} s; after the base stage {after_base:.2} s", "total");

        // mmdebstrap alone, same package set, same local repository, plain options.
        let (recipe, lock, _) = image::load(&opts)?;
        let store = store::Store::open(&opts.store)?;
        let repo = tmp.path().join("repo");
        store::write_apt_repo(&store, &lock, &repo)?;
        let plain_tar = tmp.path().join("plain.tar");
        let include = format!("--include={}", recipe.base.packages.join(","));
        let mm = time_cmd(
            Command::new("mmdebstrap")
                .args(["-q", "--mode=root", "--format=tar", "--variant=minbase", &include, &recipe.base.suite])
                .arg(&plain_tar)
                .arg(format!("deb [trusted=yes] copy://{} ./", repo.display()))
                .env("SOURCE_DATE_EPOCH", recipe.source_date_epoch.to_string()),
        )?;
        out!("reference: mmdebstrap alone on the same package set: {:.2} s", secs(mm));
        out!(
            "  everything after the base stage adds {:.0}% to mmdebstrap's own time (target ≤ 25%)",
            100.0 * after_base / secs(mm)
        );

        // Compression: the same uncompressed tar through Airlock's encoder and the zstd CLI.
        let tar_zst = full.out_dir.join(image::ROOTFS_NAME);
        let raw = tmp.path().join("rootfs.tar");
        {
            let mut dec = zstd::stream::Decoder::new(fs::File::open(&tar_zst)?)?;
            let mut out = fs::File::create(&raw)?;
            std::io::copy(&mut dec, &mut out)?;
        }
        let raw_size = fs::metadata(&raw)?.len() as f64;
        let level = recipe.output.compression_level;
        let ours = {
            let data = fs::read(&raw)?;
            let t = Instant::now();
            let mut enc = zstd::stream::Encoder::new(Vec::with_capacity(data.len() / 3), level)?;
            enc.multithread(image::archive::ZSTD_WORKERS)?;
            enc.include_checksum(true)?;
            enc.write_all(&data)?;
            let v = enc.finish()?;
            (t.elapsed(), v.len() as f64)
        };
        let cli = |args: &[&str], ext: &str| -> Result<(Duration, f64)> {
            let out = tmp.path().join(format!("rootfs.tar.{ext}"));
            let d = time_cmd(Command::new(args[0]).args(&args[1..]).arg("-o").arg(&out).arg(&raw))?;
            Ok((d, fs::metadata(&out)?.len() as f64))
        };
        let z3 = cli(&["zstd", "-q", "-f", &format!("-{level}"), "-T0"], "z3")?;
        let z19 = cli(&["zstd", "-q", "-f", "-19", "-T0"], "z19")?;
        let xz_out = tmp.path().join("rootfs.tar.xz");
        let t = Instant::now();
        let xz = Command::new("xz").args(["-6", "-T0", "-c"]).arg(&raw).stdout(fs::File::create(&xz_out)?).status()?;
        let xz_t = t.elapsed();
        if !xz.success() {
            bail!("xz failed");
        }
        let xz_size = fs::metadata(&xz_out)?.len() as f64;
        out!("rootfs.tar ({:.0} MB uncompressed):", raw_size / 1e6);
        row(&format!("zstd -{level} time"), secs(ours.0), &format!("zstd -{level} -T0 (CLI)"), secs(z3.0), "s");
        row(
            "size, % of the tar",
            100.0 * ours.1 / raw_size,
            &format!("zstd -{level} -T0"),
            100.0 * z3.1 / raw_size,
            "%",
        );
        row("size, % of the tar", 100.0 * ours.1 / raw_size, "zstd -19 -T0", 100.0 * z19.1 / raw_size, "%");
        row("size, % of the tar", 100.0 * ours.1 / raw_size, "xz -6 -T0", 100.0 * xz_size / raw_size, "%");
        out!("  (zstd -19 -T0 took {:.1} s, xz -6 -T0 {:.1} s)", secs(z19.0), secs(xz_t));

        // Slot filesystems on the same tree.
        let tree = tmp.path().join("tree");
        fs::create_dir_all(&tree)?;
        time_cmd(Command::new("tar").args(["-xpf"]).arg(&raw).arg("-C").arg(&tree).arg("--numeric-owner"))?;
        let slot = full.timings.iter().find(|(n, _)| *n == "slotfs").map_or(0.0, |(_, d)| secs(*d));
        let slot_size = full.manifest.outputs.get(image::SLOT_NAME).map_or(0.0, |o| o.size as f64);
        let sq = tmp.path().join("ref.squashfs");
        let sq_t = time_cmd(
            Command::new("mksquashfs")
                .arg(&tree)
                .arg(&sq)
                .args([
                    "-noappend",
                    "-comp",
                    "zstd",
                    "-Xcompression-level",
                    &recipe.output.slot_compression_level.to_string(),
                    "-quiet",
                    "-no-progress",
                ])
                .env("SOURCE_DATE_EPOCH", recipe.source_date_epoch.to_string()),
        )?;
        let er = tmp.path().join("ref.erofs");
        let er_t = time_cmd(
            Command::new("mkfs.erofs")
                .args([
                    "--quiet",
                    "-zlz4hc,9",
                    "-T",
                    &recipe.source_date_epoch.to_string(),
                    "-U",
                    "00000000-0000-4000-8000-000000000000",
                ])
                .arg(&er)
                .arg(&tree),
        )?;
        out!("root.img ({}):", recipe.output.slot_fs.as_str());
        row("slot fs time", slot, "mksquashfs CLI, same tree", secs(sq_t), "s");
        row("slot fs size", slot_size / 1e6, "mksquashfs CLI, same tree", fs::metadata(&sq)?.len() as f64 / 1e6, "MB");
        row("slot fs time", slot, "mkfs.erofs -zlz4hc,9", secs(er_t), "s");
        row("slot fs size", slot_size / 1e6, "mkfs.erofs -zlz4hc,9", fs::metadata(&er)?.len() as f64 / 1e6, "MB");

        // A rebuild with nothing changed.
        let mut again = opts.clone();
        again.use_cache = true;
        image::build(&again)?; // the first cached build stores the stage cache and the builder digest
        let t = Instant::now();
        let r = image::build(&again)?;
        let noop = secs(t.elapsed());
        out!(
            "rebuild with nothing changed: {noop:.2} s ({}), {:.1}% of the full build (target ≤ 10%)",
            if r.up_to_date { "up to date" } else { "rebuilt" },
            100.0 * noop / total
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
        let sk = tmp.path().join("bench.key");
        let pk = tmp.path().join("bench.pub");
        fs::write(&sk, key.to_file(None)?)?;
        fs::write(&pk, key.public().to_file())?;
        let sig = release::sign_file(&file, &key, trust::Role::Release, Some("bench"), Some("1"))?;
        let sigtext = fs::read_to_string(&sig)?;
        // Warm the page cache so every reader starts equal.
        let _ = std::io::copy(&mut fs::File::open(&file)?, &mut std::io::sink())?;

        let gb = size as f64 / 1e9;
        let t = Instant::now();
        let prehash = trust::Prehash::of_reader(fs::File::open(&file)?)?;
        trust::SignatureFile::parse(&sigtext)?.verify(&key.public(), &prehash)?;
        let ours = gb / secs(t.elapsed());
        let mini =
            gb / secs(time_cmd(Command::new("minisign").arg("-Vm").arg(&file).arg("-x").arg(&sig).arg("-p").arg(&pk))?);
        let b2 = gb / secs(time_cmd(Command::new("b2sum").arg(&file))?);
        // The payload digest the bundle manifest uses: sha256, as the store and agent compute it.
        let t = Instant::now();
        store::sha256_file(&file)?;
        let ours_sha = gb / secs(t.elapsed());
        let coreutils_sha = gb / secs(time_cmd(Command::new("sha256sum").arg(&file))?);
        out!("verify, {} MiB file (GB/s, higher is better):", self.verify_mib);
        row("minisign signature (BLAKE2b prehash)", ours, "minisign -V", mini, "GB/s");
        row("minisign signature (BLAKE2b prehash)", ours, "b2sum", b2, "GB/s");
        row("payload digest (sha256)", ours_sha, "sha256sum (coreutils)", coreutils_sha, "GB/s");
        if image::tools::which("openssl").is_some() {
            let ossl = gb / secs(time_cmd(Command::new("openssl").args(["dgst", "-sha256"]).arg(&file))?);
            row("payload digest (sha256)", ours_sha, "openssl dgst -sha256", ossl, "GB/s");
        }
        Ok(())
    }
}
