//! The appliance disk (`disk.img`, and `disk.qcow2` and `disk.bmap` made from it): GPT with
//! GUIDs derived from the recipe; an ESP (FAT, fixed volume id, clamped times) holding
//! systemd-boot, one Boot Loader Specification entry per slot with boot counting and each
//! slot's kernel and initrd; `root-a` holding root.img; an empty `root-b`; `data` (ext4, fixed
//! UUID, hash seed and times) that the image mounts under `/var` (an overlay over the image's
//! own `/var`). Made without mounting anything, every byte the same from the same inputs
//! (FIELD-NOTES.md, "Slot filesystems" and "UEFI boot in QEMU").

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use recipe::{Recipe, SlotFs};

use crate::verity::Verity;
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use crate::error::{Error, Result, io_err, tool_err};

pub const DISK_NAME: &str = "disk.img";
pub const QCOW2_NAME: &str = "disk.qcow2";
pub const BMAP_NAME: &str = "disk.bmap";
/// The slot's kernel and initrd as build outputs and ESP files (the payload table's names).
pub const KERNEL_NAME: &str = sideload::bootentry::KERNEL;
pub const INITRD_NAME: &str = sideload::bootentry::INITRD;

const MIB: u64 = 1 << 20;
/// systemd-boot, from the image's own (pinned) `systemd-boot-efi` package.
const SD_BOOT: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// Where each partition lies on the disk, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub esp: (u64, u64),
    pub root_a: (u64, u64),
    pub root_b: (u64, u64),
    pub data: (u64, u64),
    pub total: u64,
}

impl Layout {
    pub fn of(recipe: &Recipe) -> Layout {
        let d = &recipe.disk;
        let esp = (MIB, d.esp_mib * MIB);
        let root_a = (esp.0 + esp.1, d.slot_mib * MIB);
        let root_b = (root_a.0 + root_a.1, d.slot_mib * MIB);
        let data = (root_b.0 + root_b.1, d.data_mib * MIB);
        // 1 MiB at the end for the backup GPT.
        Layout { esp, root_a, root_b, data, total: data.0 + data.1 + MIB }
    }
}

/// A GUID derived from the recipe, so that every build names its disk and partitions alike.
pub fn guid(recipe: &Recipe, what: &str) -> String {
    let d = Sha256::digest(format!("airlock-disk:{}:{}:{what}", recipe.product, recipe.name));
    let h = hex::encode(&d[..16]);
    format!("{}-{}-4{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32]).to_uppercase()
}

/// The FAT volume id of the ESP (8 hex digits), derived from the recipe.
fn volume_id(recipe: &Recipe) -> String {
    hex::encode(&Sha256::digest(format!("airlock-esp:{}:{}", recipe.product, recipe.name))[..4])
}

/// The kernel command line of a slot.
pub fn cmdline(recipe: &Recipe, slot: &str) -> String {
    format!("root=PARTLABEL=root-{slot} {}", cmdline_tail(recipe))
}

/// The kernel command line of every slot, without the `root=` that names the slot (what the
/// device config and the bundle carry; the agent adds `root=` for the slot it writes).
pub fn cmdline_tail(recipe: &Recipe) -> String {
    let fs = match recipe.output.slot_fs {
        SlotFs::Squashfs => "squashfs",
        SlotFs::Erofs => "erofs",
    };
    // panic=10: an initrd that cannot mount the root, or a kernel that panics, reboots, so
    // that boot counting moves on instead of waiting on a console nobody watches.
    format!("rootfstype={fs} ro quiet console=tty0 console=ttyS0,115200n8 panic=10")
}

/// A slot's Boot Loader Specification entry. Every entry has the same `sort-key`, so that
/// systemd-boot orders them by `version` (what the agent rewrites), newest first. With the
/// slot's verity table, its command line opens the slot through dm-verity (the words the
/// agent writes for the slots it installs, in the same place).
pub fn entry(recipe: &Recipe, slot: &str, version: u64, verity: Option<&Verity>) -> String {
    let options = format!("root=PARTLABEL=root-{slot} {}", bundle::slot_cmdline(verity, &cmdline_tail(recipe)));
    format!(
        "title Airlock {} (slot {slot})\nsort-key airlock\nversion {version}\nlinux /{slot}/{KERNEL_NAME}\ninitrd /{slot}/{INITRD_NAME}\noptions {options}\n",
        recipe.name,
    )
}

/// No `default` line (a pattern naming one slot would stop the fallback), no menu, no editor.
const LOADER_CONF: &str = "timeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n";

/// The kernel and initrd the image installed (`boot/vmlinuz-*`, `boot/initrd.img-*`): exactly one
/// of each.
pub fn kernel_and_initrd(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let boot = root.join("boot");
    let (kernels, initrds) = sideload::device::boot_files_in(&boot).map_err(io_err(&boot))?;
    match (kernels.as_slice(), initrds.as_slice()) {
        ([k], [i]) => Ok((k.clone(), i.clone())),
        _ => Err(Error::Invalid(format!(
            "the image must hold exactly one kernel and one initrd in /boot (found {} and {}): add `linux-image-amd64` (or one other kernel) to [base] packages",
            kernels.len(),
            initrds.len()
        ))),
    }
}

/// Sets the times of every entry under `dir` (and `dir`) to `t`, so that tools that copy
/// times (mcopy -m, mke2fs -d) copy the same ones on every build.
fn clamp_times(dir: &Path, t: u64) -> Result<()> {
    let when = UNIX_EPOCH + Duration::from_secs(t);
    let times = FileTimes::new().set_accessed(when).set_modified(when);
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = fs::symlink_metadata(&p).map_err(io_err(&p))?;
        if m.is_dir() {
            for e in fs::read_dir(&p).map_err(io_err(&p))? {
                todo.push(e.map_err(io_err(&p))?.path());
            }
        }
        File::open(&p).and_then(|f| f.set_times(times)).map_err(io_err(&p))?;
    }
    Ok(())
}

