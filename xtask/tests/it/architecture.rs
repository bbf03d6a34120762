//! The invariants of ARCHITECTURE.md that a test can check.

use std::fs;

use crate::repo;

fn deps_of(krate: &str) -> Vec<String> {
    let text = fs::read_to_string(repo().join("crates").join(krate).join("Cargo.toml")).unwrap();
    let v: toml::Table = toml::from_str(&text).unwrap();
    v.get("dependencies").and_then(|d| d.as_table()).map(|d| d.keys().cloned().collect()).unwrap_or_default()
}

#[test]
fn crate_dependencies_go_one_way() {
    let workspace = ["recipe", "store", "trust", "image", "parking-controller", "bundle", "sideload", "zones"];
    let allowed: &[(&str, &[&str])] = &[
        ("recipe", &[]),
        ("store", &["recipe"]),
        ("trust", &[]),
        ("bundle", &["trust"]),
        ("zones", &["recipe"]),
        ("image", &["recipe", "store", "trust", "bundle", "zones"]),
        ("sideload", &["trust", "bundle"]),
        ("parking-controller", &[]),
    ];
    for (krate, ok) in allowed {
        if !repo().join("crates").join(krate).exists() {
            continue;
        }
        for d in deps_of(krate) {
            if workspace.contains(&d.as_str()) {
                assert!(ok.contains(&d.as_str()), "crate `{krate}` must not depend on `{d}` (ARCHITECTURE.md)");
            }
        }
    }
}

#[test]
fn the_agent_never_links_the_builder() {
    if !repo().join("crates/sideload").exists() {
        return;
    }
    for d in deps_of("sideload") {
        assert!(!["image", "store", "recipe", "xshell"].contains(&d.as_str()), "sideload depends on {d}");
    }
}

#[test]
fn trust_does_no_io_and_forbids_unsafe() {
    for krate in ["trust", "bundle"] {
        let dir = repo().join("crates").join(krate).join("src");
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            let text = fs::read_to_string(&p).unwrap();
            for banned in ["std::fs", "std::net", "File::open", "std::process", "std::env"] {
                assert!(!text.contains(banned), "{} uses {banned}: `{krate}` does no I/O of its own", p.display());
            }
        }
        let manifest = fs::read_to_string(repo().join("crates").join(krate).join("Cargo.toml")).unwrap();
        assert!(manifest.contains("unsafe_code = \"forbid\""), "{krate} must forbid unsafe code");
    }
}

#[test]
fn every_rust_file_says_what_it_is_for() {
    let mut stack = vec![repo().join("crates"), repo().join("xtask")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p.ends_with("target") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = fs::read_to_string(&p).unwrap();
                assert!(text.starts_with("//!"), "{} does not open with a //! line", p.display());
            }
        }
    }
}

#[test]
fn no_secret_key_is_tracked_outside_keys_dev() {
    let out = std::process::Command::new("git").args(["ls-files"]).current_dir(repo()).output().unwrap();
    for f in String::from_utf8_lossy(&out.stdout).lines() {
        // Source files name the markers; key files are data.
        if f.starts_with("keys/dev/") || f.ends_with(".rs") {
            continue;
        }
        let Ok(text) = fs::read(repo().join(f)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        assert!(
            !text.contains("minisign encrypted secret key") && !text.contains("minisign secret key ("),
            "{f} holds a secret key"
        );
    }
}
