//! Set-up shared by every task: system packages, the Python venv that provides libtorch and the
//! reference stack, the release build, and installing plugins beside the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Paths of the workspace, derived from this crate's location.
pub struct Workspace {
    pub root: PathBuf,
}

impl Workspace {
    pub fn locate() -> Workspace {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf();
        Workspace { root }
    }
    pub fn venv(&self) -> PathBuf {
        self.root.join(".venv")
    }
    pub fn python(&self) -> PathBuf {
        self.venv().join("bin").join("python")
    }
    pub fn release(&self) -> PathBuf {
        self.root.join("target").join("release")
    }
    pub fn binary(&self) -> PathBuf {
        self.release().join("deepembed")
    }
    pub fn requirements(&self) -> PathBuf {
        self.root.join("tests").join("python").join("requirements.txt")
    }
    /// tabpfn's reference stack: a `pip --target` folder used in front of the venv (see
    /// `tabpfn_reference`).
    pub fn tabpfn_libs(&self) -> PathBuf {
        self.root.join(".venv-tabpfn")
    }
    pub fn tabpfn_requirements(&self) -> PathBuf {
        self.root.join("tests").join("python").join("requirements-tabpfn.txt")
    }

    /// The directory of libtorch inside the venv's torch package.
    pub fn torch_lib(&self) -> Result<PathBuf> {
        let out = Command::new(self.python())
            .args(["-c", "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"])
            .output()
            .context("running the venv's python")?;
        if !out.status.success() {
            bail!("torch is not importable in {}: {}", self.venv().display(), String::from_utf8_lossy(&out.stderr));
        }
        Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
    }

    /// A command with the venv first on PATH and libtorch on the library path, as the build and
    /// the tests need.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        let mut cmd = Command::new(program);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.venv().join("bin")];
        paths.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(paths)?)
            .env("LIBTORCH_USE_PYTORCH", "1")
            .env("LD_LIBRARY_PATH", self.torch_lib()?)
            .env_remove("LIBTORCH")
            .current_dir(&self.root);
        Ok(cmd)
    }
}

pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {}", describe(cmd));
    let status = cmd.status().with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed with {status}", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "))
}

/// Everything `demo` and `test` need before running anything.
pub fn setup(ws: &Workspace) -> Result<()> {
    report_free_disk(ws);
    system_packages()?;
    python_venv(ws)?;
    build(ws)?;
    install_plugins(ws)?;
    Ok(())
}

/// A cold set-up and test run takes about 14 GB (the venv with torch's CUDA wheels 6, the release
/// build 4.5, the fixtures 2, test outputs while they run); a full disk otherwise shows up as a
/// pip or linker error far from its cause.
fn report_free_disk(ws: &Workspace) {
    let Ok(out) = Command::new("df").arg("-Pk").arg(&ws.root).output() else { return };
    let text = String::from_utf8_lossy(&out.stdout);
    let free_kb = text.lines().nth(1).and_then(|l| l.split_whitespace().nth(3)).and_then(|v| v.parse::<u64>().ok());
    if let Some(kb) = free_kb {
        let gb = kb as f64 / 1024.0 / 1024.0;
        eprintln!("xtask: {gb:.1} GB free under {}; a cold run needs about 14 GB", ws.root.display());
    }
}

/// cmake and nasm build libjpeg-turbo (linked statically into the vision plugin).
fn system_packages() -> Result<()> {
    apt_install(&[("cmake", "cmake"), ("nasm", "nasm")], "the build needs them to build libjpeg-turbo")
}

/// Slurm (with munge) for the test that runs `deepembed slurm` on a real single-node cluster
/// (tests/slurm/cluster.sh).
pub fn test_packages() -> Result<()> {
    apt_install(&[("sbatch", "slurm-wlm")], "the Slurm test runs a real single-node cluster")
}

