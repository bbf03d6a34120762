//! The one version order of Airlock, used by the builder (recipes, release chains) and the
//! agent (upgrade, same version, downgrade): semantic versioning's precedence. A pre-release
//! starts with `-` (semver) or `~` (Debian's spelling); both mean the same, so `1.1.0~rc1`,
//! `1.1.0-rc1` < `1.1.0`. Build metadata after `+` is kept but does not order.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest version string accepted.
pub const MAX_VERSION: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionError(pub String);

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VersionError {}

/// A version as written (`text`), ordered by semver precedence.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    parsed: semver::Version,
}

impl Version {
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let err = |why: &str| VersionError(format!("version `{}` {why}", s.escape_debug()));
        if s.is_empty() || s.len() > MAX_VERSION {
            return Err(err(&format!("must be 1 to {MAX_VERSION} characters")));
        }
        if !s.bytes().all(|c| c.is_ascii_alphanumeric() || b".+~-".contains(&c)) {
            return Err(err("has characters outside A-Z a-z 0-9 . + ~ -"));
        }
        // `~` starts a pre-release exactly as `-` does; only the first one is a separator.
        let (core, rest) = match s.find(['-', '~', '+']) {
            Some(i) => s.split_at(i),
            None => (s, ""),
        };
        let normalised = match rest.strip_prefix('~') {
            Some(pre) => format!("{core}-{pre}"),
            None => s.to_string(),
        };
        if normalised[core.len()..].contains('~') {
            return Err(err("has a `~` after the pre-release started"));
        }
        let parsed = semver::Version::parse(&normalised).map_err(|e| {
            err(&format!("is not MAJOR.MINOR.PATCH[-PRE|~PRE][+BUILD] ({e}), like `1.4.0` or `1.5.0~rc1`"))
        })?;
        Ok(Version { text: s.to_string(), parsed })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for `1.1.0-rc1` and `1.1.0~rc1`.
    pub fn is_pre_release(&self) -> bool {
        !self.parsed.pre.is_empty()
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        self.parsed.cmp_precedence(&other.parsed)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Version, VersionError> {
        Version::parse(s)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn pre_releases_sort_before_their_release_whatever_the_spelling() {
        assert!(v("1.1.0~rc1") < v("1.1.0"));
        assert!(v("1.1.0-rc1") < v("1.1.0"));
        assert_eq!(v("1.1.0-rc1"), v("1.1.0~rc1"));
        assert!(v("1.0.0") < v("1.1.0~rc1"));
        assert!(v("1.1.0~rc1") < v("1.1.0~rc2"));
        assert!(v("1.9.0") < v("1.10.0"));
        assert_eq!(v("1.0.0+build.7"), v("1.0.0+other"));
    }

    #[test]
    fn what_is_not_a_version_is_refused_with_its_reason() {
        for bad in ["", "1.0", "v1.0.0", "1.0.0~rc~1", "1.0.0 ", "1.0.0\n", "01.0.0", "1.0.0-rc1~x"] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Version::parse("1.0").unwrap_err().to_string(),
            "version `1.0` is not MAJOR.MINOR.PATCH[-PRE|~PRE][+BUILD] (unexpected end of input while parsing minor version number), like `1.4.0` or `1.5.0~rc1`"
        );
    }
}
