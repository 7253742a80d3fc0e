//! The embedding model of a run: BERT's [CLS] vector, through DeepTune's `additional` layer when
//! two layers were added, with the weights of the directory the user named.
//!
//! - pretrained: a Hugging Face directory (config.json, model.safetensors or pytorch_model.bin).
//! - finetuned: DeepTune's directory: model_config.json, bert_model/ (config.json), tokenizer/,
//!   model_weights.pth (`bert.*`, `additional.*`, `classifier.*`). DeepTune itself loads these
//!   weights and then embeds with the stock pretrained model; we use the fine-tuned weights.
//! - peft: the same with LoRA on query/key/value/dense (`bert.base_model.model.*`), merged here.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::lora::LoraSettings;
use deepembed_sdk::options::HeadOptions;
use deepembed_sdk::weights::{Linear, Weights, ANY};
use tch::{Device, Tensor};

use crate::bert::{Bert, BertConfig};
use crate::options::MbertOptions;
use deepembed_sdk::options::UseCase;

pub struct TextModel {
    bert: Bert,
    /// DeepTune's `additional`, applied to the CLS vector with two added layers.
    additional: Option<Linear>,
    pub dims: i64,
    pub tokenizer_dir: PathBuf,
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl TextModel {
    pub fn load(opts: &MbertOptions, device: Device) -> Result<TextModel> {
        let dir = &opts.model_weights;
        if !dir.is_dir() {
            bail!(
                "--model_weights {}: not a directory (a Hugging Face model directory, or DeepTune's output directory)",
                dir.display()
            );
        }
        let mut details = serde_json::Map::new();
        details.insert("weights".into(), dir.display().to_string().into());
        match opts.use_case {
            UseCase::Pretrained => {
                let config =
                    BertConfig::from_file(&opts.bert_config.clone().unwrap_or_else(|| dir.join("config.json")))?;
                let sd = StateDict::load_hf_dir(dir, "bert.", "embeddings.word_embeddings.weight")?;
                let bert = Bert::load(config, &sd, device)?;
                let dims = bert.hidden_size();
                Ok(TextModel { bert, additional: None, dims, tokenizer_dir: dir.clone(), details })
            }
            UseCase::Finetuned | UseCase::Peft => load_deeptune(opts, dir, device, details),
        }
    }
}

impl deepembed_sdk::text::TextModel for TextModel {
    fn max_positions(&self) -> i64 {
        self.bert.max_positions()
    }

    fn vocab_size(&self) -> i64 {
        self.bert.vocab_size()
    }

    /// The [CLS] vector does not depend on padding: padded keys are masked out.
    fn ignores_padding(&self) -> bool {
        true
    }

