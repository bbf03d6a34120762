//! Flags and hints several commands share: the recipe, lock and store flags, the trust root of
//! a verifier, and how a hint names a command so that it can be pasted as it is.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use recipe::Recipe;
use release::PolicySource;
use store::Store;

use crate::Ctx;

pub const DEFAULT_RECIPE: &str = "recipes/parking-controller.toml";

/// Flags shared by the commands that read a recipe.
#[derive(Args, Clone, Debug, Default)]
pub struct RecipeArgs {
    /// The recipe (default: recipes/parking-controller.toml).
    pub recipe: Option<PathBuf>,
    /// The lock file (default: NAME.lock beside the recipe, or the lock of the recipe it
    /// extends when the [base] is the same).
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// The input store (default: $AIRLOCK_STORE or ~/.cache/airlock/store).
    #[arg(long)]
    pub store: Option<PathBuf>,
}

impl RecipeArgs {
    pub fn recipe_path(&self, ctx: &Ctx) -> PathBuf {
        self.recipe.as_deref().map(|r| ctx.path(r)).unwrap_or_else(|| ctx.root.join(DEFAULT_RECIPE))
    }
    pub fn store_path(&self, ctx: &Ctx) -> PathBuf {
        self.store.as_deref().map(|s| ctx.path(s)).unwrap_or_else(Store::default_root)
    }
    pub fn lock_path(&self, ctx: &Ctx) -> Option<PathBuf> {
        self.lock.as_deref().map(|l| ctx.path(l))
    }
    pub fn load(&self, ctx: &Ctx) -> Result<Recipe> {
        Ok(Recipe::load(&self.recipe_path(ctx), &ctx.root)?)
    }
    /// The recipe and flags as the user gave them, for hints that can be pasted as they are.
    pub fn shown(&self, _ctx: &Ctx) -> String {
        let mut parts = Vec::new();
        if let Some(r) = &self.recipe {
            parts.push(quote(&r.display().to_string()));
        }
        if let Some(l) = &self.lock {
            parts.push(format!("--lock {}", quote(&l.display().to_string())));
        }
        if let Some(s) = &self.store {
            parts.push(format!("--store {}", quote(&s.display().to_string())));
        }
        parts.join(" ")
    }
}

/// The trust root of a verifying command: always the verifier's choice, never the file's.
#[derive(Args, Clone, Debug, Default)]
pub struct TrustArgs {
    /// Trust policy to verify against (default: keys/trust.toml). The file being verified
    /// never chooses it.
    #[arg(long, conflicts_with = "dev")]
    pub trust: Option<PathBuf>,
    /// Verify against the INSECURE dev policy (keys/dev/trust.toml): proves nothing about who
    /// signed, since the dev secret key is public.
    #[arg(long)]
    pub dev: bool,
}

impl TrustArgs {
    pub fn source(&self, ctx: &Ctx) -> PolicySource {
        match (&self.trust, self.dev) {
            (Some(t), _) => PolicySource::File(ctx.path(t)),
            (None, true) => PolicySource::Dev,
            (None, false) => PolicySource::Default,
        }
    }
}

/// Quotes a path for a shell when it needs it.
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `cargo xtask CMD ARGS`, with no double space when ARGS is empty.
pub fn command(cmd: &str, args: &str) -> String {
    if args.is_empty() { format!("cargo xtask {cmd}") } else { format!("cargo xtask {cmd} {args}") }
}
