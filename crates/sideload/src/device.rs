//! Where a device keeps things, and the lock that makes one agent act at a time. A device is
//! either simulated in a folder (`--root DIR`: file-backed slots, a boot-state file standing in
//! for the boot loader, `data/`), or the real appliance (`/etc/airlock`, slots by GPT label,
//! systemd-boot entries on the ESP, `/var/lib/airlock` on the data partition).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::audit::{self, Event};
use crate::boot::{Bls, BootControl, SimBoot, Slot};
use crate::config::DeviceConfig;
use crate::fsutil::{fsync_dir, fsync_file, write_atomic};
use crate::reason::Reason;
use crate::state::{self, AgentState, SlotRecord, SlotStatus};
use crate::{Error, simfs, slotio};

/// The lock file in the data directory; it holds the holder's pid.
pub const LOCK_FILE: &str = ".sideload.lock";
/// In a simulated device's folder: load firewalls with nft for real (`init --live-firewall`).
pub const LIVE_FIREWALL: &str = "live-firewall";
/// In a simulated device's folder: boot each slot's own kernel and initrd, as the appliance
/// does, so a bundle must carry both.
pub const SLOT_KERNELS: &str = "slot-kernels";

/// What a simulated device is set up with (`sideload --root DIR init`).
#[derive(Debug, Clone, Copy)]
pub struct Simulated<'a> {
    pub config: &'a DeviceConfig,
    /// The trust policy's text (`trust.toml`).
    pub policy: &'a str,
    pub slot_size: u64,
    /// Slot a's image, and its version and security version.
    pub image: &'a Path,
    pub version: &'a str,
    pub security_version: u64,
    /// Unsynced writes are lost at `simulate-boot`, as at a power cut.
    pub power_loss: bool,
    /// The image's zones and conduits (`zones.toml`).
    pub zones: Option<&'a str>,
    /// Firewalls loaded with nft for real, in the agent's network namespace.
    pub live_firewall: bool,
}

pub struct Device {
    pub(crate) config: DeviceConfig,
    pub(crate) policy: trust::Policy,
    pub(crate) slots: BTreeMap<Slot, PathBuf>,
    pub(crate) boot: Box<dyn BootControl>,
    pub(crate) data: PathBuf,
    /// Where each slot's kernel and initrd go (`ESP/a/`, `ESP/b/`): the ESP on a real device,
    /// `esp/` in a simulated one.
    pub(crate) esp: Option<PathBuf>,
    /// The simulated device's folder (`--root`).
    pub(crate) sim_root: Option<PathBuf>,
    /// Each slot boots its own kernel and initrd (from `esp/a|b/`): always on the appliance; a
    /// bundle without both is refused before anything changes.
    pub(crate) slot_kernels: bool,
    /// This slot's zones and conduits (`/etc/airlock/zones.toml`).
    pub(crate) zones: PathBuf,
    /// Where generated runtime files go (`/run/airlock`): the ruleset, NTP sources, broker
    /// credentials and ACL.
    pub(crate) run: PathBuf,
    /// Where the box's generated interface configuration goes (`/run/systemd/network`, read
    /// by systemd-networkd, which starts only after the firewall loaded).
    pub(crate) network: PathBuf,
    /// What the firewall step may touch for real.
    pub(crate) live: Live,
    /// The running image's own kernel and initrd (`/boot/vmlinuz-*`, `/boot/initrd.img-*`):
    /// what the booted slot's boot files on the ESP must be, and where they are put back from.
    pub(crate) own_boot: Option<(PathBuf, PathBuf)>,
    /// The running slot's dm-verity words (`airlock.roothash=… airlock.hashoffset=…`), as it
    /// was booted with them: part of the factory slot's recorded boot entry.
    pub(crate) own_verity: Option<String>,
}

/// The kernels (`vmlinuz-*`) and initrds (`initrd.img-*`) in `dir` (an image's `/boot`),
/// sorted: one reading of a `/boot` for the builder and the agent.
pub fn boot_files_in(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut kernels = Vec::new();
    let mut initrds = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("vmlinuz-") {
            kernels.push(e.path());
        } else if n.starts_with("initrd.img-") {
            initrds.push(e.path());
        }
    }
    kernels.sort();
    initrds.sort();
    Ok((kernels, initrds))
}

