//! Loading one plugin library and checking that it can safely run in this host.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use deepembed_sdk::abi::abi_stable::library::lib_header_from_path;
use deepembed_sdk::abi::PluginModRef;
use deepembed_sdk::{libtorch_release, Manifest, SDK_ABI_VERSION};

use crate::discovery;

/// A plugin that loaded and passed every check.
pub struct Plugin {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub module: PluginModRef,
    pub sdk_abi_version: u32,
    pub libtorch_version: String,
}

/// A library file that was found but not loaded, and why.
pub struct Rejected {
    pub path: PathBuf,
    pub reason: String,
}

pub struct Discovery {
    pub plugins: Vec<Plugin>,
    pub rejected: Vec<Rejected>,
    pub searched: Vec<(PathBuf, &'static str)>,
}

impl Discovery {
    pub fn find(&self, name: &str) -> Option<&Plugin> {
        self.plugins.iter().find(|p| p.manifest.name == name)
    }

    /// The searched directories and rejected files, for error messages.
    pub fn explain(&self) -> String {
        let mut text = String::from("searched:");
        for (dir, why) in &self.searched {
            let state = if dir.exists() { "" } else { " (does not exist)" };
            text.push_str(&format!("\n  {} [{why}]{state}", dir.display()));
        }
        for r in &self.rejected {
            text.push_str(&format!("\nnot loaded: {}: {}", r.path.display(), r.reason));
        }
        text
    }
}

/// Finds and loads every plugin. The first plugin of a given name wins; later ones are reported
/// as shadowed.
pub fn discover(cli_paths: &[PathBuf]) -> Discovery {
    let searched = discovery::search_dirs(cli_paths);
    let mut plugins: Vec<Plugin> = Vec::new();
    let mut rejected = Vec::new();
    for (dir, _) in &searched {
        for path in discovery::library_files(dir) {
            if plugins.iter().any(|p| same_file(&p.path, &path)) {
                continue;
            }
            match load(&path) {
                Ok(plugin) => match plugins.iter().find(|p| p.manifest.name == plugin.manifest.name) {
                    Some(first) => rejected.push(Rejected {
                        reason: format!("plugin '{}' is shadowed by {}", plugin.manifest.name, first.path.display()),
                        path,
                    }),
                    None => plugins.push(plugin),
                },
                Err(e) => rejected.push(Rejected { path, reason: format!("{e:#}") }),
            }
        }
    }
    Discovery { plugins, rejected, searched }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Loads one library: abi_stable's layout and version check, then the SDK ABI version and the
/// libtorch version, then the manifest.
pub fn load(path: &Path) -> Result<Plugin> {
    // Through the file's own header: abi_stable caches one module per root type, so its
    // directory loader would hand every plugin the first one's module.
    let header = lib_header_from_path(path).map_err(|e| anyhow!("not a deepembed plugin: {e}"))?;
    let module = header.init_root_module::<PluginModRef>().map_err(|e| anyhow!("incompatible plugin: {e}"))?;
    let sdk_abi_version = module.sdk_abi_version();
    let libtorch_version = module.libtorch_version().as_str().to_string();
    if sdk_abi_version != SDK_ABI_VERSION {
        return Err(anyhow!(
            "built against SDK ABI version {sdk_abi_version}, this host speaks version {SDK_ABI_VERSION}; rebuild the plugin against a matching deepembed-sdk"
        ));
    }
    let host_torch = deepembed_sdk::LIBTORCH_VERSION;
    if libtorch_release(&libtorch_version) != libtorch_release(host_torch) {
        return Err(anyhow!(
            "built against libtorch {libtorch_version}, this host uses libtorch {host_torch}; two libtorch copies in one process crash, so rebuild the plugin against libtorch {}",
            libtorch_release(host_torch)
        ));
    }
    let json = (module.manifest())().into_string();
    if let Some(error) = json.strip_prefix('!') {
        return Err(anyhow!("its manifest failed: {error}"));
    }
    let manifest: Manifest = serde_json::from_str(&json).map_err(|e| anyhow!("its manifest is not valid: {e}"))?;
    Ok(Plugin { path: path.to_path_buf(), manifest, module, sdk_abi_version, libtorch_version })
}
