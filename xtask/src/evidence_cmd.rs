//! `evidence DIR`: the security officer's evidence of a built image, made again from the image
//! directory alone (`image::evidence_report` does the work); prints what it checked.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::{Ctx, out};

#[derive(Args, Debug)]
pub struct EvidenceCmd {
    /// The image directory (images/NAME/VERSION/ or a copy of it).
    pub dir: PathBuf,
    #[command(flatten)]
    pub trust: crate::args::TrustArgs,
}

impl EvidenceCmd {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let src = self.trust.source(ctx);
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
