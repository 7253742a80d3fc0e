//! GANDALF's embedding layer and backbone (pytorch-tabular's `Embedding1dLayer` and
//! `GatedFeatureLearningUnit`), in eval mode, with pytorch-tabular's parameter names.
//!
//! Embedding layer: BatchNorm1d on the continuous columns (running statistics; ghost batch norm
//! is plain batch norm in eval mode), then one embedding row per categorical column, concatenated.
//! Backbone: `gflu_stages` gated stages over that vector, each with a t-softmax feature mask. The
//! backbone output is the embedding.

use anyhow::{bail, Context, Result};
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::weights::{Linear, Weights, ANY};
use tch::{Device, Kind, Tensor};

const EMBEDDING: &str = "_embedding_layer";
const GFLU: &str = "_backbone.gflus";
/// nn.BatchNorm1d's default.
const BATCH_NORM_EPS: f64 = 1e-5;

struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

pub struct Gandalf {
    batch_norm: Option<BatchNorm>,
    /// One `[cardinality, dim]` table per categorical column.
    category_tables: Vec<Tensor>,
    w_in: Vec<Linear>,
    w_out: Vec<Linear>,
    /// `[stages, features]`.
    feature_masks: Tensor,
    /// `[stages, 1]`, before the ReLU the forward applies.
    t: Tensor,
    pub continuous: usize,
    /// Width of the backbone input and output.
    pub features: usize,
}

impl Gandalf {
    /// Builds the network from a GANDALF state dict, checking every shape against the column
    /// counts the config gives.
    pub fn from_weights(
        weights: &StateDict,
        continuous: usize,
        categorical: usize,
        stages: usize,
        device: Device,
    ) -> Result<Gandalf> {
        let w = Weights::new(weights, device);
        let category_tables = (0..categorical)
            .map(|i| w.tensor(&format!("{EMBEDDING}.cat_embedding_layers.{i}.weight"), &[ANY, ANY]))
            .collect::<Result<Vec<_>>>()?;
        if w.contains(&format!("{EMBEDDING}.cat_embedding_layers.{categorical}.weight")) {
            bail!("the config lists {categorical} categorical columns, but the checkpoint has more category embedding tables");
        }
        let saved_stages = (0..).take_while(|d| w.contains(&format!("{GFLU}.W_in.{d}.weight"))).count();
        if saved_stages != stages {
            bail!("config.yml says gflu_stages: {stages}, but the checkpoint holds {saved_stages} GFLU stages");
        }
        let widths: Vec<i64> = category_tables.iter().map(|t| t.size()[1]).collect();
        let n = continuous as i64 + widths.iter().sum::<i64>();
        let (c, d) = (continuous as i64, stages as i64);
        let load = || -> Result<Gandalf> {
            // Ghost batch norm (virtual_batch_size) nests the BatchNorm1d one level deeper.
            let batch_norm = ["normalizing_batch_norm.bn", "normalizing_batch_norm.bn.bn"]
                .iter()
                .map(|p| w.at(&format!("{EMBEDDING}.{p}")))
                .find(|bn| bn.contains("running_mean"))
                .map(|bn| -> Result<BatchNorm> {
                    Ok(BatchNorm {
                        weight: bn.tensor("weight", &[c])?,
                        bias: bn.tensor("bias", &[c])?,
                        running_mean: bn.tensor("running_mean", &[c])?,
                        running_var: bn.tensor("running_var", &[c])?,
                    })
                })
                .transpose()?;
            let gflu = w.at(GFLU);
            Ok(Gandalf {
                batch_norm,
                w_in: (0..stages).map(|i| gflu.linear(&format!("W_in.{i}"), 2 * n, 2 * n)).collect::<Result<_>>()?,
                w_out: (0..stages).map(|i| gflu.linear(&format!("W_out.{i}"), 2 * n, n)).collect::<Result<_>>()?,
                feature_masks: gflu.tensor("feature_masks", &[d, n])?,
                t: gflu.tensor("t", &[d, 1])?,
                category_tables,
                continuous,
                features: n as usize,
            })
        };
        let widths: Vec<String> = widths.iter().map(i64::to_string).collect();
        load().with_context(|| {
            format!(
                "config.yml and model.ckpt disagree ({continuous} continuous columns and category embeddings of widths [{}] make {n} features); were they saved from the same model?",
                widths.join(", ")
            )
        })
    }

    /// Rows of each category table, for checking the saved codes fit.
    pub fn cardinalities(&self) -> Vec<i64> {
        self.category_tables.iter().map(|t| t.size()[0]).collect()
    }

    /// `continuous`: `[B, continuous]` float; `categorical`: `[B, categorical]` int64 codes.
    /// Returns the backbone output `[B, features]`.
    pub fn forward(&self, continuous: &Tensor, categorical: &Tensor) -> Tensor {
        let mut parts = Vec::new();
        if self.continuous > 0 {
            parts.push(match &self.batch_norm {
                Some(bn) => continuous.batch_norm(
                    Some(&bn.weight),
                    Some(&bn.bias),
                    Some(&bn.running_mean),
                    Some(&bn.running_var),
                    false,
                    0.1,
                    BATCH_NORM_EPS,
                    true,
                ),
                None => continuous.shallow_clone(),
            });
        }
        for (i, table) in self.category_tables.iter().enumerate() {
            parts.push(Tensor::embedding(table, &categorical.select(1, i as i64), -1, false, false));
        }
        let x = Tensor::cat(&parts, 1);
        self.gflus(&x)
    }

    fn gflus(&self, x: &Tensor) -> Tensor {
        let n = self.features as i64;
        let t = self.t.relu();
        let mut h = x.shallow_clone();
        for (d, (w_in, w_out)) in self.w_in.iter().zip(&self.w_out).enumerate() {
            let d = d as i64;
            let feature = t_softmax(&self.feature_masks.get(d), &t.get(d)) * x;
            let h_in = Tensor::cat(&[&feature, &h], -1).linear(&w_in.weight, Some(&w_in.bias));
            let z = h_in.narrow(1, 0, n).sigmoid();
            let r = h_in.narrow(1, n, n).sigmoid();
            let h_out = Tensor::cat(&[&(&r * &h), x], -1).linear(&w_out.weight, Some(&w_out.bias)).tanh();
            h = (z.ones_like() - &z) * &h + &z * h_out;
        }
        h
    }
}

/// pytorch-tabular's t-softmax: `softmax(x - max + log(relu(x - max + t) + 1e-8))`.
fn t_softmax(input: &Tensor, t: &Tensor) -> Tensor {
    let (maxes, _) = input.max_dim(-1, true);
    let shifted = input - maxes;
    let w = (&shifted + t).relu() + 1e-8;
    (shifted + w.log()).softmax(-1, Kind::Float)
}
