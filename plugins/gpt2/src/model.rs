//! The embedding model of a run.
//!
//! - pretrained: a Hugging Face GPT-2 directory; the embedding is the mean of the last hidden
//!   state over real tokens (the divisor clamped, so an empty text gives zeros).
//! - finetuned: DeepTune's directory: model_config.json (`output_dim`), gpt2_model/ (config.json),
//!   tokenizer/, model_weights.pth (`gpt2.*`, `conv_head.*`). The head runs on the last hidden
//!   state over all positions: Conv1d(E->512, k=3, pad=1), ReLU, max over time, Linear. DeepTune
//!   loads these weights and then embeds with the stock GPT-2 and a fresh random head; we use
//!   the fine-tuned weights.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::weights::{Weights, ANY};
use tch::{Device, Kind, Tensor};

use crate::gpt2::{Gpt2, Gpt2Config};
use crate::options::Gpt2Options;
use deepembed_sdk::options::UseCase;

/// DeepTune's head: conv_head.0 = Conv1d, conv_head.4 = Linear.
struct ConvHead {
    conv_weight: Tensor,
    conv_bias: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor,
}

pub struct TextModel {
    gpt2: Gpt2,
    head: Option<ConvHead>,
    pub dims: i64,
    pub tokenizer_dir: PathBuf,
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl TextModel {
    pub fn load(opts: &Gpt2Options, device: Device) -> Result<TextModel> {
        let dir = &opts.model_weights;
        if !dir.is_dir() {
            bail!(
                "--model_weights {}: not a directory (a Hugging Face GPT-2 directory, or DeepTune's output directory)",
                dir.display()
            );
        }
        let mut details = serde_json::Map::new();
        details.insert("weights".into(), dir.display().to_string().into());
        match opts.use_case {
            UseCase::Pretrained => {
                let gpt2 = Gpt2::load(
                    Gpt2Config::from_file(&dir.join("config.json"))?,
                    &StateDict::load_hf_dir(dir, "transformer.", "wte.weight")?,
                    device,
                )?;
                let dims = gpt2.hidden_size();
                Ok(TextModel { gpt2, head: None, dims, tokenizer_dir: dir.clone(), details })
            }
            _ => load_deeptune(dir, device, details),
        }
    }
}

impl deepembed_sdk::text::TextModel for TextModel {
    fn max_positions(&self) -> i64 {
        self.gpt2.max_positions()
    }

    fn vocab_size(&self) -> i64 {
        self.gpt2.vocab_size()
    }

    /// Mean pooling over real tokens ignores padding (causal attention: real tokens never see
    /// the padding after them); the fine-tuned head max-pools over every position, padding
    /// included, so it keeps DeepTune's fixed length.
    fn ignores_padding(&self) -> bool {
        self.head.is_none()
    }

    fn embed(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let hidden = self.gpt2.forward(ids, mask);
        Ok(match &self.head {
            None => {
                let m = mask.to_kind(Kind::Float).unsqueeze(-1);
                let summed = (hidden * &m).sum_dim_intlist(1, false, Kind::Float);
                summed / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-6)
            }
            Some(head) => {
                let x =
                    hidden.transpose(1, 2).conv1d(&head.conv_weight, Some(&head.conv_bias), [1], [1], [1], 1).relu();
                x.amax([2], false).linear(&head.linear_weight, Some(&head.linear_bias))
            }
        })
    }
}

fn load_deeptune(
    dir: &Path,
    device: Device,
    mut details: serde_json::Map<String, serde_json::Value>,
) -> Result<TextModel> {
    let config_path = dir.join("model_config.json");
    let model_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).with_context(|| {
            format!("{} is not a DeepTune fine-tuned GPT-2 directory: no model_config.json", dir.display())
        })?)
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
    let weights = dir.join("model_weights.pth");
    if !weights.is_file() {
        bail!("{} is not a DeepTune fine-tuned GPT-2 directory: no model_weights.pth", dir.display());
    }
    let sd = StateDict::load(&weights)?;
    let source = weights.display();
    let encoder = sd.strip_prefix("gpt2.");
    if !encoder.contains("wte.weight") {
        bail!("{source} has no GPT-2 weights under `gpt2.`: it is not a DeepTune GPT-2 checkpoint");
    }
    let gpt2 = Gpt2::load(Gpt2Config::from_file(&dir.join("gpt2_model").join("config.json"))?, &encoder, device)?;
    if !sd.contains("conv_head.0.weight") {
        bail!("{source} has no conv_head.0.weight: it is not a DeepTune fine-tuned GPT-2 checkpoint");
    }
    // DeepTune's head: Conv1d(hidden -> 512, k=3), ReLU, max-pool, Flatten, Linear(512 -> output_dim).
    let w = Weights::new(&sd, device);
    let conv_weight = w.tensor("conv_head.0.weight", &[ANY, gpt2.hidden_size(), 3])?;
    let channels = conv_weight.size()[0];
    let linear = w.linear("conv_head.4", channels, ANY)?;
    let head = ConvHead {
        conv_weight,
        conv_bias: w.tensor("conv_head.0.bias", &[channels])?,
        linear_weight: linear.weight,
        linear_bias: linear.bias,
    };
    let dims = head.linear_weight.size()[0];
    let declared = model_config["output_dim"].as_i64().unwrap_or(1000);
    if declared != dims {
        bail!(
            "{}: output_dim is {declared}, but conv_head.4.weight in {source} has shape {:?} ({dims} outputs)",
            config_path.display(),
            head.linear_weight.size()
        );
    }
    details.insert("output_dim".into(), dims.into());
    Ok(TextModel { gpt2, head: Some(head), dims, tokenizer_dir: dir.join("tokenizer"), details })
}
