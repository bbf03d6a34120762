//! Licenses as SPDX expressions. Debian's machine-readable copyright files use Debian's short
//! names (`GPL-2+`, `Expat`, `BSD-3-clause`, `public-domain`); Cargo uses SPDX expressions,
//! sometimes the old `MIT/Apache-2.0` form. Known names become SPDX license ids; anything else
//! becomes a `LicenseRef-…` whose text the document carries, so that validators accept the
//! document and nothing is silently dropped.

use std::collections::BTreeMap;

/// Debian short name → SPDX id.
const DEBIAN: &[(&str, &str)] = &[
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-2.0", "GPL-2.0-only"),
    ("gpl-2.0+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("gpl-3.0", "GPL-3.0-only"),
    ("gpl-3.0+", "GPL-3.0-or-later"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("agpl-3", "AGPL-3.0-only"),
    ("agpl-3+", "AGPL-3.0-or-later"),
    ("gfdl-1.2+", "GFDL-1.2-or-later"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
    ("expat", "MIT"),
    ("mit", "MIT"),
    ("isc", "ISC"),
    ("zlib", "Zlib"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("apache-2", "Apache-2.0"),
    ("apache-2.0", "Apache-2.0"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("epl-1.0", "EPL-1.0"),
    ("epl-2.0", "EPL-2.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("cc0", "CC0-1.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-2.0", "Artistic-2.0"),
    ("unlicense", "Unlicense"),
    ("0bsd", "0BSD"),
    ("mit-0", "MIT-0"),
    ("openssl", "OpenSSL"),
    ("curl", "curl"),
    ("x11", "X11"),
    ("fsfap", "FSFAP"),
    ("fsful", "FSFUL"),
    ("fsfullr", "FSFULLR"),
    ("bzip2-1.0.6", "bzip2-1.0.6"),
    ("psf-2", "PSF-2.0"),
    ("python-2.0", "Python-2.0"),
    ("unicode-dfs-2016", "Unicode-DFS-2016"),
    ("unicode-3.0", "Unicode-3.0"),
    ("bsl-1.0", "BSL-1.0"),
    ("cdla-permissive-2.0", "CDLA-Permissive-2.0"),
];

/// SPDX exception ids used after `WITH`.
const EXCEPTIONS: &[&str] = &["LLVM-exception", "Classpath-exception-2.0", "GCC-exception-3.1", "OpenSSL-exception"];

/// An SPDX expression for a license text, and the LicenseRefs it needed (id → original name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expr {
    pub expression: String,
    pub refs: BTreeMap<String, String>,
}

fn license_ref(name: &str) -> String {
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    let clean = clean.trim_matches('-');
    format!("LicenseRef-{}", if clean.is_empty() { "unnamed" } else { clean })
}

fn known(token: &str) -> Option<&'static str> {
    let t = token.to_ascii_lowercase();
    DEBIAN.iter().find(|(d, _)| *d == t).map(|(_, s)| *s)
}

/// Turns a Debian or Cargo license field into an SPDX expression. A field with grammar this
/// does not follow (parentheses, free text) becomes one LicenseRef as a whole.
pub fn expression(field: &str) -> Expr {
    let field = field.trim();
    let mut out = Expr::default();
    if field.is_empty() {
        return out;
    }
    let words: Vec<String> = field
        .replace('/', " or ")
        .split_whitespace()
        .map(|w| w.trim_end_matches(',').to_string())
        .filter(|w| !w.is_empty())
        .collect();
    let mut parts = Vec::new();
    let mut expect_license = true;
    let mut after_with = false;
    for w in &words {
        let lw = w.to_ascii_lowercase();
        if expect_license {
            if after_with {
                match EXCEPTIONS.iter().find(|e| e.eq_ignore_ascii_case(w)) {
                    Some(e) => parts.push(e.to_string()),
                    None => return whole(field),
                }
                after_with = false;
            } else if let Some(id) = known(w) {
                parts.push(id.to_string());
            } else if w.chars().all(|c| c.is_ascii_alphanumeric() || ".+-".contains(c)) {
                let r = license_ref(w);
                out.refs.insert(r.clone(), w.clone());
                parts.push(r);
            } else {
                return whole(field);
            }
            expect_license = false;
        } else {
            match lw.as_str() {
                "or" => parts.push("OR".into()),
                "and" => parts.push("AND".into()),
                "with" => {
                    parts.push("WITH".into());
                    after_with = true;
                }
                _ => return whole(field),
            }
            expect_license = true;
        }
    }
    if expect_license {
        return whole(field);
    }
    out.expression = parts.join(" ");
    out
}

fn whole(field: &str) -> Expr {
    let r = license_ref(&field.chars().take(60).collect::<String>());
    let mut refs = BTreeMap::new();
    refs.insert(r.clone(), field.to_string());
    Expr { expression: r, refs }
}

/// The `License:` of the `Files: *` paragraph of a machine-readable Debian copyright file
/// (DEP-5); `None` for a free-form file.
pub fn debian_copyright(text: &str) -> Option<String> {
    if !text.starts_with("Format:") || !text.lines().next().is_some_and(|l| l.contains("copyright-format")) {
        return None;
    }
    for para in text.split("\n\n") {
        let mut files_star = false;
        let mut license = None;
        for l in para.lines() {
            if let Some(v) = l.strip_prefix("Files:") {
                files_star = v.split_whitespace().next() == Some("*");
            }
            if let Some(v) = l.strip_prefix("License:") {
                license = Some(v.trim().to_string());
            }
        }
        if files_star {
            return license.filter(|l| !l.is_empty());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_and_cargo_names_become_spdx_expressions() {
        assert_eq!(expression("GPL-2+").expression, "GPL-2.0-or-later");
        assert_eq!(expression("GPL-2+ or Artistic").expression, "GPL-2.0-or-later OR Artistic-1.0-Perl");
        assert_eq!(expression("MIT/Apache-2.0").expression, "MIT OR Apache-2.0");
        assert_eq!(expression("Apache-2.0 WITH LLVM-exception").expression, "Apache-2.0 WITH LLVM-exception");
        let e = expression("EPL-2.0 or EDL-1.0");
        assert_eq!(e.expression, "EPL-2.0 OR LicenseRef-EDL-1.0");
        assert_eq!(e.refs.get("LicenseRef-EDL-1.0").map(String::as_str), Some("EDL-1.0"));
        let e = expression("GPL-2+ with OpenSSL exception");
        assert!(e.expression.starts_with("LicenseRef-GPL-2--with-OpenSSL-exception"), "{e:?}");
        assert_eq!(expression("public-domain").expression, "LicenseRef-public-domain");
        assert_eq!(expression("").expression, "");
        assert!(expression("(MIT)").expression.starts_with("LicenseRef-"));
    }

    #[test]
    fn the_license_of_files_star_is_read_from_a_dep5_file() {
        let t = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\nFiles: debian/*\nLicense: GPL-2+\n\nFiles: *\nCopyright: 2020 A\nLicense: BSD-3-clause\n\nLicense: BSD-3-clause\n text\n";
        assert_eq!(debian_copyright(t).as_deref(), Some("BSD-3-clause"));
        assert_eq!(debian_copyright("This package was debianized by …"), None);
    }
}
