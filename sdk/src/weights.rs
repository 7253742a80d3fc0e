//! Tensors fetched from a state dict by name, with their shape and dtype checked as they are
//! loaded: a wrong-shaped weight fails at load, naming the file, the key and both shapes, never
//! later inside a forward pass (where libtorch would panic or print a C++ backtrace).

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::StateDict;

/// A dimension that may be anything (a width the weights themselves define).
pub const ANY: i64 = -1;

/// A state dict's tensors under a name prefix, converted to f32 on the run's device.
#[derive(Clone, Copy)]
pub struct Weights<'a> {
    sd: &'a StateDict,
    device: Device,
}

/// A scoped view of [`Weights`]: every name is looked up under `prefix`.
pub struct Scope<'a> {
    weights: Weights<'a>,
    prefix: String,
}

/// A linear layer's weight and bias.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    /// `x @ weight^T + bias`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }
}

/// A layer norm's affine weight and bias, over the last dimension.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl LayerNorm {
    pub fn forward(&self, x: &Tensor, eps: f64) -> Tensor {
        x.layer_norm([self.weight.size()[0]], Some(&self.weight), Some(&self.bias), eps, false)
    }
}

impl<'a> Weights<'a> {
    pub fn new(sd: &'a StateDict, device: Device) -> Weights<'a> {
        Weights { sd, device }
    }

    /// The names under `prefix` (`"encoder.layer.0"` looks up `"encoder.layer.0.<name>"`).
    pub fn at(&self, prefix: &str) -> Scope<'a> {
        Scope { weights: *self, prefix: prefix.to_string() }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.sd.contains(name)
    }

    /// `name`, which must have `shape` (each entry a size, or [`ANY`]) and a floating dtype
    /// (both checked before it is read).
    pub fn tensor(&self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let source = self.sd.source().display();
        let (Some(found), Some(kind)) = (self.sd.shape(name), self.sd.kind(name)) else {
            bail!("{source} has no weight {name}");
        };
        let fits = found.len() == shape.len() && found.iter().zip(shape).all(|(&f, &s)| s == ANY || f == s);
        if !fits {
            bail!("{source}: {name} has shape {found:?}, expected {}", describe(shape));
        }
        if !matches!(kind, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
            bail!("{source}: {name} has dtype {kind:?}, expected floating point weights");
        }
        Ok(self.sd.tensor(name)?.to_kind(Kind::Float).to_device(self.device))
    }

    /// A linear layer `prefix.weight` `[outputs, inputs]` and `prefix.bias` `[outputs]`.
    pub fn linear(&self, prefix: &str, inputs: i64, outputs: i64) -> Result<Linear> {
        let weight = self.tensor(&format!("{prefix}.weight"), &[outputs, inputs])?;
        let outputs = weight.size()[0];
        Ok(Linear { weight, bias: self.tensor(&format!("{prefix}.bias"), &[outputs])? })
    }

    /// A layer norm's `prefix.weight` and `prefix.bias`, both `[width]`.
    pub fn layer_norm(&self, prefix: &str, width: i64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.tensor(&format!("{prefix}.weight"), &[width])?,
            bias: self.tensor(&format!("{prefix}.bias"), &[width])?,
        })
    }
}

impl<'a> Scope<'a> {
    fn name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn at(&self, prefix: &str) -> Scope<'a> {
        Scope { weights: self.weights, prefix: self.name(prefix) }
    }

    pub fn tensor(&self, name: &str, shape: &[i64]) -> Result<Tensor> {
        self.weights.tensor(&self.name(name), shape)
    }

    pub fn linear(&self, name: &str, inputs: i64, outputs: i64) -> Result<Linear> {
        self.weights.linear(&self.name(name), inputs, outputs)
    }

    pub fn layer_norm(&self, name: &str, width: i64) -> Result<LayerNorm> {
        self.weights.layer_norm(&self.name(name), width)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(&self.name(name))
    }
}

fn describe(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(|&d| if d == ANY { "_".to_string() } else { d.to_string() }).collect();
    format!("[{}]", dims.join(", "))
}
