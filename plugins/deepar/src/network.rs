//! DeepAR's network up to its RNN: the continuous inputs, then one embedding per categorical
//! input or variable group (`MultiEmbedding`, concatenated in `embedding_sizes` order; a group's
//! rows summed), into a stacked LSTM or GRU
//! (`batch_first`, no dropout at inference). The embedding of a window is the top layer's
//! output at its last step.

use anyhow::{bail, Result};
use deepembed_sdk::weights::Weights;
use tch::{Device, Kind, Tensor};

use crate::saved::{Cell, SavedDeepAr};

pub struct Network {
    cell: Cell,
    layers: i64,
    hidden: i64,
    /// `(categorical input indices, table)` per embedding, in concatenation order.
    embeddings: Vec<(Vec<i64>, Tensor)>,
    /// Per layer: `weight_ih, weight_hh, bias_ih, bias_hh`, as libtorch's RNN kernels take them.
    params: Vec<Tensor>,
    device: Device,
}

impl Network {
    pub fn from_saved(saved: &SavedDeepAr, device: Device) -> Result<Network> {
        let weights = Weights::new(&saved.weights, device);
        let mut embeddings = Vec::with_capacity(saved.embeddings.len());
        let mut width = saved.reals.len() as i64;
        for embedding in &saved.embeddings {
            let name = format!("embeddings.embeddings.{}.weight", embedding.name);
            let table = weights.tensor(&name, &[embedding.cardinality, embedding.dim])?;
            // A group's columns share one encoder.
            let codes = saved.categoricals[embedding.inputs[0]].classes.values();
            if let Some(&code) = codes.clone().find(|&&c| c < 0 || c >= embedding.cardinality) {
                bail!(
                    "{}: the encoder of '{}' gives code {code}, but its embedding table has {} rows; is the checkpoint damaged?",
                    saved.path.display(),
                    embedding.name,
                    embedding.cardinality
                );
            }
            width += embedding.dim;
            embeddings.push((embedding.inputs.iter().map(|&i| i as i64).collect(), table));
        }
        let gates = match saved.cell {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        };
        let hidden = saved.hidden_size;
        let mut params = Vec::with_capacity(4 * saved.rnn_layers as usize);
        for layer in 0..saved.rnn_layers {
            let inputs = if layer == 0 { width } else { hidden };
            params.push(weights.tensor(&format!("rnn.weight_ih_l{layer}"), &[gates * hidden, inputs])?);
            params.push(weights.tensor(&format!("rnn.weight_hh_l{layer}"), &[gates * hidden, hidden])?);
            params.push(weights.tensor(&format!("rnn.bias_ih_l{layer}"), &[gates * hidden])?);
            params.push(weights.tensor(&format!("rnn.bias_hh_l{layer}"), &[gates * hidden])?);
        }
        if weights.contains(&format!("rnn.weight_ih_l{}", saved.rnn_layers)) {
            bail!("{}: the RNN has more layers than rnn_layers = {} says", saved.path.display(), saved.rnn_layers);
        }
        Ok(Network { cell: saved.cell, layers: saved.rnn_layers, hidden, embeddings, params, device })
    }

    pub fn dims(&self) -> usize {
        self.hidden as usize
    }

    /// `reals` `[windows, steps, reals]` (f32) and `codes` `[windows, steps, categoricals]`
    /// (i64) to the top layer's output at the last step, `[windows, hidden]`.
    pub fn forward(&self, reals: &Tensor, codes: &Tensor) -> Tensor {
        let reals = reals.to_device(self.device);
        let codes = codes.to_device(self.device);
        let mut parts = vec![reals.shallow_clone()];
        for (inputs, table) in &self.embeddings {
            let rows = inputs.iter().map(|&i| Tensor::embedding(table, &codes.select(2, i), -1, false, false));
            parts.push(rows.reduce(|sum, row| sum + row).expect("an embedding reads an input"));
        }
        let input = Tensor::cat(&parts, 2);
        let windows = input.size()[0];
        let zeros = || Tensor::zeros([self.layers, windows, self.hidden], (Kind::Float, self.device));
        let output = match self.cell {
            Cell::Lstm => input.lstm(&[zeros(), zeros()], &self.params, true, self.layers, 0.0, false, false, true).0,
            Cell::Gru => input.gru(&zeros(), &self.params, true, self.layers, 0.0, false, false, true).0,
        };
        output.select(1, -1)
    }
}
