//! SECURITY.md is the project's own threat model: every test it names exists (and is a test),
//! every reason code the agent and the reader can give has a row with the test that triggers
//! it, README.md documents every code, and nothing cites a threat model that is not in the
//! repository.

use std::collections::BTreeSet;
use std::fs;

use crate::repo;

/// The `file.rs::path::to::fn` references of a markdown text.
fn test_refs(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in text.split('`').skip(1).step_by(2) {
        if let Some((file, path)) = part.split_once(".rs::") {
            let name = path.rsplit("::").next().unwrap_or(path).to_string();
            out.push((format!("{file}.rs"), name));
        }
    }
    out
}

#[test]
fn every_test_security_md_names_exists_and_is_a_test() {
    let text = fs::read_to_string(repo().join("SECURITY.md")).expect("SECURITY.md is in the repository");
    let refs = test_refs(&text);
    assert!(refs.len() > 80, "only {} test references", refs.len());
    for (file, name) in refs {
        let src = fs::read_to_string(repo().join(&file))
            .unwrap_or_else(|_| panic!("SECURITY.md names {file}, which does not exist"));
        let at = src
            .find(&format!("fn {name}("))
            .unwrap_or_else(|| panic!("SECURITY.md names {file}::{name}, which does not exist"));
        let before = &src[..at];
        let attr = before.trim_end().rsplit('\n').take(3).collect::<Vec<_>>().join("\n");
        assert!(attr.contains("#[test]"), "{file}::{name} is not a #[test]");
    }
}

#[test]
fn every_reason_code_has_its_test_in_security_md_and_its_line_in_readme() {
    let security = fs::read_to_string(repo().join("SECURITY.md")).unwrap();
    let table =
        security.split("## Reason codes").nth(1).expect("a `## Reason codes` section").split("\n## ").next().unwrap();
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let codes: BTreeSet<&str> = sideload::Reason::all().into_iter().map(|r| r.as_str()).collect();
    assert!(codes.len() >= 27);
    for code in &codes {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| `{code}` |")))
            .unwrap_or_else(|| panic!("SECURITY.md has no reason-code row for `{code}`"));
        assert!(!test_refs(row).is_empty(), "the row of `{code}` names no test");
        assert!(readme.contains(&format!("`{code}`")), "README.md does not document the reason code `{code}`");
    }
    // And no row for a code that does not exist.
    for l in table.lines().filter(|l| l.starts_with("| `")) {
        let code = l.split('`').nth(1).unwrap();
        assert!(codes.contains(code), "SECURITY.md lists `{code}`, which no refusal gives");
    }
}

#[test]
fn readme_and_tests_cite_the_threat_model_that_is_in_the_repository() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.contains("SECURITY.md"), "README.md does not cite SECURITY.md");
    let out = std::process::Command::new("git").args(["ls-files", "-z"]).current_dir(repo()).output().unwrap();
    assert!(out.status.success());
    let missing = ["THREATS", ".md"].concat();
    for f in String::from_utf8_lossy(&out.stdout).split('\0').filter(|f| !f.is_empty()) {
        let Ok(text) = fs::read_to_string(repo().join(f)) else { continue };
        assert!(!text.contains(&missing), "{f} cites {missing}, which is not in the repository (SECURITY.md is)");
    }
}

#[test]
fn every_audit_event_is_documented_in_readme() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let table =
        readme.split("### Audit events").nth(1).expect("an `### Audit events` section").split("\n#").next().unwrap();
    let events: BTreeSet<&str> = sideload::audit::Event::ALL.iter().map(|e| e.as_str()).collect();
    assert!(events.len() >= 18);
    for e in &events {
        assert!(table.lines().any(|l| l.starts_with(&format!("| `{e}` |"))), "README's audit events lack `{e}`");
    }
    for l in table.lines().filter(|l| l.starts_with("| `")) {
        let e = l.split('`').nth(1).unwrap();
        assert!(events.contains(e), "README documents the audit event `{e}`, which the agent never records");
    }
}

#[test]
fn every_payload_kind_is_documented_in_readme_as_the_table_says() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `") && l.matches(" | ").count() == 3).collect();
    for k in bundle::PAYLOAD_KINDS {
        let target = serde_json::to_value(k.target).unwrap();
        let row = rows
            .iter()
            .find(|l| l.starts_with(&format!("| `{}` | `{}` |", k.name, target.as_str().unwrap())))
            .unwrap_or_else(|| panic!("README's payload table lacks `{}`", k.name));
        let needs = row.trim_end().trim_end_matches('|').trim().rsplit(" | ").next().unwrap();
        assert_eq!(needs, if k.appliance_needs { "yes" } else { "no" }, "{row}");
        if let bundle::Placement::Esp(file) = k.placement {
            assert!(row.contains(&format!("ESP/SLOT/{file}")), "{row}");
        }
    }
}
