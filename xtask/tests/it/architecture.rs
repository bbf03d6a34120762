//! The invariants of ARCHITECTURE.md that a test can check, read from the manifests
//! themselves: the crate list comes from `crates/*`, every dependency table counts, and the
//! agent's whole dependency closure and its features come from `cargo tree`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;

use crate::repo;

/// The workspace crates: `crates/*` and `xtask`, with their manifests.
fn workspace() -> BTreeMap<String, toml::Table> {
    let mut out = BTreeMap::new();
    let mut dirs: Vec<_> = fs::read_dir(repo().join("crates")).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.push(repo().join("xtask"));
    for d in dirs {
        let m = d.join("Cargo.toml");
        if !m.is_file() {
            continue;
        }
        let t: toml::Table = toml::from_str(&fs::read_to_string(&m).unwrap()).unwrap();
        let name = t["package"]["name"].as_str().unwrap().to_string();
        out.insert(name, t);
    }
    assert!(out.len() >= 9, "found only {:?}", out.keys());
    out
}

/// Every dependency a manifest names, by table kind (`dependencies`, `dev-dependencies`,
/// `build-dependencies`, and the same under `[target.*]`).
fn deps(t: &toml::Table) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut out: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut tables = vec![t];
    if let Some(targets) = t.get("target").and_then(|v| v.as_table()) {
        tables.extend(targets.values().filter_map(|v| v.as_table()));
    }
    for tab in tables {
        for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if let Some(d) = tab.get(kind).and_then(|v| v.as_table()) {
                out.entry(kind).or_default().extend(d.keys().cloned());
            }
        }
    }
    out
}

/// Which workspace crates each crate may depend on (ARCHITECTURE.md, "Invariant: crate
/// dependencies go one way").
const ALLOWED: &[(&str, &[&str])] = &[
    ("product", &[]),
    ("durable", &[]),
    ("audit", &["durable"]),
    ("recipe", &["product", "zones"]),
    ("store", &["recipe", "durable"]),
    ("trust", &["product"]),
    ("bundle", &["trust", "product", "schema"]),
    ("schema", &[]),
    ("release", &["trust", "bundle", "product", "schema", "durable"]),
    ("zones", &[]),
    ("sideload", &["trust", "bundle", "product", "zones", "durable", "audit"]),
    ("evidence", &["recipe", "trust", "bundle", "product", "zones"]),
    ("image", &["recipe", "store", "trust", "bundle", "product", "sideload", "zones", "release", "evidence", "schema"]),
    ("parking-controller", &[]),
    ("vm", &[]),
    ("netns", &[]),
];

#[test]
fn crate_dependencies_go_one_way() {
    let ws = workspace();
    let names: BTreeSet<&str> = ws.keys().map(String::as_str).collect();
    for (name, manifest) in &ws {
        if name == "xtask" {
            continue;
        }
        let allowed = ALLOWED
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("crate `{name}` is not in ARCHITECTURE.md's dependency table (and this test's)"))
            .1;
        for (kind, ds) in deps(manifest) {
            for d in ds.iter().filter(|d| names.contains(d.as_str())) {
                // Tests may turn on a workspace crate's own features (trust's `sign`).
                let ok = allowed.contains(&d.as_str()) || (kind == "dev-dependencies" && (d == name || d == "trust"));
                assert!(ok, "crate `{name}` must not depend on `{d}` in [{kind}] (ARCHITECTURE.md)");
            }
        }
        assert!(!deps(manifest).values().flatten().any(|d| d == "xtask"), "nothing depends on xtask");
    }
}

