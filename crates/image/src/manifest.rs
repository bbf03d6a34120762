//! `build-manifest.toml`: its one owner is the `schema` crate (the release tools read it
//! too); the build uses the types from there.

pub use schema::build_manifest::*;