/// The one kernel and the one initrd in `dir` (an image's `/boot`).
/// The dm-verity words of a kernel command line, in the order the agent writes them; `None`
/// unless both are there, once each.
pub fn verity_words(cmdline: &str) -> Option<String> {
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let one = |prefix: &str| match words.iter().filter(|w| w.starts_with(prefix)).collect::<Vec<_>>()[..] {
        [w] => Some(*w),
        _ => None,
    };
    Some(format!("{} {}", one(bundle::ROOTHASH_WORD)?, one(bundle::HASHOFFSET_WORD)?))
}

/// Whether the initrd's dm-verity device (`airlock-root`) exists: a device-mapper block
/// device under `sys_block` of that name.
pub fn verity_opened(sys_block: &Path) -> bool {
    let Ok(rd) = fs::read_dir(sys_block) else { return false };
    rd.flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("dm-")
            && fs::read_to_string(e.path().join("dm/name")).is_ok_and(|n| n.trim() == "airlock-root")
    })
}

pub fn own_boot_files(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    match boot_files_in(dir).ok()? {
        (k, i) if k.len() == 1 && i.len() == 1 => Some((k[0].clone(), i[0].clone())),
        _ => None,
    }
}

/// The effects beyond files: on the appliance all of them; on a simulated device none, or
/// (`init --live-firewall`, for tests in a network namespace) nftables alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    /// `nft -c` and `nft -f` for real (in the caller's network namespace).
    pub nft: bool,
    /// Host name, and telling chrony and mosquitto to read their new files.
    pub system: bool,
    /// Firewall changes go through `systemctl reload nftables.service` (the agent may run in
    /// a private network namespace, as the USB service does).
    pub via_systemd: bool,
}

fn read_small(path: &Path, max: u64) -> Result<String, Error> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut s = String::new();
    f.take(max + 1).read_to_string(&mut s).map_err(|e| Error::io(path, e))?;
    if s.len() as u64 > max {
        return Err(Error::State(format!("{}: larger than {max} bytes", path.display())));
    }
    Ok(s)
}

fn load_identity(cfg_path: &Path, policy_path: &Path) -> Result<(DeviceConfig, trust::Policy), Error> {
    let text = read_small(cfg_path, 64 * 1024)?;
    let config = DeviceConfig::parse(&text).map_err(|e| Error::State(format!("{}: {e}", cfg_path.display())))?;
    let ptext = read_small(policy_path, trust::MAX_POLICY_FILE as u64)?;
    let policy = trust::Policy::parse(&ptext).map_err(|e| Error::State(format!("{}: {e}", policy_path.display())))?;
    config.check_policy(&policy).map_err(|e| Error::State(format!("{}: {e}", policy_path.display())))?;
    Ok((config, policy))
}

impl Device {
    /// The device's identity (`device.toml`, baked into the image).
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The trust policy the device checks everything against (baked into the image).
    pub fn policy(&self) -> &trust::Policy {
        &self.policy
    }

    /// The agent's directory on the data partition (state, audit log, evidence).
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The boot loader's view of the slots (read-only: only the agent arms, blesses and
    /// cancels, each with its commit).
    pub fn boot(&self) -> &dyn BootControl {
        self.boot.as_ref()
    }

    /// A simulated device in a folder: `device.toml`, `trust.toml`, `slots/root-a`,
    /// `slots/root-b`, `boot/state.toml`, `data/`.
    pub fn simulated(root: &Path) -> Result<Device, Error> {
        let (config, policy) = load_identity(&root.join("device.toml"), &root.join("trust.toml"))?;
        let slots = [(Slot::A, root.join("slots/root-a")), (Slot::B, root.join("slots/root-b"))].into_iter().collect();
        Ok(Device {
            config,
            policy,
            slots,
            boot: Box::new(SimBoot { path: root.join("boot/state.toml") }),
            data: root.join("data"),
            esp: Some(root.join("esp")).filter(|e| e.is_dir()),
            sim_root: Some(root.to_path_buf()),
            slot_kernels: root.join(SLOT_KERNELS).exists(),
            zones: root.join("zones.toml"),
            run: root.join("run"),
            network: root.join("run/network"),
            live: Live { nft: root.join(LIVE_FIREWALL).exists(), system: false, via_systemd: false },
            own_boot: own_boot_files(&root.join("own-boot")),
            own_verity: fs::read_to_string(root.join("own-verity")).ok().and_then(|c| verity_words(&c)),
        })
    }

