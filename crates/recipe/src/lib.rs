//! Recipes (what release engineers write) and locks (what `cargo xtask lock` pins), with
//! errors that name file:line:col and what to do.

mod error;
mod lock;
mod recipe;
mod zones;

pub use error::{Error, Location};
pub use lock::{LOCK_FORMAT, Lock, LockedPackage};
pub use recipe::{Artifact, Base, Channel, Disk, Output, Recipe, SlotFs, is_plain_relative, valid_package_name};
