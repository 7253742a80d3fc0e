//! Device memory that `--decode gpu` decodes JPEGs into, kept in a pool of its own.
//!
//! nvJPEG decodes on a stream of its own, which libtorch's work is not ordered with
//! (`deepembed_abi::nvjpeg`), so its output memory must have no device work pending on it. Memory
//! straight from libtorch's caching allocator may: a block freed by the model's thread while its
//! kernels still run is handed out again at once for work on the same stream, which nvJPEG's is
//! not. So a new buffer is allocated and then the device synchronised (nothing is pending on
//! anything afterwards), and a buffer goes back to the pool only when the rows decoded into it
//! are dropped, which the pipeline does after the model's work on them was read back. After the
//! first windows, every window takes a returned buffer: no synchronisation, no allocation.

use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use crate::buffer_pool::{Pool, Pooled};

/// Buffers kept for reuse: windows in flight on a GPU (as in `window_buffers.rs`), and a few
/// more for windows decoded in more than one group.
const KEPT: usize = 8;

#[derive(Clone)]
pub struct DeviceBuffers {
    device: Device,
    /// Flat `Uint8` tensors on `device`.
    pool: Pool<Tensor>,
}

impl DeviceBuffers {
    pub fn new(device: Device) -> DeviceBuffers {
        DeviceBuffers { device, pool: Pool::new(KEPT) }
    }

    /// A buffer for a (n, height, width, 3) byte image batch: a returned one if large enough,
    /// else a new one, with no device work pending on it either way.
    pub fn take(&self, n: usize, height: usize, width: usize) -> DecodedBatch {
        let len = (n * height * width * 3) as i64;
        let flat = self.pool.take(
            |b| b.numel() as i64 >= len,
            || {
                let flat = Tensor::empty([len], (Kind::Uint8, self.device));
                if let Device::Cuda(index) = self.device {
                    tch::Cuda::synchronize(index as i64);
                }
                flat
            },
        );
        DecodedBatch { flat: Mutex::new(flat), shape: [n as i64, height as i64, width as i64, 3] }
    }
}

/// A batch of decoded images in a pooled buffer; the buffer returns to its [`DeviceBuffers`] when
/// this is dropped.
pub struct DecodedBatch {
    /// In a mutex only so that rows on the model's thread can share it (`Tensor` is not `Sync`).
    flat: Mutex<Pooled<Tensor>>,
    shape: [i64; 4],
}

impl DecodedBatch {
    /// The (n, height, width, 3) bytes: a view of the buffer's start.
    pub fn tensor(&self) -> Tensor {
        let flat = self.flat.lock().unwrap_or_else(|e| e.into_inner());
        flat.narrow(0, 0, self.shape.iter().product()).view(self.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_taken_again_for_a_batch_that_fits() {
        let buffers = DeviceBuffers::new(Device::Cpu);
        let first = buffers.take(2, 3, 4);
        let address = first.tensor().data_ptr();
        assert_eq!(first.tensor().size(), [2, 3, 4, 3]);
        drop(first);
        let smaller = buffers.take(1, 3, 4);
        assert_eq!((smaller.tensor().data_ptr(), smaller.tensor().size()), (address, vec![1, 3, 4, 3]));
        let larger = buffers.take(3, 3, 4);
        assert_ne!(larger.tensor().data_ptr(), address, "the kept one is in use");
    }

    #[test]
    fn at_most_kept_buffers_stay() {
        let buffers = DeviceBuffers::new(Device::Cpu);
        let many: Vec<DecodedBatch> = (0..KEPT + 3).map(|_| buffers.take(1, 1, 1)).collect();
        drop(many);
        assert_eq!(buffers.pool.kept(), KEPT);
    }
}
