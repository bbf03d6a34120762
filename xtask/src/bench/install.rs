//! `cargo xtask bench install`: installing a bundle into a file-backed slot with the real
//! `sideload` binary, next to `zstd -d | dd` of the same payload and to RAUC checking an
//! equivalent plain bundle, from the same run; peak RSS for two bundle sizes; and how fast a
//! bundle with a bad signature is refused.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use super::time_cmd;
use crate::{Ctx, out};

/// Peak RSS in KiB of a command, from GNU time.
fn peak_rss(args: &[&std::ffi::OsStr]) -> Result<u64> {
    let o = Command::new("/usr/bin/time").arg("-f").arg("%M").args(args).stdout(Stdio::null()).output()?;
    if !o.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let err = String::from_utf8_lossy(&o.stderr);
    err.lines().last().and_then(|l| l.trim().parse().ok()).context("GNU time printed no RSS")
}

/// A root.img stand-in: half keystream, half zeros per MiB (compresses to about half).
fn make_image(path: &Path, mib: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    for i in 0..mib {
        for (j, c) in block[..1 << 19].chunks_mut(64).enumerate() {
            c.copy_from_slice(blake2b_simd::blake2b(&[i.to_le_bytes(), (j as u64).to_le_bytes()].concat()).as_bytes());
        }
        f.write_all(&block)?;
    }
    f.flush()?;
    Ok(())
}

struct Made {
    bundle: std::path::PathBuf,
    payload_zst: std::path::PathBuf,
}

fn make_bundle(dir: &Path, img: &Path, key: &trust::SecretKey) -> Result<Made> {
    let zst = dir.join("root.img.zst");
    let payload = bundle::compress_payload(
        "root.img",
        bundle::Target::Root,
        std::io::BufReader::new(fs::File::open(img)?),
        std::io::BufWriter::new(fs::File::create(&zst)?),
        bundle::DEFAULT_CHUNK,
    )?;
    let manifest = bundle::Manifest {
        format: bundle::FORMAT,
        product: "airlock.bench".into(),
        version: product::Version::parse("2.0.0")?,
        security_version: 2,
        channel: product::Channel::Release,
        previous_manifest: String::new(),
        build_manifest: format!("sha256:{}", "0".repeat(64)),
        hash: "sha256".into(),
        chunk_size: bundle::DEFAULT_CHUNK,
        cmdline: None,
        verity: None,
        payloads: vec![payload],
    };
    let text = manifest.to_toml()?;
    let sig = trust::SignatureFile::sign(
        key,
        &trust::Prehash::of_bytes(text.as_bytes()),
        "airlock product=airlock.bench version=2.0.0 role=release",
    )?;
    let out = dir.join("bench.airlock");
    let mut z = fs::File::open(&zst)?;
    bundle::write_bundle(
        std::io::BufWriter::new(fs::File::create(&out)?),
        text.as_bytes(),
        &[(format!("manifest.toml.{}.minisig", key.id()), sig.to_file())],
        &mut [(&manifest.payloads[0], &mut z)],
    )?;
    Ok(Made { bundle: out, payload_zst: zst })
}

