//! `sideload`: the appliance's update agent. Exit codes: 0 success, 1 refused, 2 usage or I/O.
//! With `--json`, every outcome (refusals and errors included) is one JSON document on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;
use sideload::console::{self, ConsoleProgress};
use sideload::{Agent, Device, DeviceConfig, Error, InstallOptions, SimBoot, Simulated, agent, audit, simfs};

#[derive(Parser)]
#[command(
    name = "sideload",
    version,
    about = "Airlock's offline update agent: verifies bundles against the device's own trust policy and installs them into the inactive A/B slot"
)]
struct Cli {
    /// Run against a simulated device in DIR (file-backed slots) instead of this machine.
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// One JSON document on stdout for every outcome (`audit --json`: JSON Lines).
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for another sideload to finish before refusing.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECS")]
    wait: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify a bundle fully (signatures, product, every payload byte) and say whether this
    /// device would accept it now. Changes nothing.
    Verify { bundle: PathBuf },
    /// Verify and install a bundle into the inactive slot, then arm a trial boot.
    Install {
        bundle: PathBuf,
        /// Install even when this version is already running.
        #[arg(long)]
        reinstall: bool,
        /// Install an older version (the security floor still applies).
        #[arg(long)]
        downgrade: bool,
    },
    /// Apply the site profile (if any) and install the newest acceptable bundle found in DIR
    /// (a mounted USB stick). Exit 0: a bundle was installed (reboot to try it); 3: only a site
    /// profile was applied (no reboot needed); 1: refused.
    InstallDir { dir: PathBuf },
    /// Verify a site profile (DIR/site-profile.toml and its signatures, signed by the asset
    /// owner's approval role), check it against this image's zones, and apply it: the firewall
    /// is swapped in one transaction. A refused profile changes nothing.
    InstallSite { path: PathBuf },
    /// Load the firewall (at boot, by nftables.service): this slot's zones with the recorded
    /// site profile, else the image's defaults; fails only when nothing loads (the network
    /// then stays down).
    Firewall,
    /// Slots, versions, the next boot, trial tries left, the security floor, the last audit
    /// records. Changes nothing.
    Status {
        /// Print the booted slot's SBOM instead (SPDX 2.3 JSON, carried inside the image as
        /// /usr/share/airlock/sbom.spdx.json).
        #[arg(long, conflicts_with = "provenance")]
        sbom: bool,
        /// Print the booted slot's provenance instead: the in-toto statement in its DSSE
        /// envelope, as the bundle that installed the slot carried it and this device's
        /// policy verified it (kept on the data partition).
        #[arg(long)]
        provenance: bool,
    },
    /// Record this boot in the audit log (once per boot, by airlock-boot.service), after
    /// reconciling with what the boot loader did.
    Booted,
    /// The health check passed on a trial boot: bless the booted slot, then raise the floor.
    MarkGood,
    /// The health check failed: record it. Exit 0 when the booted slot is on trial (reboot, so
    /// the boot loader counts the try down and falls back when none are left), 1 otherwise.
    HealthFailed,
    /// Make the other slot the default again (if good and not below the floor); during a
    /// trial, the trial is cancelled.
    Rollback,
    /// Check the audit log's hash chain against the device state and print it. Changes nothing.
    Audit,
    /// Simulated device only (with --root): set it up; slot A holds IMAGE, blessed.
    Init(InitArgs),
    /// Simulated device only (with --root): what the firmware and boot loader do at power-on —
    /// unsynced writes are lost (with --simulate-power-loss at init), then a trial slot with
    /// tries left boots and loses a try, else the default slot boots.
    SimulateBoot,
}

