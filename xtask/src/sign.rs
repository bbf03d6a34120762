//! `sign FILE --key SECRET`: one detached minisign-format signature beside a file.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::keys::{RoleArg, load_secret};
use crate::{Ctx, out};

#[derive(Args, Debug)]
pub struct Sign {
    /// The file to sign (a build manifest, a bundle manifest, a trust policy…).
    pub path: PathBuf,
    /// The secret key.
    #[arg(long)]
    pub key: PathBuf,
    /// The role this signature is made in.
    #[arg(long, value_enum, default_value_t = RoleArg::Release)]
    pub role: RoleArg,
    /// Product id for the trusted comment (default: from the build or bundle manifest).
    #[arg(long)]
    pub product: Option<String>,
    /// Version for the trusted comment (default: from the build or bundle manifest).
    #[arg(long)]
    pub version: Option<String>,
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

impl Sign {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let path = ctx.path(&self.path);
        let key = load_secret(&ctx.path(&self.key), &self.passphrase_file)?;
        let role = trust::Role::from(self.role);
        let sig = release::sign_file(&path, &key, role, self.product.as_deref(), self.version.as_deref())?;
        if ctx.json {
            out!(
                "{}",
                serde_json::json!({"ok": true, "file": path, "key_id": key.id().to_string(), "role": role.as_str(), "signature": sig})
            );
        } else {
            out!("signed {} with key {} ({role}): {}", path.display(), key.id(), sig.display());
        }
        Ok(())
    }
}
