//! Which weights a run uses, and how DeepTune's checkpoints map onto torchvision's names.
//!
//! - pretrained: a torchvision hub file, keys as torchvision writes them.
//! - finetuned: DeepTune's adjusted model, `torch.save(model.state_dict())`: the backbone under
//!   `model.`, then `fc1.*` (and `fc2.*` with two added layers).
//! - peft: the same after peft's LoRA on every backbone Conv2d/Linear. Each backbone key exists
//!   under `model.` and under `peftmodel.base_model.model.`; wrapped layers hold
//!   `<path>.base_layer.*`, `<path>.lora_A.default.weight` and `<path>.lora_B.default.weight`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::lora::LoraSettings;
use deepembed_sdk::options::HeadOptions;
use deepembed_sdk::weights::{Linear, Weights, ANY};
use tch::Device;

use crate::models::{self, Version};
use crate::options::{Mode, VisionOptions};

/// The weights file for a pretrained run: `--model_weights` (a file, or a directory holding
/// torchvision's file for the version or a single weights file), else torchvision's file in the
/// torch hub cache.
pub fn pretrained_file(opts: &VisionOptions, version: &Version) -> Result<PathBuf> {
    if let Some(path) = &opts.model_weights {
        if path.is_dir() {
            return weights_in_directory(path, version);
        }
        if !path.is_file() {
            bail!("--model_weights {}: file not found", path.display());
        }
        return Ok(path.clone());
    }
    if version.hub_file.is_empty() {
        bail!("pretrained {} needs --model_weights: it has no torchvision weights file", version.name);
    }
    let hub = torch_home().join("hub").join("checkpoints");
    let path = hub.join(version.hub_file);
    if path.is_file() {
        return Ok(path);
    }
    bail!(
        "no weights for pretrained {}: put torchvision's file {} in {} (or name any torchvision {} weights file with --model_weights); nothing is downloaded",
        version.name,
        version.hub_file,
        hub.display(),
        version.name
    )
}

/// In a directory given as pretrained weights: torchvision's file for `version` (the torch hub
/// cache's own folder), else its only weights file.
fn weights_in_directory(dir: &Path, version: &Version) -> Result<PathBuf> {
    let hub_file = dir.join(version.hub_file);
    if !version.hub_file.is_empty() && hub_file.is_file() {
        return Ok(hub_file);
    }
    match files_in(dir, &["pth", "pt", "bin", "safetensors"])?.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "--model_weights {}: the directory holds no weights file (.pth, .pt, .bin, .safetensors){}",
            dir.display(),
            if version.hub_file.is_empty() {
                String::new()
            } else {
                format!(" nor torchvision's {}", version.hub_file)
            }
        ),
        many => bail!(
            "--model_weights {}: the directory holds {} weights files ({}); name the one to use",
            dir.display(),
            many.len(),
            many.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The files in `dir` with one of `extensions`, by name.
fn files_in(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--model_weights {}: cannot list the directory", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| extensions.iter().any(|x| e == *x)))
        .collect();
    files.sort();
    Ok(files)
}

/// `$TORCH_HOME`, else `$XDG_CACHE_HOME/torch`, else `~/.cache/torch`, as torch.hub decides.
fn torch_home() -> PathBuf {
    if let Some(home) = std::env::var_os("TORCH_HOME") {
        return PathBuf::from(home);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("torch")
}

/// DeepTune's checkpoint: the file given, or the first (by name) file with `extension` in the
/// directory given; `what` names it in messages (e.g. "DeepTune's .pth checkpoint").
pub fn deeptune_checkpoint(opts: &VisionOptions, extension: &str, what: &str) -> Result<PathBuf> {
    let path = opts.model_weights.as_ref().ok_or_else(|| {
        anyhow!("--use_case {} needs --model_weights: {what} or the directory holding it", opts.use_case.name())
    })?;
    if path.is_file() {
        return Ok(path.clone());
    }
    if path.is_dir() {
        return files_in(path, &[extension])?.into_iter().next().ok_or_else(|| {
            anyhow!("--model_weights {}: the directory holds no .{extension} checkpoint", path.display())
        });
    }
    bail!("--model_weights {}: no such file or directory", path.display())
}

/// The layers DeepTune added after the backbone, read from the checkpoint and checked against
/// what the user said.
pub struct Head {
    pub added_layers: i64,
    /// fc1's width with two added layers.
    pub embed_size: Option<i64>,
    pub num_classes: i64,
    /// fc1, applied for the embedding only with two added layers.
    pub fc1: Linear,
}

/// Where a DeepTune model keeps the layers it added, and how to explain a checkpoint whose first
/// layer does not fit the backbone.
pub struct HeadLayout<'a> {
    /// The first added layer (`fc1`; SigLIP: `fc_layers.0`) and the second (`fc2`,
    /// `fc_layers.1`).
    pub first: &'a str,
    pub second: &'a str,
    /// What a file without the first layer is not, e.g. "DeepTune finetuned checkpoint".
    pub kind: String,
    /// The backbone whose `features` wide output the first layer reads, e.g. `resnet50`.
    pub backbone: &'a str,
    pub features: i64,
    /// What to do when the widths differ.
    pub hint: &'a str,
}

impl HeadLayout<'_> {
    /// The torchvision families' `fc1`/`fc2` on `version`'s backbone.
    pub fn torchvision<'a>(version: &'a Version, opts: &VisionOptions) -> HeadLayout<'a> {
        HeadLayout {
            first: "fc1",
            second: "fc2",
            kind: format!("DeepTune {} checkpoint", opts.use_case.name()),
            backbone: version.name,
            features: version.features,
            hint: "the checkpoint was made for another --model_version",
        }
    }
}

