//! The recipe: what a release engineer writes. Parsed per file, merged along `extends`
//! field by field (the nearest file wins), then validated into [`Recipe`].

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::error::{Error, Location};

/// Longest `extends` chain accepted; deeper chains are almost surely a mistake.
const MAX_EXTENDS: usize = 8;

pub use product::Channel;

/// The read-only slot filesystem written as `root.img`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotFs {
    Squashfs,
    Erofs,
}

impl SlotFs {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotFs::Squashfs => "squashfs",
            SlotFs::Erofs => "erofs",
        }
    }
}

/// A validated recipe, with `extends` resolved. Paths are relative to `repo_root`.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The recipe file named on the command line.
    pub path: PathBuf,
    /// The repository root every recipe path is relative to.
    pub repo_root: PathBuf,
    /// The files read, leaf first, then what it extends.
    pub files: Vec<PathBuf>,
    pub name: String,
    pub version: String,
    pub security_version: u64,
    pub product: String,
    pub channel: Channel,
    pub source_date_epoch: u64,
    pub hostname: String,
    pub base: Base,
    pub stack: Vec<String>,
    pub artifacts: Vec<Artifact>,
    pub overlays: Vec<PathBuf>,
    pub services: Vec<String>,
    pub output: Output,
    pub disk: Disk,
    /// The IEC 62443 zones and conduits (`[[zone]]`, `[[conduit]]`), checked; the nearest
    /// file that declares zones declares all of them (and likewise conduits).
    pub zones: zones::Model,
    /// sha256 over the bytes of every file read, in order.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub suite: String,
    pub architecture: String,
    pub variant: String,
    /// Sorted, no duplicates.
    pub packages: Vec<String>,
}

impl Base {
    /// Digest of what decides the package closure: a lock made from another one is stale.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("suite={}\narchitecture={}\nvariant={}\n", self.suite, self.architecture, self.variant));
        for p in &self.packages {
            h.update(format!("package={p}\n"));
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

/// A pinned vendor file placed into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    /// Repository-relative file the store is filled from (`fetch`).
    pub source: PathBuf,
    pub sha256: String,
    /// Absolute path inside the image.
    pub dest: String,
    pub mode: u32,
}

/// The appliance disk's partition sizes, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    /// The EFI system partition: systemd-boot, and each slot's kernel and initrd.
    pub esp_mib: u64,
    /// Each of the two root slots.
    pub slot_mib: u64,
    /// The persistent data partition (`/var`).
    pub data_mib: u64,
}

