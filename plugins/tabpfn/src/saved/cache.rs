//! Where tabpfn keeps its default checkpoints, for `model_path="auto"`: tabpfn 6.2.0's
//! `model_loading.py:get_cache_dir` (l.402) and `resolve_model_path` (l.670), with its settings
//! (`settings.py`: `TABPFN_MODEL_CACHE_DIR`, `TABPFN_MODEL_VERSION`, from the environment or a
//! `./.env` file). tabpfn downloads a missing file; deepembed never does, so it only says where
//! it looked.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::Task;

/// `TABPFN_MODEL_VERSION` (constants.py `ModelVersion`); v2.5 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelVersion {
    V2,
    V2_5,
}

/// The platforms `get_cache_dir` tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Linux and the BSDs: `$XDG_CACHE_HOME/tabpfn`, else `~/.cache/tabpfn`.
    Unix,
    MacOs,
    Windows,
    /// Anything else: `./.tabpfn_models`.
    Other,
}

impl Platform {
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::MacOs
        } else if cfg!(windows) {
            Platform::Windows
        } else if cfg!(any(target_os = "linux", target_os = "freebsd", target_os = "netbsd", target_os = "openbsd")) {
            Platform::Unix
        } else {
            Platform::Other
        }
    }
}

/// What the cache location depends on, gathered once so that resolving it is a pure function.
#[derive(Debug, Clone)]
pub struct Environment {
    /// `TABPFN_MODEL_CACHE_DIR`, from the environment or `./.env`.
    pub model_cache_dir: Option<String>,
    /// `TABPFN_MODEL_VERSION`, from the environment or `./.env`.
    pub model_version: Option<String>,
    pub xdg_cache_home: Option<String>,
    pub appdata: Option<String>,
    pub home: Option<PathBuf>,
    pub cwd: PathBuf,
    pub platform: Platform,
}

impl Environment {
    /// This process's environment. tabpfn's settings are pydantic-settings with the prefix
    /// `TABPFN_`: names match case-insensitively, and a variable beats a `./.env` line.
    pub fn current() -> Environment {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let dotenv = std::fs::read_to_string(cwd.join(".env")).unwrap_or_default();
        let setting = |name: &str| {
            std::env::vars()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
                .or_else(|| dotenv_value(&dotenv, name))
        };
        Environment {
            model_cache_dir: setting("TABPFN_MODEL_CACHE_DIR"),
            model_version: setting("TABPFN_MODEL_VERSION"),
            xdg_cache_home: std::env::var("XDG_CACHE_HOME").ok(),
            appdata: std::env::var("APPDATA").ok(),
            // Python's Path.home(): $HOME first (USERPROFILE on Windows).
            home: std::env::var_os(if cfg!(windows) { "USERPROFILE" } else { "HOME" }).map(PathBuf::from),
            cwd,
            platform: Platform::current(),
        }
    }
}

/// The value of `name` in a `.env` file's text (python-dotenv's format: `KEY=VALUE` lines,
/// optional `export `, quotes, `#` comments), the last line winning; names match
/// case-insensitively as pydantic-settings reads them.
pub fn dotenv_value(text: &str, name: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else { continue };
        if !key.trim().eq_ignore_ascii_case(name) {
            continue;
        }
        let value = value.trim();
        let value = match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or_default(),
            // An unquoted value ends at a comment.
            _ => value.split(" #").next().unwrap_or_default().trim_end(),
        };
        found = Some(value.to_string());
    }
    found
}

/// Where `model_path="auto"` points, and why there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultCheckpoint {
    pub path: PathBuf,
    pub version: ModelVersion,
    /// How tabpfn chose the directory, for messages (`$XDG_CACHE_HOME/tabpfn`).
    pub reason: String,
}

/// The checkpoint tabpfn loads for `model_path="auto"`: the default file name of
/// `TABPFN_MODEL_VERSION` and the task (model_loading.py `ModelSource`, l.64-141), in the cache directory.
pub fn default_checkpoint(task: Task, env: &Environment) -> Result<DefaultCheckpoint> {
    let version = match env.model_version.as_deref() {
        None | Some("v2.5") => ModelVersion::V2_5,
        Some("v2") => ModelVersion::V2,
        Some(other) => bail!("TABPFN_MODEL_VERSION is '{other}'; tabpfn 6.2 knows v2 and v2.5"),
    };
    let file = match (version, task) {
        (ModelVersion::V2_5, Task::Classification) => "tabpfn-v2.5-classifier-v2.5_default.ckpt",
        (ModelVersion::V2_5, Task::Regression) => "tabpfn-v2.5-regressor-v2.5_default.ckpt",
        (ModelVersion::V2, Task::Classification) => "tabpfn-v2-classifier-finetuned-zk73skhh.ckpt",
        (ModelVersion::V2, Task::Regression) => "tabpfn-v2-regressor.ckpt",
    };
    let (dir, reason) = cache_dir(env)?;
    Ok(DefaultCheckpoint { path: dir.join(file), version, reason })
}

