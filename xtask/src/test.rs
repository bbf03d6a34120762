//! `test`: install the host tools the suite needs and the Python judges, then run the whole
//! suite as CI does (system tests included, one at a time).

use anyhow::Result;
use clap::Args;
use image::tools;
use xshell::{Shell, cmd};

use crate::Ctx;
use crate::deps::{dedup, ensure};

#[derive(Args, Debug)]
pub struct Test {
    /// Extra arguments for `cargo test` (after `--`).
    #[arg(last = true)]
    pub rest: Vec<String>,
}

impl Test {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let recipe = recipe::Recipe::load(&ctx.root.join(crate::args::DEFAULT_RECIPE), &ctx.root)?;
        let mut all = tools::needed(&recipe, false);
        all.extend(tools::used_by(&["lock", "repro", "boot", "test"]));
        ensure(&dedup(all), false)?;
        let sh = Shell::new()?;
        sh.change_dir(&ctx.root);
        let judges = python_judges(&ctx.root)?;
        let rest = &self.rest;
        // System tests (real mmdebstrap builds, offline, twice) are `#[ignore]`d for a plain
        // `cargo test`; this runs them too, one at a time so builds do not fight for 2 cores.
        cmd!(sh, "cargo test --workspace --locked -- --include-ignored --test-threads=1 {rest...}")
            .env("AIRLOCK_JUDGES_PYTHON", &judges)
            .run()?;
        Ok(())
    }
}

/// The independent judges from PyPI, pinned, in their own virtualenv (`target/judges`):
/// spdx-tools (SPDX 2.3), cyclonedx-python-lib's schema validator (CycloneDX 1.6) and
/// `cryptography` (DSSE's ed25519). Made once; says what it installs.
pub const JUDGES: &[&str] =
    &["spdx-tools==0.8.5", "cyclonedx-python-lib[json-validation]==11.12.0", "cryptography==50.0.2"];

pub fn python_judges(root: &std::path::Path) -> Result<std::path::PathBuf> {
    let venv = root.join("target/judges");
    let py = venv.join("bin/python");
    let stamp = venv.join("airlock-judges.txt");
    let want = JUDGES.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) && py.exists() {
        return Ok(py);
    }
    eprintln!("airlock: installing the Python judges into {} (pip, from PyPI): {}", venv.display(), JUDGES.join(" "));
    let sh = Shell::new()?;
    // Debian's python3 (its venv module is python3-venv, in the host-tools list), not
    // whichever python3 comes first on PATH.
    cmd!(sh, "/usr/bin/python3 -m venv {venv}").run()?;
    let judges = JUDGES;
    cmd!(sh, "{py} -m pip install --quiet --disable-pip-version-check {judges...}").run()?;
    std::fs::write(&stamp, want)?;
    Ok(py)
}
