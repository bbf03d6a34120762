//! The build, stage by stage: lock and store checks → base (cached) → stack → overlays and
//! services → normalise → rootfs.tar.zst and root.img → build-manifest.toml, all written in a
//! work directory and renamed into `images/NAME/VERSION/` only when complete.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use recipe::{Lock, Recipe};
use sha2::{Digest, Sha256};
use store::{Store, Wanted};
use xshell::{Shell, cmd};

use crate::error::{Error, Result, io_err, tool_err};
use crate::manifest::{BuildManifest, ImageInfo, Inputs, MANIFEST_FORMAT, Output};
use crate::{archive, base, disk, evidence_gather, firewall, normalise, overlay, slotfs, stack, tools};

pub use schema::MANIFEST_NAME;
use schema::Setting;
pub const ROOTFS_NAME: &str = "rootfs.tar.zst";
pub const SLOT_NAME: &str = "root.img";

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub recipe: PathBuf,
    pub repo_root: PathBuf,
    /// Defaults to `NAME.lock` beside the recipe.
    pub lock: Option<PathBuf>,
    pub store: PathBuf,
    /// `images/` (outputs go to `images/NAME/VERSION/`).
    pub images_dir: PathBuf,
    pub offline: bool,
    /// Reuse cached stages and an up-to-date output; off for `repro`.
    pub use_cache: bool,
    /// Replace a published version built from other inputs (it is deleted, and said so).
    pub force: bool,
    /// The recipe and flags as the user gave them, for hints (`cargo xtask build ARGS`).
    pub hint_args: String,
    /// Cargo target directory for the stack crates.
    pub stack_target_dir: PathBuf,
    /// Where scratch work happens; defaults to `images/NAME/`.
    pub work_parent: Option<PathBuf>,
    /// Show spinners (a terminal) or stay quiet (CI logs).
    pub interactive: bool,
}

