//! tabpfn's packaged column-embedding table (`tabpfn_col_embedding.pt`, `[2000, 48]`), which its
//! released models (emsize 192, seed 42) use for their first 2000 feature positional embeddings
//! instead of random draws. deepembed does not ship it (it is part of the tabpfn package, under
//! its licence): it reads the copy of an installed tabpfn, as data.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use deepembed_sdk::checkpoint::{Checkpoint, Value};
use tch::Tensor;

pub const FILE: &str = "tabpfn_col_embedding.pt";

/// Names the table's file explicitly.
pub const VARIABLE: &str = "DEEPEMBED_TABPFN_COL_EMBEDDING";

/// The table, from `$DEEPEMBED_TABPFN_COL_EMBEDDING` or an installed tabpfn package.
pub fn load() -> Result<Tensor> {
    let path = find()?;
    let checkpoint = Checkpoint::open(&path)?;
    let Value::Tensor(tensor) = checkpoint.root() else {
        bail!(
            "{}: expected one saved tensor (tabpfn's column-embedding table), found {}",
            path.display(),
            checkpoint.root().type_name()
        );
    };
    log::info!("tabpfn's column-embedding table from {}", path.display());
    checkpoint.tensor(tensor)
}

fn find() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(VARIABLE) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{VARIABLE}={}: no such file", path.display());
        }
        return Ok(path);
    }
    let candidates = candidates();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let searched: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        anyhow!(
            "this checkpoint (emsize 192, seed 42, as tabpfn's released models) takes its first 2000 feature positional embeddings from the table tabpfn ships as {FILE}; no installed tabpfn was found ({}). Install tabpfn, or set {VARIABLE} to the file (tabpfn/architectures/base/{FILE} in the package)",
            if searched.is_empty() { "no Python prefix to search".to_string() } else { format!("searched {}", searched.join(", ")) }
        )
    })
}

/// Where a pip or conda install puts the file: `<prefix>/lib/python3.*/{site,dist}-packages/...`
/// under the active virtual environment, conda environment, user and system prefixes.
fn candidates() -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> =
        ["VIRTUAL_ENV", "CONDA_PREFIX"].iter().filter_map(std::env::var_os).map(PathBuf::from).collect();
    if let Some(home) = std::env::var_os("HOME") {
        prefixes.push(Path::new(&home).join(".local"));
    }
    prefixes.extend(["/usr/local", "/usr", "/opt/conda"].map(PathBuf::from));
    let mut found = Vec::new();
    for prefix in prefixes {
        let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else { continue };
        let mut pythons: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3")))
            .collect();
        pythons.sort();
        for python in pythons {
            for packages in ["site-packages", "dist-packages"] {
                found.push(python.join(packages).join("tabpfn").join("architectures").join("base").join(FILE));
            }
        }
    }
    found
}
