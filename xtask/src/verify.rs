//! `verify FILE`: every signature of a file (or a whole bundle, or a provenance envelope)
//! against the policy the verifier chooses.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use release::PolicySource;

use crate::{Ctx, Exit, out};

#[derive(Args, Debug)]
pub struct Verify {
    /// The signed file (its signatures FILE.KEYID.minisig beside it), or a .airlock bundle.
    pub path: PathBuf,
    #[command(flatten)]
    pub trust: crate::args::TrustArgs,
}

impl Verify {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let src = self.trust.source(ctx);
        let lp = release::policy::load(&ctx.root, &src)?;
        // The caller's own policy file is the root they chose; the repository's policy must be
        // reached by its rotation chain.
        let chain_required = !matches!(src, PolicySource::File(_));
        let chain_broken = chain_required && !lp.chain.is_ok();
        let path = ctx.path(&self.path);
        let is_envelope = path.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".intoto.json"));
        let (accepted, text, json) = if is_envelope {
            let mut r = release::provenance::verify(&path, &lp)?;
            if chain_broken {
                r.refuse_chain();
            }
            (r.accepted(), r.render_text(), serde_json::to_value(&r)?)
        } else if path.extension().is_some_and(|x| x == "airlock") {
            let f = release::files::open_regular(&path)?;
            let (mut report, _) = bundle::verify_stream(
                std::io::BufReader::with_capacity(1 << 20, f),
                &path.display().to_string(),
                &lp.label(),
                &lp.policy,
                trust::Expect::default(),
            );
            report.policy_chain = Some(lp.chain.describe());
            if chain_broken {
                report.refuse("policy-chain", &lp.chain.describe());
            }
            (report.accepted(), report.render_text(), serde_json::to_value(&report)?)
        } else {
            let mut report = release::verify_file(&path, &lp)?;
            if chain_broken {
                report.refuse_chain(&lp.chain.describe());
            }
            (report.accepted(), report.render_text(), serde_json::to_value(&report)?)
        };
        if ctx.json {
            out!("{json}");
        } else {
            out!("{text}");
        }
        if accepted { Ok(()) } else { Err(Exit(1, String::new()).into()) }
    }
}
