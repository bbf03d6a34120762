//! Host tools: `deps` checks the ones a recipe needs and installs the missing ones with
//! apt-get (saying so); `--offline` never does — it names each missing tool and prints the
//! exact command to install it. `test` installs what the whole suite needs, then runs it.

use anyhow::Result;
use clap::Args;
use image::tools::{self, HostTool};
use xshell::{Shell, cmd};

use crate::args::RecipeArgs;
use crate::{Ctx, Exit, out};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Makes sure `wanted` are on this host. Online and as root, installs the missing ones with
/// apt-get (saying which and why); offline or without root, refuses with the exact command.
pub fn ensure(wanted: &[HostTool], offline: bool) -> Result<()> {
    let missing = tools::missing(wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = missing.iter().map(|t| t.package.as_str()).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    for t in &missing {
        eprintln!("airlock: `{}` is missing ({}): it comes with the Debian package {}", t.bin, t.why, t.package);
    }
    let install = format!("apt-get install -y {}", pkgs.join(" "));
    if offline {
        return Err(Exit(
            2,
            format!(
                "missing host tools ({}); --offline installs nothing: run `{install}` as root (from the site's Debian mirror or DVD), then the build again",
                missing.iter().map(|t| t.bin.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )
        .into());
    }
    if !is_root() || tools::which("apt-get").is_none() {
        return Err(Exit(2, format!("missing host tools; install them with: sudo {install}")).into());
    }
    eprintln!("airlock: installing {} with apt-get (apt-get update first)", pkgs.join(" "));
    let sh = Shell::new()?;
    cmd!(sh, "apt-get update -q").env("DEBIAN_FRONTEND", "noninteractive").run()?;
    let mut args: Vec<String> = pkgs.iter().map(|p| p.to_string()).collect();
    if pkgs.contains(&"qemu-system-x86") {
        // qemu-utils goes with qemu-system-x86's own version: a newer qemu-utils (from
        // backports, as some images ship) Breaks the qemu-system-common apt would pick.
        let policy = cmd!(sh, "apt-cache policy qemu-system-x86").quiet().read().unwrap_or_default();
        if let Some(v) = policy.lines().find_map(|l| l.trim().strip_prefix("Candidate: ")).filter(|v| *v != "(none)") {
            eprintln!("airlock: qemu-utils follows qemu-system-x86's version {v} (a newer one is downgraded)");
            args.retain(|p| p != "qemu-utils");
            args.push(format!("qemu-utils={v}"));
            args.push("--allow-downgrades".into());
        }
    }
    cmd!(sh, "apt-get install -y -q --no-install-recommends {args...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    let still = tools::missing(wanted);
    if !still.is_empty() {
        return Err(Exit(
            2,
            format!(
                "still missing after apt-get install: {}",
                still.iter().map(|t| t.bin.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )
        .into());
    }
    Ok(())
}

/// `tools` with each program once, in their first order.
pub fn dedup(tools: Vec<HostTool>) -> Vec<HostTool> {
    let mut seen = std::collections::BTreeSet::new();
    tools.into_iter().filter(|t| seen.insert(t.bin.clone())).collect()
}

#[derive(Args, Debug)]
pub struct Deps {
    #[command(flatten)]
    pub args: RecipeArgs,
    /// Check only; name what is missing and how to install it.
    #[arg(long)]
    pub offline: bool,
}

impl Deps {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let recipe = self.args.load(ctx)?;
        let mut all = tools::needed(&recipe, self.offline);
        all.extend(tools::used_by(&["lock", "repro", "boot", "test", "bench"]));
        let all = dedup(all);
        ensure(&all, self.offline)?;
        for t in &all {
            out!(
                "{:<20} {:<20} {}",
                t.bin,
                t.package,
                tools::which(&t.bin).map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
        Ok(())
    }
}
