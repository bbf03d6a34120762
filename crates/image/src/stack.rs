//! The stack stage: workspace crates (the parking controller, later the sideload agent) built
//! reproducibly — `--locked`, release profile, build paths remapped — and the files each
//! crate lists under `[package.metadata.airlock] install` placed into the image.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use xshell::{Shell, cmd};

use crate::error::{Error, Result, io_err, tool_err};

/// One file the stack puts into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackFile {
    pub krate: String,
    pub src: PathBuf,
    /// Absolute path inside the image.
    pub dest: String,
    pub mode: u32,
    pub sha256: String,
}

#[derive(Deserialize)]
struct Manifest {
    package: Package,
}

#[derive(Deserialize)]
struct Package {
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    airlock: Option<Airlock>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Airlock {
    install: Vec<Install>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Install {
    bin: Option<String>,
    file: Option<String>,
    dest: String,
    mode: Option<String>,
}

/// Builds the stack crates and returns the files to install, hashed.
pub fn build(repo_root: &Path, crates: &[String], target_dir: &Path, offline: bool) -> Result<Vec<StackFile>> {
    if crates.is_empty() {
        return Ok(Vec::new());
    }
    let sh = Shell::new().map_err(tool_err("shell"))?;
    sh.change_dir(repo_root);
    let cargo_home = std::env::var("CARGO_HOME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}/.cargo", std::env::var("HOME").unwrap_or_else(|_| "/root".into())));
    // One flag per 0x1f-separated field: a checkout path with spaces or non-ASCII characters
    // stays one argument (RUSTFLAGS would split it on the space).
    let rustflags = [
        format!("--remap-path-prefix={}=/airlock", repo_root.display()),
        format!("--remap-path-prefix={cargo_home}=/cargo"),
        format!("--remap-path-prefix={}=/target", target_dir.display()),
    ]
    .join("\x1f");
    let mut pkgs: Vec<String> = crates.iter().flat_map(|c| ["-p".to_string(), c.clone()]).collect();
    if offline {
        pkgs.push("--offline".into());
    }
    cmd!(sh, "cargo build --release --locked --quiet --bins --target-dir {target_dir} {pkgs...}")
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env("CARGO_HOME", &cargo_home)
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env("SOURCE_DATE_EPOCH", "0")
        .quiet()
        .ignore_stdout()
        .run()
        .map_err(tool_err("cargo build (stack crates)"))?;

    let mut files = Vec::new();
    for c in crates {
        let manifest_path = repo_root.join("crates").join(c).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest_path).map_err(io_err(&manifest_path))?;
        let m: Manifest =
            toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", manifest_path.display())))?;
        let Some(airlock) = m.package.metadata.and_then(|m| m.airlock) else {
            return Err(Error::Invalid(format!(
                "{}: stack crate `{c}` has no [package.metadata.airlock] install list: nothing to put into the image",
                manifest_path.display()
            )));
        };
        for i in airlock.install {
            let (src, default_mode) = match (&i.bin, &i.file) {
                (Some(b), None) => (target_dir.join("release").join(b), 0o755),
                (None, Some(f)) if recipe::is_plain_relative(Path::new(f)) => {
                    (repo_root.join("crates").join(c).join(f), 0o644)
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "{}: each install entry names exactly one `bin` or one relative `file`",
                        manifest_path.display()
                    )));
                }
            };
            if !i.dest.starts_with('/') || !recipe::is_plain_relative(Path::new(&i.dest[1..])) {
                return Err(Error::Invalid(format!(
                    "{}: install dest `{}` must be absolute, without `..`",
                    manifest_path.display(),
                    i.dest
                )));
            }
            let mode = match &i.mode {
                Some(m) => u32::from_str_radix(m, 8)
                    .map_err(|_| Error::Invalid(format!("{}: mode `{m}` is not octal", manifest_path.display())))?,
                None => default_mode,
            };
            let (sha256, _) = store::sha256_file(&src)?;
            files.push(StackFile { krate: c.clone(), src, dest: i.dest, mode, sha256 });
        }
    }
    Ok(files)
}
