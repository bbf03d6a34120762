//! Host tools: `deps` checks them and installs the missing ones with apt-get (saying so);
//! `test` does that, then runs the whole suite.

use anyhow::{Result, bail};
use clap::Args;
use image::tools::{self, HostTool};
use xshell::{Shell, cmd};

use crate::repo_root;

/// Tools only the tests need (the independent judges).
pub const TEST_TOOLS: &[HostTool] = &[
    HostTool { bin: "minisign", package: "minisign", why: "interoperability tests of signatures" },
    HostTool {
        bin: "diffoscope",
        package: "diffoscope-minimal",
        why: "names what differs when `repro` finds a difference",
    },
    HostTool { bin: "unsquashfs", package: "squashfs-tools", why: "reads root.img in tests" },
];

/// Installs what is missing from `wanted` with apt-get when running as root; otherwise says
/// which command would.
pub fn ensure(wanted: &[HostTool]) -> Result<()> {
    let missing = tools::missing(wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = missing.iter().map(|t| t.package).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    for t in &missing {
        eprintln!("airlock: `{}` is missing ({}): it comes with the Debian package {}", t.bin, t.why, t.package);
    }
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false);
    if !is_root || tools::which("apt-get").is_none() {
        bail!("missing host tools; install them with: sudo apt-get install -y {}", pkgs.join(" "));
    }
    eprintln!("airlock: installing {} with apt-get (apt-get update first)", pkgs.join(" "));
    let sh = Shell::new()?;
    cmd!(sh, "apt-get update -q").env("DEBIAN_FRONTEND", "noninteractive").run()?;
    cmd!(sh, "apt-get install -y -q --no-install-recommends {pkgs...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    let still = tools::missing(wanted);
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.iter().map(|t| t.bin).collect::<Vec<_>>().join(", "));
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct Deps {}

impl Deps {
    pub fn run(self) -> Result<()> {
        let all: Vec<HostTool> = tools::BUILD_TOOLS.iter().chain(TEST_TOOLS).copied().collect();
        ensure(&all)?;
        for t in &all {
            println!("{:<12} {}", t.bin, tools::which(t.bin).map(|p| p.display().to_string()).unwrap_or_default());
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct Test {
    /// Extra arguments for `cargo test` (after `--`).
    #[arg(last = true)]
    pub rest: Vec<String>,
}

impl Test {
    pub fn run(self) -> Result<()> {
        let all: Vec<HostTool> = tools::BUILD_TOOLS.iter().chain(TEST_TOOLS).copied().collect();
        ensure(&all)?;
        let sh = Shell::new()?;
        sh.change_dir(repo_root());
        let rest = &self.rest;
        // System tests (real mmdebstrap builds, offline, twice) are `#[ignore]`d for a plain
        // `cargo test`; this runs them too, one at a time so builds do not fight for 2 cores.
        cmd!(sh, "cargo test --workspace --locked -- --include-ignored --test-threads=1 {rest...}").run()?;
        Ok(())
    }
}