impl Default for Disk {
    fn default() -> Disk {
        Disk { esp_mib: 128, slot_mib: 512, data_mib: 256 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// zstd level of `rootfs.tar.zst`.
    pub compression_level: i32,
    pub slot_fs: SlotFs,
    /// Compression level of the slot filesystem (zstd for squashfs, lz4hc for erofs).
    pub slot_compression_level: i32,
}

// ---- raw, per-file form -------------------------------------------------------------------

type S<T> = Option<Spanned<T>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    extends: S<String>,
    image: Option<RawImage>,
    base: Option<RawBase>,
    stack: Option<RawStack>,
    artifacts: S<Vec<Spanned<RawArtifact>>>,
    overlays: S<Vec<Spanned<String>>>,
    services: Option<RawServices>,
    output: Option<RawOutput>,
    disk: Option<RawDisk>,
    zone: S<Vec<Spanned<crate::zones::RawZone>>>,
    conduit: S<Vec<Spanned<crate::zones::RawConduit>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawImage {
    name: S<String>,
    version: S<String>,
    security_version: S<i64>,
    product: S<String>,
    channel: S<String>,
    source_date_epoch: S<i64>,
    hostname: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBase {
    suite: S<String>,
    architecture: S<String>,
    variant: S<String>,
    packages: S<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStack {
    crates: S<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArtifact {
    name: Spanned<String>,
    source: Spanned<String>,
    sha256: Spanned<String>,
    dest: Spanned<String>,
    mode: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServices {
    enable: S<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    esp_mib: S<i64>,
    slot_mib: S<i64>,
    data_mib: S<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    compression_level: S<i64>,
    slot_fs: S<String>,
    slot_compression_level: S<i64>,
}

struct Layer {
    path: PathBuf,
    src: String,
    raw: RawFile,
}

struct Ctx<'a> {
    layers: &'a [Layer],
}

impl Ctx<'_> {
    fn at(&self, layer: usize, span: Range<usize>) -> Location {
        let l = &self.layers[layer];
        Location::from_offset(&l.path, &l.src, span.start)
    }

    fn invalid(&self, layer: usize, span: Range<usize>, message: impl Into<String>) -> Error {
        Error::Invalid { at: self.at(layer, span), message: message.into() }
    }

    /// The nearest layer that sets a field.
    fn pick<'s, T>(&'s self, get: impl Fn(&'s RawFile) -> Option<&'s Spanned<T>>) -> Option<(&'s Spanned<T>, usize)> {
        self.layers.iter().enumerate().find_map(|(i, l)| get(&l.raw).map(|v| (v, i)))
    }

    fn require<'s, T>(
        &'s self,
        field: &'static str,
        get: impl Fn(&'s RawFile) -> Option<&'s Spanned<T>>,
    ) -> Result<(&'s Spanned<T>, usize), Error> {
        self.pick(get).ok_or_else(|| Error::Missing { path: self.layers[0].path.clone(), field })
    }
}

impl Recipe {
    /// Reads `path` and what it extends; every relative path is resolved against `repo_root`.
    pub fn load(path: &Path, repo_root: &Path) -> Result<Recipe, Error> {
        let mut layers: Vec<Layer> = Vec::new();
        let mut next = Some(path.to_path_buf());
        while let Some(p) = next.take() {
            let src = std::fs::read_to_string(&p).map_err(|source| Error::Io { path: p.clone(), source })?;
            let raw = parse_file(&p, &src)?;
            if let Some(ext) = &raw.extends {
                let target = resolve_extends(&p, &src, ext, repo_root)?;
                if layers.iter().any(|l| l.path == target) || target == p {
                    let at = Location::from_offset(&p, &src, ext.span().start);
                    return Err(Error::Invalid {
                        at,
                        message: format!("`extends` loops back to {}", target.display()),
                    });
                }
                if layers.len() + 1 >= MAX_EXTENDS {
                    let at = Location::from_offset(&p, &src, ext.span().start);
                    return Err(Error::Invalid {
                        at,
                        message: format!("`extends` chain deeper than {MAX_EXTENDS} files"),
                    });
                }
                next = Some(target);
            }
            layers.push(Layer { path: p, src, raw });
        }
        let mut h = Sha256::new();
        for l in &layers {
            h.update(l.src.len().to_le_bytes());
            h.update(l.src.as_bytes());
        }
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        validate(&Ctx { layers: &layers }, path, repo_root, digest)
    }

    /// The lock file that belongs to this recipe: `NAME.lock` beside `NAME.toml`.
    pub fn default_lock_path(&self) -> PathBuf {
        self.path.with_extension("lock")
    }

    /// Where a lock for this recipe may be: its own, then those of the recipes it extends
    /// (a recipe with the same `[base]` as its parent reuses the parent's lock).
    pub fn lock_candidates(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.with_extension("lock")).collect()
    }
}

fn parse_file(path: &Path, src: &str) -> Result<RawFile, Error> {
    toml::from_str::<RawFile>(src).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let mut message = e.message().trim().to_string();
        if let Some(hint) = unknown_field_hint(&message) {
            message = format!("{message} (did you mean `{hint}`?)");
        } else if message.starts_with("unknown field") {
            message.push_str("; remove it or check the spelling");
        }
        Error::Parse { at: Location::from_offset(path, src, offset), message }
    })
}

/// The nearest valid field for a misspelt one, taken from serde's own "expected one of" list,
/// so the hint always names a field of the very table the typo sits in.
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected ")?.1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|f| (strsim::levenshtein(name, f), f))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, f)| f.to_string())
}