#[derive(Debug)]
pub struct BuildReport {
    pub out_dir: PathBuf,
    pub manifest: BuildManifest,
    pub up_to_date: bool,
    pub base_cached: bool,
    pub fetched: usize,
    /// Seconds per stage, in order.
    pub timings: Vec<(&'static str, Duration)>,
}

/// Shows one spinner per stage on a terminal; in a log, one plain line as each stage starts
/// and one when it ends.
struct Stages {
    interactive: bool,
    timings: Vec<(&'static str, Duration)>,
}

impl Stages {
    fn run<T>(&mut self, name: &'static str, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let bar = self.interactive.then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_message(format!("{name}: {what}"));
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        if !self.interactive {
            eprintln!("airlock: {name}: {what}…");
        }
        let t = Instant::now();
        let r = f();
        let d = t.elapsed();
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if r.is_ok() {
            eprintln!("  {name:<10} {:>6.1}s  {what}", d.as_secs_f64());
        }
        self.timings.push((name, d));
        r
    }
}

/// Where a recipe's outputs go: `images/NAME/VERSION/` for dev builds,
/// `images/NAME/release/VERSION/` for release builds — a dev and a release build of the same
/// version never share a directory.
pub fn out_dir(images: &Path, recipe: &Recipe) -> PathBuf {
    match recipe.channel {
        recipe::Channel::Dev => images.join(&recipe.name).join(&recipe.version),
        recipe::Channel::Release => images.join(&recipe.name).join("release").join(&recipe.version),
    }
}

/// The lock to use: the one given, else the recipe's own `NAME.lock`, else the lock of the
/// recipe it extends when that lock was made from the same `[base]`.
pub fn lock_path(recipe: &Recipe, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(l) = explicit {
        return Ok(l.to_path_buf());
    }
    let own = recipe.default_lock_path();
    if own.exists() {
        return Ok(own);
    }
    for l in recipe.lock_candidates().into_iter().skip(1) {
        if Lock::load(&l).is_ok_and(|lock| lock.recipe_digest == recipe.base.digest()) {
            return Ok(l);
        }
    }
    Ok(own)
}

/// The store objects a lock and recipe need.
pub fn wanted(recipe: &Recipe, lock: &Lock) -> Vec<Wanted> {
    let mut w: Vec<Wanted> = lock.packages.iter().map(store::wanted).collect();
    w.extend(
        recipe.artifacts.iter().map(|a| Wanted { what: format!("artifact {}", a.name), sha256: a.sha256.clone() }),
    );
    w
}

/// Fills the store with what is missing: packages with apt, artifacts from their source file.
pub fn fetch(recipe: &Recipe, lock: &Lock, store: &Store) -> Result<usize> {
    let missing: Vec<&recipe::LockedPackage> = lock.packages.iter().filter(|p| !store.contains(&p.sha256)).collect();
    let mut n = store::fetch_debs(store, &missing)?;
    for a in &recipe.artifacts {
        if !store.contains(&a.sha256) {
            store.insert(&recipe.repo_root.join(&a.source), &format!("artifact {}", a.name), Some(&a.sha256))?;
            n += 1;
        }
    }
    Ok(n)
}

pub fn load(opts: &BuildOptions) -> Result<(Recipe, Lock, PathBuf)> {
    let recipe = Recipe::load(&opts.recipe, &opts.repo_root)?;
    let lock_path = lock_path(&recipe, opts.lock.as_deref())?;
    let lock = Lock::load_for(&recipe, &lock_path)?;
    base::check_lock_matches(&lock, &recipe)?;
    Ok((recipe, lock, lock_path))
}

fn hash_parts(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    // The host's umask must not reach the image (systemctl, mmdebstrap and every file this
    // process creates inherit it): pin it for the whole build.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let (recipe, lock, lock_path) = load(opts)?;
    let mut stages = Stages { interactive: opts.interactive, timings: Vec::new() };
    let store = Store::open(&opts.store)?;
    let wanted = wanted(&recipe, &lock);
    let mut fetched = 0;
    if !opts.offline && !store.missing(&wanted).is_empty() {
        fetched = stages.run("fetch", "downloading pinned inputs into the store", || fetch(&recipe, &lock, &store))?;
    }
    stages.run("verify", "checking every input against the lock", || store.verify_all(&wanted).map_err(Error::from))?;
    let missing: Vec<String> =
        tools::missing(&tools::needed(&recipe, true)).iter().map(|t| t.bin.to_string()).collect();
    if !missing.is_empty() {
        return Err(Error::MissingTools(missing));
    }

    let sh = Shell::new().map_err(tool_err("shell"))?;
    let tool_versions = tool_versions(&sh, &recipe);
    let mmdebstrap_v = tool_versions.get("mmdebstrap").cloned().unwrap_or_default();
    let base_key = base::base_key(&recipe, &lock, &mmdebstrap_v);

    let out_dir = out_dir(&opts.images_dir, &recipe);
    let images_dir = out_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| opts.images_dir.clone());
    fs::create_dir_all(&images_dir).map_err(io_err(&images_dir))?;
    let work_parent = opts.work_parent.clone().unwrap_or_else(|| images_dir.clone());
    fs::create_dir_all(&work_parent).map_err(io_err(&work_parent))?;
    clean_stale_work(&work_parent)?;
    let work = WorkDir(
        tempfile::Builder::new().prefix(".work-").tempdir_in(&work_parent).map_err(io_err(&work_parent))?.keep(),
    );

    let (base_tar, base_cached) = stages.run("base", "mmdebstrap from the local repository (offline)", || {
        base::ensure_base(&recipe, &lock, &store, &base_key, opts.use_cache, work.path())
    })?;
    let stack_files = stages.run(
        "stack",
        "compiling the stack crates (cargo --release --locked; minutes on a cold target)",
        || stack::build(&recipe.repo_root, &recipe.stack, &opts.stack_target_dir, opts.offline),
    )?;

    let settings = settings(&recipe);
    let inputs = inputs(&recipe, &lock, &lock_path, &base_key, &stack_files)?;
    let image = image_info(&recipe);
    let build_key = build_key(&image, &inputs, &tool_versions, &settings)?;

    // The builder itself is an input too, but one that differs between machines (paths in
    // debug info): it is kept beside the output, not in the signed manifest.
    let builder = builder_digest()?;
    let builder_file = images_dir.join(format!(".{}.builder", recipe.version));
    // A published version is never replaced by other bytes.
    let published = published_key(&out_dir);
    refuse_replacing(opts, &recipe, &out_dir, published.as_deref(), &build_key)?;
    if opts.use_cache
        && fs::read_to_string(&builder_file).is_ok_and(|b| b.trim() == builder)
        && let Some(m) = up_to_date(&out_dir, &build_key)?
    {
        return Ok(BuildReport {
            out_dir,
            manifest: m,
            up_to_date: true,
            base_cached,
            fetched,
            timings: stages.timings,
        });
    }

