//! `sideload`: the appliance's update agent. Exit codes: 0 success, 1 refused, 2 usage or I/O.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sideload::{Agent, Device, DeviceConfig, Error, InstallOptions, SimBoot};

#[derive(Parser)]
#[command(name = "sideload", about = "Airlock's offline update agent")]
struct Cli {
    /// Run against a simulated device in DIR (file-backed slots) instead of this machine.
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify a bundle fully (signatures, product, channel, versions, every payload byte).
    Verify { bundle: PathBuf },
    /// Verify and install a bundle into the inactive slot, then arm a trial boot.
    Install {
        bundle: PathBuf,
        #[arg(long)]
        reinstall: bool,
        #[arg(long)]
        downgrade: bool,
    },
    /// Install the newest acceptable bundle found in DIR (a mounted USB stick).
    InstallDir { dir: PathBuf },
    /// The slots, the boot state and the security floor.
    Status,
    /// The health check passed: bless the booted slot, then raise the security floor.
    MarkGood,
    /// Make the other slot the default again (if good and not below the floor).
    Rollback,
    /// Check the audit log's hash chain and print it.
    Audit,
    /// Set up a simulated device (with --root): slot A holds IMAGE, blessed.
    Init {
        #[arg(long)]
        product: String,
        #[arg(long, default_value = "dev")]
        channel: String,
        #[arg(long)]
        trust: PathBuf,
        #[arg(long)]
        slot_size: u64,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        version: String,
        #[arg(long, default_value_t = 0)]
        security_version: u64,
        #[arg(long, default_value_t = 3)]
        tries: u32,
    },
    /// Simulated device only: what the boot loader does at power-on.
    #[command(hide = true)]
    SimulateBoot,
}

fn device(cli: &Cli) -> Result<Device, Error> {
    match &cli.root {
        Some(r) => Device::simulated(r),
        None => Device::real(),
    }
}

fn run(cli: Cli) -> Result<String, Error> {
    let opts = |reinstall, downgrade| InstallOptions { reinstall, downgrade };
    match &cli.cmd {
        Cmd::Init { product, channel, trust, slot_size, image, version, security_version, tries } => {
            let root = cli.root.clone().ok_or_else(|| Error::State("init needs --root DIR".into()))?;
            let text = std::fs::read_to_string(trust).map_err(|e| Error::io(trust, e))?;
            let cfg = DeviceConfig {
                product: product.clone(),
                channel: channel.clone(),
                tries: *tries,
                version: None,
                security_version: None,
            };
            Device::init_simulated(&root, &cfg, &text, *slot_size, image, version, *security_version)?;
            Ok(format!("simulated device in {}: slot a holds {version}", root.display()))
        }
        Cmd::SimulateBoot => {
            let root = cli.root.clone().ok_or_else(|| Error::State("simulate-boot needs --root DIR".into()))?;
            let s = SimBoot { path: root.join("boot/state.toml") }.power_on()?;
            Ok(format!("booted slot {}", s.booted.letter()))
        }
        Cmd::Audit => {
            let dev = device(&cli)?;
            let records = sideload::audit::verify_chain(&dev.data.join("audit.jsonl"))?;
            let lines: Vec<String> = records.iter().map(|r| r.to_string()).collect();
            Ok(format!("{}\naudit chain intact: {} records", lines.join("\n"), records.len()))
        }
        cmd => {
            let mut agent = Agent::load(device(&cli)?)?;
            match cmd {
                Cmd::Verify { bundle } => {
                    let a = agent.check(bundle, opts(false, false), true)?;
                    Ok(if cli.json {
                        serde_json::to_string(&a).unwrap_or_default()
                    } else {
                        format!("{} {}: verified (signers {})", a.bundle, a.version, a.signers.join(", "))
                    })
                }
                Cmd::Install { bundle, reinstall, downgrade } => {
                    let a = agent.install(bundle, opts(*reinstall, *downgrade))?;
                    Ok(if cli.json {
                        serde_json::to_string(&a).unwrap_or_default()
                    } else {
                        format!("{} {}: installed; trial boot armed — reboot to try it", a.bundle, a.version)
                    })
                }
                Cmd::InstallDir { dir } => {
                    let a = agent.install_dir(dir, opts(false, false))?;
                    Ok(if cli.json {
                        serde_json::to_string(&a).unwrap_or_default()
                    } else {
                        format!("{} {}: installed from {}; trial boot armed", a.bundle, a.version, dir.display())
                    })
                }
                Cmd::Status => {
                    let s = agent.status()?;
                    Ok(if cli.json { s.to_string() } else { serde_json::to_string_pretty(&s).unwrap_or_default() })
                }
                Cmd::MarkGood | Cmd::Rollback => {
                    let msg = if matches!(cmd, Cmd::MarkGood) { agent.mark_good()? } else { agent.rollback()? };
                    Ok(if cli.json { agent.status()?.to_string() } else { msg })
                }
                _ => unreachable!("handled above"),
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sideload: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
