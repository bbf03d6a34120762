//! The evidence of a built image, judged by tools that share no code with Airlock: spdx-tools,
//! cyclonedx-python-lib and `cryptography` (PyPI, `xtask/tests/judges/evidence.py`), Debian's
//! `dpkg-query` reading the image's own package database, headless Chromium rendering the
//! report; then `cargo xtask verify` and `cargo xtask evidence` from a copy of the directory.
//! Called by the build system test on the build it made (one build, many judges).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{repo, run, xtask};

fn judges_python() -> PathBuf {
    let p = std::env::var_os("AIRLOCK_JUDGES_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/judges/bin/python"));
    assert!(
        p.exists(),
        "the Python judges are not installed ({}): run `cargo xtask test`, which installs them",
        p.display()
    );
    p
}

pub fn check(img: &Path) {
    for f in
        ["sbom.spdx.json", "sbom.cdx.json", "provenance.json", "provenance.intoto.json", "report.html", "report.json"]
    {
        assert!(img.join(f).is_file(), "{f} missing in {}", img.display());
    }
    // Bound to the image: listed with their digests in the signed build manifest.
    let manifest = fs::read_to_string(img.join("build-manifest.toml")).unwrap();
    for f in ["sbom.spdx.json", "sbom.cdx.json", "provenance.json"] {
        assert!(manifest.contains(&format!("[outputs.\"{f}\"]")), "{f} is not in the build manifest");
    }

    // 1. Independent validators and signature checks.
    let o = Command::new(judges_python())
        .arg(repo().join("xtask/tests/judges/evidence.py"))
        .arg(img)
        .arg(repo().join("keys/dev/dev.pub"))
        .arg(repo().join("keys/dev/dev-approval.pub"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), 4, "{out}");

    // 2. The SBOM's packages are exactly what dpkg says the image holds.
    let dpkg = tempfile::tempdir().unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg("zstd -dc \"$1\" | tar -x -C \"$2\" var/lib/dpkg usr/share/airlock/sbom.spdx.json")
        .arg("sh")
        .arg(img.join("rootfs.tar.zst"))
        .arg(dpkg.path())
        .status()
        .unwrap();
    assert!(st.success());
    let q = Command::new("dpkg-query")
        .arg(format!("--admindir={}", dpkg.path().join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${db:Status-Status} ${Package} ${Version} ${Architecture}\\n"])
        .output()
        .unwrap();
    let mut installed: Vec<String> = String::from_utf8_lossy(&q.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("installed ").map(str::to_string))
        .collect();
    installed.sort();
    let spdx: serde_json::Value = serde_json::from_slice(&fs::read(img.join("sbom.spdx.json")).unwrap()).unwrap();
    let mut listed: Vec<String> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-deb-"))
        .map(|p| {
            let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
            let arch = purl.split("arch=").nth(1).unwrap().split('&').next().unwrap();
            format!("{} {} {arch}", p["name"].as_str().unwrap(), p["versionInfo"].as_str().unwrap())
        })
        .collect();
    listed.sort();
    assert!(installed.len() > 100, "{installed:?}");
    assert_eq!(listed, installed, "the SBOM and dpkg-query disagree on the image's packages");
    let crates = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-crate-"))
        .count();
    assert!(crates > 20, "only {crates} crates");
    // The image carries the same packages in its own copy (without the outputs).
    let inside: serde_json::Value =
        serde_json::from_slice(&fs::read(dpkg.path().join("usr/share/airlock/sbom.spdx.json")).unwrap()).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["SPDXID"].as_str().unwrap().to_string())
            .filter(|i| !i.starts_with("SPDXRef-output-"))
            .collect()
    };
    assert_eq!(ids(&inside), ids(&spdx));

    // 3. The report renders in a real browser: the diagram is in the rendered DOM, no console
    //    errors, a screenshot of a real page.
    let shot = tempfile::tempdir().unwrap();
    let png = shot.path().join("report.png");
    let url = format!("file://{}", img.join("report.html").display());
    let o = Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,4000"])
        .arg(format!("--screenshot={}", png.display()))
        .args(["--enable-logging=stderr", "--v=0", &url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let console: Vec<String> =
        String::from_utf8_lossy(&o.stderr).lines().filter(|l| l.contains("CONSOLE")).map(str::to_string).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let bytes = fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) =
        (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()));
    assert_eq!((w, h), (1280, 4000));
    assert!(bytes.len() > 50_000, "an almost empty page ({} bytes)", bytes.len());
    let dom = Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--dump-dom", &url])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<svg") && dom.contains("id=\"zone-diagram\""), "no diagram in the rendered DOM");
    for z in ["parking-field", "management", "plant-dmz", "field-mqtt (tcp 1883)", "SR 5.2", "CR 3.14", "not covered"] {
        assert!(dom.contains(z), "the rendered report lacks {z}");
    }
    let html = fs::read_to_string(img.join("report.html")).unwrap();
    assert!(
        !html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http"),
        "the report fetches nothing"
    );

    // 4. Verified offline with Airlock too, and refused when a subject was altered.
    let (code, out, err) = run(xtask().args(["verify", "--dev"]).arg(img.join("provenance.intoto.json")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("subject root.img") && out.contains("accepted"), "{out}");

    // 5. From a copy of the directory alone (a USB stick): the same report again; an altered
    //    output is named and nothing is reported on it.
    let usb = tempfile::tempdir().unwrap();
    for e in fs::read_dir(img).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(".img") && n != "root.img" || n.ends_with(".qcow2") || n.ends_with(".airlock") {
            continue; // the big ones stay behind: absent files are said to be unchecked
        }
        fs::copy(e.path(), usb.path().join(&n)).unwrap();
    }
    fs::remove_file(usb.path().join("report.html")).unwrap();
    let (code, out, err) = run(xtask().args(["evidence", "--dev"]).arg(usb.path()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("disk.img: not in this directory (not checked)"), "{out}");
    assert!(usb.path().join("report.html").is_file());
    // A reproducibility.json written beside the build is bound by no signed manifest: the
    // report shows it as an unsigned claim, never as the build's result; one that names
    // another build is not shown at all.
    let manifest = fs::read_to_string(usb.path().join("build-manifest.toml")).unwrap();
    let key = manifest.lines().find_map(|l| l.strip_prefix("build_key = ")).unwrap().trim_matches('"').to_string();
    for (build_key, shown) in [(key.as_str(), true), ("sha256:0000", false)] {
        let forged = serde_json::json!({"reproducible": true, "files": 3, "build_key": build_key, "summary": "Certified reproducible by the Ministry of Builds."});
        fs::write(usb.path().join("reproducibility.json"), forged.to_string()).unwrap();
        let (code, out, err) = run(xtask().args(["evidence", "--dev"]).arg(usb.path()));
        assert_eq!(code, 0, "{out}{err}");
        let html = fs::read_to_string(usb.path().join("report.html")).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(usb.path().join("report.json")).unwrap()).unwrap();
        let repro = html.split("<h2>Reproducibility</h2>").nth(1).unwrap().split("<h2>").next().unwrap();
        if shown {
            assert!(
                repro.contains("<strong>Unsigned claim</strong>") && repro.contains("Ministry of Builds"),
                "{repro}"
            );
            assert_eq!(json["reproducibility"]["signed"], false, "{}", json["reproducibility"]);
        } else {
            assert!(!repro.contains("Ministry") && repro.contains("has not been run"), "{repro}");
            assert!(json["reproducibility"].is_null());
        }
    }
    fs::remove_file(usb.path().join("reproducibility.json")).unwrap();
    let mut root = fs::read(usb.path().join("root.img")).unwrap();
    root[4096] ^= 1;
    fs::write(usb.path().join("root.img"), &root).unwrap();
    let (code, out, err) = run(xtask().args(["evidence", "--dev"]).arg(usb.path()));
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("root.img: sha256") && err.contains("does not match the build manifest"), "{err}");
    let (code, out, _) = run(xtask().args(["verify", "--dev"]).arg(usb.path().join("provenance.intoto.json")));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("subject root.img") && out.contains("DIFFERS"), "{out}");
}
