//! The one host-tools list (`crates/image/host-tools.toml`): every program the code runs on the
//! host is in it, CI installs exactly its packages, and `deps` prints them.

use std::collections::BTreeSet;
use std::path::Path;

use crate::repo;

/// Programs the code runs only on the appliance (the image's own packages hold them), never on
/// the build host: the agent's service reloads.
const ON_THE_APPLIANCE: &[&str] = &["systemctl", "chronyc", "networkctl"];

/// Every program name the Rust sources run: `Command::new("X")`, `cmd!(sh, "X …")`, netns's
/// `.exec("X")`, with the file it was seen in.
fn programs_run() -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut files = Vec::new();
    for top in ["xtask", "crates"] {
        walk(&repo().join(top), &mut files);
    }
    let patterns = ["Command::new(\"", "cmd!(sh, \"", ".exec(\""];
    for f in files.into_iter().filter(|f| !f.ends_with("xtask/tests/it/host_tools.rs")) {
        let text = std::fs::read_to_string(&f).unwrap();
        for p in patterns {
            for (i, _) in text.match_indices(p) {
                let rest = &text[i + p.len()..];
                let word: String = rest.chars().take_while(|c| !matches!(c, ' ' | '"')).collect();
                if word.is_empty() || word.starts_with('{') || word.starts_with("/nonexistent") {
                    continue; // a program named by a variable, checked where it is chosen
                }
                found.push((word, f.strip_prefix(repo()).unwrap().display().to_string()));
            }
        }
    }
    found
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_program_the_code_runs_on_the_host_is_in_the_host_tools_list() {
    let listed: BTreeSet<&str> = image::tools::all().iter().map(|t| t.bin.as_str()).collect();
    let mut unlisted = BTreeSet::new();
    for (prog, file) in programs_run() {
        if prog == "cargo" || prog == "rustc" || ON_THE_APPLIANCE.contains(&prog.as_str()) {
            continue; // the toolchain the README names; the appliance's own programs
        }
        if !listed.contains(prog.as_str()) {
            unlisted.insert(format!("{prog} (run in {file})"));
        }
    }
    assert!(
        unlisted.is_empty(),
        "programs run by the code but in no entry of crates/image/host-tools.toml (add each with its Debian package and the commands that need it): {unlisted:?}"
    );
    // The scan sees what it must: the browser the evidence test runs, and the judges' venv.
    let seen: BTreeSet<String> = programs_run().into_iter().map(|(p, _)| p).collect();
    for p in ["chromium", "minisign", "qemu-system-x86_64", "mosquitto", "iperf3"] {
        assert!(seen.contains(p), "the scan no longer finds {p}: its patterns are stale");
    }
}

#[test]
fn every_entry_names_a_package_and_a_use_and_what_needs_each_test_tool_is_listed() {
    let all = image::tools::all();
    assert!(all.len() > 30, "{} entries", all.len());
    for t in all {
        assert!(!t.package.is_empty() && !t.why.is_empty() && !t.used_by.is_empty(), "{t:?}");
        assert!(t.bin.starts_with('/') || !t.bin.contains('/'), "{t:?}");
    }
    // What the tests run on a fresh machine: the browser (the evidence test), the judges'
    // virtualenv, the peers and the firmware are in the `test` list `cargo xtask test` installs.
    let test: BTreeSet<String> = image::tools::used_by(&["test"]).into_iter().map(|t| t.package).collect();
    for p in ["chromium", "python3-venv", "minisign", "mosquitto", "ovmf", "qemu-system-x86", "nftables", "git"] {
        assert!(test.contains(p), "{p} is not in the test list");
    }
    let bench: BTreeSet<String> = image::tools::used_by(&["bench"]).into_iter().map(|t| t.package).collect();
    for p in ["iperf3", "rauc", "xz-utils", "zstd", "openssl"] {
        assert!(bench.contains(p), "{p} is not in the bench list");
    }
}

#[test]
fn ci_installs_exactly_the_packages_of_the_list_and_no_hand_list_of_its_own() {
    let out = std::process::Command::new("bash").arg(repo().join(".ci/host-packages")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ci: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    let parsed: BTreeSet<String> = image::tools::all().iter().map(|t| t.package.clone()).collect();
    assert_eq!(
        ci,
        parsed.into_iter().collect::<Vec<_>>(),
        ".ci/host-packages reads the list otherwise than the parser"
    );

    let run = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let installs: Vec<&str> = run.lines().map(str::trim).filter(|l| l.starts_with("apt-get install")).collect();
    assert_eq!(installs.len(), 1, "{installs:?}");
    assert!(
        installs[0].trim_end().ends_with("\"${pkgs[@]}\""),
        ".ci/run installs something besides the list: {}",
        installs[0]
    );
    assert!(run.contains("mapfile -t pkgs < <(.ci/host-packages)"));
}

#[test]
fn deps_prints_every_tool_of_the_list_with_its_package() {
    // `deps --offline` only checks: on a machine missing a tool it exits 2 naming it, else it
    // prints every tool with its package and path.
    let (code, stdout, stderr) = crate::run(crate::xtask().args(["deps", "--offline"]));
    if code == 0 {
        for t in image::tools::used_by(&["build", "squashfs", "test", "bench", "boot", "repro"]) {
            assert!(
                stdout.lines().any(|l| l.split_whitespace().next() == Some(t.bin.as_str()) && l.contains(&t.package)),
                "deps does not print {} ({}):\n{stdout}",
                t.bin,
                t.package
            );
        }
    } else {
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("--offline installs nothing: run `apt-get install -y"), "{stderr}");
    }
}
