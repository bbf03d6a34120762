//! The USB stick: the newest acceptable bundle among its files, each opened once and read only
//! through that handle, bad ones recorded (in one commit) and skipped, never blocking a good
//! one; linear in the number of files. A surface of the agent: it calls the core (the
//! acceptance decision, the install), the core never calls it.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufReader, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use bundle::escape;
use product::Version;

use crate::agent::{
    Accepted, Agent, MAX_CANDIDATES, Progress, candidate, inactive_room, open_bundle, refusal_record, shown,
};
use crate::boot::BootState;
use crate::decide::{self, InstallOptions};
use crate::reason::Reason;
use crate::{Error, failpoint};

impl Agent {
    /// Checks a bundle's signatures and what it is for (not its payload), for choosing among
    /// several on a stick. Reads through `file`, which is left at its start.
    fn check_file(&self, file: &File, boot: &BootState, opts: InstallOptions) -> Result<Version, Error> {
        let expect = trust::Expect { product: Some(&self.dev().config().product), version: None };
        let vb = bundle::open(BufReader::new(file), self.dev().policy(), expect)?;
        let room = inactive_room(self.dev(), boot)?;
        decide::acceptable(
            self.state(),
            boot,
            self.dev().config(),
            &candidate(vb.manifest(), vb.digest()),
            room,
            opts,
        )?;
        let v = vb.manifest().version.clone();
        drop(vb);
        let mut f = file;
        f.seek(SeekFrom::Start(0)).map_err(|e| Error::State(format!("rewinding a bundle: {e}")))?;
        Ok(v)
    }

    pub fn install_dir(
        &mut self,
        dir: &Path,
        opts: InstallOptions,
        progress: &mut dyn Progress,
    ) -> Result<Accepted, Error> {
        let shown_dir = escape(&dir.to_string_lossy());
        let mut names: Vec<OsString> = Vec::new();
        let mut ignored = 0u64;
        for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let n = e.map_err(|e| Error::io(dir, e))?.file_name();
            if n.as_bytes().ends_with(b".airlock") { names.push(n) } else { ignored += 1 }
        }
        names.sort();
        let boot = self.dev().boot().state()?;
        let mut records = Vec::new();
        let mut candidates: Vec<(Version, File, String)> = Vec::new();
        let total = names.len();
        for n in names {
            let path = dir.join(&n);
            let name = shown(&path);
            let checked = open_bundle(&path).and_then(|f| self.check_file(&f, &boot, opts).map(|v| (v, f)));
            match checked {
                Ok(_) if candidates.len() == MAX_CANDIDATES => {
                    let e = Error::Refused(
                        Reason::Bundle(bundle::Code::TooLarge),
                        format!("more than {MAX_CANDIDATES} acceptable bundles on one stick"),
                    );
                    records.push(refusal_record(&name, &e, "install-dir"));
                }
                Ok((v, f)) => candidates.push((v, f, name)),
                Err(e) => {
                    progress.phase(&format!("skipping {name}: {e}"));
                    records.push(refusal_record(&name, &e, "install-dir"));
                }
            }
        }
        if !records.is_empty() {
            self.commit(self.state().clone(), &records)?;
        }
        failpoint("after-check");
        candidates.sort_by(|a, b| a.0.cmp(&b.0));
        while let Some((_, f, name)) = candidates.pop() {
            match self.install_file(&f, &name, opts, progress) {
                Ok(a) => return Ok(a),
                Err(e) => {
                    progress.phase(&format!("{name} failed: {e}"));
                    self.refused(&name, &e, "install-dir")?;
                }
            }
        }
        let e = Error::Refused(
            Reason::NoAcceptableBundle,
            format!(
                "no acceptable bundle in {shown_dir} ({total} bundle file(s) refused, {ignored} other file(s) ignored)"
            ),
        );
        self.commit(self.state().clone(), &[refusal_record("", &e, "install-dir")])?;
        Err(e)
    }
}