    /// Sets up a simulated device whose slot A holds `s.image` (its version and security
    /// version), blessed and booted; slots are `s.slot_size` bytes. With `s.power_loss`, a
    /// later `simulate-boot` first drops every write that was not fsynced (see `simfs`).
    pub fn init_simulated(root: &Path, s: &Simulated<'_>) -> Result<(), Error> {
        let Simulated {
            config,
            policy: policy_text,
            slot_size,
            image,
            version,
            security_version,
            power_loss,
            zones,
            live_firewall,
        } = *s;
        let policy = trust::Policy::parse(policy_text).map_err(|e| Error::State(format!("trust policy: {e}")))?;
        config.check_policy(&policy).map_err(|e| Error::State(format!("trust policy: {e}")))?;
        product::Version::parse(version).map_err(|e| Error::State(e.to_string()))?;
        for d in ["slots", "boot", "data", "esp/a", "esp/b"] {
            fs::create_dir_all(root.join(d)).map_err(|e| Error::io(&root.join(d), e))?;
        }
        if power_loss {
            fs::create_dir_all(root.join(simfs::MARKER)).map_err(|e| Error::io(root, e))?;
        }
        write_atomic(&root.join("device.toml"), config.to_toml().as_bytes())?;
        let model = zones.unwrap_or("# no zones: the appliance talks to nobody\n");
        zones::Model::parse(model).map_err(|e| Error::State(format!("zones: {e}")))?;
        write_atomic(&root.join("zones.toml"), model.as_bytes())?;
        if live_firewall {
            write_atomic(&root.join(LIVE_FIREWALL), b"nft -f for real, in the network namespace the agent runs in\n")?;
        }
        write_atomic(&root.join("trust.toml"), policy_text.as_bytes())?;
        let (sha256, size) = slotio::hash_prefix(image, u64::MAX)?;
        if size > slot_size {
            return Err(Error::State(format!("image is {size} bytes, slots are {slot_size}")));
        }
        for (slot, name) in [(Slot::A, "root-a"), (Slot::B, "root-b")] {
            let p = root.join("slots").join(name);
            let mut f = File::create(&p).map_err(|e| Error::io(&p, e))?;
            if slot == Slot::A {
                std::io::copy(&mut File::open(image).map_err(|e| Error::io(image, e))?, &mut f)
                    .map_err(|e| Error::io(&p, e))?;
            }
            f.set_len(slot_size).map_err(|e| Error::io(&p, e))?;
            fsync_file(&f, &p)?;
        }
        SimBoot::init(&root.join("boot/state.toml"), Slot::A)?;
        let mut st = AgentState {
            security_floor: security_version,
            slots: BTreeMap::new(),
            audit: audit::Head::default(),
            site: None,
            site_serials: BTreeMap::new(),
        };
        st.set(
            Slot::A,
            SlotRecord {
                status: SlotStatus::Good,
                version: version.into(),
                security_version,
                manifest: String::new(),
                sha256,
                size,
                boot: None,
            },
        );
        st.set(Slot::B, SlotRecord::empty());
        let data = root.join("data");
        st.audit = audit::log(data.join("audit.jsonl")).append(
            &st.audit,
            &[audit::record(
                Event::Initialised,
                json!({"slot": "a", "version": version, "security_version": security_version}),
            )],
        )?;
        state::save(&data, &st)?;
        for d in ["slots", "boot", "data", "esp/a", "esp/b", ""] {
            fsync_dir(&root.join(d))?;
        }
        simfs::baseline(root);
        Ok(())
    }