/// `get_cache_dir` (model_loading.py l.402-447), with how the directory was chosen.
fn cache_dir(env: &Environment) -> Result<(PathBuf, String)> {
    let non_blank = |v: &Option<String>| v.as_ref().filter(|s| !s.trim().is_empty()).cloned();
    let relative_to_cwd = |p: PathBuf| if p.is_absolute() { p } else { env.cwd.join(p) };
    if let Some(dir) = &env.model_cache_dir {
        // pydantic reads it as a Path: an empty value is the current directory.
        return Ok((relative_to_cwd(PathBuf::from(dir)), "TABPFN_MODEL_CACHE_DIR".into()));
    }
    let home = || -> Result<&Path> {
        match &env.home {
            Some(h) => Ok(h),
            None => bail!("the home directory is unknown (HOME is not set); set TABPFN_MODEL_CACHE_DIR to the directory holding tabpfn's checkpoints"),
        }
    };
    let fallback = (env.cwd.join(".tabpfn_models"), "./.tabpfn_models, tabpfn's fallback".to_string());
    Ok(match env.platform {
        Platform::Unix => match non_blank(&env.xdg_cache_home) {
            Some(xdg) => (relative_to_cwd(PathBuf::from(xdg).join("tabpfn")), "$XDG_CACHE_HOME/tabpfn".to_string()),
            None => (home()?.join(".cache").join("tabpfn"), "~/.cache/tabpfn, as XDG_CACHE_HOME is unset".to_string()),
        },
        Platform::MacOs => {
            (home()?.join("Library").join("Caches").join("tabpfn"), "~/Library/Caches/tabpfn".to_string())
        }
        Platform::Windows => match non_blank(&env.appdata) {
            Some(appdata) => (PathBuf::from(appdata).join("tabpfn"), "%APPDATA%\\tabpfn".to_string()),
            None => fallback,
        },
        Platform::Other => fallback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(platform: Platform) -> Environment {
        Environment {
            model_cache_dir: None,
            model_version: None,
            xdg_cache_home: None,
            appdata: None,
            home: Some(PathBuf::from("/home/u")),
            cwd: PathBuf::from("/project"),
            platform,
        }
    }

    fn path(task: Task, env: &Environment) -> PathBuf {
        default_checkpoint(task, env).unwrap().path
    }

    #[test]
    fn the_cache_directory_follows_tabpfn_s_order() {
        let mut e = env(Platform::Unix);
        assert_eq!(
            path(Task::Classification, &e),
            Path::new("/home/u/.cache/tabpfn/tabpfn-v2.5-classifier-v2.5_default.ckpt")
        );
        // A blank XDG_CACHE_HOME counts as unset.
        e.xdg_cache_home = Some("  ".into());
        assert_eq!(
            path(Task::Regression, &e),
            Path::new("/home/u/.cache/tabpfn/tabpfn-v2.5-regressor-v2.5_default.ckpt")
        );
        e.xdg_cache_home = Some("/xdg".into());
        assert_eq!(path(Task::Regression, &e), Path::new("/xdg/tabpfn/tabpfn-v2.5-regressor-v2.5_default.ckpt"));
        assert_eq!(default_checkpoint(Task::Regression, &e).unwrap().reason, "$XDG_CACHE_HOME/tabpfn");
        // TABPFN_MODEL_CACHE_DIR beats everything, and is the directory itself (no /tabpfn).
        e.model_cache_dir = Some("models".into());
        assert_eq!(
            path(Task::Classification, &e),
            Path::new("/project/models/tabpfn-v2.5-classifier-v2.5_default.ckpt")
        );
        e.model_cache_dir = Some("/m".into());
        assert_eq!(path(Task::Classification, &e), Path::new("/m/tabpfn-v2.5-classifier-v2.5_default.ckpt"));

        let mac = env(Platform::MacOs);
        assert_eq!(
            path(Task::Classification, &mac),
            Path::new("/home/u/Library/Caches/tabpfn/tabpfn-v2.5-classifier-v2.5_default.ckpt")
        );
        let mut win = env(Platform::Windows);
        assert_eq!(
            path(Task::Classification, &win),
            Path::new("/project/.tabpfn_models/tabpfn-v2.5-classifier-v2.5_default.ckpt")
        );
        win.appdata = Some("/appdata".into());
        assert_eq!(
            path(Task::Classification, &win),
            Path::new("/appdata/tabpfn/tabpfn-v2.5-classifier-v2.5_default.ckpt")
        );

        let mut homeless = env(Platform::Unix);
        homeless.home = None;
        let err = default_checkpoint(Task::Classification, &homeless).unwrap_err().to_string();
        assert!(err.contains("TABPFN_MODEL_CACHE_DIR"), "{err}");
    }

    #[test]
    fn the_model_version_picks_the_file_name() {
        let mut e = env(Platform::Unix);
        e.model_version = Some("v2".into());
        let v2 = default_checkpoint(Task::Classification, &e).unwrap();
        assert_eq!(v2.version, ModelVersion::V2);
        assert_eq!(v2.path.file_name().unwrap(), "tabpfn-v2-classifier-finetuned-zk73skhh.ckpt");
        assert_eq!(path(Task::Regression, &e).file_name().unwrap(), "tabpfn-v2-regressor.ckpt");
        e.model_version = Some("v3".into());
        let err = default_checkpoint(Task::Regression, &e).unwrap_err().to_string();
        assert!(err.contains("TABPFN_MODEL_VERSION is 'v3'"), "{err}");
    }

    #[test]
    fn dotenv_lines_are_read_as_python_dotenv_does() {
        let text =
            "# models\nOTHER=1\nexport tabpfn_model_cache_dir = \"/a b\" # quoted\nTABPFN_MODEL_VERSION=v2 # comment\n";
        assert_eq!(dotenv_value(text, "TABPFN_MODEL_CACHE_DIR").as_deref(), Some("/a b"));
        assert_eq!(dotenv_value(text, "TABPFN_MODEL_VERSION").as_deref(), Some("v2"));
        assert_eq!(dotenv_value(text, "TABPFN_NOTHING"), None);
        assert_eq!(dotenv_value("X=1\nX='2'\n", "x").as_deref(), Some("2"));
    }
}
