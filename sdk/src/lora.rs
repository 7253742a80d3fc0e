//! Merging peft LoRA adapters into base weights, for checkpoints saved from a peft-wrapped model.
//! A wrapped layer `<layer>` keeps its weights as `<layer>.base_layer.weight|bias` beside its
//! adapter (`<name>` is the adapter's name, `default` unless the user chose another):
//!
//! - Linear and Conv2d: `<layer>.lora_A.<name>.weight`, `<layer>.lora_B.<name>.weight`, and with
//!   `lora_bias` `<layer>.lora_B.<name>.bias`;
//! - Embedding: `<layer>.lora_embedding_A.<name>`, `<layer>.lora_embedding_B.<name>`;
//! - DoRA (`use_dora`): also `<layer>.lora_magnitude_vector.<name>.weight`.
//!
//! Modules trained whole (`modules_to_save`) are saved twice: `<module>.original_module.*` (the
//! base model's, unused) and `<module>.modules_to_save.<name>.*` (the trained copy, used).
//!
//! `W' = W + dW * s`, with `s = alpha / r` (`alpha / sqrt(r)` with `use_rslora`; `alpha` per
//! layer from `alpha_pattern`, `r` from the adapter's shape, which `rank_pattern` set). For Linear
//! layers `dW = B @ A`; for Conv2d layers the same product over flattened kernels equals peft's
//! `einsum('or,rikl->oikl', B, A)` (1x1 and kxk alike); for Embedding `dW = (B @ A)^T`. With
//! `lora_bias` the bias becomes `b + s * lora_B.bias`. DoRA rescales the merged weight to the
//! learned magnitude: `W'' = m / |W'| * W'`, the norm taken per output channel (per embedding
//! dimension for an Embedding), as peft's merge does.
//!
//! A depthwise convolution (weight `[C, 1, k, k]`) wrapped by peft 0.10 carries a dense LoRA:
//! lora_A is a full `[r, C, k, k]` convolution, so the update `[C, C, k, k]` does not fit the
//! depthwise weight. Their sum is a dense convolution: the update, plus the depthwise kernel on
//! its diagonal (`W'[o, o] = W[o, 0] + dW[o, o]`), which the model must then build with groups 1.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use regex::Regex;
use tch::{Kind, Tensor};

use crate::checkpoint::StateDict;
use crate::options::UseCase;

/// How peft scales each layer's update, from its `adapter_config.json` (or a plugin's default).
#[derive(Clone, Debug)]
pub struct LoraSettings {
    pub alpha: f64,
    pub use_rslora: bool,
    /// `alpha_pattern`: a layer whose name matches a key (peft's `(.*\.)?(key)$`) takes its
    /// alpha, the first match in the config's order.
    alpha_pattern: Vec<(String, Regex, f64)>,
}

impl LoraSettings {
    /// Plain LoRA with one alpha for every layer (DeepTune's checkpoints record none).
    pub fn with_alpha(alpha: f64) -> LoraSettings {
        LoraSettings { alpha, use_rslora: false, alpha_pattern: Vec::new() }
    }

    /// The settings in a peft `adapter_config.json`. Anything that changes the merge and that
    /// this merge does not do is refused by name.
    pub fn from_adapter_config(path: &Path) -> Result<LoraSettings> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let config: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        let source = path.display();
        if let Some(kind) = config["peft_type"].as_str() {
            if kind != "LORA" {
                bail!("{source}: the adapter is peft_type {kind}; only LoRA adapters are merged");
            }
        }
        if config["fan_in_fan_out"].as_bool() == Some(true) {
            bail!("{source}: fan_in_fan_out adapters (for GPT-2's Conv1D layers) are not supported");
        }
        let alpha = config["lora_alpha"].as_f64().with_context(|| format!("{source} has no numeric lora_alpha"))?;
        let mut settings = LoraSettings::with_alpha(alpha);
        settings.use_rslora = config["use_rslora"].as_bool().unwrap_or(false);
        if let Some(patterns) = config["alpha_pattern"].as_object() {
            for (key, value) in patterns {
                let alpha =
                    value.as_f64().with_context(|| format!("{source}: alpha_pattern {key:?} is not a number"))?;
                let regex = Regex::new(&format!(r"^(?:.*\.)?(?:{key})$"))
                    .with_context(|| format!("{source}: alpha_pattern key {key:?} is not a regular expression"))?;
                settings.alpha_pattern.push((key.clone(), regex, alpha));
            }
        }
        Ok(settings)
    }

    /// `--lora_alpha`, when given, in place of the config's alpha (patterns still apply).
    pub fn with_alpha_override(mut self, alpha: Option<f64>) -> LoraSettings {
        if let Some(alpha) = alpha {
            self.alpha = alpha;
        }
        self
    }

    /// The scale of `layer`'s update of rank `r`.
    fn scale(&self, layer: &str, r: i64) -> f64 {
        let alpha = self.alpha_pattern.iter().find(|(_, re, _)| re.is_match(layer)).map_or(self.alpha, |p| p.2);
        if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }
}

