//! GANDALF's embedding layer and backbone (pytorch-tabular's `Embedding1dLayer` and
//! `GatedFeatureLearningUnit`), in eval mode, with pytorch-tabular's parameter names.
//!
//! Embedding layer: BatchNorm1d on the continuous columns (running statistics; ghost batch norm
//! is plain batch norm in eval mode), then one embedding row per categorical column, concatenated.
//! Backbone: `gflu_stages` gated stages over that vector, each with a t-softmax feature mask. The
//! backbone output is the embedding.

use anyhow::{anyhow, bail, Context, Result};
use deepembed_sdk::checkpoint::StateDict;
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

struct Linear {
    weight: Tensor,
    bias: Tensor,
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
        let get = |name: &str| -> Result<Tensor> {
            let tensor = weights.get(name).ok_or_else(|| {
                anyhow!("{} has no tensor {name}: not a GANDALF checkpoint", weights.source().display())
            })?;
            Ok(tensor.to_kind(Kind::Float).to_device(device))
        };
        let linear = |name: String| -> Result<Linear> {
            Ok(Linear { weight: get(&format!("{name}.weight"))?, bias: get(&format!("{name}.bias"))? })
        };

        // Ghost batch norm (virtual_batch_size) nests the BatchNorm1d one level deeper.
        let batch_norm = ["normalizing_batch_norm.bn", "normalizing_batch_norm.bn.bn"]
            .iter()
            .map(|p| format!("{EMBEDDING}.{p}"))
            .find(|p| weights.contains(&format!("{p}.running_mean")))
            .map(|p| -> Result<BatchNorm> {
                Ok(BatchNorm {
                    weight: get(&format!("{p}.weight"))?,
                    bias: get(&format!("{p}.bias"))?,
                    running_mean: get(&format!("{p}.running_mean"))?,
                    running_var: get(&format!("{p}.running_var"))?,
                })
            })
            .transpose()?;
        let category_tables = (0..categorical)
            .map(|i| get(&format!("{EMBEDDING}.cat_embedding_layers.{i}.weight")))
            .collect::<Result<Vec<_>>>()?;
        if weights.contains(&format!("{EMBEDDING}.cat_embedding_layers.{categorical}.weight")) {
            bail!("the config lists {categorical} categorical columns, but the checkpoint has more category embedding tables");
        }
        let saved_stages = (0..).take_while(|d| weights.contains(&format!("{GFLU}.W_in.{d}.weight"))).count();
        if saved_stages != stages {
            bail!("config.yml says gflu_stages: {stages}, but the checkpoint holds {saved_stages} GFLU stages");
        }
        let w_in = (0..stages).map(|d| linear(format!("{GFLU}.W_in.{d}"))).collect::<Result<Vec<_>>>()?;
        let w_out = (0..stages).map(|d| linear(format!("{GFLU}.W_out.{d}"))).collect::<Result<Vec<_>>>()?;
        let feature_masks = get(&format!("{GFLU}.feature_masks"))?;
        let t = get(&format!("{GFLU}.t"))?;

        let category_width: i64 = category_tables.iter().map(|t| t.size()[1]).sum();
        let features = continuous as i64 + category_width;
        let model = Gandalf {
            batch_norm,
            category_tables,
            w_in,
            w_out,
            feature_masks,
            t,
            continuous,
            features: features as usize,
        };
        model
            .check_shapes(features, stages as i64)
            .context("config.yml and model.ckpt disagree; were they saved from the same model?")?;
        Ok(model)
    }

    fn check_shapes(&self, n: i64, stages: i64) -> Result<()> {
        let widths: Vec<String> = self.category_tables.iter().map(|t| t.size()[1].to_string()).collect();
        let expected = format!(
            "{} continuous columns and category embeddings of widths [{}] make {n} features",
            self.continuous,
            widths.join(", ")
        );
        let check = |what: &str, tensor: &Tensor, shape: &[i64]| -> Result<()> {
            if tensor.size() != shape {
                bail!("{expected}, so {what} should be {shape:?}, but it is {:?}", tensor.size());
            }
            Ok(())
        };
        for (d, (w_in, w_out)) in self.w_in.iter().zip(&self.w_out).enumerate() {
            check(&format!("W_in.{d}.weight"), &w_in.weight, &[2 * n, 2 * n])?;
            check(&format!("W_in.{d}.bias"), &w_in.bias, &[2 * n])?;
            check(&format!("W_out.{d}.weight"), &w_out.weight, &[n, 2 * n])?;
            check(&format!("W_out.{d}.bias"), &w_out.bias, &[n])?;
        }
        check("feature_masks", &self.feature_masks, &[stages, n])?;
        check("t", &self.t, &[stages, 1])?;
        if let Some(bn) = &self.batch_norm {
            let c = self.continuous as i64;
            for (name, tensor) in [
                ("weight", &bn.weight),
                ("bias", &bn.bias),
                ("running_mean", &bn.running_mean),
                ("running_var", &bn.running_var),
            ] {
                check(&format!("the continuous batch norm's {name}"), tensor, &[c])?;
            }
        }
        Ok(())
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