/// Installs the apt packages of the (tool, package) pairs whose tool is not on PATH.
fn apt_install(needed: &[(&str, &str)], why: &str) -> Result<()> {
    let missing: Vec<&str> = needed.iter().filter(|(tool, _)| !on_path(tool)).map(|(_, package)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if !is_root || !on_path("apt-get") {
        bail!("{} missing ({why}); install with your package manager and rerun", missing.join(" and "));
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Whether a cargo subcommand is installed (on PATH or in cargo's bin directory).
pub fn has_cargo_tool(tool: &str) -> bool {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    on_path(tool) || cargo_home.is_some_and(|home| home.join("bin").join(tool).is_file())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// `.venv` with the pinned requirements. Reinstalled only when requirements.txt changes.
fn python_venv(ws: &Workspace) -> Result<()> {
    let stamp = ws.venv().join(".deepembed-requirements");
    let wanted = std::fs::read_to_string(ws.requirements())?;
    if ws.python().is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    if !ws.python().is_file() {
        let base = std::env::var("DEEPEMBED_BASE_PYTHON").unwrap_or_else(|_| "python3".into());
        run(Command::new(&base).args(["-m", "venv"]).arg(ws.venv()))?;
    }
    // No wheel cache: torch's CUDA wheels would take another 3 GB of a CI disk for nothing.
    run(Command::new(ws.python()).args(["-m", "pip", "install", "--quiet", "--no-cache-dir", "--upgrade", "pip"]))?;
    run(Command::new(ws.python())
        .args(["-m", "pip", "install", "--quiet", "--no-cache-dir", "-r"])
        .arg(ws.requirements()))?;
    std::fs::write(stamp, wanted)?;
    Ok(())
}

/// `.venv-tabpfn` with tabpfn's reference stack. Its scikit-learn pin conflicts with the venv's,
/// so it goes into a folder of its own, without dependencies (torch, numpy and pandas come from
/// the venv: no second torch), used through PYTHONPATH by gen_tabpfn.py only. Wheels only, so a
/// missing wheel fails at once rather than compiling scikit-learn. Reinstalled only when
/// requirements-tabpfn.txt changes.
pub fn tabpfn_reference(ws: &Workspace) -> Result<()> {
    let dir = ws.tabpfn_libs();
    let stamp = dir.join(".deepembed-requirements");
    let wanted = std::fs::read_to_string(ws.tabpfn_requirements())?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    // Start empty: `pip --target` does not remove what an older pin left behind.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing the outdated {}", dir.display()))?;
    }
    run(Command::new(ws.python())
        .args(["-m", "pip", "install", "--quiet", "--no-cache-dir", "--no-deps", "--only-binary=:all:", "--target"])
        .arg(&dir)
        .arg("-r")
        .arg(ws.tabpfn_requirements()))?;
    std::fs::write(stamp, wanted)?;
    Ok(())
}

/// Release build of the host and every plugin against the venv's libtorch.
fn build(ws: &Workspace) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(ws.command(&cargo)?.args(["build", "--release", "--workspace", "--exclude", "xtask"]))
}

/// The plugins: one directory each under `plugins/`, its library built by `plugins/<name>/cdylib`.
pub fn plugin_names(ws: &Workspace) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(ws.root.join("plugins"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// The file name of plugin `name`'s library, as cargo builds it from `plugins/<name>/cdylib`.
pub fn plugin_library(name: &str) -> String {
    format!("libdeepembed_{}_plugin.so", name.replace('-', "_"))
}

/// Copies each plugin library to `target/release/plugins/`, where the host looks by default.
fn install_plugins(ws: &Workspace) -> Result<()> {
    let dest = ws.release().join("plugins");
    // Start empty: a library left from an older build (another name, another ABI) would be
    // found beside the new ones.
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest)?;
    for name in plugin_names(ws)? {
        let file = plugin_library(&name);
        let built = ws.release().join(&file);
        if !built.is_file() {
            bail!("plugin {name} was not built: {} is missing", built.display());
        }
        // Copy then rename, so a running deepembed never maps a half-written library.
        let tmp = dest.join(format!(".{file}.tmp"));
        std::fs::copy(&built, &tmp)?;
        std::fs::rename(&tmp, dest.join(&file))?;
    }
    eprintln!("xtask: plugins installed in {}", dest.display());
    Ok(())
}
