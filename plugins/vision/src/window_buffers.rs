//! The pixel buffers of prepared windows, used again once the model is done with them.
//!
//! A window's resized images share one buffer (at batch 256, 38 MB), which the decoding threads
//! fill in parallel and the model reads from: on CUDA it is pinned memory the device copies from
//! asynchronously, on the CPU the model gets a view of it ([`StagingBytes`]). Allocated per
//! window, each buffer was a fresh mapping from the system (and, on CUDA, a fresh pinning):
//! its pages faulted in by the decoding threads and unmapped again after the model's turn,
//! window after window. Here a buffer goes back to a small pool when the window's last image is
//! dropped, which the pipeline does only after the device is done with it, and the next window
//! takes it.

use std::ops::Range;

use deepembed_sdk::StagingBytes;
use tch::{Device, Tensor};

use crate::buffer_pool::{Pool, Pooled};

/// Windows in flight at once on a GPU: two waiting for the model, two on the preparing thread
/// (one being finished or handed over, the next started ahead: `window_decode.rs`) and two in
/// the model's hands (one being sent, one whose last chunk is still on the device). Buffers
/// beyond that are freed; fewer would mean a fresh (on CUDA, pinned) buffer every window.
const KEPT: usize = 6;

#[derive(Clone)]
pub struct WindowBuffers {
    /// Where the bytes go: pinned buffers for CUDA.
    device: Device,
    pool: Pool<StagingBytes>,
}

impl WindowBuffers {
    pub fn new(device: Device) -> WindowBuffers {
        WindowBuffers { device, pool: Pool::new(KEPT) }
    }

    /// A buffer of at least `len` bytes, of which the window uses the first `len`: a returned
    /// one if large enough, else a new one. A returned buffer's bytes are left as they were
    /// (every image slot is written before it is used; a failed image's slot is at most copied
    /// along with its neighbours, and dropped unused), so taking one costs no pass over its bytes.
    pub fn take(&self, len: usize) -> WindowPixels {
        let bytes = self.pool.take(|b| b.len() >= len, || StagingBytes::new(len, self.device));
        WindowPixels { bytes, len, device: self.device }
    }
}

/// One window's pixel buffer; it returns to its [`WindowBuffers`] when dropped.
pub struct WindowPixels {
    bytes: Pooled<StagingBytes>,
    len: usize,
    device: Device,
}

impl WindowPixels {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes.as_slice()[..self.len]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes.as_mut_slice()[..self.len]
    }

    /// The bytes in `range` as a `Uint8` tensor on the run's device: on CUDA an asynchronous
    /// copy (this buffer goes back to the pool only once the window is emitted, after the
    /// device is done with it), on the CPU a view.
    pub fn to_device(&self, range: Range<usize>) -> Tensor {
        assert!(range.end <= self.len, "range {range:?} outside the window's {} bytes", self.len);
        self.bytes.to_device(range, self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_taken_again_without_a_new_allocation() {
        let buffers = WindowBuffers::new(Device::Cpu);
        let mut first = buffers.take(1000);
        first.bytes_mut()[999] = 7;
        let address = first.bytes().as_ptr();
        drop(first);
        let again = buffers.take(600);
        assert_eq!((again.bytes().as_ptr(), again.bytes().len()), (address, 600));
        drop(again);
        let larger = buffers.take(1000);
        assert_eq!((larger.bytes().as_ptr(), larger.bytes()[999]), (address, 7));
    }

    #[test]
    fn a_buffer_too_small_is_replaced() {
        let buffers = WindowBuffers::new(Device::Cpu);
        drop(buffers.take(10));
        assert_eq!(buffers.take(20).bytes().len(), 20);
    }

    #[test]
    fn at_most_kept_buffers_stay() {
        let buffers = WindowBuffers::new(Device::Cpu);
        let many: Vec<WindowPixels> = (0..KEPT + 3).map(|_| buffers.take(10)).collect();
        drop(many);
        assert_eq!(buffers.pool.kept(), KEPT);
    }

    #[test]
    fn a_range_is_read_on_the_device() {
        let buffers = WindowBuffers::new(Device::Cpu);
        let mut pixels = buffers.take(8);
        pixels.bytes_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Vec::<u8>::try_from(&pixels.to_device(3..6)).unwrap(), vec![4, 5, 6]);
    }
}
