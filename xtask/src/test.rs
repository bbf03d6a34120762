//! `test`: install the host tools the suite needs and the Python judges, then run the whole
//! suite as CI does (system tests included, one at a time), and print the slowest tests at the
//! end so the suite's time stays visible.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
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
        drop(sh);
        // System tests (real mmdebstrap builds, offline, twice) are `#[ignore]`d for a plain
        // `cargo test`; this runs them too, one at a time so builds do not fight for 2 cores.
        let mut child = Command::new("cargo")
            .args(["test", "--workspace", "--locked", "--", "--include-ignored", "--test-threads=1"])
            .args(&self.rest)
            .current_dir(&ctx.root)
            .env("AIRLOCK_JUDGES_PYTHON", &judges)
            .stdout(Stdio::piped())
            .spawn()
            .context("running cargo test")?;
        let mut timer = Timer::default();
        if let Some(mut out) = child.stdout.take() {
            let (mut buf, mut stdout) = ([0u8; 8192], std::io::stdout());
            loop {
                let n = out.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                stdout.write_all(&buf[..n])?;
                stdout.flush()?;
                timer.feed(&buf[..n]);
            }
        }
        let status = child.wait()?;
        timer.print_slowest(10);
        if !status.success() {
            bail!("cargo test failed ({status})");
        }
        Ok(())
    }
}

/// Times each test from the test runner's own output: with one test thread, libtest prints
/// `test NAME ... ` as a test starts; the next start, or the binary's `test result:` line, ends it.
#[derive(Default)]
struct Timer {
    line: Vec<u8>,
    started_here: bool,
    current: Option<(String, Instant)>,
    done: Vec<(String, Duration)>,
}

impl Timer {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                if self.line.starts_with(b"test result:") {
                    self.finish();
                }
                self.line.clear();
                self.started_here = false;
                continue;
            }
            self.line.push(b);
            if !self.started_here && self.line.starts_with(b"test ") && self.line.ends_with(b" ... ") {
                self.started_here = true;
                self.finish();
                let name = String::from_utf8_lossy(&self.line[5..self.line.len() - 5]).into_owned();
                self.current = Some((name, Instant::now()));
            }
        }
    }

    fn finish(&mut self) {
        if let Some((name, t)) = self.current.take() {
            self.done.push((name, t.elapsed()));
        }
    }

    fn print_slowest(&mut self, n: usize) {
        self.finish();
        let total: Duration = self.done.iter().map(|d| d.1).sum();
        self.done.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        println!("slowest tests ({} run, {:.0} s in all):", self.done.len(), total.as_secs_f64());
        for (name, d) in self.done.iter().take(n) {
            println!("  {:>7.1} s  {name}", d.as_secs_f64());
        }
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
