//! Model packs: a site's models with their exact extraction flags and checksummed files, in a
//! directory with `pack.toml` at its root (docs/PACKS.md).
//!
//! ```toml
//! [pack]
//! name = "site"
//! version = "3.0.0"
//! description = "Chest X-ray models of the site's radiology lab"
//! license = "CC-BY-4.0"
//! maintainer = "imaging-lab@example.org"
//!
//! [[model]]
//! name = "chest-xray-v3"
//! plugin = "vision"
//! plugin_version = ">=0.1, <0.2"
//! embedding_width = 2048
//! user_flags = ["batch_size", "device", "image_column", "label_column"]
//! flags = { model_version = "resnet50", use_case = "finetuned", added_layers = 2, embed_size = 1000, num_classes = 2 }
//! paths = { model_weights = "weights/model_weights.pth" }
//! files = [{ path = "weights/model_weights.pth", sha256 = "..." }]
//! card = { intended_use = "...", training_data = "...", metrics = "..." }
//! ```
//!
//! `flags` are fixed; `paths` are flags whose value is a file or directory of the pack; every
//! file the models read is listed in `files` with its SHA-256, and nothing outside the pack
//! directory may be named.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const PACK_FILE: &str = "pack.toml";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pack {
    pub pack: PackInfo,
    #[serde(rename = "model")]
    pub models: Vec<PackModel>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackInfo {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub maintainer: String,
    /// Plugin libraries the pack ships (under `plugins/`), for models whose encoder is not
    /// installed otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PackedFile>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackModel {
    pub name: String,
    pub plugin: String,
    /// A semver requirement on the plugin's version, e.g. `>=0.1, <0.2`.
    pub plugin_version: String,
    /// The width the model's embeddings must have (checked when it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_width: Option<u64>,
    /// Flags a user may still set; every other plugin flag is the pack's.
    #[serde(default)]
    pub user_flags: Vec<String>,
    /// Fixed flags and their values.
    #[serde(default)]
    pub flags: BTreeMap<String, toml::Value>,
    /// Fixed flags whose value is a file or directory of the pack (relative to its root).
    #[serde(default)]
    pub paths: BTreeMap<String, String>,
    #[serde(default)]
    pub files: Vec<PackedFile>,
    #[serde(default)]
    pub card: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackedFile {
    pub path: String,
    pub sha256: String,
}

impl Pack {
    /// Reads and checks `dir/pack.toml`: its syntax (a mistake names line and column), names,
    /// versions, and that every path stays inside `dir`.
    pub fn read(dir: &Path) -> Result<Pack> {
        let path = dir.join(PACK_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let pack: Pack = toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|span| line_column(&text, span.start)).unwrap_or_default();
            anyhow!("{}{at}: {}", path.display(), e.message())
        })?;
        pack.check(&path)?;
        Ok(pack)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let context = |what: String| anyhow!("{}: {what}", path.display());
        if !is_name(&self.pack.name) {
            return Err(context(format!("pack name '{}': use letters, digits, '-', '_' and '.'", self.pack.name)));
        }
        semver::Version::parse(&self.pack.version)
            .map_err(|e| context(format!("pack version '{}' is not a semantic version: {e}", self.pack.version)))?;
        if self.models.is_empty() {
            return Err(context("the pack has no [[model]]".into()));
        }
        for plugin in &self.pack.plugins {
            inside(&plugin.path).map_err(|e| context(format!("plugin '{}': {e}", plugin.path)))?;
            if !plugin.path.starts_with("plugins/") || plugin.path[8..].contains('/') {
                return Err(context(format!("plugin '{}': plugin libraries go directly in plugins/", plugin.path)));
            }
            check_sha256(&plugin.sha256).map_err(|e| context(format!("plugin '{}': {e}", plugin.path)))?;
        }
        for model in &self.models {
            let name = &model.name;
            if !is_name(name) {
                return Err(context(format!("model name '{name}': use letters, digits, '-', '_' and '.'")));
            }
            if self.models.iter().filter(|m| m.name == *name).count() > 1 {
                return Err(context(format!("model '{name}' is declared twice")));
            }
            semver::VersionReq::parse(&model.plugin_version).map_err(|e| {
                context(format!(
                    "model '{name}': plugin_version '{}' is not a version requirement: {e}",
                    model.plugin_version
                ))
            })?;
            for (flag, relative) in &model.paths {
                inside(relative).map_err(|e| context(format!("model '{name}': paths.{flag}: {e}")))?;
                if model.flags.contains_key(flag) {
                    return Err(context(format!("model '{name}': '{flag}' is both in flags and in paths")));
                }
            }
            for file in &model.files {
                inside(&file.path).map_err(|e| context(format!("model '{name}': file '{}': {e}", file.path)))?;
                check_sha256(&file.sha256)
                    .map_err(|e| context(format!("model '{name}': file '{}': {e}", file.path)))?;
            }
        }
        Ok(())
    }

    pub fn model(&self, name: &str) -> Result<&PackModel> {
        self.models.iter().find(|m| m.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
            anyhow!("pack {} has no model '{name}'; its models: {}", self.pack.name, known.join(", "))
        })
    }

    /// Every file the pack lists: its models' and its plugins'.
    pub fn files(&self) -> impl Iterator<Item = &PackedFile> {
        self.models.iter().flat_map(|m| &m.files).chain(&self.pack.plugins)
    }

    /// Every file the pack lists, hashed again: a missing or changed file is an error naming it
    /// (and both hashes).
    pub fn verify(&self, dir: &Path) -> Result<()> {
        self.files().try_for_each(|file| verify_file(dir, file))
    }
}

