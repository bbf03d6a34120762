//! `cargo xtask`: the release engineer's CLI. Parses flags and dispatches; the work is done by
//! the library crates (`image`, `store`, `recipe`, `trust`).

mod bench;
mod bench_install;
mod build;
mod bundle_cmd;
mod deps;
mod keys;
mod repro;
mod store_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes: 0 success; 1 rejected (a check failed: signature, reproducibility…);
/// 2 usage or I/O error.
#[derive(Parser)]
#[command(name = "cargo xtask", about = "Airlock: reproducible, signed, offline-updatable appliance images")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the image of a recipe into images/NAME/VERSION/.
    Build(build::Build),
    /// Resolve a recipe's packages and pin them in its lock (online).
    Lock(build::LockCmd),
    /// Pack a built image into its update bundle NAME-VERSION.airlock.
    Bundle(bundle_cmd::BundleCmd),
    /// Fill the input store from a recipe's lock (online).
    Fetch(build::Fetch),
    /// Carry the input store across the air gap.
    Store(store_cmd::StoreCmd),
    /// Build twice under varied conditions and compare every output byte for byte.
    Repro(repro::Repro),
    /// Check the host tools the build needs and install the missing ones with apt-get.
    Deps(deps::Deps),
    /// Install host tools, then run the whole test suite (what CI runs).
    Test(deps::Test),
    /// Make a signing keypair: keys/NAME.pub, the secret key outside the repository.
    Keygen(keys::Keygen),
    /// Add one detached minisign-format signature to a file.
    Sign(keys::Sign),
    /// Accept the next trust policy (version N+1) if a threshold of the current release keys
    /// signed it, and put it in place.
    Rotate(keys::Rotate),
    /// Side-by-side figures against the reference tools: `bench build`, `bench verify`.
    Bench(bench::Bench),
    /// Check every signature of a file and each role's threshold (exit 0 accepted, 1 rejected).
    Verify(keys::Verify),
}

/// The repository root: xtask lives at `ROOT/xtask`; `AIRLOCK_REPO_ROOT` overrides it (the
/// second `repro` build reads a copy of the tree).
pub fn repo_root() -> PathBuf {
    if let Some(p) = std::env::var_os("AIRLOCK_REPO_ROOT").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
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
    let r = match cli.cmd {
        Cmd::Build(c) => c.run(),
        Cmd::Lock(c) => c.run(),
        Cmd::Fetch(c) => c.run(),
        Cmd::Bundle(c) => c.run(),
        Cmd::Store(c) => c.run(),
        Cmd::Repro(c) => c.run(),
        Cmd::Deps(c) => c.run(),
        Cmd::Test(c) => c.run(),
        Cmd::Keygen(c) => c.run(),
        Cmd::Sign(c) => c.run(),
        Cmd::Verify(c) => c.run(),
        Cmd::Bench(c) => c.run(),
        Cmd::Rotate(c) => c.run(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(Exit(code, msg)) = e.downcast_ref::<Exit>() {
                if !msg.is_empty() {
                    eprintln!("error: {msg}");
                }
                return ExitCode::from(*code);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 1 for rejected inputs (tampered objects, bad exports), 2 for usage and I/O (recipes too).
fn exit_code(e: &anyhow::Error) -> u8 {
    let is_rejection = |s: &store::Error| matches!(s, store::Error::Tampered { .. } | store::Error::BadExport { .. });
    let rejected = e.chain().any(|c| {
        c.downcast_ref::<store::Error>().is_some_and(is_rejection)
            || matches!(c.downcast_ref::<image::Error>(), Some(image::Error::Store(s)) if is_rejection(s))
    });
    if rejected { 1 } else { 2 }
}