#[derive(clap::Args)]
struct InitArgs {
    #[arg(long)]
    product: String,
    #[arg(long, value_enum, default_value_t = product::Channel::Dev)]
    channel: product::Channel,
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
    /// Keep unsynced writes apart, so that `simulate-boot` loses them as a power cut would.
    #[arg(long)]
    simulate_power_loss: bool,
    /// The image's zones and conduits (`zones.toml`, as the build writes it).
    #[arg(long)]
    zones: Option<PathBuf>,
    /// Load firewalls with nft for real, in the network namespace the agent runs in
    /// (tests in `ip netns`).
    #[arg(long)]
    live_firewall: bool,
    /// The device boots only dm-verity slots (as the appliance image does): a bundle
    /// without a verity tree is refused, and every slot is checked against its root hash
    /// before its trial is armed.
    #[arg(long)]
    verity: bool,
}

fn device(cli: &Cli) -> Result<Device, Error> {
    match &cli.root {
        Some(r) => Device::simulated(r),
        None => Device::real(),
    }
}

/// What a command prints: text for people, JSON for machines.
struct Out {
    text: String,
    json: serde_json::Value,
    code: u8,
}

fn ok(text: String, json: serde_json::Value) -> Out {
    Out { text, json, code: 0 }
}

fn policy_label(cli: &Cli) -> String {
    match &cli.root {
        Some(r) => r.join("trust.toml").display().to_string(),
        None => "/etc/airlock/trust.toml".to_string(),
    }
}

fn run(cli: &Cli) -> Result<Out, Error> {
    match &cli.cmd {
        Cmd::Init(args) => init(cli, args),
        Cmd::SimulateBoot => simulate_boot(cli),
        Cmd::Status { provenance: true, .. } => status_provenance(cli),
        Cmd::Status { sbom: true, .. } => status_sbom(cli),
        Cmd::Status { .. } => status(cli),
        Cmd::Audit => audit_log(cli),
        Cmd::Firewall => firewall(cli),
        Cmd::Verify { bundle } => verify(cli, bundle),
        Cmd::Install { bundle, reinstall, downgrade } => {
            install(cli, &mut agent(cli)?, bundle, InstallOptions { reinstall: *reinstall, downgrade: *downgrade })
        }
        Cmd::InstallSite { path } => install_site(&mut agent(cli)?, path),
        Cmd::InstallDir { dir } => install_dir(cli, &mut agent(cli)?, dir),
        Cmd::HealthFailed => health_failed(&mut agent(cli)?),
        Cmd::Booted => {
            let msg = agent(cli)?.booted()?;
            Ok(ok(msg.clone(), json!({"ok": true, "message": msg})))
        }
        Cmd::MarkGood => {
            let mut a = agent(cli)?;
            let msg = a.mark_good()?;
            status_after(&a, msg)
        }
        Cmd::Rollback => {
            let mut a = agent(cli)?;
            let msg = a.rollback()?;
            status_after(&a, msg)
        }
    }
}

/// The agent holding the device, for a command that may change it (waits `--wait` for another).
fn agent(cli: &Cli) -> Result<Agent, Error> {
    Agent::open(device(cli)?, Duration::from_secs(cli.wait))
}

fn init(cli: &Cli, a: &InitArgs) -> Result<Out, Error> {
    let root = cli.root.clone().ok_or_else(|| Error::State("init needs --root DIR".into()))?;
    let policy = std::fs::read_to_string(&a.trust).map_err(|e| Error::io(&a.trust, e))?;
    let config = DeviceConfig {
        product: a.product.clone(),
        channel: a.channel,
        tries: a.tries,
        version: None,
        security_version: None,
        cmdline: None,
        verity: a.verity,
    };
    DeviceConfig::parse(&config.to_toml()).map_err(Error::State)?;
    let zones = match &a.zones {
        Some(z) => Some(std::fs::read_to_string(z).map_err(|e| Error::io(z, e))?),
        None => None,
    };
    Device::init_simulated(
        &root,
        &Simulated {
            config: &config,
            policy: &policy,
            slot_size: a.slot_size,
            image: &a.image,
            version: &a.version,
            security_version: a.security_version,
            power_loss: a.simulate_power_loss,
            zones: zones.as_deref(),
            live_firewall: a.live_firewall,
        },
    )?;
    Ok(ok(
        format!("simulated device in {}: slot a holds {}", root.display(), a.version),
        json!({"ok": true, "root": root, "version": a.version}),
    ))
}