fn copy_file(src: &Path, dest: &Path) -> Result<()> {
    if let Some(p) = dest.parent() {
        fs::create_dir_all(p).map_err(io_err(p))?;
    }
    fs::copy(src, dest).map_err(io_err(dest))?;
    Ok(())
}

/// The ESP's filesystem image: systemd-boot, the loader config, both slots' entries (slot b out
/// of the rotation: `+0`, no kernel yet), slot a's kernel and initrd.
fn make_esp(
    sh: &Shell,
    recipe: &Recipe,
    root: &Path,
    (kernel, initrd): (&Path, &Path),
    verity: &Verity,
    scratch: &Path,
) -> Result<PathBuf> {
    let stage = scratch.join("esp");
    let sd_boot = root.join(SD_BOOT);
    if !sd_boot.is_file() {
        return Err(Error::Invalid(format!(
            "the image has no /{SD_BOOT}: add `systemd-boot-efi` to [base] packages (the disk boots with the image's own pinned systemd-boot)"
        )));
    }
    copy_file(&sd_boot, &stage.join("EFI/BOOT/BOOTX64.EFI"))?;
    copy_file(&sd_boot, &stage.join("EFI/systemd/systemd-bootx64.efi"))?;
    copy_file(kernel, &stage.join("a").join(KERNEL_NAME))?;
    copy_file(initrd, &stage.join("a").join(INITRD_NAME))?;
    fs::create_dir_all(stage.join("b")).map_err(io_err(&stage))?;
    let entries = sideload::bootentry::entries_dir(&stage);
    fs::create_dir_all(&entries).map_err(io_err(&entries))?;
    fs::write(stage.join("loader/loader.conf"), LOADER_CONF).map_err(io_err(&stage))?;
    fs::write(entries.join("slot-a.conf"), entry(recipe, "a", 1, Some(verity))).map_err(io_err(&entries))?;
    fs::write(entries.join("slot-b+0.conf"), entry(recipe, "b", 0, None)).map_err(io_err(&entries))?;
    clamp_times(&stage, recipe.source_date_epoch)?;

    let img = scratch.join("esp.img");
    let _ = fs::remove_file(&img);
    let kib = (recipe.disk.esp_mib * 1024).to_string();
    let vol = volume_id(recipe);
    cmd!(sh, "mkfs.vfat -C --invariant -F 32 -i {vol} -n AIRLOCK-ESP {img} {kib}")
        .quiet()
        .ignore_stdout()
        .run()
        .map_err(tool_err("mkfs.vfat (ESP)"))?;
    let mut items: Vec<PathBuf> = fs::read_dir(&stage)
        .map_err(io_err(&stage))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(io_err(&stage))?;
    items.sort();
    // FAT keeps local times: TZ=UTC so every host writes the same bytes.
    cmd!(sh, "mcopy -i {img} -s -m -Q {items...} ::/")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("TZ", "UTC")
        .quiet()
        .ignore_stdout()
        .run()
        .map_err(tool_err("mcopy (ESP contents)"))?;
    Ok(img)
}

