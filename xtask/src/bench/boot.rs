//! `cargo xtask bench boot`: the appliance in QEMU (KVM or TCG, said), from the same run:
//! QEMU start to healthy on a fresh disk; a stick with version 2 plugged in to version 2 healthy
//! on the other slot; a stick with a version that never becomes healthy to the machine back on
//! its slot by itself; the disk's size (apparent, allocated, qcow2, bmap-mapped) and the time to
//! flash it with `bmaptool copy` next to `dd` (to a file, same run). dm-verity: QEMU start to
//! healthy with the slot opened through dm-verity (the disk as built) and without (the same disk,
//! its entry's verity words removed), and the slot read whole in the booted box's initrd, bare
//! and through dm-verity (`airlock.measure=verity` on a copy's entry), from a cold page cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::time_cmd;
use crate::{Ctx, out};

fn build(ctx: &Ctx, recipe: &str, images: &Path) -> Result<PathBuf> {
    let o = Command::new(std::env::current_exe()?)
        .args(["--json", "build", recipe, "--out"])
        .arg(images)
        .current_dir(&ctx.root)
        .output()
        .context("building")?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    match v["out_dir"].as_str() {
        Some(d) if o.status.success() => Ok(PathBuf::from(d)),
        _ => bail!("build {recipe} failed: {}", String::from_utf8_lossy(&o.stderr)),
    }
}

pub fn run(ctx: &Ctx, runs: usize) -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("airlock-bench-boot-").tempdir_in(ctx.root.join("target"))?;
    let images = tmp.path().join("images");
    eprintln!("bench boot: building versions 1, 2 and 3 (unhealthy)…");
    let v1 = build(ctx, "recipes/parking-controller.toml", &images)?;
    let v2 = build(ctx, "recipes/e2e-v2.toml", &images)?;
    let v3 = build(ctx, "recipes/e2e-v3-unhealthy.toml", &images)?;
    let (stick2, stick3) = (tmp.path().join("v2.img"), tmp.path().join("v3.img"));
    vm::make_stick(&[v2.join("parking-controller-2.0.0.airlock")], &stick2)?;
    vm::make_stick(&[v3.join("parking-controller-3.0.0.airlock")], &stick3)?;
    let accel = if vm::kvm_works(tmp.path()) { vm::Accel::Kvm } else { vm::Accel::Tcg };
    let opts = vm::Options {
        disk: v1.join(image::disk::QCOW2_NAME),
        workdir: tmp.path().join("vm"),
        resume: false,
        accel,
        memory_mib: 1024,
        cpus: 2,
        forward: None,
        usb: None,
        interactive: false,
    };
    let long = Duration::from_secs(900);
    let mut m = vm::Vm::start(&opts)?;
    let at = m.wait_for("slot a (1.0.0) is already good", 0, long)?;
    let healthy = m.elapsed();
    // The initrd's check of the whole slot (`veritysetup verify`), from its own uptime stamps.
    let check = m
        .console()
        .lines()
        .find_map(|l| l.split_once("verified against root hash ").and_then(|(_, r)| r.split_once("(uptime ")))
        .map(|(_, r)| r.split([' ', ')']).filter_map(|w| w.parse::<f64>().ok()).collect::<Vec<_>>())
        .and_then(|n| (n.len() == 2).then(|| n[1] - n[0]));
    m.plug_usb(&stick2)?;
    let plugged = Instant::now();
    let at = m.wait_for("slot b (2.0.0) blessed", at, long)?;
    let updated = plugged.elapsed();
    m.unplug_usb("stick1")?;
    m.plug_usb(&stick3)?;
    let at = m.wait_for("installed into slot a; trial boot armed", at, long)?;
    let armed = Instant::now();
    m.wait_for("booted slot b (2.0.0, good)", at, long)?;
    let fallback = armed.elapsed();
    m.power_cut()?;

    // The same fresh disk without dm-verity, and once more measuring reads in the initrd.
    let recipe = recipe::Recipe::load(&ctx.root.join("recipes/parking-controller.toml"), &ctx.root)?;
    let esp = image::disk::Layout::of(&recipe).esp.0;
    // `runs` boots of each, taken in turns, so that both see the same machine.
    let plain = edited_copy(&v1, tmp.path(), "plain", esp, |w| !bundle::is_verity_word(w), "")?;
    let (mut with, mut without) = (vec![healthy.as_secs_f64()], Vec::new());
    for i in 0..runs.max(1) {
        // The first boot above is the first with dm-verity.
        let turns: &mut [(&PathBuf, &mut Vec<f64>, &str)] = if i == 0 {
            &mut [(&plain, &mut without, "plain")]
        } else {
            &mut [(&plain, &mut without, "plain"), (&opts.disk, &mut with, "verity")]
        };
        for (disk, times, what) in turns.iter_mut() {
            let workdir = tmp.path().join(format!("vm-{what}-{i}"));
            let mut m = vm::Vm::start(&vm::Options { disk: disk.to_path_buf(), workdir, ..opts.clone() })?;
            m.wait_for("slot a (1.0.0) is already good", 0, long)?;
            times.push(m.elapsed().as_secs_f64());
            m.power_cut()?;
        }
    }
    let (with, without) = (super::Timed::of_values(with), super::Timed::of_values(without));
    let measured = edited_copy(&v1, tmp.path(), "measure", esp, |_| true, "airlock.measure=verity")?;
    let mut m = vm::Vm::start(&vm::Options { disk: measured, workdir: tmp.path().join("vm-measure"), ..opts.clone() })?;
    let at = m.wait_for("airlock-verity: measured: ", 0, long)?;
    let line = m.console()[at..].lines().next().unwrap_or_default().to_string();
    m.power_cut()?;
    let nums: Vec<f64> = line.split([' ', ',']).filter_map(|w| w.parse().ok()).collect();
    let [mib, t0, t1, _, t2] = nums[..] else { bail!("cannot read the initrd's measurement: {line}") };

    out!(
        "boot, {} ({}; 2 vCPUs, 1 GiB):",
        accel.as_str(),
        if accel == vm::Accel::Kvm { "KVM" } else { "TCG: software emulation" }
    );
    out!(
        "  QEMU start to healthy (fresh disk, first boot)        {:>7.1} s   (target on TCG ≤ 60 s)",
        healthy.as_secs_f64()
    );
    out!(
        "  stick with version 2 plugged in to version 2 blessed  {:>7.1} s   (write, read back, reboot, health check)",
        updated.as_secs_f64()
    );
    out!(
        "  bad version 3 armed to back on slot b by itself       {:>7.1} s   (3 tries; target on TCG ≤ 240 s)",
        fallback.as_secs_f64()
    );
    out!(
        "  QEMU start to healthy, {} boots each: dm-verity {:.1} s {}, without (same disk, verity words removed) {:.1} s {}: ratio {:.2}",
        runs.max(1),
        with.median,
        with.spread(),
        without.median,
        without.spread(),
        with.median / without.median
    );
    if let Some(c) = check {
        out!("  the initrd's check of the whole slot against its root hash (veritysetup verify) {c:.1} s");
    }
    out!(
        "  the slot read whole in the initrd ({mib:.0} MiB, cold cache): through dm-verity {:.1} MiB/s, bare {:.1} MiB/s: ratio {:.2}",
        mib / (t2 - t1),
        mib / (t1 - t0),
        (t1 - t0) / (t2 - t1)
    );

    let disk = v1.join(image::disk::DISK_NAME);
    let apparent = std::fs::metadata(&disk)?.len();
    let allocated = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&disk)?.blocks() * 512
    };
    let qcow2 = std::fs::metadata(v1.join(image::disk::QCOW2_NAME))?.len();
    out!(
        "disk.img: {:.0} MiB apparent, {:.0} MiB allocated; disk.qcow2 {:.0} MiB",
        apparent as f64 / 1048576.0,
        allocated as f64 / 1048576.0,
        qcow2 as f64 / 1048576.0
    );
    let target = tmp.path().join("flash-target.img");
    let bmap = time_cmd(Command::new("bmaptool").args(["-q", "copy"]).arg(&disk).arg(&target))?;
    let _ = std::fs::remove_file(&target);
    let dd = time_cmd(
        Command::new("dd").arg(format!("if={}", disk.display())).arg(format!("of={}", target.display())).args([
            "bs=4M",
            "conv=fsync",
            "status=none",
        ]),
    )?;
    let _ = std::fs::remove_file(&target);
    out!(
        "  flash to a file: bmaptool copy {:.2} s, dd bs=4M conv=fsync {:.2} s: ratio {:.2}",
        bmap.as_secs_f64(),
        dd.as_secs_f64(),
        bmap.as_secs_f64() / dd.as_secs_f64()
    );
    Ok(())
}

