//! What Airlock ships, named once for the builder and the agent: the release [`Channel`] and
//! the one [`Version`] order. Pure: no I/O.

mod channel;
mod version;

pub use channel::Channel;
pub use version::{MAX_VERSION, Version, VersionError};