/// A state dict with LoRA merged in and peft's names undone (`<layer>.weight`).
pub struct Merged {
    pub weights: StateDict,
    /// The LoRA ranks found (empty when the state dict held no adapters).
    pub ranks: BTreeSet<i64>,
    /// How many layers carried an adapter.
    pub layers: usize,
}

impl Merged {
    /// The rank every layer shares, if they share one.
    pub fn rank(&self) -> Option<i64> {
        (self.ranks.len() == 1).then(|| *self.ranks.first().expect("one rank"))
    }

    /// The ranks for logs and details: `16`, or `4, 8` where layers differ.
    pub fn ranks_text(&self) -> String {
        self.ranks.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// Names in a peft state dict that belong to an adapter (`.<marker>.<adapter name>`).
const ADAPTER_MARKERS: [&str; 6] =
    ["lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "modules_to_save"];

/// The adapter name in `key`, when `key` is one of an adapter's tensors.
fn adapter_of(key: &str) -> Option<&str> {
    ADAPTER_MARKERS.iter().find_map(|marker| {
        let (_, rest) = key.split_once(&format!(".{marker}."))?;
        Some(rest.split('.').next().unwrap_or(rest))
    })
}

pub fn has_lora(sd: &StateDict) -> bool {
    sd.keys().any(|k| k.contains(".lora_A.") || k.contains(".lora_embedding_A."))
}

/// Whether a DeepTune checkpoint holds LoRA adapters, which must agree with `--use_case`: a peft
/// checkpoint given as finetuned (or the reverse) is an error saying which use case fits.
pub fn check_use_case(sd: &StateDict, use_case: UseCase) -> Result<bool> {
    let lora = has_lora(sd);
    let source = sd.source().display();
    match (use_case, lora) {
        (UseCase::Finetuned, true) => {
            bail!("{source} holds LoRA weights: it is a peft checkpoint; use --use_case peft")
        }
        (UseCase::Peft, false) => {
            bail!("{source} holds no LoRA weights: it is not a peft checkpoint; use --use_case finetuned")
        }
        _ => Ok(lora),
    }
}

/// Merges every adapter in `sd` as `settings` scale it, and takes the trained copies of
/// `modules_to_save`. The other weights are passed on as they are (still in the file, for a
/// state dict read from one).
pub fn merge(sd: &StateDict, settings: &LoraSettings) -> Result<Merged> {
    let source = sd.source().display().to_string();
    let names: BTreeSet<&str> = sd.keys().filter_map(|k| adapter_of(k)).collect();
    if names.len() > 1 {
        bail!(
            "{source} holds several adapters ({}); peft merges one at a time, so save the one to use alone",
            names.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let name = names.into_iter().next().unwrap_or("default").to_string();
    if let Some(key) = sd.keys().find(|k| k.contains(".lora_") && adapter_of(k).is_none()) {
        bail!("{source}: {key} is a peft adapter tensor of a kind this merge does not know");
    }
    let saved_copy = format!(".modules_to_save.{name}.");
    let mut merged = sd.renamed(|key| {
        if let Some((module, param)) = key.split_once(&saved_copy) {
            return Some(format!("{module}.{param}"));
        }
        if adapter_of(key).is_some() || key.contains(".original_module.") {
            return None;
        }
        match key.split_once(".base_layer.") {
            Some((_, "weight")) => None,
            Some((layer, param)) => Some(format!("{layer}.{param}")),
            None => Some(key.to_string()),
        }
    });
    let mut ranks = BTreeSet::new();
    let mut layers = 0;
    let wrapped: Vec<&str> =
        sd.keys().filter(|k| adapter_of(k).is_none()).filter_map(|k| k.strip_suffix(".base_layer.weight")).collect();
    for layer in wrapped {
        let adapter = Adapter::read(sd, layer, &name)?;
        let Some(adapter) = adapter else {
            bail!("{source}: {layer} is LoRA-wrapped but lacks lora_A/lora_B weights");
        };
        let r = adapter.a.size()[0];
        ranks.insert(r);
        let scale = settings.scale(layer, r);
        let w = sd.tensor(&format!("{layer}.base_layer.weight"))?;
        let weight =
            adapter.merged_weight(&w, scale).map_err(|e| anyhow!("{source}: merging LoRA into {layer}: {e:#}"))?;
        merged.insert(format!("{layer}.weight"), weight);
        if let Some(lora_bias) = &adapter.bias {
            let bias = sd.get(&format!("{layer}.base_layer.bias"))?.with_context(|| {
                format!("{source}: {layer} has a LoRA bias (lora_bias) but the layer has no bias to add it to")
            })?;
            merged.insert(format!("{layer}.bias"), bias.to_kind(Kind::Float) + lora_bias.to_kind(Kind::Float) * scale);
        }
        layers += 1;
    }
    Ok(Merged { weights: merged, ranks, layers })
}

/// One wrapped layer's adapter tensors.
struct Adapter {
    a: Tensor,
    b: Tensor,
    /// An Embedding's adapter (`lora_embedding_A/B`), whose update is transposed.
    embedding: bool,
    bias: Option<Tensor>,
    magnitude: Option<Tensor>,
}

impl Adapter {
    fn read(sd: &StateDict, layer: &str, name: &str) -> Result<Option<Adapter>> {
        let get = |suffix: &str| sd.get(&format!("{layer}.{suffix}"));
        let magnitude = match get(&format!("lora_magnitude_vector.{name}.weight"))? {
            Some(m) => Some(m),
            // peft before 0.12 kept the magnitude as a bare parameter.
            None => get(&format!("lora_magnitude_vector.{name}"))?,
        };
        let linear = (get(&format!("lora_A.{name}.weight"))?, get(&format!("lora_B.{name}.weight"))?);
        let (a, b, embedding) = match linear {
            (Some(a), Some(b)) => (a, b, false),
            _ => match (get(&format!("lora_embedding_A.{name}"))?, get(&format!("lora_embedding_B.{name}"))?) {
                (Some(a), Some(b)) => (a, b, true),
                _ => return Ok(None),
            },
        };
        let (a_name, b_name) = if embedding { ("lora_embedding_A", "lora_embedding_B") } else { ("lora_A", "lora_B") };
        for (what, t) in [(a_name, &a), (b_name, &b)] {
            if t.dim() < 2 || t.size().contains(&0) {
                bail!(
                    "{}: {layer}.{what}.{name} has shape {:?}; a LoRA weight has at least 2 non-empty dimensions",
                    sd.source().display(),
                    t.size()
                );
            }
        }
        let bias = get(&format!("lora_B.{name}.bias"))?;
        Ok(Some(Adapter { a, b, embedding, bias, magnitude }))
    }

    /// `W + dW * scale`, rescaled by the DoRA magnitude where there is one.
    fn merged_weight(&self, w: &Tensor, scale: f64) -> Result<Tensor> {
        if w.dim() < 2 || w.size().contains(&0) {
            bail!(
                "the base weight has shape {:?}; a LoRA-wrapped weight has at least 2 non-empty dimensions",
                w.size()
            );
        }
        let merged = if self.embedding {
            embedding_weight(w, &self.a, &self.b, scale)?
        } else {
            merged_weight(w, &self.a, &self.b, scale)?
        };
        let Some(magnitude) = &self.magnitude else { return Ok(merged) };
        if merged.size() != w.size() {
            bail!("a DoRA adapter on a depthwise convolution with a dense update is not supported");
        }
        // The norm per output channel (dims 1..), or for an Embedding per embedding dimension
        // (dim 0), as peft's DoRA layers take it.
        let (norm_dims, factor_shape): (Vec<i64>, Vec<i64>) = if self.embedding {
            (vec![0], vec![1, -1])
        } else {
            let mut shape = vec![-1];
            shape.resize(merged.dim(), 1);
            ((1..merged.dim() as i64).collect(), shape)
        };
        let norm = merged.norm_scalaropt_dim(2.0, norm_dims.as_slice(), false);
        let magnitude = magnitude.to_kind(Kind::Float).reshape([-1]);
        if magnitude.size() != norm.size() {
            bail!("its DoRA magnitude has {} values for {} channels", magnitude.size()[0], norm.size()[0]);
        }
        Ok((magnitude / norm).reshape(factor_shape.as_slice()) * merged)
    }
}

/// An Embedding's `W + (B @ A)^T * scale`: A is `[r, num_embeddings]`, B `[dim, r]`.
fn embedding_weight(w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    let (rows, dim) = (w.size()[0], w.size()[1]);
    let r = a.size()[0];
    if w.dim() != 2 || a.size() != [r, rows] || b.size() != [dim, r] {
        bail!(
            "lora_embedding_A {:?} and lora_embedding_B {:?} do not fit the embedding {:?}",
            a.size(),
            b.size(),
            w.size()
        );
    }
    let update = b.to_kind(Kind::Float).matmul(&a.to_kind(Kind::Float)).transpose(0, 1) * scale;
    Ok(w.to_kind(Kind::Float) + update)
}

fn merged_weight(w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    let out = w.size()[0];
    let r = a.size()[0];
    if b.size()[0] != out || b.size().iter().skip(1).product::<i64>() != r {
        bail!("lora_B has shape {:?}, expected [{out}, {r}, ...]", b.size());
    }
    let a2 = a.to_kind(Kind::Float).reshape([r, -1]);
    let b2 = b.to_kind(Kind::Float).reshape([out, r]);
    let mut update = b2.matmul(&a2);
    update *= scale;
    if a.size().iter().skip(1).product::<i64>() == w.size().iter().skip(1).product::<i64>() {
        return Ok(w.to_kind(Kind::Float) + update.reshape(w.size()));
    }
    if is_depthwise_with_dense_update(w, a) {
        // Base output channel o reads only input channel o: the diagonal of the dense kernel,
        // added in place (the dense weights of a large model run to gigabytes).
        let kernel = &w.size()[2..];
        let dense = update.reshape([out, out, kernel[0], kernel[1]]);
        let mut diagonal = dense.diagonal(0, 0, 1);
        diagonal += w.to_kind(Kind::Float).reshape([out, kernel[0], kernel[1]]).permute([1, 2, 0]);
        return Ok(dense);
    }
    bail!("lora_A has shape {:?}, which does not fit the base weight {:?}", a.size(), w.size())
}

/// A depthwise kxk convolution weight `[C, 1, k, k]` with a lora_A `[r, C, k, k]`.
fn is_depthwise_with_dense_update(w: &Tensor, a: &Tensor) -> bool {
    let (w, a) = (w.size(), a.size());
    w.len() == 4 && a.len() == 4 && w[1] == 1 && a[1] == w[0] && a[2..] == w[2..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_dense_lora_on_a_depthwise_conv_merges_into_a_dense_conv_with_the_same_output() {
        tch::manual_seed(0);
        let float = (Kind::Float, Device::Cpu);
        let (c, r, k) = (6, 3, 3);
        let w = Tensor::randn([c, 1, k, k], float);
        let a = Tensor::randn([r, c, k, k], float);
        let b = Tensor::randn([c, r, 1, 1], float);
        let x = Tensor::randn([2, c, 9, 9], float);
        let scale = 16.0 / r as f64;
        // peft 0.10's forward: base(x) + lora_B(lora_A(x)) * scale, lora_A with the base's
        // stride and padding.
        let base = x.conv2d(&w, None::<Tensor>, [2, 2], [1, 1], [1, 1], c);
        let lora = x.conv2d(&a, None::<Tensor>, [2, 2], [1, 1], [1, 1], 1).conv2d(
            &b,
            None::<Tensor>,
            [1, 1],
            [0, 0],
            [1, 1],
            1,
        );
        let expected = base + lora * scale;
        let merged = merged_weight(&w, &a, &b, scale).unwrap();
        assert_eq!(merged.size(), [c, c, k, k]);
        let got = x.conv2d(&merged, None::<Tensor>, [2, 2], [1, 1], [1, 1], 1);
        let diff = (got - expected).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{diff}");
    }

    #[test]
    fn a_lora_that_fits_neither_way_is_an_error() {
        let float = (Kind::Float, Device::Cpu);
        let w = Tensor::zeros([6, 1, 3, 3], float);
        let a = Tensor::zeros([2, 5, 3, 3], float);
        let b = Tensor::zeros([6, 2, 1, 1], float);
        assert!(merged_weight(&w, &a, &b, 1.0).is_err());
    }
}
