//! An Airlock disk in QEMU, for `cargo xtask boot` and the end-to-end tests: UEFI firmware
//! (OVMF) with its own variable store, the disk as a throw-away copy-on-write overlay, KVM when
//! it really boots OVMF here (FIELD-NOTES.md: it may not), else TCG; no network but user
//! networking with `restrict=on` and the controller's port forwarded to loopback; the serial
//! console into a log (and the terminal); USB sticks made from bundles (FAT, no mounting) and
//! plugged in or out over QMP; a power cut is a killed QEMU.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xshell::{Shell, cmd};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {message}")]
    Tool { what: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Vm(String),
    /// What the console was waiting for never came.
    #[error("waited {secs} s for `{pattern}` on the console; the last lines were:\n{tail}")]
    Timeout { pattern: String, secs: u64, tail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn tool(what: &str) -> impl FnOnce(xshell::Error) -> Error + '_ {
    move |e| Error::Tool { what: what.to_string(), message: e.to_string() }
}

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The guest's network: a link-local range, the one the image's firewall lets reach the
/// management API by default (a laptop plugged into the appliance's management port).
pub const GUEST_NET: &str = "169.254.10.0/24";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Whether KVM really boots OVMF here: /dev/kvm may exist while OVMF fails under it
/// (FIELD-NOTES.md). Starts the firmware alone and waits for its boot manager on the console.
pub fn kvm_works(scratch: &Path) -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    let dir = scratch.join("kvm-probe");
    let _ = fs::create_dir_all(&dir);
    let log = dir.join("serial.log");
    let err = dir.join("qemu.err");
    let vars = dir.join("vars.fd");
    if fs::copy(OVMF_VARS, &vars).is_err() {
        return false;
    }
    let Ok(err_file) = fs::File::create(&err) else { return false };
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-machine", "q35", "-m", "256", "-nographic", "-nodefaults", "-no-reboot"])
        .args(firmware(&vars))
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn();
    let Ok(mut child) = child else { return false };
    let t = Instant::now();
    let mut ok = false;
    while t.elapsed() < Duration::from_secs(15) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        let e = fs::read_to_string(&err).unwrap_or_default();
        if e.contains("emulation failure") || e.contains("KVM internal error") || e.contains("failed to initialize kvm")
        {
            break;
        }
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text.contains("BdsDxe") || text.contains("Shell>") || text.contains("UEFI Interactive Shell") {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    ok
}

/// A USB stick image holding `files` (FAT, made with mkfs.vfat and mcopy, no mounting).
pub fn make_stick(files: &[PathBuf], dest: &Path) -> Result<()> {
    let sh = Shell::new().map_err(tool("shell"))?;
    let total: u64 = files.iter().map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    let kib = ((total / 1024) * 11 / 10 + 8192).max(33 * 1024).to_string();
    let _ = fs::remove_file(dest);
    cmd!(sh, "mkfs.vfat -C -F 32 -n AIRLOCK-USB {dest} {kib}")
        .quiet()
        .ignore_stdout()
        .run()
        .map_err(tool("mkfs.vfat (USB stick)"))?;
    if !files.is_empty() {
        cmd!(sh, "mcopy -i {dest} -Q {files...} ::/")
            .env("MTOOLS_SKIP_CHECK", "1")
            .quiet()
            .run()
            .map_err(tool("mcopy (USB stick)"))?;
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The disk (raw or qcow2); it is never written: the VM runs on a copy-on-write overlay.
    pub disk: PathBuf,
    /// Where the overlay, the firmware variables, the console log and the QMP socket go.
    pub workdir: PathBuf,
    /// Keep the overlay (and the firmware variables) from an earlier run: the same machine,
    /// powered on again.
    pub resume: bool,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Host loopback port forwarded to the guest's port 8080 (the operator API).
    pub forward: Option<u16>,
    /// A USB stick image attached from power-on.
    pub usb: Option<PathBuf>,
    /// The console on this terminal too (`cargo xtask boot`), not only in the log.
    pub interactive: bool,
}

/// QEMU's arguments for OVMF: its code read-only, the machine's own variables file.
fn firmware(vars: &Path) -> [String; 4] {
    [
        "-drive".into(),
        format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ]
}

/// Starts QEMU for `o`; `fresh_log` starts the console log anew (else it is appended to).
fn spawn(o: &Options, fresh_log: bool) -> Result<Child> {
    let sh = Shell::new().map_err(tool("shell"))?;
    fs::create_dir_all(&o.workdir).map_err(io(&o.workdir))?;
    let overlay = o.workdir.join("disk-overlay.qcow2");
    let vars = o.workdir.join("OVMF_VARS.fd");
    if !o.resume || !overlay.exists() {
        let _ = fs::remove_file(&overlay);
        let disk = o.disk.canonicalize().map_err(io(&o.disk))?;
        let fmt = if disk.extension().is_some_and(|x| x == "qcow2") { "qcow2" } else { "raw" };
        cmd!(sh, "qemu-img create -q -f qcow2 -b {disk} -F {fmt} {overlay}")
            .quiet()
            .run()
            .map_err(tool("qemu-img create (overlay)"))?;
        fs::copy(OVMF_VARS, &vars).map_err(io(&vars))?;
    }
    let serial_log = o.workdir.join("serial.log");
    if fresh_log {
        let _ = fs::remove_file(&serial_log);
    }
    let qmp = o.workdir.join("qmp.sock");
    let _ = fs::remove_file(&qmp);
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-machine", "q35", "-accel", o.accel.as_str(), "-nodefaults", "-no-user-config"])
        .args(["-m", &o.memory_mib.to_string(), "-smp", &o.cpus.to_string()])
        .args(firmware(&vars))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2,cache=writeback,discard=unmap", overlay.display()))
        .args(["-device", "qemu-xhci,id=xhci", "-display", "none", "-vga", "none"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()));
    let mut nic =
        format!("user,model=virtio-net-pci,restrict=on,net={GUEST_NET},host=169.254.10.2,dhcpstart=169.254.10.15");
    if let Some(p) = o.forward {
        nic.push_str(&format!(",hostfwd=tcp:127.0.0.1:{p}-:8080"));
    }
    c.arg("-nic").arg(nic);
    if o.interactive {
        // The console on this terminal (and in the log), the QEMU monitor behind Ctrl-A C,
        // Ctrl-A X to power off.
        c.arg("-chardev").arg(format!("stdio,id=con,mux=on,signal=off,logfile={},logappend=on", serial_log.display()));
        c.args(["-serial", "chardev:con", "-mon", "chardev=con,mode=readline"]);
        c.stdin(Stdio::inherit()).stdout(Stdio::inherit());
    } else {
        c.arg("-chardev").arg(format!("file,id=con,path={},append=on", serial_log.display()));
        c.args(["-serial", "chardev:con"]);
        c.stdin(Stdio::null()).stdout(Stdio::null());
    }
    if let Some(stick) = &o.usb {
        c.arg("-drive").arg(format!("if=none,id=stick0,format=raw,readonly=on,file={}", stick.display()));
        c.args(["-device", "usb-storage,bus=xhci.0,drive=stick0,id=stick0dev"]);
    }
    c.stderr(Stdio::piped());
    c.spawn().map_err(|e| Error::Vm(format!("starting qemu-system-x86_64: {e}")))
}

/// A running VM.
pub struct Vm {
    child: Child,
    pub serial_log: PathBuf,
    qmp: PathBuf,
    started: Instant,
    sticks: u32,
    /// Power cycles given to a guest that hung in its own reset (see [`Vm::wait_for`]).
    pub hung_resets: u32,
    opts: Options,
    /// The sticks plugged in now: (id, image).
    plugged: Vec<(String, PathBuf)>,
}

/// How long a guest may stay silent after the kernel said it is restarting before the machine
/// counts as hung in its reset (under TCG the firmware prints within half a minute of a reset,
/// and a whole boot within two).
pub const RESET_STALL: Duration = Duration::from_secs(150);

impl Vm {
    pub fn start(o: &Options) -> Result<Vm> {
        let child = spawn(o, true)?;
        let plugged = o.usb.iter().map(|p| ("stick0".to_string(), p.clone())).collect();
        Ok(Vm {
            child,
            serial_log: o.workdir.join("serial.log"),
            qmp: o.workdir.join("qmp.sock"),
            started: Instant::now(),
            sticks: 0,
            hung_resets: 0,
            opts: o.clone(),
            plugged,
        })
    }

    /// Off and on again, as a watchdog that cuts the power would: the same disk, firmware
    /// variables and sticks; the console log goes on where it was.
    fn power_cycle(&mut self) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let o = Options { resume: true, usb: None, ..self.opts.clone() };
        self.child = spawn(&o, false)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&self.qmp).is_err() {
            if Instant::now() > deadline {
                return Err(Error::Vm("QEMU's QMP socket did not come back after a power cycle".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (id, path) in self.plugged.clone() {
            self.attach(&id, &path)?;
        }
        Ok(())
    }

    /// Seconds since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.serial_log).unwrap_or_default()).into_owned()
    }

    /// Waits until `pattern` appears on the console after byte `from`; returns the offset just
    /// past it. Fails with the console's last lines when `timeout` passes or QEMU exits.
    ///
    /// A guest whose reset hangs (the kernel printed `reboot: Restarting system`, then the
    /// console stays silent for [`RESET_STALL`] — seen under TCG: OVMF busy in its DXE phase,
    /// a USB stick in, and a QMP `system_reset` did not bring it back) is power cycled, as an
    /// appliance's hardware watchdog would do: QEMU is started again on the same disk,
    /// firmware variables and sticks. Once per wait, counted in `hung_resets` and said on
    /// stderr; a second hang fails.
    pub fn wait_for(&mut self, pattern: &str, from: usize, timeout: Duration) -> Result<usize> {
        let t = Instant::now();
        let (mut seen, mut since, mut reset_here) = (0usize, Instant::now(), false);
        loop {
            let text = fs::read(&self.serial_log).unwrap_or_default();
            if text.len() > from
                && let Some(i) = find(&text[from..], pattern.as_bytes())
            {
                return Ok(from + i + pattern.len());
            }
            if text.len() != seen {
                (seen, since) = (text.len(), Instant::now());
            } else if !reset_here
                && since.elapsed() > RESET_STALL
                && String::from_utf8_lossy(&text).trim_end().ends_with("reboot: Restarting system")
            {
                eprintln!(
                    "vm: the guest hung in its reset ({} s silent after `reboot: Restarting system`): power cycled, as a watchdog would",
                    since.elapsed().as_secs()
                );
                self.power_cycle()?;
                self.hung_resets += 1;
                reset_here = true;
                since = Instant::now();
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || t.elapsed() > timeout {
                let s = String::from_utf8_lossy(&text);
                let tail: Vec<&str> = s.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
                let why = if exited { format!("{pattern}` (QEMU exited) `") } else { pattern.to_string() };
                return Err(Error::Timeout { pattern: why, secs: t.elapsed().as_secs(), tail: tail.join("\n") });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn qmp(&self, commands: &[serde_json::Value]) -> Result<Vec<serde_json::Value>> {
        let stream = UnixStream::connect(&self.qmp).map_err(io(&self.qmp))?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(io(&self.qmp))?;
        let mut w = stream.try_clone().map_err(io(&self.qmp))?;
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        r.read_line(&mut line).map_err(io(&self.qmp))?; // greeting
        let mut out = Vec::new();
        for c in std::iter::once(serde_json::json!({"execute": "qmp_capabilities"})).chain(commands.iter().cloned()) {
            writeln!(w, "{c}").map_err(io(&self.qmp))?;
            loop {
                line.clear();
                r.read_line(&mut line).map_err(io(&self.qmp))?;
                let v: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| Error::Vm(format!("QMP: {e}: {line}")))?;
                if v.get("event").is_some() {
                    continue;
                }
                if let Some(e) = v.get("error") {
                    return Err(Error::Vm(format!("QMP {c}: {e}")));
                }
                out.push(v);
                break;
            }
        }
        Ok(out)
    }

    /// Plugs a USB stick image in (as an operator would, while the appliance runs).
    pub fn plug_usb(&mut self, image: &Path) -> Result<String> {
        self.sticks += 1;
        let id = format!("stick{}", self.sticks);
        let path = image.canonicalize().map_err(io(image))?;
        self.attach(&id, &path)?;
        self.plugged.push((id.clone(), path));
        Ok(id)
    }

    fn attach(&self, id: &str, path: &Path) -> Result<()> {
        self.qmp(&[
            serde_json::json!({"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": id, "read-only": true, "file": {"driver": "file", "filename": path, "read-only": true}}}),
            serde_json::json!({"execute": "device_add", "arguments": {"driver": "usb-storage", "bus": "xhci.0", "drive": id, "id": format!("{id}dev")}}),
        ])?;
        Ok(())
    }

    /// Pulls a stick out.
    pub fn unplug_usb(&mut self, id: &str) -> Result<()> {
        self.qmp(&[serde_json::json!({"execute": "device_del", "arguments": {"id": format!("{id}dev")}})])?;
        self.plugged.retain(|(i, _)| i != id);
        Ok(())
    }

    /// A power cut: QEMU is killed, nothing is flushed by the guest.
    pub fn power_cut(mut self) -> Result<()> {
        self.child.kill().map_err(|e| Error::Vm(format!("killing QEMU: {e}")))?;
        let _ = self.child.wait();
        Ok(())
    }

    /// Waits for QEMU to end (the guest powered off or rebooted with -no-reboot).
    pub fn wait(mut self) -> Result<std::process::ExitStatus> {
        self.child.wait().map_err(|e| Error::Vm(format!("waiting for QEMU: {e}")))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
