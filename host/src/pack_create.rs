//! `deepembed packs create OUT_DIR --name PACK --from-deeptune RUN_DIR --model-name MODEL ...`: a
//! pack directory made from DeepTune fine-tuning output directories, one model per run.
//!
//! What a DeepTune run directory holds, by what it was trained on (DeepTune's trainers write
//! `cli_arguments.json` with the training arguments by their Python names):
//! - vision: `model_weights.pth` (the adjusted model's state dict) and `cli_arguments.json` with
//!   `model_version`, `use_peft`, `mode`, `added_layers`, `embed_size`;
//! - multilingual BERT: `bert_model/`, `tokenizer/`, `model_weights.pth` and `model_config.json`
//!   (`num_classes`, `added_layers`, `embedding_layer`, `use_peft`);
//! - GPT-2: `gpt2_model/`, `tokenizer/`, `model_weights.pth`, `model_config.json` (`output_dim`);
//! - GANDALF: `GANDALF_model/`, pytorch-tabular's saved model (its embedding width is read from
//!   the shapes in `model.ckpt`).
//!
//! The flags that decide the embeddings become the pack's fixed flags, the weights its files
//! (copied, with their SHA-256), and the training arguments go into the model card.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::loader::Discovery;
use crate::pack::{self, Pack, PackInfo, PackModel, PackedFile, PACK_FILE};

/// One `--from-deeptune RUN_DIR --model-name MODEL` pair.
pub struct Source {
    pub run_dir: PathBuf,
    pub model_name: String,
}

/// Writes the pack into `out` (which must not exist) and returns its `pack.toml`.
pub fn create(out: &Path, name: &str, version: &str, sources: &[Source], discovery: &Discovery) -> Result<PathBuf> {
    if out.exists() {
        bail!("{} exists; packs create writes a new directory", out.display());
    }
    if sources.is_empty() {
        bail!("name at least one run: --from-deeptune RUN_DIR --model-name MODEL");
    }
    let mut models = Vec::new();
    let made = (|| -> Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        for source in sources {
            models.push(model_from_run(out, source, discovery).with_context(|| {
                format!("--from-deeptune {} (--model-name {})", source.run_dir.display(), source.model_name)
            })?);
        }
        let pack = Pack {
            pack: PackInfo {
                name: name.into(),
                version: version.into(),
                description: format!(
                    "Made from DeepTune runs: {}",
                    sources.iter().map(|s| s.model_name.as_str()).collect::<Vec<_>>().join(", ")
                ),
                license: String::new(),
                maintainer: String::new(),
                plugins: Vec::new(),
            },
            models,
        };
        let text = toml::to_string(&pack).context("writing pack.toml")?;
        std::fs::write(out.join(PACK_FILE), text)?;
        // What install will check, checked now.
        Pack::read(out)?.verify(out)
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(out);
        return Err(e);
    }
    Ok(out.join(PACK_FILE))
}