fn simulate_boot(cli: &Cli) -> Result<Out, Error> {
    let root = cli.root.clone().ok_or_else(|| Error::State("simulate-boot needs --root DIR".into()))?;
    simfs::power_cut(&root)?;
    let s = SimBoot { path: root.join("boot/state.toml") }.power_on()?;
    Ok(ok(format!("booted slot {}", s.booted.letter()), json!({"ok": true, "booted": s.booted.letter()})))
}

/// The booted slot's provenance, checked again as it is shown.
fn status_provenance(cli: &Cli) -> Result<Out, Error> {
    let dev = device(cli)?;
    let booted = dev.boot().state()?.booted;
    let record = agent::view(&dev)?.state.map(|s| s.slot(booted)).unwrap_or_else(sideload::SlotRecord::empty);
    let text = sideload::evidence::read_verified(&dev, booted, &record.sha256)?.ok_or_else(|| {
        Error::State(format!(
            "slot {} has no provenance: the bundle that installed it carried none (format 1, or the factory image)",
            booted.letter()
        ))
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::State(format!("provenance: {e}")))?;
    Ok(Out { text: text.trim_end().to_string(), json: v, code: 0 })
}

fn status_sbom(cli: &Cli) -> Result<Out, Error> {
    let path = match &cli.root {
        Some(r) => r.join("sbom.spdx.json"),
        None => PathBuf::from("/usr/share/airlock/sbom.spdx.json"),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::State(format!("{}: {e}", path.display())))?;
    Ok(Out { text: text.trim_end().to_string(), json: v, code: 0 })
}

fn status(cli: &Cli) -> Result<Out, Error> {
    let dev = device(cli)?;
    let v = agent::view(&dev)?;
    let recent = agent::recent(&dev, 5);
    Ok(ok(console::status_text(dev.config(), &v, &recent), console::status_json(dev.config(), &v, &recent)))
}

/// The audit log, streamed to stdout as its chain is checked; the verdict on stderr.
fn audit_log(cli: &Cli) -> Result<Out, Error> {
    let dev = device(cli)?;
    let head = sideload::state::load(dev.data())?.map(|s| s.audit);
    let log = dev.data().join("audit.jsonl");
    let mut stdout = std::io::stdout().lock();
    let mut write_err = None;
    let checked = audit::check(&log, head.as_ref(), |line, v| {
        let printed = if cli.json { line.to_string() } else { console::record_line(v) };
        if write_err.is_none()
            && let Err(e) = writeln!(stdout, "{printed}")
        {
            write_err = Some(e);
        }
    })?;
    if let Some(e) = write_err {
        return Err(Error::io(&log, e));
    }
    match checked.broken {
        None => {
            eprintln!("sideload: audit chain intact: {} records", checked.records);
            Ok(Out { text: String::new(), json: serde_json::Value::Null, code: 0 })
        }
        Some((line, why)) => {
            Err(Error::Refused(sideload::Reason::AuditBroken, format!("audit chain broken at record {line}: {why}")))
        }
    }
}

fn firewall(cli: &Cli) -> Result<Out, Error> {
    let dev = device(cli)?;
    let (a, warnings) = sideload::site::firewall(&dev)?;
    for w in &warnings {
        eprintln!("sideload: {w}");
    }
    let what = if a.loaded { "loaded" } else { "written (simulated device: not loaded)" };
    let mut text = format!("firewall {what}: {}", a.ruleset);
    for n in &a.notes {
        text.push_str(&format!("\n  note: {n}"));
    }
    Ok(ok(text, json!({"ok": true, "firewall": a, "warnings": warnings})))
}

fn verify(cli: &Cli, bundle: &std::path::Path) -> Result<Out, Error> {
    let dev = device(cli)?;
    let report = agent::verify(&dev, bundle, &policy_label(cli), InstallOptions::default())?;
    let code = if report.accepted() { 0 } else { 1 };
    Ok(Out { text: report.render_text(), json: serde_json::to_value(&report).unwrap_or_default(), code })
}

fn installed(pre: &str, a: &agent::Accepted) -> Out {
    ok(
        format!("{pre}{} {}: installed into slot {}; trial boot armed — reboot to try it", a.bundle, a.version, a.slot),
        json!({"ok": true, "installed": a}),
    )
}

fn install(cli: &Cli, agent: &mut Agent, bundle: &std::path::Path, opts: InstallOptions) -> Result<Out, Error> {
    let mut progress = ConsoleProgress::new(cli.json);
    let a = agent.install(bundle, opts, &mut progress)?;
    progress.finish();
    Ok(installed("", &a))
}

fn install_site(agent: &mut Agent, path: &std::path::Path) -> Result<Out, Error> {
    let dir = if path.is_dir() { path.to_path_buf() } else { path.parent().map(PathBuf::from).unwrap_or_default() };
    match agent.install_site(&dir)? {
        Some(msg) => Ok(ok(msg.clone(), json!({"ok": true, "message": msg}))),
        None => Err(Error::Refused(
            sideload::Reason::NotAFile,
            format!("no {} in {}", sideload::site::PROFILE, dir.display()),
        )),
    }
}

/// A stick: the site profile first (it changes no slot), then the bundles; a refused profile
/// does not stop a good bundle, nor the other way round.
fn install_dir(cli: &Cli, agent: &mut Agent, dir: &std::path::Path) -> Result<Out, Error> {
    let site = agent.install_site(dir);
    let has_bundles = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".airlock")))
        .unwrap_or(false);
    let site_msg = match site {
        Ok(m) => m,
        Err(e) if !has_bundles => return Err(e),
        Err(e) => {
            eprintln!("sideload: site profile: {e}");
            None
        }
    };
    if !has_bundles && let Some(m) = site_msg {
        return Ok(Out {
            text: format!("{m}; no bundle on the stick: no reboot needed"),
            json: json!({"ok": true, "site": m, "installed": null}),
            code: 3,
        });
    }
    let mut progress = ConsoleProgress::new(cli.json);
    let a = agent.install_dir(dir, InstallOptions::default(), &mut progress)?;
    progress.finish();
    Ok(installed(&site_msg.map(|m| format!("{m}\n")).unwrap_or_default(), &a))
}

