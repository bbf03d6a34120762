//! `store export DIR` / `store import DIR`: the input store on a USB stick.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use store::Store;

use crate::{Ctx, out};

#[derive(Args, Debug)]
pub struct StoreCmd {
    #[command(subcommand)]
    cmd: Sub,
    /// The input store (default: $AIRLOCK_STORE or ~/.cache/airlock/store).
    #[arg(long, global = true)]
    store: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Copy every store object (and an INDEX of digests) into DIR.
    Export { dir: PathBuf },
    /// Check every object in DIR against its digest, then copy them into the store.
    Import { dir: PathBuf },
}

impl StoreCmd {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let store = Store::open(&self.store.as_deref().map(|s| ctx.path(s)).unwrap_or_else(Store::default_root))?;
        match self.cmd {
            Sub::Export { dir } => {
                let (n, bytes) = store.export(&ctx.path(&dir))?;
                out!("exported {n} objects ({} MiB) to {}", bytes >> 20, dir.display());
            }
            Sub::Import { dir } => {
                let (n, bytes) = store.import(&ctx.path(&dir))?;
                out!(
                    "imported {n} objects ({} MiB) into {}, every digest checked",
                    bytes >> 20,
                    store.root().display()
                );
            }
        }
        Ok(())
    }
}
