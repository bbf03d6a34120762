//! `rotate NEW_POLICY`: accept the next trust policy when a threshold of the current one's
//! release keys signed it.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::{Ctx, out};

#[derive(Args, Debug)]
pub struct Rotate {
    /// The next trust policy (version N+1), with its signatures `NEW.KEYID.minisig` beside it,
    /// made by a threshold of the current policy's release keys.
    pub new: PathBuf,
    /// The current policy (default: keys/trust.toml); replaced by NEW when the rotation is
    /// accepted, both kept in history/ beside it.
    #[arg(long)]
    pub trust: Option<PathBuf>,
}

impl Rotate {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let current = self
            .trust
            .as_deref()
            .map(|p| ctx.path(p))
            .unwrap_or_else(|| ctx.root.join(release::policy::RELEASE_POLICY));
        let r = release::rotate(&current, &ctx.path(&self.new))?;
        let (ids, keys) = r.policy.revoked();
        if ctx.json {
            out!(
                "{}",
                serde_json::json!({"ok": true, "policy": current, "version": r.policy.version(), "history": r.history})
            );
            return Ok(());
        }
        let release_role = r.policy.role(trust::Role::Release);
        out!(
            "{}: now version {} ({} release key(s), threshold {}; {} revoked)",
            current.display(),
            r.policy.version(),
            release_role.map_or(0, |x| x.keys().len()),
            release_role.map_or(0, |x| x.threshold()),
            ids.len() + keys.len()
        );
        for h in &r.history {
            out!("  kept {}", h.display());
        }
        Ok(())
    }
}