fn device(dir: &Path, key: &trust::SecretKey, slot_mib: u64, sideload: &Path) -> Result<std::path::PathBuf> {
    let root = dir.join("device");
    let _ = fs::remove_dir_all(&root);
    let policy = dir.join("trust.toml");
    fs::write(
        &policy,
        format!(
            "version = 1\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{{ name = \"bench\", key = \"{}\" }}]\n",
            key.public().to_base64()
        ),
    )?;
    let v1 = dir.join("v1.img");
    fs::write(&v1, vec![1u8; 4096])?;
    let o = Command::new(sideload)
        .arg("--root")
        .arg(&root)
        .args(["init", "--product", "airlock.bench", "--channel", "release", "--trust"])
        .arg(&policy)
        .args(["--slot-size", &(slot_mib << 20).to_string(), "--image"])
        .arg(&v1)
        .args(["--version", "1.0.0", "--security-version", "1"])
        .output()?;
    if !o.status.success() {
        bail!("sideload init: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(root)
}

pub fn run(ctx: &Ctx, mib: u64) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(&ctx.root);
    cmd!(sh, "cargo build --release --locked --quiet -p sideload").run()?;
    let sideload = ctx.root.join("target/release/sideload");
    let mut tmp = tempfile::Builder::new().prefix("airlock-bench-install-").tempdir_in(ctx.root.join("target"))?;
    if std::env::var_os("AIRLOCK_BENCH_KEEP").is_some() {
        tmp.disable_cleanup(true);
        eprintln!("keeping {}", tmp.path().display());
    }
    let key = trust::SecretKey::from_seed([11; 32], [1, 1, 2, 3, 5, 8, 13, 21]);
    out!("install, {mib} MiB root.img (file-backed slot, fsync and read-back included):");
    let mut rss = Vec::new();
    for (i, size) in [mib, (mib / 4).max(8)].into_iter().enumerate() {
        let dir = tmp.path().join(format!("s{size}"));
        fs::create_dir_all(&dir)?;
        let img = dir.join("root.img");
        make_image(&img, size)?;
        let made = make_bundle(&dir, &img, &key)?;
        let root = device(&dir, &key, size + 16, &sideload)?;
        let args: Vec<&std::ffi::OsStr> = vec![
            sideload.as_os_str(),
            "--root".as_ref(),
            root.as_os_str(),
            "install".as_ref(),
            made.bundle.as_os_str(),
        ];
        if i == 0 {
            let gb = (size << 20) as f64 / 1e9;
            // Three rounds, alternating, each from a fresh slot with nothing dirty in the page
            // cache; medians reported.
            let settle = || Command::new("sync").status();
            let slot = dir.join("plain-slot");
            let (mut ours_t, mut ref_t) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                let root = device(&dir, &key, size + 16, &sideload)?;
                settle()?;
                ours_t
                    .push(time_cmd(Command::new(&sideload).arg("--root").arg(&root).arg("install").arg(&made.bundle))?);
                let _ = fs::remove_file(&slot);
                fs::File::create(&slot)?.set_len((size + 16) << 20)?;
                settle()?;
                let t = Instant::now();
                let mut z = Command::new("zstd")
                    .args(["-d", "-c", "-q"])
                    .arg(&made.payload_zst)
                    .stdout(Stdio::piped())
                    .spawn()?;
                let zout = z.stdout.take().context("zstd stdout")?;
                let dd = Command::new("dd")
                    .arg(format!("of={}", slot.display()))
                    .args(["bs=1M", "conv=fsync,notrunc", "status=none"])
                    .stdin(zout)
                    .status()?;
                if !z.wait()?.success() || !dd.success() {
                    bail!("zstd -d | dd failed");
                }
                ref_t.push(t.elapsed());
            }
            ours_t.sort();
            ref_t.sort();
            let ours = gb / ours_t[1].as_secs_f64();
            let reference = gb / ref_t[1].as_secs_f64();
            let plain =
                gb / time_cmd(Command::new("zstd").args(["-d", "-c", "-q"]).arg(&made.payload_zst))?.as_secs_f64();
            out!(
                "  {:<44} airlock {ours:>6.2} GB/s  zstd -d | dd (fsync) {reference:>6.2} GB/s  ratio {:.2}",
                "verify + write + fsync + read-back",
                ours / reference
            );
            out!(
                "  {:<44} airlock {ours:>6.2} GB/s  zstd -d > /dev/null  {plain:>6.2} GB/s  ratio {:.2}",
                "",
                ours / plain
            );
            if image::tools::which("rauc").is_some() {
                rauc(&dir, &img, gb)?;
            } else {
                out!("  rauc not installed: `apt-get install rauc` to compare");
            }
            // A bad signature: refused before the payload is touched.
            let mut bad = fs::read(&made.bundle)?;
            let pos = bad.windows(13).position(|w| w == b"manifest.toml").context("manifest entry")? + 600;
            bad[pos] ^= 1;
            let badp = dir.join("bad.airlock");
            fs::write(&badp, bad)?;
            let t = Instant::now();
            let o = Command::new(&sideload).arg("--root").arg(&root).arg("install").arg(&badp).output()?;
            out!(
                "  {:<44} {:.1} ms (exit {})",
                format!("rejecting a {size} MiB bundle, bad signature"),
                t.elapsed().as_secs_f64() * 1e3,
                o.status.code().unwrap_or(-1)
            );
            // A stick of 10,000 junk files (and the good bundle among them).
            let root = device(&dir, &key, size + 16, &sideload)?;
            let stick = dir.join("stick");
            fs::create_dir_all(&stick)?;
            for k in 0..10_000 {
                fs::write(stick.join(format!("junk-{k:05}.airlock")), b"junk")?;
            }
            let t = Instant::now();
            let o = Command::new(&sideload).arg("--root").arg(&root).arg("install-dir").arg(&stick).output()?;
            out!(
                "  {:<44} {:.2} s (exit {}; target < 2 s)",
                "scanning a stick of 10,000 junk .airlock files",
                t.elapsed().as_secs_f64(),
                o.status.code().unwrap_or(-1)
            );
            // Peak RSS with a 100 MiB audit log on the device.
            let root = device(&dir, &key, size + 16, &sideload)?;
            grow_audit_log(&sideload, &root, &badp)?;
            let big_log: Vec<&std::ffi::OsStr> = vec![
                sideload.as_os_str(),
                "--root".as_ref(),
                root.as_os_str(),
                "install".as_ref(),
                made.bundle.as_os_str(),
            ];
            rss.push((format!("{size} MiB bundle, 100 MiB audit log"), peak_rss(&big_log)?));
            let refuse: Vec<&std::ffi::OsStr> =
                vec![sideload.as_os_str(), "--root".as_ref(), root.as_os_str(), "install".as_ref(), badp.as_os_str()];
            rss.push(("refusal, 100 MiB audit log".into(), peak_rss(&refuse)?));
            device(&dir, &key, size + 16, &sideload)?;
        }
        rss.push((format!("{size} MiB bundle"), peak_rss(&args)?));
    }
    for (what, kib) in rss {
        out!("  peak RSS, {what:<38} {:.1} MiB (target ≤ 32 MiB whatever the size)", kib as f64 / 1024.0);
    }
    Ok(())
}