/// The data partition: ext4 with the overlay directories for `/var`, every id and time fixed.
///
/// `mke2fs -d` copies each entry's ctime from the staging tree, and a ctime cannot be set (it
/// is the host's clock when the entry last changed): every copied inode's ctime is then set to
/// the recipe's time with debugfs, under the same fake time so the superblock's write time is
/// fixed too.
pub fn make_data(sh: &Shell, recipe: &Recipe, scratch: &Path) -> Result<PathBuf> {
    let stage = scratch.join("data");
    for d in ["var/upper", "var/work"] {
        fs::create_dir_all(stage.join(d)).map_err(io_err(&stage))?;
    }
    clamp_times(&stage, recipe.source_date_epoch)?;
    let img = scratch.join("data.img");
    let _ = fs::remove_file(&img);
    let uuid = guid(recipe, "data-fs").to_lowercase();
    let ext = format!("hash_seed={uuid},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0");
    let size = format!("{}M", recipe.disk.data_mib);
    let sde = recipe.source_date_epoch.to_string();
    cmd!(sh, "mke2fs -q -F -t ext4 -L data -U {uuid} -E {ext} -d {stage} {img} {size}")
        .env("E2FSPROGS_FAKE_TIME", &sde)
        .env("SOURCE_DATE_EPOCH", &sde)
        .quiet()
        .ignore_stdout()
        .run()
        .map_err(tool_err("mke2fs (data partition)"))?;
    let mut cmds = String::new();
    for rel in entries_under(&stage)? {
        cmds.push_str(&format!("set_inode_field \"/{rel}\" ctime @{sde}\n"));
    }
    let cmd_file = scratch.join("data.debugfs");
    fs::write(&cmd_file, cmds).map_err(io_err(&cmd_file))?;
    cmd!(sh, "debugfs -w -f {cmd_file} {img}")
        .env("E2FSPROGS_FAKE_TIME", &sde)
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .map_err(tool_err("debugfs (data partition times)"))?;
    Ok(img)
}

