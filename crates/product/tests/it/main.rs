//! The version order against independent judges: Debian's `dpkg --compare-versions` on the
//! versions both spell the same way (`~` pre-releases), and the `semver` crate on `-`
//! pre-releases; `-` and `~` always order alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Ordering;
use std::process::Command;

use product::Version;
use proptest::prelude::*;

fn dpkg_cmp(a: &str, b: &str) -> Ordering {
    let rel = |op: &str| {
        Command::new("dpkg")
            .args(["--compare-versions", a, op, b])
            .status()
            .expect("dpkg is on every Debian host")
            .success()
    };
    if rel("lt") {
        Ordering::Less
    } else if rel("gt") {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// `X.Y.Z` with an optional pre-release of letters then digits (`rc1`, `beta`, `alpha2`):
/// the domain where dpkg's order and semver's agree once `~` is read as `-`.
fn version() -> impl Strategy<Value = String> {
    (0u32..4, 0u32..12, 0u32..12, prop::option::of((prop::sample::select(vec!["alpha", "beta", "rc"]), 0u32..4)))
        .prop_map(|(a, b, c, pre)| match pre {
            None => format!("{a}.{b}.{c}"),
            Some((tag, 0)) => format!("{a}.{b}.{c}~{tag}"),
            Some((tag, n)) => format!("{a}.{b}.{c}~{tag}{n}"),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn tilde_versions_order_as_dpkg_orders_them(a in version(), b in version()) {
        let ours = Version::parse(&a).unwrap().cmp(&Version::parse(&b).unwrap());
        prop_assert_eq!(ours, dpkg_cmp(&a, &b), "{} vs {}", a, b);
    }

    #[test]
    fn dash_versions_order_as_the_semver_crate_orders_them(a in version(), b in version()) {
        let (a, b) = (a.replace('~', "-"), b.replace('~', "-"));
        let ours = Version::parse(&a).unwrap().cmp(&Version::parse(&b).unwrap());
        let theirs = semver::Version::parse(&a).unwrap().cmp_precedence(&semver::Version::parse(&b).unwrap());
        prop_assert_eq!(ours, theirs, "{} vs {}", a, b);
    }

    #[test]
    fn dash_and_tilde_spell_the_same_pre_release(a in version(), b in version()) {
        let tilde = Version::parse(&a).unwrap().cmp(&Version::parse(&b).unwrap());
        let dash = Version::parse(&a.replace('~', "-")).unwrap().cmp(&Version::parse(&b.replace('~', "-")).unwrap());
        prop_assert_eq!(tilde, dash);
    }
}

#[test]
fn a_release_is_newer_than_its_candidates_in_both_spellings() {
    let release = Version::parse("1.1.0").unwrap();
    for rc in ["1.1.0~rc1", "1.1.0-rc1", "1.1.0~beta", "1.1.0-alpha.2"] {
        assert!(Version::parse(rc).unwrap() < release, "{rc}");
        assert_eq!(dpkg_cmp(&rc.replace('-', "~"), "1.1.0"), Ordering::Less, "dpkg agrees for {rc}");
    }
}

#[test]
fn a_version_keeps_its_text_and_is_at_most_64_characters() {
    let v = Version::parse("1.1.0~rc1").unwrap();
    assert_eq!((v.as_str(), v.to_string()), ("1.1.0~rc1", "1.1.0~rc1".to_string()));
    assert!(v.is_pre_release());
    assert!(!Version::parse("1.1.0").unwrap().is_pre_release());
    assert!(!Version::parse("1.1.0+build7").unwrap().is_pre_release(), "build metadata is not a pre-release");
    // Equal by precedence, not by text; unequal when precedence differs.
    assert_eq!(Version::parse("1.1.0~rc1").unwrap(), Version::parse("1.1.0-rc1").unwrap());
    assert_ne!(Version::parse("1.1.0").unwrap(), Version::parse("1.1.1").unwrap());
    let long = format!("1.0.0-{}", "a".repeat(product::MAX_VERSION - 6));
    assert_eq!(long.len(), 64);
    assert!(Version::parse(&long).is_ok());
    let e = Version::parse(&format!("{long}a")).unwrap_err().to_string();
    assert!(e.contains("must be 1 to 64 characters"), "{e}");
    assert!(Version::parse("").unwrap_err().to_string().contains("must be 1 to 64 characters"));
}

#[test]
fn channels_are_named_dev_and_release() {
    use product::Channel;
    assert_eq!((Channel::Dev.as_str(), Channel::Release.as_str()), ("dev", "release"));
    assert_eq!((Channel::Dev.to_string(), Channel::Release.to_string()), ("dev".to_string(), "release".to_string()));
    assert_eq!("release".parse::<Channel>(), Ok(Channel::Release));
}