/// The layers DeepTune added, read from the checkpoint as `layout` places them, and checked
/// against the flags given.
pub fn deeptune_head(sd: &StateDict, opts: &VisionOptions, layout: &HeadLayout, device: Device) -> Result<Head> {
    let source = sd.source().display();
    let (first, second) = (layout.first, layout.second);
    if !sd.contains(&format!("{first}.weight")) {
        bail!("{source} has no {first}.weight: it is not a {}", layout.kind);
    }
    let fc1_shape = sd.shape(&format!("{first}.weight")).unwrap_or_default();
    if fc1_shape.len() != 2 || fc1_shape[1] != layout.features {
        bail!(
            "{source}: {first}.weight has shape {fc1_shape:?}, but {} features are {} wide; {}",
            layout.backbone,
            layout.features,
            layout.hint
        );
    }
    let w = Weights::new(sd, device);
    let fc1 = w.linear(first, layout.features, ANY)?;
    let found_layers = if sd.contains(&format!("{second}.weight")) { 2 } else { 1 };
    if let Some(given) = opts.head.added_layers {
        if given != found_layers {
            let why = if found_layers == 2 {
                format!("it has {second} (two added layers)")
            } else {
                format!("it has no {second} (one added layer)")
            };
            bail!("--added_layers {given} was given, but the checkpoint {source} says {found_layers}: {why}");
        }
    }
    let (last_name, last_shape) = if found_layers == 2 {
        (format!("{second}.weight"), w.linear(second, fc1_shape[0], ANY)?.weight.size())
    } else {
        (format!("{first}.weight"), fc1_shape.clone())
    };
    let num_classes = last_shape[0];
    HeadOptions::agree("num_classes", opts.head.num_classes, num_classes, || {
        format!("{last_name} in {source} has shape {last_shape:?} ({num_classes} outputs)")
    })?;
    if opts.mode == Mode::Reg && num_classes != 1 {
        bail!("--mode reg was given, but {last_name} in {source} has {num_classes} outputs (a regression head has 1)");
    }
    let embed_size = (found_layers == 2).then_some(fc1_shape[0]);
    if let Some(found) = embed_size {
        HeadOptions::agree("embed_size", opts.head.embed_size, found, || {
            format!("{first}.weight in {source} has shape {fc1_shape:?} ({found} outputs)")
        })?;
    }
    Ok(Head { added_layers: found_layers, embed_size, num_classes, fc1 })
}

/// The backbone weights of a DeepTune checkpoint under torchvision names. For peft, LoRA
/// updates are merged into the base weights: `W + (B @ A) * alpha / r`.
pub fn deeptune_backbone(sd: &StateDict, opts: &VisionOptions) -> Result<StateDict> {
    let has_lora = deepembed_sdk::lora::check_use_case(sd, opts.use_case)?;
    let source = sd.source().display();
    // DeepTune saves the backbone under `model.`; with peft the same tensors also sit under
    // `peftmodel.base_model.model.`, which is all a checkpoint trimmed of duplicates may keep.
    let mut backbone = sd.strip_prefix("model.");
    if backbone.is_empty() {
        backbone = sd.strip_prefix("peftmodel.base_model.model.");
    }
    if backbone.is_empty() {
        bail!("{source} has no `model.*` weights: it is not a DeepTune checkpoint");
    }
    if has_lora {
        merge_lora(&backbone, opts)
    } else {
        Ok(backbone)
    }
}

/// DeepTune's LoRA alpha for the torchvision families (the checkpoint does not record it).
const DEEPTUNE_LORA_ALPHA: f64 = 16.0;

fn merge_lora(sd: &StateDict, opts: &VisionOptions) -> Result<StateDict> {
    let alpha = opts.lora_alpha.unwrap_or(DEEPTUNE_LORA_ALPHA);
    let merged = deepembed_sdk::lora::merge(sd, &LoraSettings::with_alpha(alpha))?;
    if let (Some(given), Some(rank)) = (opts.head.embed_size, merged.rank()) {
        if given != rank {
            log::warn!(
                "--embed_size {given} was given, but the checkpoint's LoRA rank is {rank}; using the checkpoint's"
            );
        }
    }
    log::info!(
        "merged LoRA updates (rank {}, alpha {alpha}) into {} backbone layers",
        merged.ranks_text(),
        merged.layers
    );
    Ok(merged.weights)
}

/// `error` (weights that do not fit `version`), with the version the weights look like when a
/// registered family recognises them, so the message names both.
pub fn wrong_model(error: anyhow::Error, weights: &StateDict, version: &Version, context: &str) -> anyhow::Error {
    let recognised = models::families().into_iter().find_map(|f| f.identify(weights));
    match recognised {
        Some(found) if found != version.name => {
            anyhow!("{context}: --model_version is {} but the weights are a {found}: {error:#}", version.name)
        }
        _ => error.context(context.to_string()),
    }
}
