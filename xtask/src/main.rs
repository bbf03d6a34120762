//! `cargo xtask`: the release engineer's CLI. Parses flags and dispatches; the work is done by
//! the library crates (`image`, `store`, `recipe`, `release`, `trust`, `bundle`).
//!
//! Exit codes: 0 success; 1 rejected (a check failed: signature, threshold, tampered input,
//! reproducibility…); 2 usage or I/O error. With `--json`, failures print one JSON object
//! `{"ok": false, "exit_code": N, "error": "…"}` on stdout.

mod args;
mod bench;
mod boot;
mod build;
mod bundle_cmd;
mod deps;
mod evidence_cmd;
mod fetch;
mod keygen;
mod keys;
mod lock;
mod mutants;
mod output;
mod repro;
mod rotate;
mod sign;
mod store_cmd;
mod test;
mod verify;
mod zones_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    about = "Airlock: reproducible, signed, offline-updatable appliance images",
    after_help = "Exit codes: 0 success; 1 rejected (bad or missing signatures, tampered input, not reproducible); 2 usage or I/O error."
)]
struct Cli {
    /// Machine-readable output: one JSON document on stdout (errors included).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the image of a recipe into images/NAME/VERSION/ (release: images/NAME/release/VERSION/).
    Build(build::Build),
    /// Resolve a recipe's packages and pin them in its lock (online).
    Lock(lock::LockCmd),
    /// Run a built disk in QEMU (OVMF; KVM when it works, else TCG), with USB sticks of bundles.
    Boot(boot::Boot),
    /// Pack a built image into its update bundle NAME-VERSION.airlock.
    Bundle(bundle_cmd::BundleCmd),
    /// Fill the input store from a recipe's lock (online).
    Fetch(fetch::Fetch),
    /// Carry the input store across the air gap.
    Store(store_cmd::StoreCmd),
    /// Build twice under varied conditions and compare every output byte for byte.
    Repro(repro::Repro),
    /// Check the host tools a recipe needs and install the missing ones with apt-get.
    Deps(deps::Deps),
    /// Install host tools, then run the whole test suite (what CI runs).
    Test(test::Test),
    /// Make a signing keypair: keys/NAME.pub, the secret key outside the repository.
    Keygen(keygen::Keygen),
    /// Add one detached minisign-format signature to a file.
    Sign(sign::Sign),
    /// Accept the next trust policy (version N+1) if a threshold of the current release keys
    /// signed it; keep it and its signatures in keys/history/.
    Rotate(rotate::Rotate),
    /// Side-by-side figures against the reference tools: `bench build`, `bench verify`, `bench install`.
    Bench(bench::Bench),
    /// Mutation testing of the decision code (cargo-mutants), within a time budget.
    Mutants(mutants::Mutants),
    /// Make the evidence of a built image again from its directory alone: the provenance
    /// envelope and report.html / report.json (every digest checked first).
    Evidence(evidence_cmd::EvidenceCmd),
    /// Show a recipe's zones and conduits and the firewall they compile to (`--rules`,
    /// `--check`, `--site PROFILE`).
    Zones(zones_cmd::ZonesCmd),
    /// Check every signature of a file (or a whole .airlock bundle) against the trust policy
    /// you choose: exit 0 accepted, 1 rejected.
    Verify(verify::Verify),
}

/// What every command gets: the checkout it acts on, and the output mode.
pub struct Ctx {
    pub root: PathBuf,
    pub json: bool,
}

impl Ctx {
    /// A path the user gave, relative to where they ran the command.
    pub fn path(&self, p: &Path) -> PathBuf {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

/// The Airlock checkout the user is in: the nearest directory, from the current one up,
/// holding a `Cargo.toml` with `[workspace]` and an `xtask/` crate (as cargo finds it).
pub fn find_root() -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir()?;
    for d in cwd.ancestors() {
        let manifest = d.join("Cargo.toml");
        if d.join("xtask/Cargo.toml").is_file()
            && std::fs::read_to_string(&manifest).is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        {
            return Ok(d.to_path_buf());
        }
    }
    Err(Exit(
        2,
        format!("{}: not inside an Airlock checkout (no Cargo.toml with [workspace] and xtask/ above it): cd into the repository", cwd.display()),
    )
    .into())
}

/// An error that carries its exit code.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}
impl std::error::Error for Exit {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let r = find_root().and_then(|root| {
        let ctx = Ctx { root, json };
        match cli.cmd {
            Cmd::Build(c) => c.run(&ctx),
            Cmd::Lock(c) => c.run(&ctx),
            Cmd::Fetch(c) => c.run(&ctx),
            Cmd::Bundle(c) => c.run(&ctx),
            Cmd::Store(c) => c.run(&ctx),
            Cmd::Repro(c) => c.run(&ctx),
            Cmd::Deps(c) => c.run(&ctx),
            Cmd::Test(c) => c.run(&ctx),
            Cmd::Keygen(c) => c.run(&ctx),
            Cmd::Sign(c) => c.run(&ctx),
            Cmd::Verify(c) => c.run(&ctx),
            Cmd::Bench(c) => c.run(&ctx),
            Cmd::Rotate(c) => c.run(&ctx),
            Cmd::Mutants(c) => c.run(&ctx),
            Cmd::Boot(c) => c.run(&ctx),
            Cmd::Zones(c) => c.run(&ctx),
            Cmd::Evidence(c) => c.run(&ctx),
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (code, msg) = match e.downcast_ref::<Exit>() {
                Some(Exit(code, msg)) => (*code, msg.clone()),
                None => (exit_code(&e), format!("{e:#}")),
            };
            // An empty message: the command already printed its (JSON) report.
            if json && !msg.is_empty() {
                out!("{}", serde_json::json!({"ok": false, "exit_code": code, "error": msg}));
            }
            if !msg.is_empty() {
                eprintln!("error: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

/// 1 for rejected inputs (tampered objects, bad exports, refused signatures), 2 for usage and
/// I/O (recipes too).
fn exit_code(e: &anyhow::Error) -> u8 {
    let is_rejection = |s: &store::Error| matches!(s, store::Error::Tampered { .. } | store::Error::BadExport { .. });
    let rejected = e.chain().any(|c| {
        c.downcast_ref::<store::Error>().is_some_and(is_rejection)
            || matches!(c.downcast_ref::<image::Error>(), Some(image::Error::Store(s)) if is_rejection(s))
            || matches!(c.downcast_ref::<image::Error>(), Some(image::Error::Rejected(_)))
            || c.downcast_ref::<release::Error>().is_some_and(|r| r.exit_code() == 1)
            || matches!(c.downcast_ref::<image::Error>(), Some(image::Error::Release(r)) if r.exit_code() == 1)
    });
    if rejected { 1 } else { 2 }
}
