//! transformers' activation functions (`ACT2FN`), by the names a `config.json` gives them
//! (`hidden_act`, `activation_function`), each as the same tensor operations in the same order
//! as transformers' module, so that a model's forward pass agrees with transformers' to the bit.

use anyhow::{bail, Result};
use tch::Tensor;

/// An activation with no parameters of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: libtorch's exact (erf) GELU.
    Gelu,
    /// `gelu_python`: `x * 0.5 * (1 + erf(x / sqrt(2)))`, written out.
    GeluPython,
    /// `gelu_new`, `gelu_accurate`, `gelu_python_tanh`: the tanh approximation written out,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    GeluNew,
    /// `gelu_pytorch_tanh`: libtorch's tanh-approximate GELU kernel.
    GeluTanh,
    /// `gelu_fast`: `0.5 x (1 + tanh(x 0.7978845608 (1 + 0.044715 x x)))`.
    GeluFast,
    /// `gelu_10`: GELU clipped to [-10, 10].
    Gelu10,
    /// `quick_gelu`: `x sigmoid(1.702 x)`.
    QuickGelu,
    Relu,
    /// `relu2`: `relu(x)^2`.
    ReluSquared,
    /// `relu6`: `min(max(x, 0), 6)`.
    Relu6,
    /// `leaky_relu`: slope 0.01 below 0.
    LeakyRelu,
    /// `silu`, `swish`: `x sigmoid(x)`.
    Silu,
    Mish,
    Hardswish,
    Tanh,
    Sigmoid,
    /// `laplace`: `0.5 (1 + erf((x - 0.707107) / (0.282095 sqrt(2))))`.
    Laplace,
    /// `sqrtsoftplus`: `sqrt(softplus(x))`.
    SqrtSoftplus,
    /// `linear`: the identity.
    Linear,
}

/// The names transformers gives each activation, as `ACT2FN` keys.
const NAMES: [(&str, Activation); 22] = [
    ("gelu", Activation::Gelu),
    ("gelu_python", Activation::GeluPython),
    ("gelu_new", Activation::GeluNew),
    ("gelu_accurate", Activation::GeluNew),
    ("gelu_python_tanh", Activation::GeluNew),
    ("gelu_pytorch_tanh", Activation::GeluTanh),
    ("gelu_fast", Activation::GeluFast),
    ("gelu_10", Activation::Gelu10),
    ("quick_gelu", Activation::QuickGelu),
    ("relu", Activation::Relu),
    ("relu2", Activation::ReluSquared),
    ("relu6", Activation::Relu6),
    ("leaky_relu", Activation::LeakyRelu),
    ("silu", Activation::Silu),
    ("swish", Activation::Silu),
    ("mish", Activation::Mish),
    ("hardswish", Activation::Hardswish),
    ("tanh", Activation::Tanh),
    ("sigmoid", Activation::Sigmoid),
    ("laplace", Activation::Laplace),
    ("sqrtsoftplus", Activation::SqrtSoftplus),
    ("linear", Activation::Linear),
];

impl Activation {
    /// The activation a config names; `field` (`hidden_act`...) words the error for a name that
    /// is not one (or that has weights of its own, as `prelu` and `xielu` do).
    pub fn from_config(name: &str, field: &str) -> Result<Activation> {
        match NAMES.iter().find(|(n, _)| *n == name) {
            Some(&(_, activation)) => Ok(activation),
            None => {
                let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                bail!("{field} {name:?} is not an activation deepembed reproduces; it knows {}", known.join(", "))
            }
        }
    }

    pub fn forward(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Gelu => x.gelu("none"),
            Activation::GeluPython => (x * 0.5) * ((x / std::f64::consts::SQRT_2).erf() + 1.0),
            Activation::GeluNew => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                let inner = (x + x.pow_tensor_scalar(3.0) * 0.044715) * c;
                (x * 0.5) * (inner.tanh() + 1.0)
            }
            Activation::GeluTanh => x.gelu("tanh"),
            Activation::GeluFast => {
                let inner = (x * 0.7978845608) * (((x * 0.044715) * x) + 1.0);
                (x * 0.5) * (inner.tanh() + 1.0)
            }
            Activation::Gelu10 => x.gelu("none").clamp(-10.0, 10.0),
            Activation::QuickGelu => x * (x * 1.702).sigmoid(),
            Activation::Relu => x.relu(),
            Activation::ReluSquared => x.relu().square(),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::LeakyRelu => x.leaky_relu(),
            Activation::Silu => x.silu(),
            Activation::Mish => x.mish(),
            Activation::Hardswish => x.hardswish(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Laplace => {
                // transformers' mu and sigma, to six digits as it writes them: not 1/sqrt(2)
                #[allow(clippy::approx_constant)]
                const MU: f64 = 0.707107;
                const SIGMA: f64 = 0.282095;
                let scaled = (x - MU) / (SIGMA * std::f64::consts::SQRT_2);
                (scaled.erf() + 1.0) * 0.5
            }
            Activation::SqrtSoftplus => x.softplus().sqrt(),
            Activation::Linear => x.shallow_clone(),
        }
    }
}
