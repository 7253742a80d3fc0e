//! The last preprocessing step on the model's device: resized RGB bytes (B, H, W, 3) to the
//! model's input floats (B, 3, H, W), `(x / 255 - mean) / std` per channel.
//!
//! Bytes cross to the device instead of floats, a quarter of the traffic, and the arithmetic is
//! the reference's to the bit: each operation is an IEEE f32 division or subtraction, in the
//! same order as torchvision's `ToTensor` then `Normalize`. The divisors are tensors on the
//! device rather than scalars because CUDA turns a division by a host scalar into a
//! multiplication by its reciprocal, which can differ in the last bit.
//!
//! The floats go to the model in the layout [`input_layout`] picks for the run's precision.

use deepembed_sdk::Precision;
use tch::{Device, Kind, Tensor};

use crate::image::Transform;

pub struct Normalizer {
    max: Tensor,
    mean: Tensor,
    std: Tensor,
    precision: Precision,
}

impl Normalizer {
    pub fn new(transform: &Transform, device: Device, precision: Precision) -> Normalizer {
        let channels = |v: [f32; 3]| Tensor::from_slice(&v).view([1, 3, 1, 1]).to_device(device);
        Normalizer {
            max: Tensor::from_slice(&[255f32]).to_device(device),
            mean: channels(transform.mean),
            std: channels(transform.std),
            precision,
        }
    }

    /// `resized`: (B, H, W, 3) bytes, already on the model's device (the window's buffer sends
    /// them: `WindowPixels::to_device`). Returns (B, 3, H, W) floats there.
    ///
    /// One float tensor is allocated, in the layout [`empty_in_layout`] picks, and the three
    /// operations run in place on it: the same IEEE operations on the same values as one new
    /// tensor per step, without four more batch-sized allocations and passes over memory (on
    /// the CPU, 154 MB each at batch 256).
    pub fn apply(&self, resized: &Tensor) -> Tensor {
        let (batch, height, width, channels) = resized.size4().expect("resized pixels are (B, H, W, C)");
        let mut x = empty_in_layout([batch, channels, height, width], (Kind::Float, resized.device()), self.precision);
        x.copy_(&resized.permute([0, 3, 1, 2]));
        let _ = x.g_div_(&self.max);
        let _ = x.g_sub_(&self.mean);
        let _ = x.g_div_(&self.std);
        x
    }
}

/// `x` (B, 3, H, W) in the memory layout the model runs fastest on at `precision`, same values
/// (a copy in the layout of [`empty_in_layout`]).
pub fn input_layout(x: Tensor, precision: Precision) -> Tensor {
    let shape = x.size4().expect("model input is (B, 3, H, W)");
    let mut laid_out = empty_in_layout(shape.into(), (x.kind(), x.device()), precision);
    laid_out.copy_(&x);
    laid_out
}

/// An uninitialised tensor of `shape` (B, C, H, W) in the memory layout the model runs fastest
/// on at `precision`:
///
/// - fp32: contiguous (NCHW), libtorch's default and the reference's, where the parity tests
///   are exact (a layout changes the convolutions' summation order).
/// - fp16, bf16: channels-last (NHWC strides, same shape), as PyTorch advises for autocast:
///   oneDNN on the CPU and cuDNN on CUDA run half-precision convolutions fastest in it, and
///   each convolution hands the layout on to the next layer. Measured with torchvision's
///   ResNet-18, bf16 on 2 CPU cores: 64 images/s from NCHW input, 106 from channels-last
///   (fp32: 41). The drift against fp32 stays what bf16's rounding makes it.
fn empty_in_layout(shape: [i64; 4], options: (Kind, Device), precision: Precision) -> Tensor {
    let [batch, channels, height, width] = shape;
    match precision {
        Precision::Fp32 => Tensor::empty(shape, options),
        // tch has no memory-format argument: NHWC contiguous, viewed as NCHW.
        Precision::Fp16 | Precision::Bf16 => {
            Tensor::empty([batch, height, width, channels], options).permute([0, 3, 1, 2])
        }
    }
}
