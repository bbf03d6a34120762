//! Recipe and lock errors: each with its exact message and file:line:col.

use std::fs;
use std::path::{Path, PathBuf};

use recipe::{Channel, Error, Lock, Recipe};

const GOOD: &str = r#"overlays = ["overlays/base"]

[image]
name = "pc"
version = "1.0.0"
security_version = 3
product = "airlock.test"
channel = "dev"
source_date_epoch = 1700000000

[base]
suite = "bookworm"
packages = ["systemd", "nftables"]

[stack]
crates = ["parking-controller"]

[services]
enable = ["parking-controller.service"]
"#;

/// A throwaway repository with one overlay and one stack crate.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("recipes")).unwrap();
        fs::create_dir_all(dir.path().join("overlays/base/etc")).unwrap();
        fs::create_dir_all(dir.path().join("crates/parking-controller")).unwrap();
        fs::write(dir.path().join("crates/parking-controller/Cargo.toml"), "[package]\n").unwrap();
        Repo { dir }
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.root().join("recipes").join(name);
        fs::write(&p, text).unwrap();
        p
    }
    fn load(&self, name: &str, text: &str) -> Result<Recipe, Error> {
        let p = self.write(name, text);
        Recipe::load(&p, self.root())
    }
    /// The error's text with the temp path replaced by `recipes/NAME`.
    fn err(&self, name: &str, text: &str) -> String {
        let e = self.load(name, text).unwrap_err().to_string();
        e.replace(&format!("{}/", self.root().display()), "")
    }
}

#[test]
fn the_good_recipe_loads_with_defaults() {
    let repo = Repo::new();
    let r = repo.load("pc.toml", GOOD).unwrap();
    assert_eq!(r.name, "pc");
    assert_eq!(r.security_version, 3);
    assert_eq!(r.channel, Channel::Dev);
    assert_eq!(r.hostname, "pc");
    assert_eq!(r.base.packages, vec!["nftables", "systemd"], "sorted");
    assert_eq!(r.base.variant, "minbase");
    assert_eq!(r.output.compression_level, 3);
    assert_eq!(r.overlays, vec![PathBuf::from("overlays/base")]);
}

#[test]
fn an_unknown_field_is_named_with_its_position_and_a_suggestion() {
    let repo = Repo::new();
    let text = GOOD.replace("suite = \"bookworm\"", "suite = \"bookworm\"\npackagse = []");
    assert_eq!(
        repo.err("pc.toml", &text),
        "recipes/pc.toml:13:1: unknown field `packagse`, expected one of `suite`, `architecture`, `variant`, `packages` (did you mean `packages`?)"
    );
}

#[test]
fn every_tables_own_fields_are_suggested_even_new_ones() {
    // The hint comes from the table's own field list: a zone's `dhcp` and `addresses` (added
    // after the hand-kept list was written) are suggested, and a field of another table is not.
    let repo = Repo::new();
    let zone = "\n[[zone]]\nname = \"mgmt\"\ndescription = \"m\"\nsecurity_level = \"SL2\"\ninterfaces = [\"eth0\"]\n";
    let e = repo.err("pc.toml", &format!("{GOOD}{zone}dhpc = \"ipv4\"\n"));
    assert!(e.ends_with("(did you mean `dhcp`?)"), "{e}");
    let e = repo.err("pc.toml", &format!("{GOOD}{zone}adresses = []\n"));
    assert!(e.ends_with("(did you mean `addresses`?)"), "{e}");
    let e = repo.err("pc.toml", &format!("{GOOD}{zone}suit = \"bookworm\"\n"));
    assert!(e.ends_with("remove it or check the spelling"), "a [base] field is no hint inside [[zone]]: {e}");
}

#[test]
fn a_duplicate_key_is_named_with_its_position() {
    let repo = Repo::new();
    let text = GOOD.replace("version = \"1.0.0\"", "version = \"1.0.0\"\nversion = \"1.0.1\"");
    assert_eq!(repo.err("pc.toml", &text), "recipes/pc.toml:6:1: duplicate key");
}

#[test]
fn a_wrong_type_is_named_with_its_position() {
    let repo = Repo::new();
    let text = GOOD.replace("security_version = 3", "security_version = \"3\"");
    assert_eq!(repo.err("pc.toml", &text), "recipes/pc.toml:6:20: invalid type: string \"3\", expected i64");
}

