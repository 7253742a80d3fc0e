//! Packs shipped as one file: a `.tar.zst` of the pack directory, unpacked entry by entry into
//! a scratch directory, each entry's path checked first. Only plain files and directories are
//! accepted, and every path must stay inside the pack: an archive naming `../x`, an absolute
//! path or a link is refused before anything is written outside the scratch directory.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::pack::PACK_FILE;

/// Whether `path` names a pack archive rather than a pack directory.
pub fn is_archive(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    name.ends_with(".tar.zst") || name.ends_with(".tzst")
}

/// Unpacks `archive` into `scratch` (which must not exist) and returns the pack directory in it:
/// `scratch` itself when `pack.toml` is at the archive's root, or its single top-level directory.
pub fn unpack(archive: &Path, scratch: &Path) -> Result<PathBuf> {
    let file = std::fs::File::open(archive).with_context(|| format!("cannot read {}", archive.display()))?;
    let decoder = zstd::Decoder::new(file).with_context(|| format!("{}: not a zstd file", archive.display()))?;
    let mut tar = tar::Archive::new(decoder);
    std::fs::create_dir_all(scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let entries = tar.entries().with_context(|| format!("{}: not a tar archive", archive.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("{}: damaged tar archive", archive.display()))?;
        let path = entry
            .path()
            .with_context(|| format!("{}: an entry's path is not readable", archive.display()))?
            .into_owned();
        let text = path.display().to_string();
        if path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            bail!(
                "{}: entry '{text}' leaves the pack directory (paths must be relative, without '..')",
                archive.display()
            );
        }
        let kind = entry.header().entry_type();
        let target = scratch.join(&path);
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut out =
                std::fs::File::create(&target).with_context(|| format!("cannot write {}", target.display()))?;
            std::io::copy(&mut entry, &mut out)
                .with_context(|| format!("{}: cannot unpack '{text}'", archive.display()))?;
        } else {
            bail!("{}: entry '{text}' is a link or special file; a pack holds plain files only", archive.display());
        }
    }
    if scratch.join(PACK_FILE).is_file() {
        return Ok(scratch.to_path_buf());
    }
    let top: Vec<PathBuf> = std::fs::read_dir(scratch)?.flatten().map(|e| e.path()).collect();
    match top.as_slice() {
        [dir] if dir.join(PACK_FILE).is_file() => Ok(dir.clone()),
        _ => bail!("{}: no {PACK_FILE} at the archive's root or in its single top-level directory", archive.display()),
    }
}