/// Grows the device's audit log past 100 MiB with real refusals' records (appended by the
/// agent's own code path, in batches: a stick of junk files).
fn grow_audit_log(sideload: &Path, root: &Path, junk: &Path) -> Result<()> {
    let stick = root.join("junk-stick");
    fs::create_dir_all(&stick)?;
    for k in 0..20_000 {
        let p = stick.join(format!("bad-{k:05}.airlock"));
        if fs::hard_link(junk, &p).is_err() {
            fs::copy(junk, &p)?;
        }
    }
    let log = root.join("data/audit.jsonl");
    while fs::metadata(&log).map(|m| m.len()).unwrap_or(0) < 100 << 20 {
        let _ = Command::new(sideload).arg("--root").arg(root).arg("install-dir").arg(&stick).output()?;
    }
    fs::remove_dir_all(&stick)?;
    Ok(())
}

/// RAUC checking an equivalent plain bundle (same root.img), signed with a throwaway cert.
fn rauc(dir: &Path, img: &Path, gb: f64) -> Result<()> {
    let content = dir.join("rauc-content");
    fs::create_dir_all(&content)?;
    fs::hard_link(img, content.join("root.img")).or_else(|_| fs::copy(img, content.join("root.img")).map(|_| ()))?;
    fs::write(
        content.join("manifest.raucm"),
        "[update]\ncompatible=airlock-bench\nversion=2.0.0\n\n[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=root.img\n",
    )?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    time_cmd(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=airlock-bench",
                "-days",
                "1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )?;
    let bundle = dir.join("bench.raucb");
    time_cmd(
        Command::new("rauc")
            .arg("bundle")
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--key={}", key.display()))
            .arg(&content)
            .arg(&bundle),
    )?;
    let t = time_cmd(Command::new("rauc").arg("info").arg(format!("--keyring={}", cert.display())).arg(&bundle))?;
    out!("  {:<44} rauc info (plain bundle, signature over all of it) {:.2} GB/s", "", gb / t.as_secs_f64());
    Ok(())
}
