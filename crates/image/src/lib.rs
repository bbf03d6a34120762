//! The Airlock build: turns a recipe, its lock and the input store into a reproducible
//! read-only root filesystem (`rootfs.tar.zst`, `root.img`) and its `build-manifest.toml`.

pub mod archive;
pub mod base;
mod build;
pub mod disk;
mod error;
pub mod evidence_gather;
pub mod evidence_report;
pub mod firewall;
pub mod manifest;
pub mod normalise;
pub mod overlay;
pub mod resolve;
pub mod sandbox;
pub mod slotfs;
pub mod stack;
pub mod tools;
pub mod verity;

pub use build::{
    BuildOptions, BuildReport, MANIFEST_NAME, ROOTFS_NAME, SLOT_NAME, build, fetch, load, lock_path, out_dir, wanted,
};
pub use error::{Error, Result};