    let root = work.path().join("root");
    stages.run("unpack", "unpacking the base stage", || base::unpack(&base_tar, &root))?;
    stages.run("customise", "stack, artifacts, overlays, services", || {
        customise(&sh, &recipe, &store, &stack_files, &root, work.path())
    })?;
    stages.run("normalise", "removing host leaks and volatile files", || {
        normalise::normalise(&root, &recipe.hostname)?;
        normalise::appliance(&root, &recipe.name, &recipe.version)?;
        normalise::check_no_secrets(&root)
    })?;
    // The SBOM, from the image's own dpkg database and the crates compiled into it; the image
    // carries a copy (without the outputs: it cannot list the image that holds it).
    let mut sbom = stages.run("sbom", "SBOM: the image's packages and the stack's crates", || {
        let debs = evidence_gather::debs(&root, &lock)?;
        let crates = evidence_gather::crates(&recipe.repo_root, &recipe.stack, opts.offline)?;
        let sbom = evidence_gather::sbom(&recipe, debs, crates);
        let f = work.path().join("content.spdx.json");
        fs::write(&f, sbom.spdx()).map_err(io_err(&f))?;
        overlay::place_file(&root, evidence::IMAGE_SBOM, &f, 0o644)?;
        Ok(sbom)
    })?;

    let out = work.path().join("out");
    fs::create_dir_all(&out).map_err(io_err(&out))?;
    let (mut outputs, verity) = write_images(&mut stages, &recipe, &root, &out, work.path())?;
    stages.run("evidence", "SBOM (SPDX, CycloneDX) and provenance of the outputs", || {
        sbom.outputs = evidence_gather::outputs(&outputs);
        let prov = provenance(&recipe, &lock_path, &inputs, &tool_versions, &settings, &build_key, &outputs)?;
        for (name, text) in [
            (evidence::SPDX_NAME, sbom.spdx()),
            (evidence::CYCLONEDX_NAME, sbom.cyclonedx()),
            (evidence::STATEMENT_NAME, prov.statement()),
        ] {
            store::write_atomic(&out.join(name), text.as_bytes())?;
            let (sha, size) = store::sha256_file(&out.join(name))?;
            outputs.insert(name.to_string(), Output { sha256: sha, size });
        }
        Ok(())
    })?;