fn model_from_run(out: &Path, source: &Source, discovery: &Discovery) -> Result<PackModel> {
    let run = &source.run_dir;
    if !run.is_dir() {
        bail!("not a directory");
    }
    let json = |file: &str| read_json(&run.join(file));
    let arguments = json("cli_arguments.json").ok();
    let dest = Path::new(&source.model_name);
    let mut model = PackModel {
        name: source.model_name.clone(),
        plugin: String::new(),
        plugin_version: String::new(),
        embedding_width: None,
        user_flags: Vec::new(),
        flags: BTreeMap::new(),
        paths: BTreeMap::new(),
        files: Vec::new(),
        card: BTreeMap::new(),
    };
    let flag = |model: &mut PackModel, key: &str, value: toml::Value| {
        model.flags.insert(key.into(), value);
    };
    if run.join("GANDALF_model").is_dir() {
        model.plugin = "gandalf".into();
        model.paths.insert(
            "model_weights".into(),
            copy_tree(&run.join("GANDALF_model"), out, &dest.join("GANDALF_model"), &mut model.files)?,
        );
        model.embedding_width = gandalf_width(&run.join("GANDALF_model").join("model.ckpt"));
        model.user_flags = strings(&["batch_size", "device", "tabular_target_column", "grouper"]);
    } else if run.join("bert_model").is_dir() {
        let config = json("model_config.json")?;
        model.plugin = "mbert".into();
        let peft = config.get("use_peft").and_then(Value::as_bool).unwrap_or(false);
        flag(&mut model, "use_case", toml::Value::String(if peft { "peft" } else { "finetuned" }.into()));
        model.embedding_width = match config.get("added_layers").and_then(Value::as_u64) {
            Some(2) => config.get("embedding_layer").and_then(Value::as_u64),
            _ => read_json(&run.join("bert_model").join("config.json"))?.get("hidden_size").and_then(Value::as_u64),
        };
        model.paths.insert("model_weights".into(), copy_tree(run, out, dest, &mut model.files)?);
        model.user_flags = strings(&["batch_size", "device", "precision", "text_column", "label_column"]);
    } else if run.join("gpt2_model").is_dir() {
        let config = json("model_config.json")?;
        model.plugin = "gpt2".into();
        flag(&mut model, "use_case", toml::Value::String("finetuned".into()));
        model.embedding_width = Some(config.get("output_dim").and_then(Value::as_u64).unwrap_or(1000));
        model.paths.insert("model_weights".into(), copy_tree(run, out, dest, &mut model.files)?);
        model.user_flags = strings(&["batch_size", "device", "precision", "text_column", "label_column"]);
    } else {
        let arguments = arguments.as_ref().ok_or_else(|| {
            anyhow!("no cli_arguments.json, GANDALF_model/, bert_model/ or gpt2_model/: not a DeepTune fine-tuning run directory")
        })?;
        let weights = first_with_extension(run, "pth")?;
        let text = |key: &str| arguments.get(key).and_then(Value::as_str).map(str::to_string);
        let version = text("model_version").ok_or_else(|| anyhow!("cli_arguments.json has no model_version"))?;
        model.plugin = "vision".into();
        let peft = arguments.get("use_peft").and_then(Value::as_bool).unwrap_or(false);
        flag(&mut model, "model_version", toml::Value::String(version.clone()));
        flag(&mut model, "use_case", toml::Value::String(if peft { "peft" } else { "finetuned" }.into()));
        flag(&mut model, "mode", toml::Value::String(text("mode").unwrap_or_else(|| "cls".into())));
        // A one-call DeepTune run does not record these: it trains with 2 added layers of 1000.
        let added = arguments.get("added_layers").and_then(Value::as_u64).unwrap_or(2);
        let embed_size = arguments.get("embed_size").and_then(Value::as_u64).unwrap_or(1000);
        model.embedding_width = match added {
            2 => Some(embed_size),
            _ => backbone_width(discovery, &version),
        };
        let file_name = weights.file_name().expect("a file").to_string_lossy().into_owned();
        let relative = dest.join(&file_name);
        copy_file(&weights, &out.join(&relative), &relative, &mut model.files)?;
        model.paths.insert("model_weights".into(), relative.to_string_lossy().into_owned());
        model.user_flags = strings(&["batch_size", "device", "precision", "image_column", "label_column", "grouper"]);
    }
    let plugin = discovery.find(&model.plugin).ok_or_else(|| {
        anyhow!("the run needs plugin '{}', which is not installed\n{}", model.plugin, discovery.explain())
    })?;
    let found = semver::Version::parse(&plugin.manifest.version)?;
    model.plugin_version =
        if found.major == 0 { format!("{}.{}", found.major, found.minor) } else { found.major.to_string() };
    model.card.insert("source".into(), format!("DeepTune fine-tuning run {}", run.display()));
    if let Some(arguments) = &arguments {
        model.card.insert("training_arguments".into(), arguments.to_string());
    }
    Ok(model)
}

/// The width of a vision model's embedding with one added layer (its backbone's features), as
/// the plugin declares it: "NAME (...; finetuned/peft: WIDTH with 1 added layer, ...)".
fn backbone_width(discovery: &Discovery, version: &str) -> Option<u64> {
    let vision = discovery.find("vision")?;
    let described = vision.manifest.models.iter().find(|m| m.split_whitespace().next() == Some(version))?;
    let after = described.split("finetuned/peft: ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

/// A GANDALF model's embedding width: its backbone's feature count (continuous columns plus the
/// categorical embeddings' widths), which is the row count of the first GFLU stage's output layer
/// (`W_out.0`, features x 2 features). Read from the checkpoint's pickled header; no tensor is
/// loaded and nothing in it runs. `None`, with a warning, if the checkpoint does not say.
fn gandalf_width(checkpoint: &Path) -> Option<u64> {
    const LAYER: &str = "_backbone.gflus.W_out.0.weight";
    let width = deepembed_checkpoint::Checkpoint::open(checkpoint).and_then(|c| {
        Ok(c.state_dict_refs()?.into_iter().find(|(name, _)| name == LAYER).map(|(_, t)| t.size.clone()))
    });
    match width {
        Ok(Some(size)) if size.len() == 2 => Some(size[0] as u64),
        Ok(_) => {
            log::warn!("{} has no 2-D {LAYER}: the pack states no embedding width", checkpoint.display());
            None
        }
        Err(e) => {
            log::warn!("cannot read {} ({e}): the pack states no embedding width", checkpoint.display());
            None
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The first `*.EXT` file in `dir` by name, as DeepTune's loaders pick it.
fn first_with_extension(dir: &Path, ext: &str) -> Result<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files.into_iter().next().ok_or_else(|| anyhow!("no *.{ext} weights file in {}", dir.display()))
}

/// Copies `from` to `out/relative`, listing it with its SHA-256.
fn copy_file(from: &Path, to: &Path, relative: &Path, files: &mut Vec<PackedFile>) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    files.push(PackedFile { path: relative.to_string_lossy().into_owned(), sha256: pack::sha256_file(to)? });
    Ok(())
}

/// Copies the directory `from` to `out/relative` (every file, listed), returning `relative`.
fn copy_tree(from: &Path, out: &Path, relative: &Path, files: &mut Vec<PackedFile>) -> Result<String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(from)?.flatten().map(|e| e.path()).collect();
    entries.sort();
    for entry in entries {
        let name = relative.join(entry.file_name().expect("an entry"));
        if entry.is_dir() {
            copy_tree(&entry, out, &name, files)?;
        } else if entry.is_file() {
            copy_file(&entry, &out.join(&name), &name, files)?;
        }
    }
    Ok(relative.to_string_lossy().into_owned())
}