    /// The installed appliance: `/etc/airlock/{device,trust}.toml`, slots by GPT label, the
    /// ESP's Boot Loader Specification entries, `/var/lib/airlock` on the data partition.
    pub fn real() -> Result<Device, Error> {
        let (config, policy) =
            load_identity(Path::new("/etc/airlock/device.toml"), Path::new("/etc/airlock/trust.toml"))?;
        let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let booted = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("root=PARTLABEL=root-").and_then(Slot::parse))
            .ok_or_else(|| {
                Error::State(
                    "cannot tell the booted slot: no root=PARTLABEL=root-a|b on the kernel command line".into(),
                )
            })?;
        let slots = [
            (Slot::A, PathBuf::from("/dev/disk/by-partlabel/root-a")),
            (Slot::B, PathBuf::from("/dev/disk/by-partlabel/root-b")),
        ]
        .into_iter()
        .collect();
        let boot = Bls { entries: crate::bootentry::entries_dir(Path::new(crate::bootentry::ESP_MOUNT)), booted };
        Ok(Device {
            config,
            policy,
            slots,
            boot: Box::new(boot),
            data: PathBuf::from("/var/lib/airlock"),
            esp: Some(PathBuf::from(crate::bootentry::ESP_MOUNT)),
            sim_root: None,
            slot_kernels: true,
            zones: PathBuf::from("/etc/airlock/zones.toml"),
            run: PathBuf::from("/run/airlock"),
            network: PathBuf::from("/run/systemd/network"),
            live: Live { nft: true, system: true, via_systemd: true },
            own_boot: own_boot_files(Path::new("/boot")),
            own_verity: verity_words(&cmdline).filter(|_| verity_opened(Path::new("/sys/block"))),
        })
    }

    pub fn audit(&self) -> ::audit::Audit {
        audit::log(self.data.join("audit.jsonl"))
    }

    fn lock_path(&self) -> PathBuf {
        self.data.join(LOCK_FILE)
    }

    /// Takes the device for this command: one agent acts at a time. Waits up to `wait` for
    /// another to finish, then refuses, naming its pid.
    pub fn lock(&self, wait: Duration) -> Result<DeviceLock, Error> {
        fs::create_dir_all(&self.data).map_err(|e| Error::io(&self.data, e))?;
        let path = self.lock_path();
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let deadline = Instant::now() + wait;
        loop {
            match f.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(Error::Refused(
                        Reason::Busy,
                        format!(
                            "another sideload is running (pid {}); waited {} s: try again when it is done",
                            holder_pid(&path).map_or_else(|| "unknown".into(), |p| p.to_string()),
                            wait.as_secs()
                        ),
                    ));
                }
                Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
        f.set_len(0).map_err(|e| Error::io(&path, e))?;
        f.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(|e| Error::io(&path, e))?;
        Ok(DeviceLock { _file: f })
    }

    /// The pid of an agent holding the device now, if any (read-only: creates nothing).
    pub fn busy(&self) -> Option<String> {
        let path = self.lock_path();
        let f = File::open(&path).ok()?;
        match f.try_lock_shared() {
            Ok(()) => None,
            Err(_) => Some(holder_pid(&path).map_or_else(|| "unknown".into(), |p| p.to_string())),
        }
    }
}