    let manifest = BuildManifest {
        format: MANIFEST_FORMAT,
        build_key,
        image,
        inputs,
        tools: tool_versions,
        settings,
        outputs,
        verity: Some(verity),
    };
    let manifest_text = manifest.to_toml();
    if published.as_deref() == Some(manifest.build_key.as_str()) {
        // Same inputs, built again (another builder binary, or no cache): the bytes must be
        // the same, and then the published directory — signatures and bundle included — stays.
        let old = fs::read_to_string(out_dir.join(MANIFEST_NAME)).unwrap_or_default();
        if old != manifest_text {
            return Err(Error::Rejected(format!(
                "{}: rebuilding version {} from the same inputs gave other bytes than the published build: not reproducible; the published outputs are kept (`cargo xtask repro` names what differs)",
                out_dir.display(),
                recipe.version
            )));
        }
        store::write_atomic(&builder_file, format!("{builder}\n").as_bytes())?;
        return Ok(BuildReport { out_dir, manifest, up_to_date: true, base_cached, fetched, timings: stages.timings });
    }
    store::write_atomic(&out.join(MANIFEST_NAME), manifest_text.as_bytes())?;
    publish(&out, &out_dir, work.path())?;
    store::write_atomic(&builder_file, format!("{builder}\n").as_bytes())?;
    Ok(BuildReport { out_dir, manifest, up_to_date: false, base_cached, fetched, timings: stages.timings })
}

/// Versions of the host tools that shape this recipe's bytes (only its slot filesystem's).
fn tool_versions(sh: &Shell, recipe: &Recipe) -> BTreeMap<String, String> {
    let mut v = tools::versions(sh);
    if recipe.output.slot_fs == recipe::SlotFs::Squashfs {
        v.remove("mkfs.erofs");
    } else {
        v.remove("mksquashfs");
    }
    v
}

/// The settings that shape the bytes, recorded in the build manifest.
fn settings(recipe: &Recipe) -> BTreeMap<String, String> {
    let value = |setting: Setting| match setting {
        Setting::RootfsZstdLevel => recipe.output.compression_level.to_string(),
        Setting::RootfsZstdWorkers => archive::ZSTD_WORKERS.to_string(),
        Setting::SlotFs => recipe.output.slot_fs.as_str().to_string(),
        Setting::SlotLevel => recipe.output.slot_compression_level.to_string(),
        Setting::Hostname => recipe.hostname.clone(),
        Setting::Services => recipe.services.join(" "),
        Setting::Disk => format!(
            "esp {} MiB, slots {} MiB, data {} MiB",
            recipe.disk.esp_mib, recipe.disk.slot_mib, recipe.disk.data_mib
        ),
        Setting::CmdlineA => disk::cmdline(recipe, "a"),
    };
    Setting::ALL.iter().map(|&s| (s.key().to_string(), value(s))).collect()
}

/// Every input by digest: recipe, lock, trust root, base stage, overlays, stack files,
/// artifacts, packages.
fn inputs(
    recipe: &Recipe,
    lock: &Lock,
    lock_path: &Path,
    base_key: &str,
    stack_files: &[stack::StackFile],
) -> Result<Inputs> {
    let mut overlays = BTreeMap::new();
    for o in &recipe.overlays {
        overlays.insert(o.display().to_string(), overlay::digest_tree(&recipe.repo_root.join(o))?);
    }
    let lock_text = fs::read_to_string(lock_path).map_err(io_err(lock_path))?;
    Ok(Inputs {
        trust_root: format!("sha256:{}", store::sha256_file(&trust_policy_path(recipe))?.0),
        recipe: recipe.digest.clone(),
        lock: format!("sha256:{}", hex::encode(Sha256::digest(lock_text.as_bytes()))),
        base_stage: format!("sha256:{base_key}"),
        overlays,
        stack: stack_files.iter().map(|f| (f.dest.clone(), f.sha256.clone())).collect(),
        artifacts: recipe.artifacts.iter().map(|a| (a.dest.clone(), a.sha256.clone())).collect(),
        packages: lock
            .packages
            .iter()
            .map(|p| (format!("{}={} ({})", p.name, p.version, p.architecture), p.sha256.clone()))
            .collect(),
    })
}

fn image_info(recipe: &Recipe) -> ImageInfo {
    ImageInfo {
        name: recipe.name.clone(),
        version: recipe.version.clone(),
        product: recipe.product.clone(),
        channel: recipe.channel.to_string(),
        security_version: recipe.security_version,
        source_date_epoch: recipe.source_date_epoch,
    }
}

/// The digest of every input and setting: equal keys mean equal outputs.
fn build_key(
    image: &ImageInfo,
    inputs: &Inputs,
    tools: &BTreeMap<String, String>,
    settings: &BTreeMap<String, String>,
) -> Result<String> {
    #[derive(serde::Serialize)]
    struct KeyMaterial<'a> {
        image: &'a ImageInfo,
        inputs: &'a Inputs,
        tools: &'a BTreeMap<String, String>,
        settings: &'a BTreeMap<String, String>,
    }
    let key_material = toml::to_string(&KeyMaterial { image, inputs, tools, settings })
        .map_err(|e| Error::Invalid(format!("build key: {e}")))?;
    Ok(hash_parts(&[&key_material]))
}

/// A published version is never replaced by other bytes (unless `--force`, which says what
/// it deletes).
fn refuse_replacing(
    opts: &BuildOptions,
    recipe: &Recipe,
    out_dir: &Path,
    published: Option<&str>,
    build_key: &str,
) -> Result<()> {
    match published {
        Some(key) if key != build_key && !opts.force => {
            let cmd = if opts.hint_args.is_empty() { String::new() } else { format!(" {}", opts.hint_args) };
            return Err(Error::Rejected(format!(
                "{}: version {} already exists with another build key ({key}; this build: {build_key}): a published version is never replaced by other bytes. Bump image.version in {}, or rebuild with `cargo xtask build{cmd} --force`, which deletes {}",
                out_dir.display(),
                recipe.version,
                recipe.path.display(),
                describe_dir(out_dir)
            )));
        }
        Some(key) if key != build_key => {
            eprintln!("airlock: --force: deleting {} ({})", out_dir.display(), describe_dir(out_dir));
        }
        _ => {}
    }
    Ok(())
}

