//! `lock`: check a recipe's package names, resolve its closure and pin every .deb (online).

use anyhow::{Context, Result};
use clap::Args;
use recipe::Lock;
use store::Store;

use crate::args::RecipeArgs;
use crate::{Ctx, out};

#[derive(Args, Debug)]
pub struct LockCmd {
    #[command(flatten)]
    pub args: RecipeArgs,
    /// Resolve again even when the lock is up to date (pins what the registry serves now).
    #[arg(long)]
    pub update: bool,
}

impl LockCmd {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        crate::deps::ensure(&image::tools::resolve_tools(), false)?;
        let recipe = self.args.load(ctx)?;
        let lock_path = self.args.lock_path(ctx).unwrap_or_else(|| recipe.default_lock_path());
        if !self.update && lock_path.exists() {
            match Lock::load_for(&recipe, &lock_path) {
                Ok(lock) => {
                    out!(
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
        let store = Store::open(&self.args.store_path(ctx))?;
        image::resolve::check_names(&recipe)?;
        eprintln!(
            "resolving {} packages of {} with the host's apt sources (mmdebstrap, about a minute)…",
            recipe.base.packages.len(),
            recipe.path.display()
        );
        let lock = image::resolve::resolve(&recipe, &store)?;
        release::files::write_atomic(&lock_path, lock.to_toml().as_bytes())
            .with_context(|| format!("writing {}", lock_path.display()))?;
        out!("{}: {} packages, {} MiB pinned", lock_path.display(), lock.packages.len(), lock.total_size() >> 20);
        Ok(())
    }
}
