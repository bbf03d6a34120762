//! Airlock's shared machine formats, each with one owner: the build manifest is written by
//! the build (`image`) and read by the release tools and `repro` through these types alone —
//! no crate reads it as an untyped table or by scanning its lines (cf. cargo's
//! `cargo-util-schemas`). Pure: serde types and their parsers.

pub mod build_manifest;

pub use build_manifest::{
    BuildFacts, BuildManifest, ImageFacts, ImageInfo, Inputs, MANIFEST_FORMAT, MANIFEST_NAME, Output, Setting,
};