/// Places the stack, the artifacts and the overlays, the trust root and the firewall, enables
/// the services, and checks their sandboxes.
fn customise(
    sh: &Shell,
    recipe: &Recipe,
    store: &Store,
    stack_files: &[stack::StackFile],
    root: &Path,
    scratch: &Path,
) -> Result<()> {
    for f in stack_files {
        overlay::place_file(root, &f.dest, &f.src, f.mode)?;
    }
    for a in &recipe.artifacts {
        let src = store.verified(&Wanted { what: format!("artifact {}", a.name), sha256: a.sha256.clone() })?;
        overlay::place_file(root, &a.dest, &src, a.mode)?;
    }
    for o in &recipe.overlays {
        overlay::apply(root, &recipe.repo_root.join(o))?;
    }
    bake_trust_root(recipe, root, scratch)?;
    firewall::install(sh, recipe, root, scratch)?;
    enable_services(sh, root, &recipe.services)?;
    // Every unit that parses network or stick input runs in a sandbox within its bound.
    crate::sandbox::check(sh, root).map(|_| ())
}

/// The root archive, the slot filesystem and its dm-verity tree, and the disk (with the slot's
/// kernel and initrd), each listed with its digest; and the tree's table.
fn write_images(
    stages: &mut Stages,
    recipe: &Recipe,
    root: &Path,
    out: &Path,
    scratch: &Path,
) -> Result<(BTreeMap<String, Output>, crate::verity::Verity)> {
    let mut outputs = BTreeMap::new();
    let level = recipe.output.compression_level;
    let (sha, size) = stages.run("tar", &format!("writing {ROOTFS_NAME} (zstd -{level})"), || {
        archive::write_tar_zst(root, &out.join(ROOTFS_NAME), level, recipe.source_date_epoch)
    })?;
    outputs.insert(ROOTFS_NAME.to_string(), Output { sha256: sha, size });
    stages.run("slotfs", &format!("writing {SLOT_NAME} ({})", recipe.output.slot_fs.as_str()), || {
        slotfs::make(recipe, root, &out.join(SLOT_NAME))
    })?;
    let (img, tree) = (out.join(SLOT_NAME), out.join(crate::verity::VERITY_FILE));
    let verity =
        stages.run("verity", &format!("writing {} (veritysetup format)", crate::verity::VERITY_FILE), || {
            crate::verity::make(recipe, &img, &tree)
        })?;
    stages.run("disk", "writing disk.img (GPT: ESP, root-a, root-b, data), disk.qcow2, disk.bmap", || {
        disk::make(recipe, root, (&img, &tree, &verity), out, scratch)
    })?;
    for name in [
        SLOT_NAME,
        crate::verity::VERITY_FILE,
        disk::KERNEL_NAME,
        disk::INITRD_NAME,
        disk::DISK_NAME,
        disk::QCOW2_NAME,
        disk::BMAP_NAME,
    ] {
        let (sha, size) = store::sha256_file(&out.join(name))?;
        outputs.insert(name.to_string(), Output { sha256: sha, size });
    }
    Ok((outputs, verity))
}

