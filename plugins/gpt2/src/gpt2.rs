//! GPT-2 (transformers' `GPT2Model`), forward pass only, with its parameter names.
//!
//! h = wte[ids] + wpe[positions]; per block: h += attn(ln_1(h)), h += mlp(ln_2(h)); then ln_f.
//! Projections are HF's `Conv1D`, whose weight is stored (in, out): y = x @ W + b. Attention is
//! causal and masks padded keys; a query with no key left (an empty text, all padding) gets a
//! zero attention output, as PyTorch's scaled_dot_product_attention (transformers' default) does.
//! The MLP's activation is `activation_function` (GPT-2's: gelu_new, the tanh approximation).

use std::path::Path;

use anyhow::{bail, Context, Result};
use deepembed_sdk::activation::Activation;
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::weights::{LayerNorm, Scope, Weights, ANY};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

/// The fields of a transformers GPT-2 `config.json` this model needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    pub n_embd: i64,
    pub n_layer: i64,
    pub n_head: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// Attention scores scaled by 1/sqrt(head size) (GPT-2's default).
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
}

fn yes() -> bool {
    true
}

fn default_eps() -> f64 {
    1e-5
}

fn default_act() -> String {
    "gelu_new".into()
}

impl Gpt2Config {
    pub fn from_file(path: &Path) -> Result<Gpt2Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let config: Gpt2Config =
            serde_json::from_str(&text).with_context(|| format!("{} is not a GPT-2 config.json", path.display()))?;
        Activation::from_config(&config.activation_function, "activation_function")
            .with_context(|| path.display().to_string())?;
        if config.n_head < 1 || config.n_embd % config.n_head != 0 {
            bail!("{}: n_embd {} is not a multiple of n_head {}", path.display(), config.n_embd, config.n_head);
        }
        Ok(config)
    }
}

/// HF's Conv1D: weight (in, out).
struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.weight) + &self.bias
    }
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Conv1D,
    attn_proj: Conv1D,
    ln_2: LayerNorm,
    c_fc: Conv1D,
    mlp_proj: Conv1D,
}

pub struct Gpt2 {
    config: Gpt2Config,
    activation: Activation,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
}

impl Gpt2 {
    /// Builds the model from GPT2Model weights (names without a `transformer.` prefix).
    pub fn load(config: Gpt2Config, sd: &StateDict, device: Device) -> Result<Gpt2> {
        let w = Weights::new(sd, device);
        let e = config.n_embd;
        // HF's Conv1D stores its weight as (inputs, outputs).
        let conv = |scope: &Scope, name: &str, inputs: i64, outputs: i64| -> Result<Conv1D> {
            let weight = scope.tensor(&format!("{name}.weight"), &[inputs, outputs])?;
            let outputs = weight.size()[1];
            Ok(Conv1D { weight, bias: scope.tensor(&format!("{name}.bias"), &[outputs])? })
        };
        let blocks = (0..config.n_layer)
            .map(|i| {
                let block = w.at(&format!("h.{i}"));
                let c_fc = conv(&block, "mlp.c_fc", e, ANY)?;
                let inner = c_fc.weight.size()[1];
                Ok(Block {
                    ln_1: block.layer_norm("ln_1", e)?,
                    c_attn: conv(&block, "attn.c_attn", e, 3 * e)?,
                    attn_proj: conv(&block, "attn.c_proj", e, e)?,
                    ln_2: block.layer_norm("ln_2", e)?,
                    c_fc,
                    mlp_proj: conv(&block, "mlp.c_proj", inner, e)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if sd.contains(&format!("h.{}.ln_1.weight", config.n_layer)) {
            bail!("{} has more layers than config.json's n_layer {}", sd.source().display(), config.n_layer);
        }
        Ok(Gpt2 {
            activation: Activation::from_config(&config.activation_function, "activation_function")?,
            wte: w.tensor("wte.weight", &[ANY, e])?,
            wpe: w.tensor("wpe.weight", &[ANY, e])?,
            ln_f: w.layer_norm("ln_f", e)?,
            blocks,
            config,
        })
    }

    pub fn hidden_size(&self) -> i64 {
        self.config.n_embd
    }

    pub fn max_positions(&self) -> i64 {
        self.wpe.size()[0]
    }

    pub fn vocab_size(&self) -> i64 {
        self.wte.size()[0]
    }

    /// `ids` and `mask` are (B, T) int64; returns the last hidden state (B, T, E), after ln_f.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        let (b, t) = (ids.size()[0], ids.size()[1]);
        let e = self.config.n_embd;
        let eps = self.config.layer_norm_epsilon;
        let norm = |x: &Tensor, n: &LayerNorm| n.forward(x, eps);
        // Positions are 0..T whatever the padding, as transformers numbers them.
        let positions = Tensor::arange(t, (Kind::Int64, ids.device()));
        let mut h = self.wte.index_select(0, &ids.view([-1])).view([b, t, e])
            + self.wpe.index_select(0, &positions).unsqueeze(0);
        // allowed[b, q, k] = k <= q and key k is not padding.
        let causal = Tensor::ones([t, t], (Kind::Bool, ids.device())).tril(0);
        let allowed = causal.view([1, 1, t, t]).logical_and(&mask.to_kind(Kind::Bool).view([b, 1, 1, t]));
        let heads = self.config.n_head;
        let d = e / heads;
        for (i, block) in self.blocks.iter().enumerate() {
            // transformers' `head_dim**-0.5`, divided by the layer's number when asked
            let mut scale = if self.config.scale_attn_weights { (d as f64).powf(-0.5) } else { 1.0 };
            if self.config.scale_attn_by_inverse_layer_idx {
                scale /= (i + 1) as f64;
            }
            let qkv = block.c_attn.forward(&norm(&h, &block.ln_1));
            let parts = qkv.split(e, -1);
            let split = |y: &Tensor| y.view([b, t, heads, d]).transpose(1, 2);
            let (q, k, v) = (split(&parts[0]), split(&parts[1]), split(&parts[2]));
            // libtorch's fused attention, as transformers runs it: a fully masked query row (an
            // empty text) gets a zero output rather than NaN.
            let context = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&allowed), 0.0, false, scale, false)
                .transpose(1, 2)
                .contiguous()
                .view([b, t, e]);
            h += block.attn_proj.forward(&context);
            let inner = self.activation.forward(&block.c_fc.forward(&norm(&h, &block.ln_2)));
            h += block.mlp_proj.forward(&inner);
        }
        norm(&h, &self.ln_f)
    }
}