fn health_failed(agent: &mut Agent) -> Result<Out, Error> {
    let on_trial = agent.health_failed()?;
    let msg = if on_trial {
        "health check failed on a trial boot: reboot to count the try down (the boot loader falls back when none are left)"
    } else {
        "health check failed, not on a trial boot: staying up on the blessed slot"
    };
    Ok(Out {
        text: msg.to_string(),
        json: json!({"ok": true, "on_trial": on_trial, "message": msg}),
        code: if on_trial { 0 } else { 1 },
    })
}

/// A mark-good's or a rollback's message, with the status it leaves.
fn status_after(agent: &Agent, msg: String) -> Result<Out, Error> {
    let v = agent::view(agent.dev())?;
    let mut j = console::status_json(agent.dev().config(), &v, &[]);
    j["ok"] = json!(true);
    j["message"] = json!(msg);
    Ok(ok(msg, j))
}

/// Prints, ending quietly when stdout is a closed pipe (`sideload audit | head`).
fn print(s: &str) {
    if s.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{s}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(out) => {
            if cli.json {
                if !out.json.is_null() {
                    print(&out.json.to_string());
                }
            } else {
                print(&out.text);
            }
            ExitCode::from(out.code)
        }
        Err(e) => {
            if cli.json {
                print(
                    &json!({"ok": false, "reason": e.code(), "message": e.to_string(), "exit_code": e.exit_code()})
                        .to_string(),
                );
            }
            eprintln!("sideload: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