#[test]
fn an_out_of_range_number_is_refused() {
    let repo = Repo::new();
    let text = GOOD.replace("security_version = 3", "security_version = -1");
    assert_eq!(repo.err("pc.toml", &text), "recipes/pc.toml:6:20: image.security_version must be 0 or more");
    let text = format!("{GOOD}\n[output]\ncompression_level = 40\n");
    assert_eq!(
        repo.err("pc.toml", &text),
        "recipes/pc.toml:22:21: output.compression_level = 40 is out of range: use 1 to 19"
    );
}

#[test]
fn an_overlay_path_escaping_the_repository_is_refused() {
    let repo = Repo::new();
    for (path, col) in [("../etc", 13), ("/etc", 13), ("overlays/../../x", 13)] {
        let text = GOOD.replace("\"overlays/base\"", &format!("\"{path}\""));
        assert_eq!(
            repo.err("pc.toml", &text),
            format!(
                "recipes/pc.toml:1:{col}: overlay path `{path}` must be relative to the repository, without `..` or a leading `/`"
            )
        );
    }
}

#[test]
fn an_overlay_symlinked_out_of_the_repository_is_refused() {
    let repo = Repo::new();
    std::os::unix::fs::symlink("/etc", repo.root().join("overlays/host")).unwrap();
    let text = GOOD.replace("\"overlays/base\"", "\"overlays/host\"");
    let e = repo.err("pc.toml", &text);
    assert!(e.starts_with("recipes/pc.toml:1:13: overlay: "), "{e}");
    assert!(
        e.ends_with("overlays/host resolves to /etc, outside the repository ")
            || e.contains("resolves to /etc, outside the repository"),
        "{e}"
    );
}

#[test]
fn shell_metacharacters_in_a_package_name_are_refused() {
    let repo = Repo::new();
    let text = GOOD.replace("\"nftables\"", "\"nftables; rm -rf /\"");
    assert_eq!(
        repo.err("pc.toml", &text),
        "recipes/pc.toml:13:24: package name `nftables; rm -rf /` has the character ';', which Debian package names never contain (allowed: a-z 0-9 + - .)"
    );
    let text = GOOD.replace("\"nftables\"", "\"nft\\nables\"");
    assert_eq!(
        repo.err("pc.toml", &text),
        "recipes/pc.toml:13:24: package name `nft\\nables` has the character '\\n', which Debian package names never contain (allowed: a-z 0-9 + - .)"
    );
    let text = GOOD.replace("\"nftables\"", "\"$(reboot)\"");
    assert!(repo.err("pc.toml", &text).contains("has the character '$'"));
}

#[test]
fn shell_metacharacters_in_a_service_name_are_refused() {
    let repo = Repo::new();
    let text = GOOD.replace("\"parking-controller.service\"", "\"x.service`id`\"");
    assert_eq!(
        repo.err("pc.toml", &text),
        "recipes/pc.toml:19:11: service name `x.service`id`` has the character '`', which is not allowed (allowed: A-Z a-z 0-9 @ _ . : -)"
    );
}

#[test]
fn a_release_recipe_cannot_enable_a_debug_shell() {
    let repo = Repo::new();
    let text = GOOD.replace("channel = \"dev\"", "channel = \"release\"").replace(
        "enable = [\"parking-controller.service\"]",
        "enable = [\"parking-controller.service\", \"serial-getty@ttyS0.service\"]",
    );
    assert_eq!(
        repo.err("pc.toml", &text),
        "recipes/pc.toml:19:41: service `serial-getty@ttyS0.service` opens a debug shell or password login: a release image must not enable it"
    );
}

#[test]
fn extends_merges_field_by_field_and_errors_point_at_the_right_file() {
    let repo = Repo::new();
    repo.write("base.toml", GOOD);
    let child = "extends = \"base.toml\"\n\n[image]\nversion = \"2.0.0\"\n";
    let r = repo.load("child.toml", child).unwrap();
    assert_eq!((r.name.as_str(), r.version.as_str()), ("pc", "2.0.0"));
    assert_eq!(r.files.len(), 2);
    // A bad value inherited from the base is reported in the base file.
    repo.write("base.toml", &GOOD.replace("\"nftables\"", "\"bad name\""));
    assert!(repo.err("child.toml", child).starts_with("recipes/base.toml:13:24: package name `bad name`"));
    // Loops and escapes are refused.
    assert_eq!(
        repo.err("loop.toml", "extends = \"loop.toml\"\n"),
        "recipes/loop.toml:1:11: `extends` loops back to recipes/loop.toml"
    );
    assert_eq!(
        repo.err("esc.toml", "extends = \"../x.toml\"\n"),
        "recipes/esc.toml:1:11: `extends = \"../x.toml\"` must be a relative path without `..`"
    );
}

