//! `evidence DIR`: the security officer's evidence of a built image, made again from the image
//! directory alone (`image::evidence_report` does the work); prints what it checked.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use release::PolicySource;

use crate::{Ctx, out};

#[derive(Args, Debug)]
pub struct EvidenceCmd {
    /// The image directory (images/NAME/VERSION/ or a copy of it).
    pub dir: PathBuf,
    /// Trust policy the signatures are checked against (default: keys/trust.toml; the dev
    /// policy with --dev).
    #[arg(long, conflicts_with = "dev")]
    pub trust: Option<PathBuf>,
    #[arg(long)]
    pub dev: bool,
}

impl EvidenceCmd {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let src = match (&self.trust, self.dev) {
            (Some(t), _) => PolicySource::File(ctx.path(t)),
            (None, true) => PolicySource::Dev,
            (None, false) => PolicySource::Default,
        };
        let lp = release::policy::load(&ctx.root, &src)?;
        let dir = ctx.path(&self.dir);
        let made = image::evidence_report::make(&dir, &lp, image::evidence_report::reproducibility(&dir))?;
        if ctx.json {
            out!(
                "{}",
                serde_json::json!({"ok": made.accepted, "report": made.report_html, "envelope": made.envelope, "lines": made.lines})
            );
        } else {
            for l in &made.lines {
                out!("{l}");
            }
            out!("report: {}", made.report_html.display());
        }
        if made.accepted { Ok(()) } else { Err(crate::Exit(1, String::new()).into()) }
    }
}
