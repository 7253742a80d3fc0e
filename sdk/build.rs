//! Records which libtorch this SDK was built against, so the host can refuse a plugin built
//! against another one (two libtorch copies in one process crash).
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let version = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .ok()
        .and_then(|lib| libtorch_version(Path::new(&lib)))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=DEEPEMBED_LIBTORCH_VERSION={version}");
}

/// pip's torch keeps `torch/version.py` beside `torch/lib`; a libtorch archive has `build-version`.
fn libtorch_version(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        return Some(text.trim().to_string());
    }
    let text = std::fs::read_to_string(root.join("version.py")).ok()?;
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    Some(line.split('\'').nth(1)?.to_string())
}
