//! `build`, `lock` and `fetch`: flags in, calls into `image`, a summary out.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use recipe::{Lock, Recipe};
use store::Store;

use crate::repo_root;

pub const DEFAULT_RECIPE: &str = "recipes/parking-controller.toml";

/// Flags shared by the commands that read a recipe.
#[derive(Args, Clone, Debug)]
pub struct RecipeArgs {
    /// The recipe (default: recipes/parking-controller.toml).
    pub recipe: Option<PathBuf>,
    /// The lock file (default: NAME.lock beside the recipe).
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// The input store (default: $AIRLOCK_STORE or ~/.cache/airlock/store).
    #[arg(long)]
    pub store: Option<PathBuf>,
}

impl RecipeArgs {
    pub fn recipe_path(&self) -> PathBuf {
        self.recipe.clone().unwrap_or_else(|| repo_root().join(DEFAULT_RECIPE))
    }
    pub fn store_path(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(Store::default_root)
    }
    pub fn load(&self) -> Result<Recipe> {
        Ok(Recipe::load(&self.recipe_path(), &repo_root())?)
    }
}

#[derive(Args, Debug)]
pub struct Build {
    #[command(flatten)]
    pub args: RecipeArgs,
    /// Never touch the network: every input must already be in the store.
    #[arg(long)]
    pub offline: bool,
    /// Rebuild every stage, ignoring caches.
    #[arg(long)]
    pub no_cache: bool,
    /// Output root (default: images/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Parent of the scratch directory (default: the output directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Cargo target directory for the stack crates (default: target/airlock-stack).
    #[arg(long)]
    pub stack_target_dir: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Build {
    pub fn options(&self) -> image::BuildOptions {
        image::BuildOptions {
            recipe: self.args.recipe_path(),
            repo_root: repo_root(),
            lock: self.args.lock.clone(),
            store: self.args.store_path(),
            images_dir: self.out.clone().unwrap_or_else(|| repo_root().join("images")),
            offline: self.offline,
            use_cache: !self.no_cache,
            stack_target_dir: self.stack_target_dir.clone().unwrap_or_else(|| repo_root().join("target/airlock-stack")),
            work_parent: self.work_dir.clone(),
            interactive: std::io::stderr().is_terminal(),
        }
    }

    pub fn run(self) -> Result<()> {
        crate::deps::ensure(image::tools::BUILD_TOOLS)?;
        let report = image::build(&self.options())?;
        let manifest_path = report.out_dir.join(image::MANIFEST_NAME);
        let m = &report.manifest;
        let signed = if m.image.channel == "dev" {
            // dev recipes: signed with the INSECURE dev key, verifiable with keys/dev/trust.toml.
            let key = crate::keys::dev_secret()?;
            Some(crate::keys::sign_file(&manifest_path, &key, "release", &m.image.product, &m.image.version)?)
        } else {
            None
        };
        let bundle = crate::bundle_cmd::make_bundle(&report.out_dir, None)?;
        if self.json {
            let out = serde_json::json!({
                "out_dir": report.out_dir,
                "up_to_date": report.up_to_date,
                "signature": signed,
                "bundle": bundle,
                "build_key": report.manifest.build_key,
                "outputs": report.manifest.outputs.iter().map(|(k, o)| (k.clone(), serde_json::json!({"sha256": o.sha256, "size": o.size}))).collect::<serde_json::Map<_, _>>(),
                "timings": report.timings.iter().map(|(k, d)| serde_json::json!({"stage": k, "seconds": d.as_secs_f64()})).collect::<Vec<_>>(),
            });
            println!("{out}");
            return Ok(());
        }
        let total: f64 = report.timings.iter().map(|(_, d)| d.as_secs_f64()).sum();
        let state = if report.up_to_date { "up to date" } else { "built" };
        println!(
            "{} {} ({}, channel {}) {state} in {total:.1}s",
            m.image.name, m.image.version, m.image.product, m.image.channel
        );
        println!("  {}", report.out_dir.display());
        for (name, o) in &m.outputs {
            println!("  {name:<16} {:>12} bytes  sha256:{}", o.size, o.sha256);
        }
        println!("  {:<16} build key {}", image::MANIFEST_NAME, m.build_key);
        if let Some(b) = &bundle {
            println!("  update bundle    {}", b.display());
        }
        match signed {
            Some(sig) => println!("  signed with the INSECURE dev key: {}", sig.display()),
            None => {
                println!(
                    "  release channel: not signed here. Carry {} to the offline signing machine;",
                    manifest_path.display()
                );
                println!("  each signer runs `cargo xtask sign build-manifest.toml --key THEIR.key`; bring the");
                println!("  .minisig files back beside it, then `cargo xtask verify {}`.", manifest_path.display());
            }
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct LockCmd {
    #[command(flatten)]
    pub args: RecipeArgs,
    /// Resolve again even when the lock is up to date (pins what the registry serves now).
    #[arg(long)]
    pub update: bool,
}

impl LockCmd {
    pub fn run(self) -> Result<()> {
        crate::deps::ensure(image::tools::BUILD_TOOLS)?;
        let recipe = self.args.load()?;
        let lock_path = self.args.lock.clone().unwrap_or_else(|| recipe.default_lock_path());
        if !self.update && lock_path.exists() {
            match Lock::load_for(&recipe, &lock_path) {
                Ok(lock) => {
                    println!(
                        "{} is up to date: {} packages, {} MiB (use --update to resolve again)",
                        lock_path.display(),
                        lock.packages.len(),
                        lock.total_size() >> 20
                    );
                    return Ok(());
                }
                Err(recipe::Error::StaleLock { .. }) => {
                    eprintln!("{} is older than its recipe: resolving again", lock_path.display());
                }
                Err(e) => return Err(e.into()),
            }
        }
        let store = Store::open(&self.args.store_path())?;
        eprintln!(
            "resolving {} packages of {} with the host's apt sources (mmdebstrap)…",
            recipe.base.packages.len(),
            recipe.path.display()
        );
        let lock = image::resolve::resolve(&recipe, &store)?;
        store::write_atomic(&lock_path, lock.to_toml().as_bytes())
            .with_context(|| format!("writing {}", lock_path.display()))?;
        println!("{}: {} packages, {} MiB pinned", lock_path.display(), lock.packages.len(), lock.total_size() >> 20);
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct Fetch {
    #[command(flatten)]
    pub args: RecipeArgs,
}

impl Fetch {
    pub fn run(self) -> Result<()> {
        crate::deps::ensure(image::tools::BUILD_TOOLS)?;
        let recipe = self.args.load()?;
        let lock_path = self.args.lock.clone().unwrap_or_else(|| recipe.default_lock_path());
        let lock = Lock::load_for(&recipe, &lock_path)?;
        let store = Store::open(&self.args.store_path())?;
        let n = image::fetch(&recipe, &lock, &store)?;
        let wanted = image::wanted(&recipe, &lock);
        store.verify_all(&wanted)?;
        println!("store {}: {} inputs fetched, all {} verified", store.root().display(), n, wanted.len());
        Ok(())
    }
}
