//! Where plugins are looked for, in order: `--plugin-path`, `DEEPEMBED_PLUGIN_PATH`
//! (colon-separated), the user data directory, the installed model packs' `plugins/`, then
//! `plugins/` beside the binary.

use std::path::{Path, PathBuf};

/// The directories searched, in order, each with why it is searched.
pub fn search_dirs(cli_paths: &[PathBuf]) -> Vec<(PathBuf, &'static str)> {
    let mut dirs = Vec::new();
    for p in cli_paths {
        dirs.push((p.clone(), "--plugin-path"));
    }
    if let Some(env) = std::env::var_os("DEEPEMBED_PLUGIN_PATH") {
        for p in std::env::split_paths(&env).filter(|p| !p.as_os_str().is_empty()) {
            dirs.push((p, "DEEPEMBED_PLUGIN_PATH"));
        }
    }
    if let Some(data) = dirs::data_dir() {
        dirs.push((data.join("deepembed").join("plugins"), "user data directory"));
    }
    for dir in crate::pack::plugin_dirs() {
        dirs.push((dir, "a model pack"));
    }
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        dirs.push((exe_dir.join("plugins"), "beside the binary"));
    }
    dirs
}

/// Plugin library files in `dir` (a file path given directly counts as itself), sorted by name.
pub fn library_files(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == std::env::consts::DLL_EXTENSION))
        .collect();
    files.sort();
    files
}