/// A raw copy of `build`'s disk whose slot a entry keeps the `options` words `keep` says and
/// gets `add`: the ESP edited with mtools at byte `esp`, as anyone with the disk could.
fn edited_copy(
    build: &Path,
    tmp: &Path,
    name: &str,
    esp: u64,
    keep: impl Fn(&str) -> bool,
    add: &str,
) -> Result<PathBuf> {
    let raw = tmp.join(format!("{name}.raw"));
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(build.join(image::disk::QCOW2_NAME))
        .arg(&raw)
        .status()?;
    if !st.success() {
        bail!("qemu-img convert {name}: {st}");
    }
    let img = format!("{}@@{esp}", raw.display());
    let entry = tmp.join(format!("{name}.conf"));
    let mtools = |args: &[&str]| -> Result<()> {
        let o = Command::new(args[0]).args(&args[1..]).env("MTOOLS_SKIP_CHECK", "1").output()?;
        if !o.status.success() {
            bail!("{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(())
    };
    let local = entry.to_string_lossy().into_owned();
    mtools(&["mcopy", "-n", "-i", &img, "::loader/entries/slot-a.conf", &local])?;
    let text = std::fs::read_to_string(&entry)?;
    let edited: String = text
        .lines()
        .map(|l| match l.strip_prefix("options ") {
            Some(o) => {
                let mut words: Vec<&str> = o.split(' ').filter(|w| keep(w)).collect();
                if !add.is_empty() {
                    words.push(add);
                }
                format!("options {}\n", words.join(" "))
            }
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&entry, edited)?;
    mtools(&["mcopy", "-o", "-i", &img, &local, "::loader/entries/slot-a.conf"])?;
    Ok(raw)
}