/// Every entry under `dir`, as relative paths, sorted.
fn entries_under(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        for e in fs::read_dir(&p).map_err(io_err(&p))? {
            let path = e.map_err(io_err(&p))?.path();
            let rel = path.strip_prefix(dir).map_err(|_| Error::Invalid(format!("{}: outside", path.display())))?;
            let rel = rel.to_str().ok_or_else(|| Error::Invalid(format!("{}: not UTF-8", path.display())))?;
            if rel.contains(['"', '\n', '\\']) {
                return Err(Error::Invalid(format!("{}: a name debugfs cannot quote", path.display())));
            }
            out.push(rel.to_string());
            if fs::symlink_metadata(&path).map_err(io_err(&path))?.is_dir() {
                todo.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Copies `src` into `dest` at `offset`, leaving all-zero blocks as holes (the disk stays sparse).
fn write_at(dest: &mut File, dest_path: &Path, src: &Path, offset: u64, max: u64) -> Result<()> {
    let mut f = File::open(src).map_err(io_err(src))?;
    let len = f.metadata().map_err(io_err(src))?.len();
    if len > max {
        return Err(Error::Invalid(format!(
            "{} is {len} bytes, its partition holds {max}: raise [disk] sizes in the recipe",
            src.display()
        )));
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(src))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dest.seek(SeekFrom::Start(offset + at)).map_err(io_err(dest_path))?;
            dest.write_all(&buf[..n]).map_err(io_err(dest_path))?;
        }
        at += n as u64;
    }
    Ok(())
}

/// Makes `disk.img`, `disk.qcow2` and `disk.bmap` in `out` from the built tree, root.img and
/// its verity tree (slot a: the filesystem, then the tree at `verity.hash_offset`).
pub fn make(recipe: &Recipe, root: &Path, slot: (&Path, &Path, &Verity), out: &Path, scratch: &Path) -> Result<()> {
    let (root_img, tree, verity) = slot;
    let sh = Shell::new().map_err(tool_err("shell"))?;
    let layout = Layout::of(recipe);
    let (kernel, initrd) = kernel_and_initrd(root)?;
    let esp = make_esp(&sh, recipe, root, (&kernel, &initrd), verity, scratch)?;
    let data = make_data(&sh, recipe, scratch)?;

    let disk = out.join(DISK_NAME);
    {
        let f = File::create(&disk).map_err(io_err(&disk))?;
        f.set_len(layout.total).map_err(io_err(&disk))?;
    }
    let mib = |b: u64| b / MIB;
    let g = |w: &str| guid(recipe, w);
    let (dg, g1, g2, g3, g4) = (g("disk"), g("esp"), g("root-a"), g("root-b"), g("data"));
    let n1 = format!("1:{}:+{}M", layout.esp.0 / 512, mib(layout.esp.1));
    let n2 = format!("2:{}:+{}M", layout.root_a.0 / 512, mib(layout.root_a.1));
    let n3 = format!("3:{}:+{}M", layout.root_b.0 / 512, mib(layout.root_b.1));
    let n4 = format!("4:{}:+{}M", layout.data.0 / 512, mib(layout.data.1));
    let (u1, u2, u3, u4) = (format!("1:{g1}"), format!("2:{g2}"), format!("3:{g3}"), format!("4:{g4}"));
    cmd!(
        sh,
        "sgdisk --clear --disk-guid={dg} --new={n1} --typecode=1:EF00 --change-name=1:esp --partition-guid={u1} --new={n2} --typecode=2:8300 --change-name=2:root-a --partition-guid={u2} --new={n3} --typecode=3:8300 --change-name=3:root-b --partition-guid={u3} --new={n4} --typecode=4:8300 --change-name=4:data --partition-guid={u4} {disk}"
    )
    .quiet()
    .ignore_stdout()
    .run()
    .map_err(tool_err("sgdisk (GPT)"))?;
    {
        let mut f = OpenOptions::new().write(true).open(&disk).map_err(io_err(&disk))?;
        write_at(&mut f, &disk, &esp, layout.esp.0, layout.esp.1)?;
        write_at(&mut f, &disk, root_img, layout.root_a.0, verity.hash_offset.min(layout.root_a.1))?;
        let room = layout.root_a.1.saturating_sub(verity.hash_offset);
        write_at(&mut f, &disk, tree, layout.root_a.0 + verity.hash_offset, room)?;
        write_at(&mut f, &disk, &data, layout.data.0, layout.data.1)?;
        f.sync_all().map_err(io_err(&disk))?;
    }
    let qcow2 = out.join(QCOW2_NAME);
    cmd!(sh, "qemu-img convert -q -f raw -O qcow2 {disk} {qcow2}")
        .quiet()
        .ignore_stdout()
        .run()
        .map_err(tool_err("qemu-img convert"))?;
    let bmap = out.join(BMAP_NAME);
    cmd!(sh, "bmaptool -q create -o {bmap} {disk}")
        .quiet()
        .ignore_stdout()
        .run()
        .map_err(tool_err("bmaptool create"))?;
    copy_file(&kernel, &out.join(KERNEL_NAME))?;
    copy_file(&initrd, &out.join(INITRD_NAME))?;
    Ok(())
}
