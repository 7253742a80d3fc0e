//! tch's layers, with their variables created zeroed instead of randomly initialised.
//!
//! A backbone's variables are all filled from the weights file right after it is built
//! (`StateDict::copy_into` fails on any the file lacks), so their initial values are never
//! used. libtorch's random init (Kaiming-uniform for every convolution and linear weight) took
//! half of a large model's loading on the CPU: VGG-16 loads in 0.36 s without it, 0.71 s with
//! it, on 2 cores (docs/BENCHMARKS.md). Families build their layers with
//! these functions instead of `nn::conv2d`, `nn::linear`, ...; the arguments are tch's.
//! tests/tests/vision_models.rs checks every version's variables before they are filled.

use std::borrow::Borrow;

use tch::nn::{self, Init};

/// What every variable starts as: zeros, a memset.
const ZEROED: Init = Init::Const(0.);

pub fn conv2d<'a, T: Borrow<nn::Path<'a>>>(
    p: T,
    inputs: i64,
    outputs: i64,
    kernel: i64,
    config: nn::ConvConfig,
) -> nn::Conv2D {
    nn::conv2d(p, inputs, outputs, kernel, nn::ConvConfig { ws_init: ZEROED, bs_init: ZEROED, ..config })
}

pub fn linear<'a, T: Borrow<nn::Path<'a>>>(p: T, inputs: i64, outputs: i64, config: nn::LinearConfig) -> nn::Linear {
    nn::linear(p, inputs, outputs, nn::LinearConfig { ws_init: ZEROED, bs_init: Some(ZEROED), ..config })
}

pub fn batch_norm2d<'a, T: Borrow<nn::Path<'a>>>(p: T, channels: i64, config: nn::BatchNormConfig) -> nn::BatchNorm {
    nn::batch_norm2d(p, channels, nn::BatchNormConfig { ws_init: ZEROED, bs_init: ZEROED, ..config })
}

pub fn layer_norm<'a, T: Borrow<nn::Path<'a>>>(p: T, shape: Vec<i64>, config: nn::LayerNormConfig) -> nn::LayerNorm {
    nn::layer_norm(p, shape, nn::LayerNormConfig { ws_init: ZEROED, bs_init: ZEROED, ..config })
}

/// A variable of the given shape, for layers tch does not have (ViT's class token, Swin's bias
/// table).
pub fn var(p: &nn::Path, name: &str, dims: &[i64]) -> tch::Tensor {
    p.var(name, dims, ZEROED)
}