/// The provenance statement of a build: its outputs by digest, every resolved input.
fn provenance(
    recipe: &Recipe,
    lock_path: &Path,
    inputs: &Inputs,
    tools: &BTreeMap<String, String>,
    settings: &BTreeMap<String, String>,
    build_key: &str,
    outputs: &BTreeMap<String, Output>,
) -> Result<evidence::Provenance> {
    use evidence::provenance::Input;
    let rel = |p: &Path| p.strip_prefix(&recipe.repo_root).unwrap_or(p).display().to_string();
    let mut deps = Vec::new();
    for f in &recipe.files {
        deps.push(Input { uri: rel(f), sha256: store::sha256_file(f)?.0 });
    }
    deps.push(Input { uri: rel(lock_path), sha256: inputs.lock.clone() });
    deps.push(Input { uri: "keys/trust.toml (the baked trust root)".into(), sha256: inputs.trust_root.clone() });
    deps.push(Input { uri: "airlock:base-stage".into(), sha256: inputs.base_stage.clone() });
    for (k, v) in &inputs.overlays {
        deps.push(Input { uri: format!("airlock:overlay:{k}"), sha256: v.clone() });
    }
    for (k, v) in &inputs.stack {
        deps.push(Input { uri: format!("airlock:stack:{k}"), sha256: v.clone() });
    }
    for (k, v) in &inputs.artifacts {
        deps.push(Input { uri: format!("airlock:artifact:{k}"), sha256: v.clone() });
    }
    for (k, v) in &inputs.packages {
        // `name=version (arch)` → a purl.
        let (nv, arch) = k.split_once(" (").unwrap_or((k, ""));
        let (n, ver) = nv.split_once('=').unwrap_or((nv, ""));
        deps.push(Input {
            uri: format!(
                "pkg:deb/debian/{n}@{}?arch={}&distro=debian-{}",
                ver.replace(':', "%3A").replace('+', "%2B"),
                arch.trim_end_matches(')'),
                recipe.base.suite
            ),
            sha256: v.clone(),
        });
    }
    Ok(evidence::Provenance {
        recipe_path: rel(&recipe.path),
        name: recipe.name.clone(),
        version: recipe.version.clone(),
        product: recipe.product.clone(),
        channel: recipe.channel.to_string(),
        build_key: build_key.to_string(),
        builder_version: env!("CARGO_PKG_VERSION").to_string(),
        settings: settings.clone(),
        tools: tools.clone(),
        inputs: deps,
        subjects: outputs.iter().map(|(n, o)| (n.clone(), o.sha256.clone())).collect(),
    })
}

fn trust_policy_path(recipe: &Recipe) -> PathBuf {
    release::policy::PolicySource::for_channel(recipe.channel).path(&recipe.repo_root)
}

/// The device's identity and trust root for the update agent: `/etc/airlock/device.toml` and
/// `/etc/airlock/trust.toml` (the dev policy for dev recipes, `keys/trust.toml` for release).
/// A release image never carries a policy that trusts the dev key.
fn bake_trust_root(recipe: &Recipe, root: &Path, scratch: &Path) -> Result<()> {
    let policy = trust_policy_path(recipe);
    let text = fs::read_to_string(&policy).map_err(io_err(&policy))?;
    let parsed = trust::Policy::parse(&text).map_err(|e| Error::Invalid(format!("{}: {e}", policy.display())))?;
    let device = sideload::DeviceConfig {
        product: recipe.product.clone(),
        channel: recipe.channel,
        tries: sideload::config::DEFAULT_TRIES,
        version: Some(product::Version::parse(&recipe.version).map_err(|e| Error::Invalid(e.to_string()))?),
        security_version: Some(recipe.security_version),
        cmdline: Some(crate::disk::cmdline_tail(recipe)),
        verity: true,
    };
    device.check_policy(&parsed).map_err(|e| Error::Invalid(format!("{}: {e}", policy.display())))?;
    let dev_file = scratch.join("device.toml");
    fs::write(&dev_file, device.to_toml()).map_err(io_err(&dev_file))?;
    overlay::place_file(root, "/etc/airlock/device.toml", &dev_file, 0o644)?;
    overlay::place_file(root, "/etc/airlock/trust.toml", &policy, 0o644)
}

/// sha256 of the running builder executable.
fn builder_digest() -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::Invalid(format!("cannot find the running builder: {e}")))?;
    Ok(store::sha256_file(&exe)?.0)
}

/// The build's scratch directory, removed (safely: see [`remove_tree`]) when the build ends.
struct WorkDir(PathBuf);

impl WorkDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.0);
    }
}

/// Removes work directories left by a killed build.
fn clean_stale_work(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        if e.file_name().to_string_lossy().starts_with(".work-") {
            remove_tree(&e.path())?;
        }
    }
    Ok(())
}

