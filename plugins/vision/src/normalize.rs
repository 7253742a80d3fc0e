//! The last preprocessing step on the model's device: resized RGB bytes (B, H, W, 3) to the
//! model's input floats (B, 3, H, W), `(x / 255 - mean) / std` per channel.
//!
//! Bytes cross to the device instead of floats, a quarter of the traffic, and the arithmetic is
//! the reference's to the bit: each operation is an IEEE f32 division or subtraction, in the
//! same order as torchvision's `ToTensor` then `Normalize`. The divisors are tensors on the
//! device rather than scalars because CUDA turns a division by a host scalar into a
//! multiplication by its reciprocal, which can differ in the last bit.

use tch::{Device, Kind, Tensor};

use crate::image::Transform;

pub struct Normalizer {
    max: Tensor,
    mean: Tensor,
    std: Tensor,
    device: Device,
}

impl Normalizer {
    pub fn new(transform: &Transform, device: Device) -> Normalizer {
        let channels = |v: [f32; 3]| Tensor::from_slice(&v).view([1, 3, 1, 1]).to_device(device);
        Normalizer {
            max: Tensor::from_slice(&[255f32]).to_device(device),
            mean: channels(transform.mean),
            std: channels(transform.std),
            device,
        }
    }

    /// `resized`: (B, H, W, 3) bytes on the CPU. Returns (B, 3, H, W) floats on the device.
    pub fn apply(&self, resized: &Tensor) -> Tensor {
        let bytes = match self.device {
            // Pinned memory lets the copy run asynchronously; libtorch's pinned allocator caches
            // the blocks, so this allocates nothing once warm.
            Device::Cuda(_) => resized.pin_memory(self.device).to_device_(self.device, Kind::Uint8, true, false),
            _ => resized.shallow_clone(),
        };
        let x = bytes.permute([0, 3, 1, 2]).to_kind(Kind::Float) / &self.max;
        ((x - &self.mean) / &self.std).contiguous()
    }
}