/// `cargo tree` for the agent alone (`-p sideload`, offline, no prefix): one package a line in
/// `format`, over the `edges` kinds.
fn agent_tree(edges: &str, format: &str) -> String {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--offline", "-p", "sideload", "-e", edges, "--prefix", "none", "-f", format])
        .current_dir(repo())
        .output()
        .expect("cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The packages the agent links, as cargo resolves them for it alone: normal and build
/// dependencies for the host, which is the image's target (x86-64 Linux). `Cargo.lock` would
/// be too coarse: it also lists the dev-dependencies of every crate (bundle's tests use the
/// `tar` crate as a judge; the agent never links it).
fn agent_closure() -> BTreeSet<String> {
    agent_tree("normal,build", "{p}")
        .lines()
        .filter_map(|l| l.split(' ').next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_agent_never_links_the_builder_anywhere_in_its_closure() {
    let seen = agent_closure();
    assert!(seen.contains("sideload") && seen.contains("trust"), "cargo tree gave {seen:?}");
    for banned in ["image", "store", "recipe", "release", "evidence", "xshell", "xtask", "tar"] {
        assert!(!seen.contains(banned), "the agent's dependency closure holds `{banned}`");
    }
}

#[test]
fn the_agent_does_not_link_signing() {
    // Features as cargo resolves them for the agent alone (what the image build compiles).
    let tree = agent_tree("normal", "{p} [{f}]");
    let trust = tree.lines().find(|l| l.starts_with("trust ")).expect("the agent links trust");
    assert!(!trust.contains("sign"), "the agent links trust with signing: {trust}");
    assert!(!tree.lines().any(|l| l.starts_with("scrypt ")), "the agent links scrypt (secret keys)");
}

#[test]
fn trust_and_bundle_do_no_io_and_forbid_unsafe() {
    for krate in ["trust", "bundle", "product", "durable", "audit"] {
        let dir = repo().join("crates").join(krate);
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("unsafe_code = \"forbid\""), "{krate} must forbid unsafe code");
    }
    for krate in ["trust", "bundle"] {
        // clippy (CI, -D warnings) refuses filesystem, network, process and environment calls.
        let conf = fs::read_to_string(repo().join("crates").join(krate).join("clippy.toml"))
            .unwrap_or_else(|_| panic!("crates/{krate}/clippy.toml is missing"));
        for banned in
            ["std::fs::File::open", "std::fs::read", "std::net::TcpStream", "std::process::Command", "std::env::var"]
        {
            assert!(conf.contains(&format!("\"{banned}")), "crates/{krate}/clippy.toml does not forbid {banned}");
        }
    }
    let sideload = fs::read_to_string(repo().join("crates/sideload/Cargo.toml")).unwrap();
    assert!(sideload.contains("unsafe_code = \"forbid\""), "sideload must forbid unsafe code");
}

#[test]
fn every_rust_file_says_what_it_is_for() {
    let mut stack = vec![repo().join("crates"), repo().join("xtask"), repo().join("fuzz/fuzz_targets")];
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
    let out = Command::new("git").args(["ls-files", "-z"]).current_dir(repo()).output().expect("git is installed");
    assert!(out.status.success(), "git ls-files failed: {}", String::from_utf8_lossy(&out.stderr));
    let files: Vec<String> =
        String::from_utf8_lossy(&out.stdout).split('\0').filter(|f| !f.is_empty()).map(str::to_string).collect();
    assert!(
        files.len() > 50 && files.iter().any(|f| f == "keys/dev/dev.key"),
        "git ls-files listed {} files",
        files.len()
    );
    for f in files {
        // Source files name the markers; key files are data.
        if f.starts_with("keys/dev/") || f.ends_with(".rs") {
            continue;
        }
        let Ok(text) = fs::read(repo().join(&f)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        assert!(
            !text.contains("minisign encrypted secret key") && !text.contains("minisign secret key ("),
            "{f} holds a secret key"
        );
    }
}

#[test]
fn every_equivalent_mutant_named_by_line_still_points_at_its_operator() {
    // `.cargo/mutants.toml` lists equivalent mutants, some by `file:line`: when code moves, an
    // entry must not silently start excusing another line's mutant.
    let conf: toml::Table = toml::from_str(&fs::read_to_string(repo().join(".cargo/mutants.toml")).unwrap()).unwrap();
    let mut checked = 0;
    for re in conf["exclude_re"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()) {
        let Some((path, rest)) = re.split_once(".rs:") else { continue };
        let Some((line, rest)) = rest.split_once(':') else { continue };
        let Ok(line) = line.parse::<usize>() else { continue };
        let op = rest.split_once("replace ").and_then(|(_, r)| r.split_once(" with ")).map(|(op, _)| op).unwrap();
        let op = op.trim_start_matches("match guard ").replace('\\', "");
        let file = repo().join("crates").join(format!("{path}.rs"));
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{re}: {}: {e}", file.display()));
        let at = text.lines().nth(line - 1).unwrap_or_else(|| panic!("{re}: {} has no line {line}", file.display()));
        assert!(at.contains(&op), "{re}: line {line} of {} is `{}`, which has no `{op}`", file.display(), at.trim());
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} line-named entries were found: is the format still `file.rs:LINE:`?");
}

#[test]
fn the_agents_core_never_calls_its_surfaces() {
    // The core (decisions, state, slot I/O, boot, the install itself) is called by the
    // surfaces (the stick, the site profile, the console), never the other way round.
    let core = ["agent.rs", "decide.rs", "state.rs", "slotio.rs", "boot.rs", "bootentry.rs", "device.rs"];
    let surfaces = ["site", "stick", "console"];
    for f in core {
        let text = fs::read_to_string(repo().join("crates/sideload/src").join(f)).unwrap();
        for s in surfaces {
            assert!(
                !text.contains(&format!("crate::{s}")) && !text.contains(&format!("{s}::")),
                "crates/sideload/src/{f} (the agent's core) calls its surface `{s}`"
            );
        }
    }
}

/// All Rust source of a crate's `src/`, with the file stems (modules) it has.
fn crate_source(dir: &std::path::Path) -> (String, BTreeSet<String>) {
    let mut text = String::new();
    let mut modules = BTreeSet::new();
    let mut todo = vec![dir.join("src")];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()) {
            if e.is_dir() {
                modules.insert(e.file_name().unwrap().to_string_lossy().into_owned());
                todo.push(e);
            } else if e.extension().is_some_and(|x| x == "rs") {
                modules.insert(e.file_stem().unwrap().to_string_lossy().into_owned());
                text.push_str(&fs::read_to_string(&e).unwrap());
            }
        }
    }
    (text, modules)
}

/// Whether `name` is defined in `src` (a fn, type, const, static, trait, macro or re-export).
fn defines(src: &str, name: &str) -> bool {
    let kinds = ["fn ", "struct ", "enum ", "const ", "static ", "trait ", "type ", "macro_rules! "];
    kinds.iter().any(|k| {
        src.match_indices(&format!("{k}{name}"))
            .any(|(i, m)| !src[i + m.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
    }) || src.contains(&format!("{name}, ")) && src.contains("pub use")
        || src.contains(&format!("pub use {name}"))
}

/// ARCHITECTURE.md names the types and functions that keep each invariant and where each
/// user's action enters: every `crate::path` it names must still exist, every file it names
/// after "Enforced by" must still be there, and every invariant must say what enforces it.
#[test]
fn architecture_md_names_only_what_exists() {
    let doc = fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap().replace("\n  ", " ");
    let mut crates: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
    for (name, _) in workspace() {
        let dir = if name == "xtask" { repo().join("xtask") } else { repo().join("crates").join(&name) };
        crates.insert(name.replace('-', "_"), dir);
    }
    let mut sources: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    let mut missing = Vec::new();
    let invariants: Vec<&str> =
        doc.split("\n- Invariant: ").skip(1).map(|s| s.split("\n\n").next().unwrap_or(s)).collect();
    assert!(invariants.len() >= 30, "found only {} invariants", invariants.len());
    for inv in &invariants {
        let Some((_, enforced)) = inv.split_once("Enforced by") else {
            missing.push(format!("an invariant says nothing of what enforces it: {}", &inv[..inv.len().min(80)]));
            continue;
        };
        for tok in enforced.split('`').skip(1).step_by(2) {
            let looks_like_path = tok.contains('/') && !tok.contains(' ') && !tok.contains('*');
            if looks_like_path && !repo().join(tok.trim_end_matches('/')).exists() {
                missing.push(format!("file `{tok}`"));
            }
        }
    }
    for tok in doc.split('`').skip(1).step_by(2) {
        let path: Vec<&str> = tok.split("::").collect();
        let Some(dir) = crates.get(path[0]) else { continue };
        if path.len() < 2 || path.iter().any(|p| p.is_empty() || !p.chars().all(|c| c.is_alphanumeric() || c == '_')) {
            continue;
        }
        let (src, modules) = sources.entry(path[0].to_string()).or_insert_with(|| crate_source(dir));
        let last = path[path.len() - 1];
        if !(defines(src, last) || modules.contains(last)) {
            missing.push(format!("`{tok}`"));
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names what is not there (rename it there too):\n{}",
        missing.join("\n")
    );
}