fn holder_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Held for the whole of a mutating command; released when dropped (or when the process
/// dies, whatever the way).
pub struct DeviceLock {
    _file: File,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sim<'a>(config: &'a DeviceConfig, policy: &'a str, slot_size: u64, image: &'a Path) -> Simulated<'a> {
        Simulated {
            config,
            policy,
            slot_size,
            image,
            version: "1.0.0",
            security_version: 1,
            power_loss: false,
            zones: None,
            live_firewall: false,
        }
    }

    #[test]
    fn a_small_file_is_read_up_to_its_bound_inclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, "x".repeat(16)).unwrap();
        assert_eq!(read_small(&p, 16).unwrap().len(), 16, "exactly the bound is read whole");
        let e = read_small(&p, 15).unwrap_err().to_string();
        assert!(e.contains("larger than 15 bytes"), "{e}");
        assert!(read_small(&dir.path().join("none"), 16).unwrap_err().to_string().contains("none"));
    }

    #[test]
    fn the_identity_files_are_read_up_to_64_kib() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, pol) = (dir.path().join("device.toml"), dir.path().join("trust.toml"));
        fs::write(&pol, include_str!("../../../keys/dev/trust.toml")).unwrap();
        let body = "product = \"p\"\nchannel = \"dev\"\n";
        let padded = |n: usize| format!("{body}#{}\n", "x".repeat(n - body.len() - 2));
        fs::write(&cfg, padded(64 * 1024)).unwrap();
        let (config, _) = load_identity(&cfg, &pol).unwrap();
        assert_eq!(config.product, "p", "a commented device.toml of exactly 64 KiB is read");
        fs::write(&cfg, padded(64 * 1024 + 1)).unwrap();
        let Err(e) = load_identity(&cfg, &pol) else { panic!("a device.toml over 64 KiB was read") };
        assert!(e.to_string().contains("larger than 65536 bytes"), "{e}");
    }

    #[test]
    fn the_lock_names_its_holder_and_is_free_again_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let config = DeviceConfig::parse("product = \"p\"\nchannel = \"dev\"\n").unwrap();
        let image = root.join("image");
        fs::write(&image, b"root").unwrap();
        let policy = include_str!("../../../keys/dev/trust.toml");
        Device::init_simulated(&root.join("dev"), &sim(&config, policy, 4096, &image)).unwrap();
        let dev = Device::simulated(&root.join("dev")).unwrap();
        assert_eq!(dev.busy(), None, "nobody holds a device that was just set up");
        let held = dev.lock(Duration::ZERO).unwrap();
        let me = std::process::id().to_string();
        assert_eq!(holder_pid(&dev.lock_path()), Some(std::process::id()));
        assert_eq!(dev.busy(), Some(me.clone()));
        let started = Instant::now();
        let Err(Error::Refused(Reason::Busy, msg)) = dev.lock(Duration::from_millis(200)) else {
            panic!("a second lock was taken")
        };
        assert!(started.elapsed() >= Duration::from_millis(200), "it waited before refusing");
        assert!(msg.contains(&format!("(pid {me})")), "{msg}");
        drop(held);
        assert_eq!(dev.busy(), None);
        let _again = dev.lock(Duration::ZERO).unwrap();
    }

    #[test]
    fn a_simulated_device_is_set_up_with_its_image_in_slot_a_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("dev");
        let config = DeviceConfig::parse("product = \"p\"\nchannel = \"dev\"\n").unwrap();
        let image = dir.path().join("image");
        fs::write(&image, b"root bytes").unwrap();
        let policy = include_str!("../../../keys/dev/trust.toml");
        let e = Device::init_simulated(&root, &sim(&config, policy, 9, &image)).unwrap_err();
        assert!(e.to_string().contains("image is 10 bytes, slots are 9"), "{e}");
        Device::init_simulated(&root, &sim(&config, policy, 10, &image)).unwrap();
        assert_eq!(fs::read(root.join("slots/root-a")).unwrap(), b"root bytes");
        assert_eq!(fs::read(root.join("slots/root-b")).unwrap(), [0; 10]);
        let st = state::load(&root.join("data")).unwrap().unwrap();
        assert_eq!((st.slot(Slot::A).status, st.slot(Slot::B).status), (SlotStatus::Good, SlotStatus::Empty));
        assert_eq!(st.slot(Slot::A).size, 10);
        let dev = Device::simulated(&root).unwrap();
        assert!(!dev.slot_kernels && !dev.live.nft && !dev.live.system);
        assert_eq!(dev.audit().path, root.join("data/audit.jsonl"));
    }

    #[test]
    fn the_booted_slots_verity_words_count_once_each_and_only_with_its_device_open() {
        let h = "ab".repeat(32);
        let words = format!("airlock.roothash={h} airlock.hashoffset=4096");
        assert_eq!(verity_words(&format!("root=PARTLABEL=root-a {words} ro quiet\n")), Some(words.clone()));
        assert_eq!(verity_words(&format!("airlock.hashoffset=4096 ro airlock.roothash={h}")), Some(words.clone()));
        for bad in [
            "root=PARTLABEL=root-a ro".to_string(),
            format!("airlock.roothash={h}"),
            format!("{words} airlock.roothash={h}"),
            format!("{words} airlock.hashoffset=8192"),
        ] {
            assert_eq!(verity_words(&bad), None, "{bad}");
        }
        let d = tempfile::tempdir().unwrap();
        assert!(!verity_opened(d.path()));
        for (dev, name) in [("dm-0", "other\n"), ("loop0", "airlock-root\n")] {
            fs::create_dir_all(d.path().join(dev).join("dm")).unwrap();
            fs::write(d.path().join(dev).join("dm/name"), name).unwrap();
        }
        assert!(!verity_opened(d.path()), "another dm device, or not a dm device");
        fs::create_dir_all(d.path().join("dm-1/dm")).unwrap();
        fs::write(d.path().join("dm-1/dm/name"), "airlock-root\n").unwrap();
        assert!(verity_opened(d.path()));
    }
}
