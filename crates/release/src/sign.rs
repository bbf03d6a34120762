//! Signing a file: one detached minisign-format signature `FILE.<KEYID>.minisig`, its trusted
//! comment naming the product, version, role and file. The INSECURE dev key (recognised by its
//! key bytes) never signs anything of the release channel.

use std::path::{Path, PathBuf};

use product::Channel;
use trust::{Prehash, Role, SecretKey, SignatureFile};

use crate::files::{open_regular, write_atomic};
use crate::{Error, Result, fields};

/// Signs `file` with `key` in `role`. Product and version come from the file when it is a
/// build or bundle manifest (`product`/`version` override them). Returns the signature path.
pub fn sign_file(
    file: &Path,
    key: &SecretKey,
    role: Role,
    product: Option<&str>,
    version: Option<&str>,
) -> Result<PathBuf> {
    // A provenance statement is signed the way in-toto tools check it: DSSE.
    if file.file_name().is_some_and(|n| n == crate::provenance::STATEMENT) {
        if trust::is_dev_key(&key.public())
            && crate::files::read_bounded(file, trust::dsse::MAX_PAYLOAD as u64)?.is_some_and(|b| {
                serde_json::from_slice::<serde_json::Value>(&b).is_ok_and(|v| {
                    v["predicate"]["buildDefinition"]["externalParameters"]["image"]["channel"] == "release"
                })
            })
        {
            return Err(Error::Rejected(format!(
                "{}: a release provenance statement is never signed with the INSECURE dev key",
                file.display()
            )));
        }
        let _ = role;
        return crate::provenance::sign(file, key);
    }
    let f = fields::read(file)?;
    if trust::is_dev_key(&key.public())
        && let Some(f) = &f
        && f.channel == Some(Channel::Release)
    {
        return Err(Error::Rejected(format!(
            "{}: a release {} is never signed with the INSECURE dev key",
            file.display(),
            f.kind.as_str()
        )));
    }
    if let Some(f) = &f
        && f.kind == crate::fields::Kind::SiteProfile
        && role != Role::Approval
    {
        return Err(Error::Usage(format!(
            "{}: a site profile is the asset owner's: sign it with `--role approval` (a vendor's release key never counts for it)",
            file.display()
        )));
    }
    let product = product
        .map(str::to_string)
        .or_else(|| f.as_ref().and_then(|f| f.product.clone()))
        .unwrap_or_else(|| "-".into());
    let version = version
        .map(str::to_string)
        .or_else(|| f.as_ref().and_then(|f| f.version.clone()))
        .unwrap_or_else(|| "-".into());
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let safe = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && c != '=');
    if !safe(&product) || !safe(&version) || !safe(&name) {
        return Err(Error::Usage(
            "product, version and file name must be printable ASCII without spaces or `=` to go into a trusted comment"
                .into(),
        ));
    }
    let prehash = Prehash::of_reader(open_regular(file)?).map_err(Error::io(file))?;
    let comment = trusted_comment(&product, &version, role, &name);
    let sig = SignatureFile::sign(key, &prehash, &comment).map_err(|e| Error::Usage(e.to_string()))?;
    let out = file.with_file_name(format!("{name}.{}.minisig", key.id()));
    write_atomic(&out, sig.to_file().as_bytes())?;
    Ok(out)
}

/// The trusted comment Airlock writes, and that stock minisign signers pass with `-t`.
pub fn trusted_comment(product: &str, version: &str, role: Role, file: &str) -> String {
    format!("airlock product={product} version={version} role={role} file={file}")
}
