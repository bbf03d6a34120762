//! End-to-end tests of `cargo xtask`: the real binary on real files. Tests marked
//! `#[ignore = "system: …"]` need root, the host tools and the package registry (or a filled
//! store); `cargo xtask test` installs the tools and runs them too.

mod appliance;
mod architecture;
mod build;
mod evidence;
mod host_tools;
mod keys;
mod release_flow;
mod security_md;
mod zones;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(repo());
    c
}

/// A system test that needs root fails, saying why, when it is not root (it is never skipped
/// silently: `cargo test` without `--include-ignored` is how to leave system tests out).
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this system test needs root (mmdebstrap, unshare, chroot): run `cargo xtask test` as root, as CI does"
    );
}

pub fn run(c: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = c.output().expect("running xtask");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}