/// Checks one listed file of the pack in `dir` against its SHA-256.
pub fn verify_file(dir: &Path, file: &PackedFile) -> Result<()> {
    let path = dir.join(&file.path);
    if !path.is_file() {
        bail!("{}: missing (listed in {PACK_FILE})", path.display());
    }
    let actual = sha256_file(&path)?;
    if !actual.eq_ignore_ascii_case(&file.sha256) {
        bail!(
            "{}: SHA-256 {actual}, but {PACK_FILE} says {}: the file is not the one the pack was made with",
            path.display(),
            file.sha256
        );
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn check_sha256(text: &str) -> Result<()> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("sha256 must be 64 hex digits");
    }
    Ok(())
}

/// The `plugins/` directories of the installed packs, for plugin discovery.
pub fn plugin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for root in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .map(|p| p.join("plugins"))
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    dirs
}

/// A relative path that stays inside the pack: no root, no `..`.
fn inside(relative: &str) -> Result<()> {
    let path = Path::new(relative);
    if relative.is_empty() || path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        bail!("'{relative}' leaves the pack directory (paths must be relative, without '..')");
    }
    Ok(())
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// ` (line L, column C)` of a byte offset, 1-based.
fn line_column(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" (line {line}, column {column})")
}

/// The site directory `packs install --system` writes when `DEEPEMBED_PACK_PATH` is not set.
pub const SITE_DIR: &str = "/usr/local/share/deepembed/packs";

/// Where packs are looked up, in order: `DEEPEMBED_PACK_PATH` (site directories, for read-only
/// cluster file systems), the user data directory, then the default site directory.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(paths) = std::env::var_os("DEEPEMBED_PACK_PATH") {
        dirs.extend(std::env::split_paths(&paths).filter(|p| !p.as_os_str().is_empty()));
    }
    if let Some(data) = dirs::data_dir() {
        dirs.push(user_dir_in(&data));
    }
    dirs.push(PathBuf::from(SITE_DIR));
    dirs
}

pub fn user_dir_in(data: &Path) -> PathBuf {
    data.join("deepembed").join("packs")
}

/// An installed pack by name: its directory and its contents.
pub fn find_installed(name: &str) -> Result<(PathBuf, Pack)> {
    for dir in search_dirs() {
        let candidate = dir.join(name);
        if candidate.join(PACK_FILE).is_file() {
            return Ok((candidate.clone(), Pack::read(&candidate)?));
        }
    }
    let searched: Vec<String> = search_dirs().iter().map(|d| d.display().to_string()).collect();
    bail!(
        "no installed pack named '{name}' (searched {}); install it with deepembed packs install PATH",
        searched.join(", ")
    )
}
