//! `deepembed packs install|list|show|verify|remove`, and `deepembed embed --model PACK/MODEL`:
//! the pack's model resolved into the plugin's command line before it is parsed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::loader::{self, Discovery, Plugin};
use crate::pack::{self, Pack, PackModel, PACK_FILE};
use crate::pack_archive;

/// Beside an installed pack's files: each file's size and modification time when it was last
/// hashed, so a run hashes again only what changed since.
const VERIFIED_FILE: &str = ".verified.json";

/// Flags a pack never fixes: where the output goes and how the run is carried out.
const RUN_FLAGS: &[&str] =
    &["out", "json", "quiet", "resume", "commit_rows", "commit_seconds", "shard", "plugin_path", "on_error"];

#[derive(Default, Serialize, Deserialize)]
struct Verified {
    files: BTreeMap<String, (u64, u64)>,
}

/// `deepembed packs install PATH [--system] [--upgrade]`: PATH is a pack directory or a
/// `.tar.zst` of one (unpacked into a scratch directory beside the installed packs first).
pub fn install(source: &Path, system: bool, upgrade: bool, discovery: &Discovery) -> Result<PathBuf> {
    if pack_archive::is_archive(source) {
        let root = install_root(system)?;
        let scratch = root.join(format!(".unpacking-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let installed =
            pack_archive::unpack(source, &scratch).and_then(|dir| install(&dir, system, upgrade, discovery));
        let _ = std::fs::remove_dir_all(&scratch);
        return installed;
    }
    if !source.is_dir() {
        bail!("{}: a pack is a directory with {PACK_FILE} at its root, or a .tar.zst of one", source.display());
    }
    let pack = Pack::read(source)?;
    pack.verify(source)?;
    // The pack's own plugins, loaded as discovery would: one built against another SDK ABI or
    // libtorch is refused with the loader's reason.
    let mut shipped = Vec::new();
    for file in &pack.pack.plugins {
        let path = source.join(&file.path);
        shipped.push(loader::load(&path).map_err(|e| anyhow!("{}: {e:#}", path.display()))?);
    }
    for model in &pack.models {
        match shipped.iter().find(|p| p.manifest.name == model.plugin) {
            Some(plugin) => check_version(&pack, model, plugin)?,
            None => check_plugin(&pack, model, discovery)?,
        }
        check_paths_listed(source, &pack, model)?;
    }
    let root = install_root(system)?;
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let name = &pack.pack.name;
    let target = root.join(name);
    if target.exists() && !upgrade {
        let installed = Pack::read(&target).map(|p| p.pack.version).unwrap_or_else(|_| "unreadable".into());
        bail!(
            "a pack named {name} (version {installed}) is installed at {}; add --upgrade to replace it with version {}",
            target.display(),
            pack.pack.version
        );
    }
    // Copied beside the target under a hidden name, checked again there, then moved into place:
    // an interrupted install leaves no half-installed pack.
    let staging = root.join(format!(".{name}.installing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let copied = copy_pack(source, &staging, &pack).and_then(|()| {
        pack.verify(&staging)?;
        record_verified(&staging, &pack)
    });
    if let Err(e) = copied {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if target.exists() {
        let old = root.join(format!(".{name}.replaced-{}", std::process::id()));
        std::fs::rename(&target, &old).with_context(|| format!("cannot replace {}", target.display()))?;
        std::fs::rename(&staging, &target).with_context(|| format!("cannot install into {}", target.display()))?;
        let _ = std::fs::remove_dir_all(old);
    } else {
        std::fs::rename(&staging, &target).with_context(|| format!("cannot install into {}", target.display()))?;
    }
    Ok(target)
}

fn install_root(system: bool) -> Result<PathBuf> {
    if system {
        // The first site directory of DEEPEMBED_PACK_PATH, else the default one.
        let paths = std::env::var_os("DEEPEMBED_PACK_PATH").unwrap_or_default();
        let first = std::env::split_paths(&paths).find(|p| !p.as_os_str().is_empty());
        return Ok(first.unwrap_or_else(|| PathBuf::from(pack::SITE_DIR)));
    }
    let data = dirs::data_dir().ok_or_else(|| anyhow!("no user data directory (set XDG_DATA_HOME or HOME)"))?;
    Ok(pack::user_dir_in(&data))
}

/// The model's plugin is installed, in a version the pack accepts.
fn check_plugin(pack: &Pack, model: &PackModel, discovery: &Discovery) -> Result<()> {
    let plugin = discovery.find(&model.plugin).ok_or_else(|| {
        anyhow!(
            "pack {} model '{}' needs plugin '{}', which is not installed\n{}",
            pack.pack.name,
            model.name,
            model.plugin,
            discovery.explain()
        )
    })?;
    check_version(pack, model, plugin)
}

fn check_version(pack: &Pack, model: &PackModel, plugin: &Plugin) -> Result<()> {
    let required = semver::VersionReq::parse(&model.plugin_version)?;
    let found = semver::Version::parse(&plugin.manifest.version)
        .with_context(|| format!("plugin {} has version '{}'", model.plugin, plugin.manifest.version))?;
    if !required.matches(&found) {
        bail!(
            "pack {} model '{}' needs plugin {} {}, but {} {found} is installed ({})",
            pack.pack.name,
            model.name,
            model.plugin,
            model.plugin_version,
            model.plugin,
            plugin.path.display()
        );
    }
    Ok(())
}

/// Every file a model's paths name (a file, or the files of a directory) is listed with a
/// checksum: nothing the model reads goes unverified.
fn check_paths_listed(dir: &Path, pack: &Pack, model: &PackModel) -> Result<()> {
    for (flag, relative) in &model.paths {
        let path = dir.join(relative);
        let mut files = Vec::new();
        if path.is_dir() {
            walk(&path, &mut files)?;
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            bail!("{}: missing (paths.{flag} of model '{}' in {PACK_FILE})", path.display(), model.name);
        }
        for file in files {
            let relative = file.strip_prefix(dir).expect("under the pack").to_string_lossy().into_owned();
            if !model.files.iter().any(|f| Path::new(&f.path) == Path::new(&relative)) {
                bail!(
                    "{}: read by model '{}' (paths.{flag}) but not listed in its files with a sha256 in {} {PACK_FILE}",
                    file.display(),
                    model.name,
                    pack.pack.name
                );
            }
        }
    }
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// `pack.toml` and every listed file (nothing else) into `to`.
fn copy_pack(from: &Path, to: &Path, pack: &Pack) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    std::fs::copy(from.join(PACK_FILE), to.join(PACK_FILE))?;
    for file in pack.files() {
        let target = to.join(&file.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from.join(&file.path), &target)
            .with_context(|| format!("cannot copy {} into {}", from.join(&file.path).display(), to.display()))?;
    }
    Ok(())
}

fn stamp(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    let modified = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos() as u64;
    Some((meta.len(), modified))
}

fn record_verified(dir: &Path, pack: &Pack) -> Result<()> {
    let mut verified = Verified::default();
    for file in pack.files() {
        if let Some(s) = stamp(&dir.join(&file.path)) {
            verified.files.insert(file.path.clone(), s);
        }
    }
    std::fs::write(dir.join(VERIFIED_FILE), serde_json::to_string_pretty(&verified)?)
        .with_context(|| format!("cannot write {}", dir.join(VERIFIED_FILE).display()))
}

/// Hashes again the model's files whose size or modification time changed since they were last
/// hashed (all of them when there is no record).
fn verify_changed(dir: &Path, model: &PackModel) -> Result<()> {
    let verified: Verified = std::fs::read_to_string(dir.join(VERIFIED_FILE))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    for file in &model.files {
        let now = stamp(&dir.join(&file.path));
        if now.is_none() || verified.files.get(&file.path) != now.as_ref() {
            pack::verify_file(dir, file)?;
        }
    }
    Ok(())
}

/// The installed packs, each with its directory.
fn installed() -> Vec<(PathBuf, Result<Pack>)> {
    let mut found = Vec::new();
    for root in pack::search_dirs() {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.join(PACK_FILE).is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        dirs.sort();
        for dir in dirs {
            let pack = Pack::read(&dir);
            found.push((dir, pack));
        }
    }
    found
}

/// `deepembed packs list [--json]`.
pub fn list(as_json: bool) -> Result<String> {
    let packs = installed();
    if as_json {
        let value: Vec<Value> = packs
            .iter()
            .map(|(dir, pack)| match pack {
                Ok(p) => json!({"name": p.pack.name, "version": p.pack.version, "description": p.pack.description,
                                "models": p.models.iter().map(|m| json!({"name": m.name, "plugin": m.plugin,
                                          "embedding_width": m.embedding_width})).collect::<Vec<_>>(),
                                "path": dir}),
                Err(e) => json!({"path": dir, "error": format!("{e:#}")}),
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&value)? + "\n");
    }
    let mut text = String::new();
    if packs.is_empty() {
        text.push_str("no packs installed\n");
    }
    for (dir, pack) in &packs {
        match pack {
            Ok(p) => {
                let models: Vec<String> = p.models.iter().map(|m| format!("{}/{}", p.pack.name, m.name)).collect();
                text.push_str(&format!(
                    "{} {}  {}\n  models: {}\n  path:   {}\n",
                    p.pack.name,
                    p.pack.version,
                    p.pack.description,
                    models.join(", "),
                    dir.display()
                ));
            }
            Err(e) => text.push_str(&format!("unreadable pack at {}: {e:#}\n", dir.display())),
        }
    }
    Ok(text)
}

/// `deepembed packs show NAME`.
pub fn show(name: &str) -> Result<String> {
    let (dir, pack) = pack::find_installed(name)?;
    let p = &pack.pack;
    let mut text = format!(
        "{} {}\n  {}\n  licence:    {}\n  maintainer: {}\n  path:       {}\n",
        p.name,
        p.version,
        p.description,
        p.license,
        p.maintainer,
        dir.display()
    );
    for m in &pack.models {
        let width = m.embedding_width.map_or("not stated".to_string(), |w| w.to_string());
        text.push_str(&format!(
            "\nmodel {}/{}\n  plugin: {} {}\n  embedding width: {width}\n",
            p.name, m.name, m.plugin, m.plugin_version
        ));
        for (flag, value) in &m.flags {
            text.push_str(&format!("  --{flag} {value} (fixed)\n"));
        }
        for (flag, path) in &m.paths {
            text.push_str(&format!("  --{flag} {path} (fixed, in the pack)\n"));
        }
        text.push_str(&format!(
            "  a user may set: {}\n",
            if m.user_flags.is_empty() { "nothing but the inputs".into() } else { m.user_flags.join(", ") }
        ));
        for f in &m.files {
            text.push_str(&format!("  file {}  sha256 {}\n", f.path, f.sha256));
        }
        for (key, value) in &m.card {
            text.push_str(&format!("  {key}: {value}\n"));
        }
    }
    Ok(text)
}

/// `deepembed packs verify [NAME]`: every file of one or every installed pack hashed again.
pub fn verify(name: Option<&str>) -> Result<String> {
    let packs: Vec<(PathBuf, Pack)> = match name {
        Some(name) => vec![pack::find_installed(name)?],
        None => installed().into_iter().map(|(d, p)| p.map(|p| (d, p))).collect::<Result<_>>()?,
    };
    let mut text = String::new();
    let mut failed = Vec::new();
    for (dir, pack) in &packs {
        match pack.verify(dir) {
            Ok(()) => {
                let _ = record_verified(dir, pack);
                text.push_str(&format!("{} {}: every file matches\n", pack.pack.name, pack.pack.version));
            }
            Err(e) => failed.push(format!("{} {}: {e:#}", pack.pack.name, pack.pack.version)),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(text)
}

/// `deepembed packs remove NAME`.
pub fn remove(name: &str) -> Result<PathBuf> {
    let (dir, _) = pack::find_installed(name)?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    Ok(dir)
}

/// What a run through `--model PACK/MODEL` records (pack, version, model and weight hashes),
/// and the embedding width the pack promises.
pub struct PackUse {
    pub record: Value,
    pub embedding_width: Option<usize>,
}

/// `deepembed embed --model PACK/MODEL ...`: the command line rewritten as the plugin's, with
/// the pack's fixed flags and paths; a user flag that the pack fixes, or does not let a user set,
/// is refused by name. Returns `argv` unchanged when there is no `--model`.
pub fn resolve_model(argv: Vec<OsString>, discovery: &Discovery) -> Result<(Vec<OsString>, Option<PackUse>)> {
    let Some(embed_at) = argv.iter().position(|a| a == "embed") else { return Ok((argv, None)) };
    let rest: Vec<String> = argv[embed_at + 1..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut model_ref = None;
    let mut user: Vec<String> = Vec::new();
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        if arg == "--model" {
            model_ref = Some(it.next().ok_or_else(|| anyhow!("--model needs PACK/MODEL"))?.clone());
        } else if let Some(value) = arg.strip_prefix("--model=") {
            model_ref = Some(value.to_string());
        } else {
            user.push(arg.clone());
        }
    }
    let Some(model_ref) = model_ref else { return Ok((argv, None)) };
    let (pack_name, model_name) = model_ref
        .split_once('/')
        .ok_or_else(|| anyhow!("--model {model_ref}: expected PACK/MODEL, e.g. site/chest-xray-v3"))?;
    let (dir, pack) = pack::find_installed(pack_name)?;
    let model = pack.model(model_name)?;
    check_plugin(&pack, model, discovery)?;
    // `embed vision --model site/xray`: the plugin named as well is the pack's, or a mistake.
    if let Some(named) = user.first().filter(|a| !a.starts_with('-')) {
        if *named != model.plugin {
            bail!("--model {model_ref} runs plugin '{}', not '{named}'; leave the plugin name out", model.plugin);
        }
        user.remove(0);
    }
    let plugin = discovery.find(&model.plugin).expect("checked above");
    let inputs: Vec<&str> = plugin.manifest.inputs.iter().map(|i| i.name.as_str()).collect();
    for arg in &user {
        let Some(flag) = arg.strip_prefix("--") else { continue };
        let flag = flag.split('=').next().unwrap_or(flag).replace('-', "_");
        if let Some(value) = model.flags.get(&flag) {
            bail!("--{flag} is fixed by pack {model_ref} to {value}; leave it out");
        }
        if let Some(path) = model.paths.get(&flag) {
            bail!("--{flag} is fixed by pack {model_ref} to its file {path}; leave it out");
        }
        let allowed =
            model.user_flags.contains(&flag) || RUN_FLAGS.contains(&flag.as_str()) || inputs.contains(&flag.as_str());
        if !allowed {
            let mut may: Vec<&str> = inputs.clone();
            may.extend(model.user_flags.iter().map(String::as_str));
            bail!("--{flag} is not a flag pack {model_ref} lets a user set; it lets you set: {}", may.join(", "));
        }
    }
    verify_changed(&dir, model)?;

    let mut new: Vec<OsString> = argv[..=embed_at].to_vec();
    new.push(model.plugin.clone().into());
    new.extend(user.iter().map(OsString::from));
    for (flag, value) in &model.flags {
        match value {
            toml::Value::Boolean(true) => new.push(format!("--{flag}").into()),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                new.push(format!("--{flag}").into());
                new.extend(items.iter().map(|v| OsString::from(toml_text(v))));
            }
            other => {
                new.push(format!("--{flag}").into());
                new.push(toml_text(other).into());
            }
        }
    }
    for (flag, relative) in &model.paths {
        new.push(format!("--{flag}").into());
        new.push(dir.join(relative).into_os_string());
    }
    let files: serde_json::Map<String, Value> =
        model.files.iter().map(|f| (f.path.clone(), Value::from(f.sha256.clone()))).collect();
    let record = json!({"name": pack.pack.name, "version": pack.pack.version, "model": model.name,
                        "path": dir, "files_sha256": files});
    log::info!("pack {} {}: model {} (plugin {})", pack.pack.name, pack.pack.version, model.name, model.plugin);
    Ok((new, Some(PackUse { record, embedding_width: model.embedding_width.map(|w| w as usize) })))
}

/// A TOML scalar as a command-line value.
fn toml_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