fn resolve_extends(path: &Path, src: &str, ext: &Spanned<String>, repo_root: &Path) -> Result<PathBuf, Error> {
    let at = || Location::from_offset(path, src, ext.span().start);
    let rel = Path::new(ext.get_ref());
    if !is_plain_relative(rel) {
        return Err(Error::Invalid {
            at: at(),
            message: format!("`extends = \"{}\"` must be a relative path without `..`", ext.get_ref().escape_debug()),
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let target = dir.join(rel);
    contained(&target, repo_root).map_err(|m| Error::Invalid { at: at(), message: format!("`extends`: {m}") })?;
    Ok(target)
}

/// True for a non-empty relative path of normal components only (no `..`, `.`, root or prefix).
pub fn is_plain_relative(p: &Path) -> bool {
    !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Checks that `p`, symlinks resolved, exists and lies inside `root`.
fn contained(p: &Path, root: &Path) -> Result<(), String> {
    let real = p.canonicalize().map_err(|e| format!("{}: {e}", p.display()))?;
    let root = root.canonicalize().map_err(|e| format!("{}: {e}", root.display()))?;
    if real.starts_with(&root) {
        Ok(())
    } else {
        Err(format!("{} resolves to {}, outside the repository {}", p.display(), real.display(), root.display()))
    }
}

fn check_chars(s: &str, ok: impl Fn(char) -> bool) -> Result<(), char> {
    match s.chars().find(|&c| !ok(c)) {
        Some(c) => Err(c),
        None => Ok(()),
    }
}

fn describe(c: char) -> String {
    format!("{c:?}")
}

/// Checks a string field against a character set and a length; `what` names the field.
fn plain(
    ctx: &Ctx,
    layer: usize,
    v: &Spanned<String>,
    what: &str,
    allowed: &str,
    max: usize,
    ok: impl Fn(char) -> bool,
) -> Result<String, Error> {
    let s = v.get_ref();
    if s.is_empty() || s.len() > max {
        return Err(ctx.invalid(layer, v.span(), format!("{what} must be 1 to {max} characters long")));
    }
    check_chars(s, ok).map_err(|c| {
        ctx.invalid(
            layer,
            v.span(),
            format!(
                "{what} `{}` has the character {}, which is not allowed (allowed: {allowed})",
                s.escape_debug(),
                describe(c)
            ),
        )
    })?;
    Ok(s.clone())
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Validates one Debian package name (Debian policy 5.6.1).
pub fn valid_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.len() <= 128
        && s.starts_with(lower_alnum)
        && s.chars().all(|c| lower_alnum(c) || matches!(c, '+' | '-' | '.'))
}

/// Services a release image must not enable: they open a shell without the owner's key.
const DEBUG_SERVICES: &[&str] =
    &["debug-shell.service", "serial-getty@", "console-getty.service", "ssh.service", "sshd.service", "telnet"];

/// What `[image]` says, checked.
struct ImageTable {
    name: String,
    version: String,
    security_version: u64,
    product: String,
    channel: Channel,
    source_date_epoch: u64,
    hostname: String,
}

fn validate(ctx: &Ctx, path: &Path, repo_root: &Path, digest: String) -> Result<Recipe, Error> {
    let ImageTable { name, version, security_version, product, channel, source_date_epoch, hostname } =
        image_table(ctx)?;
    Ok(Recipe {
        path: path.to_path_buf(),
        repo_root: repo_root.to_path_buf(),
        files: ctx.layers.iter().map(|l| l.path.clone()).collect(),
        name,
        version,
        security_version,
        product,
        channel,
        source_date_epoch,
        hostname,
        base: base_table(ctx)?,
        stack: stack_table(ctx, repo_root)?,
        artifacts: artifacts_table(ctx, repo_root)?,
        overlays: overlays_list(ctx, repo_root)?,
        services: services_table(ctx, channel)?,
        output: output_table(ctx)?,
        disk: disk_table(ctx)?,
        zones: zones_tables(ctx)?,
        digest,
    })
}

/// A required string field, cloned out of the layer that sets it.
fn str_field(
    ctx: &Ctx,
    field: &'static str,
    get: impl Fn(&RawFile) -> Option<&Spanned<String>>,
) -> Result<(Spanned<String>, usize), Error> {
    let (v, l) = ctx.require(field, get)?;
    Ok((v.clone(), l))
}

/// `[image]`: names, versions, channel, clock.
fn image_table(ctx: &Ctx) -> Result<ImageTable, Error> {
    let (v, l) = str_field(ctx, "image.name", |r| r.image.as_ref()?.name.as_ref())?;
    let name = plain(ctx, l, &v, "image.name", "a-z 0-9 -", 63, |c| lower_alnum(c) || c == '-')?;
    let (v, l) = str_field(ctx, "image.version", |r| r.image.as_ref()?.version.as_ref())?;
    let version = plain(ctx, l, &v, "image.version", "A-Z a-z 0-9 . + ~ -", 64, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-')
    })?;
    // One version order for the builder and the agent (product::Version).
    product::Version::parse(&version).map_err(|e| ctx.invalid(l, v.span(), format!("image.{e}")))?;
    let (v, l) = ctx.require("image.security_version", |r| r.image.as_ref()?.security_version.as_ref())?;
    let security_version = u64::try_from(*v.get_ref())
        .map_err(|_| ctx.invalid(l, v.span(), "image.security_version must be 0 or more"))?;
    let (v, l) = str_field(ctx, "image.product", |r| r.image.as_ref()?.product.as_ref())?;
    let product =
        plain(ctx, l, &v, "image.product", "a-z 0-9 . _ -", 128, |c| lower_alnum(c) || matches!(c, '.' | '_' | '-'))?;
    let (v, l) = str_field(ctx, "image.channel", |r| r.image.as_ref()?.channel.as_ref())?;
    let channel: Channel = v.get_ref().parse().map_err(|e: String| ctx.invalid(l, v.span(), format!("image.{e}")))?;
    let (v, l) = ctx.require("image.source_date_epoch", |r| r.image.as_ref()?.source_date_epoch.as_ref())?;
    let source_date_epoch = u64::try_from(*v.get_ref()).ok().filter(|&t| t <= 253_402_300_799).ok_or_else(|| {
        ctx.invalid(l, v.span(), "image.source_date_epoch must be seconds since 1970, 0 to 253402300799")
    })?;
    let hostname = match ctx.pick(|r| r.image.as_ref()?.hostname.as_ref()) {
        Some((v, l)) => plain(ctx, l, v, "image.hostname", "a-z 0-9 -", 63, |c| lower_alnum(c) || c == '-')?,
        None => name.clone(),
    };
    Ok(ImageTable { name, version, security_version, product, channel, source_date_epoch, hostname })
}

/// `[base]`: the Debian suite, variant and package list.
fn base_table(ctx: &Ctx) -> Result<Base, Error> {
    let (v, l) = str_field(ctx, "base.suite", |r| r.base.as_ref()?.suite.as_ref())?;
    let suite = plain(ctx, l, &v, "base.suite", "a-z -", 32, |c| c.is_ascii_lowercase() || c == '-')?;
    let architecture = match ctx.pick(|r| r.base.as_ref()?.architecture.as_ref()) {
        Some((v, l)) if v.get_ref() != "amd64" => {
            return Err(ctx.invalid(
                l,
                v.span(),
                format!(
                    "base.architecture `{}` is not supported: Airlock builds amd64 images",
                    v.get_ref().escape_debug()
                ),
            ));
        }
        _ => "amd64".to_string(),
    };
    let variant = match ctx.pick(|r| r.base.as_ref()?.variant.as_ref()) {
        Some((v, l)) => match v.get_ref().as_str() {
            "minbase" | "essential" | "required" | "important" => v.get_ref().clone(),
            other => {
                return Err(ctx.invalid(
                    l,
                    v.span(),
                    format!("base.variant `{}`: use minbase, essential, required or important", other.escape_debug()),
                ));
            }
        },
        None => "minbase".to_string(),
    };
    let (v, l) = ctx.require("base.packages", |r| r.base.as_ref()?.packages.as_ref())?;
    let mut packages = BTreeSet::new();
    for p in v.get_ref() {
        let s = p.get_ref();
        if !valid_package_name(s) {
            let why = match s.chars().find(|&c| !(lower_alnum(c) || matches!(c, '+' | '-' | '.'))) {
                Some(c) => format!("has the character {}, which Debian package names never contain", describe(c)),
                None => "must be 2 to 128 characters, starting with a lowercase letter or digit".to_string(),
            };
            return Err(ctx.invalid(
                l,
                p.span(),
                format!("package name `{}` {why} (allowed: a-z 0-9 + - .)", s.escape_debug()),
            ));
        }
        if !packages.insert(s.clone()) {
            return Err(ctx.invalid(l, p.span(), format!("package `{s}` is listed twice")));
        }
    }
    Ok(Base { suite, architecture, variant, packages: packages.into_iter().collect() })
}

/// `[stack]`: workspace crates compiled into the image.
fn stack_table(ctx: &Ctx, repo_root: &Path) -> Result<Vec<String>, Error> {
    let mut stack = Vec::new();
    if let Some((v, l)) = ctx.pick(|r| r.stack.as_ref()?.crates.as_ref()) {
        for c in v.get_ref() {
            let s = plain(ctx, l, c, "stack crate", "a-z 0-9 _ -", 64, |c| lower_alnum(c) || matches!(c, '_' | '-'))?;
            if !repo_root.join("crates").join(&s).join("Cargo.toml").is_file() {
                return Err(ctx.invalid(
                    l,
                    c.span(),
                    format!("stack crate `{s}` is not in this workspace (no crates/{s}/Cargo.toml)"),
                ));
            }
            if stack.contains(&s) {
                return Err(ctx.invalid(l, c.span(), format!("stack crate `{s}` is listed twice")));
            }
            stack.push(s);
        }
    }
    Ok(stack)
}

/// `[[artifacts]]`: pinned files from the repository.
fn artifacts_table(ctx: &Ctx, repo_root: &Path) -> Result<Vec<Artifact>, Error> {
    let mut artifacts = Vec::new();
    if let Some((v, l)) = ctx.pick(|r| r.artifacts.as_ref()) {
        for a in v.get_ref() {
            artifacts.push(artifact(ctx, l, a.get_ref(), repo_root)?);
        }
    }
    Ok(artifacts)
}

/// `overlays`: directory trees copied over the root.
fn overlays_list(ctx: &Ctx, repo_root: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut overlays = Vec::new();
    if let Some((v, l)) = ctx.pick(|r| r.overlays.as_ref()) {
        for o in v.get_ref() {
            let rel = Path::new(o.get_ref());
            if !is_plain_relative(rel) {
                return Err(ctx.invalid(
                    l,
                    o.span(),
                    format!(
                        "overlay path `{}` must be relative to the repository, without `..` or a leading `/`",
                        o.get_ref().escape_debug()
                    ),
                ));
            }
            let full = repo_root.join(rel);
            contained(&full, repo_root).map_err(|m| ctx.invalid(l, o.span(), format!("overlay: {m}")))?;
            if !full.is_dir() {
                return Err(ctx.invalid(l, o.span(), format!("overlay `{}` is not a directory", o.get_ref())));
            }
            overlays.push(rel.to_path_buf());
        }
    }
    Ok(overlays)
}

/// `[services]`: units enabled at boot; a release image enables no debug login.
fn services_table(ctx: &Ctx, channel: Channel) -> Result<Vec<String>, Error> {
    let mut services = Vec::new();
    if let Some((v, l)) = ctx.pick(|r| r.services.as_ref()?.enable.as_ref()) {
        for s in v.get_ref() {
            let name = plain(ctx, l, s, "service name", "A-Z a-z 0-9 @ _ . : -", 128, |c| {
                c.is_ascii_alphanumeric() || matches!(c, '@' | '_' | '.' | ':' | '-')
            })?;
            let unit_types = [".service", ".socket", ".timer", ".target", ".path", ".mount"];
            if !unit_types.iter().any(|t| name.ends_with(t)) {
                return Err(ctx.invalid(
                    l,
                    s.span(),
                    format!("service `{name}` must name a unit, like `{name}.service`"),
                ));
            }
            if channel == Channel::Release && DEBUG_SERVICES.iter().any(|d| name.starts_with(d)) {
                return Err(ctx.invalid(
                    l,
                    s.span(),
                    format!(
                        "service `{name}` opens a debug shell or password login: a release image must not enable it"
                    ),
                ));
            }
            services.push(name);
        }
    }
    Ok(services)
}

/// `[output]`: compression of the archive and the slot filesystem.
fn output_table(ctx: &Ctx) -> Result<Output, Error> {
    let compression_level = int_in(
        ctx,
        ctx.pick(|r| r.output.as_ref()?.compression_level.as_ref()),
        "output.compression_level",
        1..=19,
        3,
    )?;
    let slot_fs = match ctx.pick(|r| r.output.as_ref()?.slot_fs.as_ref()) {
        None => SlotFs::Squashfs,
        Some((v, l)) => match v.get_ref().as_str() {
            "squashfs" => SlotFs::Squashfs,
            "erofs" => SlotFs::Erofs,
            other => {
                return Err(ctx.invalid(
                    l,
                    v.span(),
                    format!("output.slot_fs `{}`: use \"squashfs\" or \"erofs\"", other.escape_debug()),
                ));
            }
        },
    };
    let (range, default) = match slot_fs {
        SlotFs::Squashfs => (1..=22, 6),
        SlotFs::Erofs => (0..=12, 9),
    };
    let slot_compression_level = int_in(
        ctx,
        ctx.pick(|r| r.output.as_ref()?.slot_compression_level.as_ref()),
        "output.slot_compression_level",
        range,
        default,
    )?;
    Ok(Output { compression_level, slot_fs, slot_compression_level })
}

/// `[disk]`: partition sizes.
fn disk_table(ctx: &Ctx) -> Result<Disk, Error> {
    let d = Disk::default();
    let mib = |v: Option<(&Spanned<i64>, usize)>,
               what: &str,
               range: std::ops::RangeInclusive<i64>,
               default: u64|
     -> Result<u64, Error> {
        match v {
            None => Ok(default),
            Some((v, l)) => {
                u64::try_from(*v.get_ref()).ok().filter(|x| range.contains(&(*x as i64))).ok_or_else(|| {
                    ctx.invalid(
                        l,
                        v.span(),
                        format!(
                            "{what} = {} is out of range: use {} to {} (MiB)",
                            v.get_ref(),
                            range.start(),
                            range.end()
                        ),
                    )
                })
            }
        }
    };
    Ok(Disk {
        esp_mib: mib(ctx.pick(|r| r.disk.as_ref()?.esp_mib.as_ref()), "disk.esp_mib", 64..=4096, d.esp_mib)?,
        slot_mib: mib(ctx.pick(|r| r.disk.as_ref()?.slot_mib.as_ref()), "disk.slot_mib", 64..=65536, d.slot_mib)?,
        data_mib: mib(ctx.pick(|r| r.disk.as_ref()?.data_mib.as_ref()), "disk.data_mib", 16..=1_048_576, d.data_mib)?,
    })
}

/// `[[zone]]` and `[[conduit]]`: the network model.
fn zones_tables(ctx: &Ctx) -> Result<zones::Model, Error> {
    let empty_z = Vec::new();
    let empty_c = Vec::new();
    let (zs, lz) = ctx.pick(|r| r.zone.as_ref()).map_or((&empty_z, 0), |(v, l)| (v.get_ref(), l));
    let (cs, lc) = ctx.pick(|r| r.conduit.as_ref()).map_or((&empty_c, 0), |(v, l)| (v.get_ref(), l));
    // Zones and conduits may come from different files of the `extends` chain: each problem
    // points into the file its item came from.
    let invalid_z = |span: Range<usize>, m: String| ctx.invalid(lz, span, m);
    let invalid_c = |span: Range<usize>, m: String| ctx.invalid(lc, span, m);
    crate::zones::model(zs, cs, &invalid_z, &invalid_c)
}

fn int_in(
    ctx: &Ctx,
    v: Option<(&Spanned<i64>, usize)>,
    what: &str,
    range: std::ops::RangeInclusive<i32>,
    default: i32,
) -> Result<i32, Error> {
    match v {
        None => Ok(default),
        Some((v, l)) => i32::try_from(*v.get_ref()).ok().filter(|x| range.contains(x)).ok_or_else(|| {
            ctx.invalid(
                l,
                v.span(),
                format!("{what} = {} is out of range: use {} to {}", v.get_ref(), range.start(), range.end()),
            )
        }),
    }
}

fn artifact(ctx: &Ctx, l: usize, a: &RawArtifact, repo_root: &Path) -> Result<Artifact, Error> {
    let name = plain(ctx, l, &a.name, "artifact name", "a-z 0-9 . _ -", 64, |c| {
        lower_alnum(c) || matches!(c, '.' | '_' | '-')
    })?;
    let source = Path::new(a.source.get_ref());
    if !is_plain_relative(source) {
        return Err(ctx.invalid(
            l,
            a.source.span(),
            format!("artifact `{name}`: source must be relative to the repository, without `..`"),
        ));
    }
    contained(&repo_root.join(source), repo_root)
        .map_err(|m| ctx.invalid(l, a.source.span(), format!("artifact `{name}`: {m}")))?;
    let sha = a.sha256.get_ref();
    if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
        return Err(ctx.invalid(
            l,
            a.sha256.span(),
            format!("artifact `{name}`: sha256 must be 64 lowercase hex digits"),
        ));
    }
    let dest = a.dest.get_ref();
    let dest_ok = dest.strip_prefix('/').is_some_and(|r| is_plain_relative(Path::new(r)))
        && check_chars(dest, |c| !c.is_control()).is_ok();
    if !dest_ok {
        return Err(ctx.invalid(
            l,
            a.dest.span(),
            format!("artifact `{name}`: dest must be an absolute path inside the image, without `..`"),
        ));
    }
    let mode = match &a.mode {
        None => 0o644,
        Some(m) => u32::from_str_radix(m.get_ref(), 8).ok().filter(|&m| m <= 0o777).ok_or_else(|| {
            ctx.invalid(
                l,
                m.span(),
                format!("artifact `{name}`: mode must be octal like \"0644\", no setuid/setgid/sticky bits"),
            )
        })?,
    };
    Ok(Artifact { name, source: source.to_path_buf(), sha256: sha.clone(), dest: dest.clone(), mode })
}
