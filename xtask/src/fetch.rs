//! `fetch`: fill the input store from a recipe's lock (online, hash-checked).

use anyhow::Result;
use clap::Args;
use recipe::Lock;
use store::Store;

use crate::args::RecipeArgs;
use crate::{Ctx, out};

#[derive(Args, Debug)]
pub struct Fetch {
    #[command(flatten)]
    pub args: RecipeArgs,
}

impl Fetch {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        crate::deps::ensure(&image::tools::fetch_tools(), false)?;
        let recipe = self.args.load(ctx)?;
        let lock_path = image::lock_path(&recipe, self.args.lock_path(ctx).as_deref())?;
        let lock = Lock::load_for(&recipe, &lock_path)?;
        let store = Store::open(&self.args.store_path(ctx))?;
        let n = image::fetch(&recipe, &lock, &store)?;
        let wanted = image::wanted(&recipe, &lock);
        store.verify_all(&wanted)?;
        if ctx.json {
            out!("{}", serde_json::json!({"ok": true, "store": store.root(), "fetched": n, "verified": wanted.len()}));
        } else {
            out!("store {}: {} inputs fetched, all {} verified", store.root().display(), n, wanted.len());
        }
        Ok(())
    }
}
