//! Merging peft LoRA adapters into base weights, for checkpoints saved from a peft-wrapped model
//! (`<layer>.base_layer.weight`, `<layer>.lora_A.default.weight`, `<layer>.lora_B.default.weight`).
//!
//! `W' = W + (B @ A) * alpha / r`. For Linear layers `B @ A` is the plain product; for Conv2d
//! layers the same product over flattened kernels equals peft's `einsum('or,rikl->oikl', B, A)`
//! (1x1 and kxk alike).
//!
//! A depthwise convolution (weight `[C, 1, k, k]`) wrapped by peft 0.10 carries a dense LoRA:
//! lora_A is a full `[r, C, k, k]` convolution, so the update `[C, C, k, k]` does not fit the
//! depthwise weight. Their sum is a dense convolution: the update, plus the depthwise kernel on
//! its diagonal (`W'[o, o] = W[o, 0] + dW[o, o]`), which the model must then build with groups 1.

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use crate::checkpoint::StateDict;
use crate::options::UseCase;

/// A state dict with LoRA merged in and peft's names undone (`<layer>.weight`).
pub struct Merged {
    pub weights: StateDict,
    /// The LoRA rank (0 when the state dict held no adapters).
    pub rank: i64,
    /// How many layers carried an adapter.
    pub layers: usize,
}

pub fn has_lora(sd: &StateDict) -> bool {
    sd.keys().any(|k| k.contains(".lora_A."))
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

/// Merges every adapter in `sd` with scale `alpha / r`. The weights without an adapter are
/// passed on as they are (still in the file, for a state dict read from one).
pub fn merge(sd: &StateDict, alpha: f64) -> Result<Merged> {
    let is_adapter = |key: &str| key.contains(".lora_A.") || key.contains(".lora_B.") || key.contains(".lora_dropout.");
    let mut merged = sd.renamed(|key| match key.split_once(".base_layer.") {
        _ if is_adapter(key) => None,
        Some((_, "weight")) => None,
        Some((layer, param)) => Some(format!("{layer}.{param}")),
        None => Some(key.to_string()),
    });
    let mut rank = None;
    let mut layers = 0;
    let source = sd.source().display().to_string();
    let wrapped: Vec<&str> =
        sd.keys().filter(|k| !is_adapter(k)).filter_map(|k| k.strip_suffix(".base_layer.weight")).collect();
    for layer in wrapped {
        let (Some(a), Some(b)) =
            (sd.get(&format!("{layer}.lora_A.default.weight"))?, sd.get(&format!("{layer}.lora_B.default.weight"))?)
        else {
            bail!("{source}: {layer} is LoRA-wrapped but lacks lora_A/lora_B weights");
        };
        let w = sd.tensor(&format!("{layer}.base_layer.weight"))?;
        for (what, t) in [("base_layer.weight", &w), ("lora_A.default.weight", &a), ("lora_B.default.weight", &b)] {
            if t.dim() < 2 || t.size().contains(&0) {
                bail!("{source}: {layer}.{what} has shape {:?}; a LoRA-wrapped weight has at least 2 non-empty dimensions", t.size());
            }
        }
        let r = a.size()[0];
        if *rank.get_or_insert(r) != r {
            bail!("{source}: LoRA ranks differ between layers ({} and {r})", rank.unwrap_or(r));
        }
        let merged_weight = merged_weight(&w, &a, &b, alpha / r as f64)
            .with_context(|| format!("{source}: merging LoRA into {layer}"))?;
        merged.insert(format!("{layer}.weight"), merged_weight);
        layers += 1;
    }
    Ok(Merged { weights: merged, rank: rank.unwrap_or(0), layers })
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