#[test]
fn a_missing_required_field_says_where_to_set_it() {
    let repo = Repo::new();
    let text = GOOD.replace("product = \"airlock.test\"\n", "");
    assert_eq!(
        repo.err("pc.toml", &text),
        "recipes/pc.toml: missing field `image.product`: set it in this recipe or in the recipe it extends"
    );
}

#[test]
fn a_stack_crate_must_be_in_the_workspace() {
    let repo = Repo::new();
    let text = GOOD.replace("crates = [\"parking-controller\"]", "crates = [\"nope\"]");
    assert_eq!(
        repo.err("pc.toml", &text),
        "recipes/pc.toml:16:11: stack crate `nope` is not in this workspace (no crates/nope/Cargo.toml)"
    );
}

#[test]
fn an_artifact_without_a_proper_sha256_is_refused() {
    let repo = Repo::new();
    fs::create_dir_all(repo.root().join("vendor")).unwrap();
    fs::write(repo.root().join("vendor/map.json"), "{}").unwrap();
    let art = |sha: &str| {
        format!(
            "{GOOD}\n[[artifacts]]\nname = \"map\"\nsource = \"vendor/map.json\"\nsha256 = \"{sha}\"\ndest = \"/usr/share/map.json\"\n"
        )
    };
    let line = art("x").lines().position(|l| l.starts_with("sha256")).unwrap() + 1;
    for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64)] {
        assert_eq!(
            repo.err("pc.toml", &art(bad)),
            format!("recipes/pc.toml:{line}:10: artifact `map`: sha256 must be 64 lowercase hex digits")
        );
    }
    let missing = format!(
        "{GOOD}\n[[artifacts]]\nname = \"map\"\nsource = \"vendor/map.json\"\ndest = \"/usr/share/map.json\"\n"
    );
    assert!(repo.err("pc.toml", &missing).contains("missing field `sha256`"));
    repo.load("pc.toml", &art(&"a".repeat(64))).unwrap();
}

#[test]
fn a_version_outside_the_one_version_order_is_refused() {
    let repo = Repo::new();
    let text = GOOD.replace("version = \"1.0.0\"", "version = \"1.0\"");
    let e = repo.err("pc.toml", &text);
    assert!(e.starts_with("recipes/pc.toml:5:11: image.version `1.0` is not MAJOR.MINOR.PATCH"), "{e}");
    repo.load("pc.toml", &GOOD.replace("version = \"1.0.0\"", "version = \"1.1.0~rc1\"")).unwrap();
}

fn lock_for(r: &Recipe) -> Lock {
    Lock {
        format: 1,
        recipe_digest: r.base.digest(),
        suite: "bookworm".into(),
        architecture: "amd64".into(),
        tools: Default::default(),
        requested: r.base.packages.clone(),
        packages: vec![recipe::LockedPackage {
            name: "systemd".into(),
            version: "252.38-1~deb12u1".into(),
            architecture: "amd64".into(),
            sha256: "a".repeat(64),
            size: 1,
            priority: "important".into(),
            section: "admin".into(),
        }],
    }
}

#[test]
fn a_lock_older_than_its_recipe_is_detected_and_named() {
    let repo = Repo::new();
    let r = repo.load("pc.toml", GOOD).unwrap();
    let lock_path = repo.root().join("recipes/pc.lock");
    fs::write(&lock_path, lock_for(&r).to_toml()).unwrap();
    Lock::load_for(&r, &lock_path).unwrap();
    // A misspelt package offline: the message names what changed, and commands to paste.
    let newer = repo.load("pc.toml", &GOOD.replace("\"nftables\"", "\"nftabels\", \"chrony\"")).unwrap();
    let e = Lock::load_for(&newer, &lock_path).unwrap_err();
    assert!(matches!(e, Error::StaleLock { .. }));
    let msg = e.to_string().replace(&format!("{}/", repo.root().display()), "");
    assert_eq!(
        msg,
        "recipes/pc.lock: lock is older than its recipe recipes/pc.toml: packages added since the lock: `chrony`, `nftabels`; removed: `nftables`. Resolve it again with `cargo xtask lock recipes/pc.toml` (online); on an offline builder, run that and `cargo xtask fetch recipes/pc.toml` then `cargo xtask store export DIR` on a connected machine, and `cargo xtask store import DIR` here"
    );
    // A lock made before locks recorded their request still says that it is stale.
    let mut old = lock_for(&r);
    old.requested.clear();
    fs::write(&lock_path, old.to_toml()).unwrap();
    let msg = Lock::load_for(&newer, &lock_path).unwrap_err().to_string();
    assert!(msg.contains("its [base] now digests to sha256:"), "{msg}");
}