    /// The [CLS] vector of the last hidden state, through `additional` with two added layers.
    fn embed(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let cls = self.bert.forward(ids, mask).select(1, 0);
        Ok(match &self.additional {
            Some(additional) => additional.forward(&cls),
            None => cls,
        })
    }
}

fn load_deeptune(
    opts: &MbertOptions,
    dir: &Path,
    device: Device,
    mut details: serde_json::Map<String, serde_json::Value>,
) -> Result<TextModel> {
    let model_config: serde_json::Value = {
        let path = dir.join("model_config.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("{} is not a DeepTune fine-tuned BERT directory: no model_config.json", dir.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?
    };
    let weights = dir.join("model_weights.pth");
    if !weights.is_file() {
        bail!("{} is not a DeepTune fine-tuned BERT directory: no model_weights.pth", dir.display());
    }
    let sd = StateDict::load(&weights)?;
    let source = weights.display();

    let peft = deepembed_sdk::lora::check_use_case(&sd, opts.use_case)?;
    let encoder = if peft {
        let settings = lora_settings(opts, dir)?;
        let merged = deepembed_sdk::lora::merge(&sd.strip_prefix("bert.base_model.model."), &settings)?;
        let alpha = settings.alpha;
        log::info!("merged LoRA updates (rank {}, alpha {alpha}) into {} layers", merged.ranks_text(), merged.layers);
        details.insert("lora_rank".into(), merged.ranks_text().into());
        details.insert("lora_alpha".into(), alpha.into());
        merged.weights
    } else {
        sd.strip_prefix("bert.")
    };
    if !encoder.contains("embeddings.word_embeddings.weight") {
        bail!("{source} has no BERT encoder weights under `bert.`: it is not a DeepTune BERT checkpoint");
    }
    let config = encoder_config(opts, dir)?;
    let bert = Bert::load(config, &encoder, device)?;

    // The head: `additional` exists with two added layers; `classifier` gives the class count.
    let found_layers = if sd.contains("additional.weight") { 2 } else { 1 };
    let declared = model_config["added_layers"].as_i64();
    for (what, given) in [("--added_layers", opts.head.added_layers), ("model_config.json's added_layers", declared)] {
        if let Some(given) = given {
            if given != found_layers {
                let why =
                    if found_layers == 2 { "it has an `additional` layer" } else { "it has no `additional` layer" };
                bail!("{what} is {given}, but {source} has {found_layers} added layers: {why}");
            }
        }
    }
    let w = Weights::new(&sd, device);
    let additional = if found_layers == 2 {
        let additional = w.linear("additional", bert.hidden_size(), ANY)?;
        let (shape, found) = (additional.weight.size(), additional.weight.size()[0]);
        HeadOptions::agree("embed_size", opts.head.embed_size, found, || {
            format!("additional.weight in {source} has shape {shape:?} ({found} outputs)")
        })?;
        details.insert("embed_size".into(), found.into());
        Some(additional)
    } else {
        None
    };
    if sd.contains("classifier.weight") {
        let classifier = w.tensor("classifier.weight", &[ANY, ANY])?;
        let (shape, found) = (classifier.size(), classifier.size()[0]);
        HeadOptions::agree("num_classes", opts.head.num_classes, found, || {
            format!("classifier.weight in {source} has shape {shape:?} ({found} outputs)")
        })?;
        details.insert("num_classes".into(), found.into());
    }
    details.insert("added_layers".into(), found_layers.into());
    let dims = additional.as_ref().map_or(bert.hidden_size(), |a| a.weight.size()[0]);
    let tokenizer_dir = dir.join("tokenizer");
    Ok(TextModel { bert, additional, dims, tokenizer_dir, details })
}

/// The adapter config peft saved next to the weights ([`adapter_config`]), else
/// DeepTune's alpha 32; `--lora_alpha` replaces either's alpha.
fn lora_settings(opts: &MbertOptions, dir: &Path) -> Result<LoraSettings> {
    let settings = match adapter_config(&dir.join("bert_model")) {
        Some(adapter) => LoraSettings::from_adapter_config(&adapter)?,
        None => LoraSettings::with_alpha(32.0),
    };
    Ok(settings.with_alpha_override(opts.lora_alpha))
}

/// peft's `adapter_config.json` in `bert_model/`: at its top for the adapter named `default`,
/// else in the one subdirectory peft saves an adapter of another name to.
fn adapter_config(bert_model: &Path) -> Option<PathBuf> {
    let top = bert_model.join("adapter_config.json");
    if top.is_file() {
        return Some(top);
    }
    let mut named = std::fs::read_dir(bert_model)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("adapter_config.json")))
        .filter(|p| p.is_file());
    let first = named.next()?;
    named.next().is_none().then_some(first)
}

/// The encoder's configuration: `--bert_config`, bert_model/config.json, or (peft, whose
/// bert_model/ holds only the adapter) the base model the adapter names: its config.json when
/// that is a local directory, or the published shape of the multilingual BERTs DeepTune uses.
fn encoder_config(opts: &MbertOptions, dir: &Path) -> Result<BertConfig> {
    if let Some(path) = &opts.bert_config {
        return BertConfig::from_file(path);
    }
    let bert_model = dir.join("bert_model");
    let direct = bert_model.join("config.json");
    if direct.is_file() {
        return BertConfig::from_file(&direct);
    }
    let base = adapter_config(&bert_model)
        .and_then(|adapter| std::fs::read_to_string(adapter).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|c| c["base_model_name_or_path"].as_str().map(str::to_string));
    if let Some(base) = &base {
        let candidate = Path::new(base).join("config.json");
        if candidate.is_file() {
            return BertConfig::from_file(&candidate);
        }
        if let Some(config) = BertConfig::published(base) {
            log::info!("{} has no config.json; using {base}'s published configuration", bert_model.display());
            return Ok(config);
        }
    }
    let named = base.map(|b| format!(" (the adapter was trained on {b})")).unwrap_or_default();
    bail!("{} has no config.json{named}; pass that model's config.json with --bert_config", bert_model.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peft_directory_naming_multilingual_bert_needs_no_config_file() {
        let dir = std::env::temp_dir().join(format!("mbert-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bert_model")).unwrap();
        let adapter = r#"{"base_model_name_or_path": "bert-base-multilingual-uncased", "r": 16, "lora_alpha": 32}"#;
        std::fs::write(dir.join("bert_model/adapter_config.json"), adapter).unwrap();
        let json = format!(
            r#"{{"use_case": "peft", "model_weights": {:?}, "text_column": "text", "label_column": "labels",
                 "max_length": 256, "padding": "longest"}}"#,
            dir.display().to_string()
        );
        let opts: MbertOptions = deepembed_sdk::options::parse(&json).unwrap();
        let config = encoder_config(&opts, &dir).unwrap();
        assert_eq!((config.hidden_size, config.num_hidden_layers, config.num_attention_heads), (768, 12, 12));
        std::fs::write(
            dir.join("bert_model/adapter_config.json"),
            r#"{"base_model_name_or_path": "someone/unknown-bert"}"#,
        )
        .unwrap();
        let err = encoder_config(&opts, &dir).unwrap_err().to_string();
        assert!(err.contains("someone/unknown-bert") && err.contains("--bert_config"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
