//! `cargo xtask mutants`: cargo-mutants over the decision code (the files listed in
//! `.cargo/mutants.toml`), two jobs for two cores, within a time budget. Every surviving
//! mutant must be killed by a test or listed there, with its reason, as equivalent; exit 1
//! when one is missed. `--in-diff REV` mutates only what changed since REV (CI).

use std::fs;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use xshell::{Shell, cmd};

use crate::{Ctx, Exit, out};

#[derive(Args, Debug)]
pub struct Mutants {
    /// Only the lines changed since this git revision (e.g. `HEAD~1`, or the last landed commit).
    #[arg(long, value_name = "REV")]
    pub in_diff: Option<String>,
    /// Stop after this many minutes; the mutants tested by then are reported (and must all be
    /// caught), the rest counted as not tested.
    #[arg(long, default_value_t = 240)]
    pub budget_mins: u64,
    #[arg(long, default_value_t = 2)]
    pub jobs: u32,
    /// A mutant whose tests run longer than this is counted as timed out (a mutant that loops
    /// forever); lower it for a crate whose tests are quick.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Skip cargo-mutants' baseline run of the unmutated tests (CI: they already passed in the
    /// same run, and the time goes to mutants instead).
    #[arg(long)]
    pub skip_baseline: bool,
    /// Only files matching this glob (e.g. `crates/trust/**`).
    #[arg(long)]
    pub file: Vec<String>,
}

impl Mutants {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let sh = Shell::new()?;
        sh.change_dir(&ctx.root);
        if cmd!(sh, "cargo mutants --version").quiet().ignore_stderr().read().is_err() {
            eprintln!(
                "airlock: installing cargo-mutants 27.1.0 with `cargo install --locked` (the mutation-testing tool)"
            );
            cmd!(sh, "cargo install cargo-mutants@27.1.0 --locked").run()?;
        }
        let out_dir = ctx.root.join("target/mutants");
        fs::create_dir_all(&out_dir)?;
        let mut args: Vec<String> = vec![
            "mutants".into(),
            "--no-shuffle".into(),
            "--jobs".into(),
            self.jobs.to_string(),
            "--output".into(),
            out_dir.display().to_string(),
            "--timeout".into(),
            self.timeout_secs.to_string(),
            "--build-timeout".into(),
            "600".into(),
        ];
        if self.skip_baseline {
            args.push("--baseline=skip".into());
        }
        if !self.file.is_empty() {
            // Only these files: the config's own list of files would add to them, so it is
            // left out, and its equivalent-mutant exclusions passed by hand.
            args.push("--no-config".into());
            let conf: toml::Table = toml::from_str(&fs::read_to_string(ctx.root.join(".cargo/mutants.toml"))?)?;
            for re in conf.get("exclude_re").and_then(|v| v.as_array()).into_iter().flatten().filter_map(|v| v.as_str())
            {
                args.extend(["--exclude-re".to_string(), re.to_string()]);
            }
            for f in &self.file {
                args.extend(["--file".to_string(), f.clone()]);
            }
        }
        if let Some(rev) = &self.in_diff {
            let diff =
                cmd!(sh, "git diff {rev} -- crates").quiet().read().with_context(|| format!("git diff {rev}"))?;
            if diff.trim().is_empty() {
                out!("mutants: no change in crates/ since {rev}: nothing to mutate");
                return Ok(());
            }
            let p = out_dir.join("in.diff");
            fs::write(&p, diff + "\n")?;
            args.extend(["--in-diff".to_string(), p.display().to_string()]);
        }
        let started = Instant::now();
        // The budget is coreutils' `timeout`: SIGINT when it is spent (cargo-mutants then
        // writes what it tested), exit 124.
        let budget = format!("{}s", self.budget_mins * 60);
        let cargo = env!("CARGO");
        // Its output goes to the terminal as it runs; a non-zero exit is judged below, from
        // what it wrote.
        let ran = cmd!(sh, "timeout --signal=INT --kill-after=60 {budget} {cargo} {args...}").run();
        let spent = ran.is_err() && started.elapsed().as_secs() + 5 >= self.budget_mins * 60;
        if spent {
            eprintln!("mutants: the {}-minute budget is spent: stopped", self.budget_mins);
        }
        let read = |name: &str| -> Vec<String> {
            fs::read_to_string(out_dir.join("mutants.out").join(name))
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect()
        };
        let (caught, missed, unviable, timeout) =
            (read("caught.txt"), read("missed.txt"), read("unviable.txt"), read("timeout.txt"));
        out!(
            "mutants: {} tested in {:.0} min: {} caught, {} missed, {} unviable, {} timed out{}",
            caught.len() + missed.len() + unviable.len() + timeout.len(),
            started.elapsed().as_secs_f64() / 60.0,
            caught.len(),
            missed.len(),
            unviable.len(),
            timeout.len(),
            if spent { " (budget reached: the rest not tested)" } else { "" }
        );
        for m in &missed {
            out!("  MISSED  {m}");
        }
        if !missed.is_empty() {
            return Err(Exit(
                1,
                format!(
                    "{} mutant(s) survived: add a test that fails with each, or list it in .cargo/mutants.toml (exclude_re) with the reason it is equivalent",
                    missed.len()
                ),
            )
            .into());
        }
        if let Err(e) = ran
            && !spent
            && timeout.is_empty()
        {
            bail!("cargo mutants failed ({e}): see {}", out_dir.join("mutants.out/debug.log").display());
        }
        Ok(())
    }
}