#[test]
fn a_lock_with_a_hostile_version_is_refused() {
    let repo = Repo::new();
    let r = repo.load("pc.toml", GOOD).unwrap();
    let mut lock = lock_for(&r);
    lock.packages[0].version = "1;reboot".into();
    let p = repo.root().join("recipes/pc.lock");
    fs::write(&p, lock.to_toml()).unwrap();
    let msg = Lock::load(&p).unwrap_err().to_string().replace(&format!("{}/", repo.root().display()), "");
    assert_eq!(msg, "recipes/pc.lock:10:1: package `systemd`: version has characters Debian versions never contain");
}

#[test]
fn the_committed_default_recipe_and_lock_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let r = Recipe::load(&root.join("recipes/parking-controller.toml"), &root).unwrap();
    let lock = Lock::load_for(&r, &r.default_lock_path()).unwrap();
    assert!(lock.packages.iter().any(|p| p.name == "linux-image-amd64"));
    assert!(lock.packages.iter().any(|p| p.name == "systemd"));
}

const ZONES: &str = r#"
[[zone]]
name = "field"
description = "Field devices"
security_level = "SL2"
ranges = ["10.20.0.0/24"]

[[zone]]
name = "mgmt"
description = "Management"
security_level = "SL3"
ranges = ["169.254.0.0/16"]
interfaces = ["eth1"]

[[conduit]]
name = "field-mqtt"
from = "field"
to = "appliance"
protocol = "tcp"
ports = [1883]
purpose = "Sensors publish"
"#;

#[test]
fn zones_and_conduits_load_into_the_model() {
    let repo = Repo::new();
    let r = repo.load("pc.toml", &format!("{GOOD}{ZONES}")).unwrap();
    assert_eq!(r.zones.zones.len(), 2);
    assert_eq!(r.zones.conduits[0].ports, vec![zones::Port::One(1883)]);
    assert_eq!(r.zones.zones[1].ranges[0].to_string(), "169.254.0.0/16");
    // A recipe without zones has an empty model (and an image that only talks to itself).
    assert!(repo.load("pc.toml", GOOD).unwrap().zones.zones.is_empty());
}

#[test]
fn a_zone_problem_points_at_the_field_it_is_about() {
    let repo = Repo::new();
    let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let check = |replace: (&str, &str), needle: &str, col: usize, message: &str| {
        let text = format!("{GOOD}{}", ZONES.replacen(replace.0, replace.1, 1));
        let line = line_of(&text, needle);
        assert_eq!(repo.err("pc.toml", &text), format!("recipes/pc.toml:{line}:{col}: {message}"), "{replace:?}");
    };
    check(
        ("from = \"field\"", "from = \"feild\""),
        "from = \"feild\"",
        8,
        "conduit `field-mqtt`: from = `feild` is not a declared zone (zones: appliance, field, mgmt)",
    );
    check(
        ("\"169.254.0.0/16\"", "\"10.20.0.64/26\""),
        "10.20.0.64/26",
        11,
        "range 10.20.0.64/26 of zone `mgmt` overlaps range 10.20.0.0/24 of zone `field`: a host is in one zone",
    );
    check(
        ("name = \"field\"", "name = \"field\\\"; accept\""),
        "accept",
        8,
        "zone name `field\\\"; accept` must be a-z 0-9 -, starting with a letter, at most 31 characters (it goes into the firewall's rules)\n  also recipes/pc.toml:36:8: conduit `field-mqtt`: from = `field` is not a declared zone (zones: appliance, field\\\"; accept, mgmt)",
    );
}
