//! `boot`: runs a built disk in QEMU (the work is the `vm` crate): OVMF, KVM when it really
//! boots here, else TCG (and it says which); a throw-away copy of the disk; no network but the
//! operator API forwarded to loopback; `--usb` sticks made from bundles; the serial console on
//! the terminal and in a log.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

use crate::args::RecipeArgs;
use crate::{Ctx, Exit, out};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AccelArg {
    /// KVM when it boots OVMF here, else TCG.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Args, Debug)]
pub struct Boot {
    /// A recipe (its built disk.qcow2) or a disk image (.img, .qcow2). Default: the default recipe.
    pub target: Option<PathBuf>,
    /// Output root the image was built into (default: images/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A bundle to put on a USB stick attached from power-on (repeat for more).
    #[arg(long, value_name = "BUNDLE")]
    pub usb: Vec<PathBuf>,
    /// Host loopback port forwarded to the appliance's operator API (port 8080).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
    #[arg(long, default_value_t = 1024)]
    pub memory_mib: u32,
    /// Boot, wait until the appliance is healthy (its health check passed), print the health
    /// endpoint's answer and power off: for scripts, CI and `bench boot`.
    #[arg(long)]
    pub until_healthy: bool,
    /// Seconds `--until-healthy` waits (TCG on two cores: a boot takes 25-60 s).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

impl Boot {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        crate::deps::ensure(&image::tools::used_by(&["boot"]), false)?;
        let target = self.target.as_deref().map(|t| ctx.path(t));
        let disk = match &target {
            Some(t) if t.extension().is_some_and(|x| x == "img" || x == "qcow2") => t.clone(),
            _ => {
                let args = RecipeArgs { recipe: self.target.clone(), ..Default::default() };
                let recipe = args.load(ctx)?;
                let images = self.out.as_deref().map(|o| ctx.path(o)).unwrap_or_else(|| ctx.root.join("images"));
                let d = image::out_dir(&images, &recipe).join(image::disk::QCOW2_NAME);
                if !d.exists() {
                    return Err(Exit(
                        2,
                        format!(
                            "{}: not built: run `{}` first",
                            d.display(),
                            crate::args::command("build", &args.shown(ctx))
                        ),
                    )
                    .into());
                }
                d
            }
        };
        let name =
            disk.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let workdir = ctx.root.join("target/airlock-boot").join(name);
        let _ = std::fs::remove_dir_all(&workdir);
        std::fs::create_dir_all(&workdir)?;
        let accel = match self.accel {
            AccelArg::Kvm => vm::Accel::Kvm,
            AccelArg::Tcg => vm::Accel::Tcg,
            AccelArg::Auto if vm::kvm_works(&workdir) => vm::Accel::Kvm,
            AccelArg::Auto => vm::Accel::Tcg,
        };
        eprintln!(
            "airlock: booting {} with {} ({}), operator API on http://127.0.0.1:{}/health, console log {}",
            disk.display(),
            accel.as_str(),
            if accel == vm::Accel::Kvm {
                "hardware virtualisation"
            } else {
                "software emulation: slower, a boot takes 25-60 s"
            },
            self.port,
            workdir.join("serial.log").display()
        );
        let usb = if self.usb.is_empty() {
            None
        } else {
            let stick = workdir.join("usb-stick.img");
            let files: Vec<PathBuf> = self.usb.iter().map(|b| ctx.path(b)).collect();
            vm::make_stick(&files, &stick)?;
            Some(stick)
        };
        let interactive = !self.until_healthy && std::io::stdin().is_terminal();
        if !self.until_healthy && !interactive {
            bail!("no terminal for the console: run it on a terminal, or pass --until-healthy");
        }
        if interactive {
            eprintln!("airlock: Ctrl-A X powers the VM off, Ctrl-A C opens the QEMU monitor");
        }
        let opts = vm::Options {
            disk: disk.clone(),
            workdir: workdir.clone(),
            resume: false,
            accel,
            memory_mib: self.memory_mib,
            cpus: 2,
            forward: Some(self.port),
            usb,
            interactive,
        };
        let mut machine = vm::Vm::start(&opts)?;
        if interactive {
            let status = machine.wait()?;
            out!("qemu exited ({status}); console log: {}", workdir.join("serial.log").display());
            return Ok(());
        }
        let at = machine.wait_for("airlock-health", 0, Duration::from_secs(self.timeout))?;
        let at = machine.wait_for("\"status\":\"ok\"", at.saturating_sub(200), Duration::from_secs(self.timeout))?;
        let secs = machine.elapsed().as_secs_f64();
        let console = machine.console();
        let line = console[..at].lines().last().unwrap_or("").to_string();
        let body = line.find('{').map(|i| line[i..].to_string()).unwrap_or_default();
        let answer = health_answer(self.port).unwrap_or(body);
        machine.power_cut()?;
        if ctx.json {
            out!(
                "{}",
                serde_json::json!({"ok": true, "accel": accel.as_str(), "healthy_after_seconds": secs, "health": serde_json::from_str::<serde_json::Value>(&answer).unwrap_or_default()})
            );
        } else {
            out!("healthy {secs:.1} s after QEMU started ({}): {answer}", accel.as_str());
        }
        Ok(())
    }
}

/// The operator API's health answer through the forwarded port.
fn health_answer(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: appliance\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.take(64 * 1024).read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string())
}