/// Removes a scratch tree that a killed mmdebstrap may have left with /proc, /sys or /dev
/// mounted inside: unmounts whatever is mounted below it first, and never descends into
/// another filesystem, so a host's /dev can never be emptied through a stale bind mount.
pub fn remove_tree(top: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let top = top.canonicalize().map_err(io_err(top))?;
    let mut mounts: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(&top) && *m != top)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    if !mounts.is_empty() {
        let sh = Shell::new().map_err(tool_err("shell"))?;
        for m in &mounts {
            cmd!(sh, "umount -l {m}")
                .quiet()
                .ignore_stdout()
                .run()
                .map_err(tool_err(format!("umount -l {}", m.display())))?;
        }
    }
    fn go(p: &Path, dev: u64) -> Result<()> {
        let m = fs::symlink_metadata(p).map_err(io_err(p))?;
        if m.is_dir() {
            if m.dev() != dev {
                return Err(Error::Invalid(format!(
                    "{} is another filesystem inside a scratch tree: not removed",
                    p.display()
                )));
            }
            for e in fs::read_dir(p).map_err(io_err(p))? {
                go(&e.map_err(io_err(p))?.path(), dev)?;
            }
            fs::remove_dir(p).map_err(io_err(p))
        } else {
            fs::remove_file(p).map_err(io_err(p))
        }
    }
    let dev = fs::symlink_metadata(&top).map_err(io_err(&top))?.dev();
    go(&top, dev)
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The build key of a published output directory, if there is one.
fn published_key(out_dir: &Path) -> Option<String> {
    let text = fs::read_to_string(out_dir.join(MANIFEST_NAME)).ok()?;
    BuildManifest::parse(&text).ok().map(|m| m.build_key)
}

/// What a `--force` would delete in a published directory, in words.
fn describe_dir(dir: &Path) -> String {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    let sigs = names.iter().filter(|n| n.ends_with(".minisig")).count();
    let bundles: Vec<&String> = names.iter().filter(|n| n.ends_with(".airlock")).collect();
    format!(
        "{} file(s): {} signature(s){}",
        names.len(),
        sigs,
        bundles.first().map(|b| format!(", the bundle {b}")).unwrap_or_default()
    )
}

/// The manifest of an existing output, when it was built from the same key and its outputs
/// still match their digests.
fn up_to_date(out_dir: &Path, key: &str) -> Result<Option<BuildManifest>> {
    let Ok(text) = fs::read_to_string(out_dir.join(MANIFEST_NAME)) else {
        return Ok(None);
    };
    let Ok(m) = BuildManifest::parse(&text) else {
        return Ok(None);
    };
    if m.build_key != key {
        return Ok(None);
    }
    for (name, o) in &m.outputs {
        let p = out_dir.join(name);
        let Ok(meta) = fs::metadata(&p) else {
            return Ok(None);
        };
        if meta.len() != o.size || store::sha256_file(&p)?.0 != o.sha256 {
            return Ok(None);
        }
    }
    Ok(Some(m))
}

/// Moves a complete output directory into place: the old one (if any) is swapped out first,
/// so `images/NAME/VERSION` is always either the old complete output or the new one.
fn publish(out: &Path, dest: &Path, work: &Path) -> Result<()> {
    for e in fs::read_dir(out).map_err(io_err(out))?.flatten() {
        fs::File::open(e.path()).and_then(|f| f.sync_all()).map_err(io_err(&e.path()))?;
    }
    store::sync_dir(out)?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    if dest.exists() {
        let old = work.join("old");
        fs::rename(dest, &old).map_err(io_err(dest))?;
    }
    fs::rename(out, dest).map_err(io_err(dest))?;
    store::sync_dir(parent)?;
    Ok(())
}

fn enable_services(sh: &Shell, root: &Path, services: &[String]) -> Result<()> {
    if services.is_empty() {
        return Ok(());
    }
    for s in services {
        // `getty@tty1.service` is enabled from the template `getty@.service`.
        let unit = match s.split_once('@') {
            Some((a, rest)) => format!("{a}@.{}", rest.rsplit_once('.').map_or("", |(_, t)| t)),
            None => s.clone(),
        };
        let found = ["etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"].iter().any(|d| {
            fs::symlink_metadata(root.join(d).join(s)).is_ok() || fs::symlink_metadata(root.join(d).join(&unit)).is_ok()
        });
        if !found {
            return Err(Error::Invalid(format!(
                "service `{s}` is enabled by the recipe but no unit file for it is in the image: add its package, stack crate or overlay"
            )));
        }
    }
    cmd!(sh, "chroot {root} systemctl enable --quiet {services...}")
        .quiet()
        .ignore_stdout()
        .run()
        .map_err(tool_err("systemctl enable (in the image)"))?;
    Ok(())
}
