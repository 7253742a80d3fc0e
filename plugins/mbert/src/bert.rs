//! BERT (transformers' `BertModel`), forward pass only, with its parameter names.
//!
//! embeddings: word + token type (all 0) + position, LayerNorm; then per layer: self-attention
//! (query/key/value, softmax(q k^T / sqrt(d) + mask) v), output dense + residual + LayerNorm,
//! intermediate dense + `hidden_act` (BERT's: the exact erf GELU), output dense + residual +
//! LayerNorm. No final norm.

use std::path::Path;

use anyhow::{bail, Context, Result};
use deepembed_sdk::activation::Activation;
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::weights::{LayerNorm, Linear, Weights, ANY};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

/// The fields of a transformers `config.json` this model needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub max_position_embeddings: Option<i64>,
}

fn default_eps() -> f64 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    /// The published configuration of the BERTs DeepTune fine-tunes, for directories that
    /// name them instead of holding a config.json (peft adapters).
    pub fn published(name: &str) -> Option<BertConfig> {
        let known = [
            "bert-base-multilingual-uncased",
            "bert-base-multilingual-cased",
            "nlptown/bert-base-multilingual-uncased-sentiment",
        ];
        known.contains(&name.trim_start_matches("google-bert/")).then(|| BertConfig {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
            max_position_embeddings: Some(512),
        })
    }

    pub fn from_file(path: &Path) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let config: BertConfig =
            serde_json::from_str(&text).with_context(|| format!("{} is not a BERT config.json", path.display()))?;
        Activation::from_config(&config.hidden_act, "hidden_act").with_context(|| path.display().to_string())?;
        if config.num_attention_heads < 1 || config.hidden_size % config.num_attention_heads != 0 {
            bail!(
                "{}: hidden_size {} is not a multiple of num_attention_heads {}",
                path.display(),
                config.hidden_size,
                config.num_attention_heads
            );
        }
        Ok(config)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

pub struct Bert {
    config: BertConfig,
    activation: Activation,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl Bert {
    /// Builds the model from BertModel weights (names without a `bert.` prefix).
    pub fn load(config: BertConfig, sd: &StateDict, device: Device) -> Result<Bert> {
        let w = Weights::new(sd, device);
        let h = config.hidden_size;
        let word_embeddings = w.tensor("embeddings.word_embeddings.weight", &[ANY, h])?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let layer = w.at(&format!("encoder.layer.{i}"));
                let intermediate = layer.linear("intermediate.dense", h, ANY)?;
                let inner = intermediate.weight.size()[0];
                Ok(Layer {
                    query: layer.linear("attention.self.query", h, h)?,
                    key: layer.linear("attention.self.key", h, h)?,
                    value: layer.linear("attention.self.value", h, h)?,
                    attention_output: layer.linear("attention.output.dense", h, h)?,
                    attention_norm: layer.layer_norm("attention.output.LayerNorm", h)?,
                    intermediate,
                    output: layer.linear("output.dense", inner, h)?,
                    output_norm: layer.layer_norm("output.LayerNorm", h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if sd.contains(&format!("encoder.layer.{}.attention.self.query.weight", config.num_hidden_layers)) {
            bail!(
                "{} has more layers than config.json's num_hidden_layers {}",
                sd.source().display(),
                config.num_hidden_layers
            );
        }
        Ok(Bert {
            activation: Activation::from_config(&config.hidden_act, "hidden_act")?,
            word_embeddings,
            position_embeddings: w.tensor("embeddings.position_embeddings.weight", &[ANY, h])?,
            token_type_embeddings: w.tensor("embeddings.token_type_embeddings.weight", &[ANY, h])?,
            embeddings_norm: w.layer_norm("embeddings.LayerNorm", h)?,
            layers,
            config,
        })
    }

    pub fn hidden_size(&self) -> i64 {
        self.config.hidden_size
    }

    pub fn max_positions(&self) -> i64 {
        self.position_embeddings.size()[0]
    }

    pub fn vocab_size(&self) -> i64 {
        self.word_embeddings.size()[0]
    }

    /// `input_ids` and `attention_mask` are (B, T) int64; returns the last hidden state (B, T, H).
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let (b, t) = (input_ids.size()[0], input_ids.size()[1]);
        let eps = self.config.layer_norm_eps;
        let h = self.config.hidden_size;
        let norm = |x: &Tensor, n: &LayerNorm| n.forward(x, eps);
        let positions = Tensor::arange(t, (Kind::Int64, input_ids.device()));
        // Token types are all 0 for single texts; transformers adds them before positions.
        let embedded = (self.word_embeddings.index_select(0, &input_ids.view([-1])).view([b, t, h])
            + self.token_type_embeddings.get(0))
            + self.position_embeddings.index_select(0, &positions).unsqueeze(0);
        let mut x = norm(&embedded, &self.embeddings_norm);
        // Padding keys are masked out. transformers' eager path adds the float minimum to their
        // scores, which softmaxes to exactly 0 as the boolean mask does; libtorch's fused
        // attention (flash or memory-efficient kernels) sums in another order, within 1e-6.
        let mask = attention_mask.ne(0).view([b, 1, 1, t]);
        let heads = self.config.num_attention_heads;
        let d = h / heads;
        for layer in &self.layers {
            let split = |y: Tensor| y.view([b, t, heads, d]).transpose(1, 2);
            let q = split(layer.query.forward(&x));
            let k = split(layer.key.forward(&x));
            let v = split(layer.value.forward(&x));
            let context = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&mask), 0.0, false, None, false)
                .transpose(1, 2)
                .contiguous()
                .view([b, t, h]);
            x = norm(&(layer.attention_output.forward(&context) + &x), &layer.attention_norm);
            let inner = self.activation.forward(&layer.intermediate.forward(&x));
            x = norm(&(layer.output.forward(&inner) + &x), &layer.output_norm);
        }
        x
    }
}
