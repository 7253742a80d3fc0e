//! Bytes that Rust code writes and a device copies from: a libtorch CPU tensor, in pinned
//! (page-locked) memory when the device is CUDA, seen from Rust as a byte slice.
//!
//! A vision run decodes images straight into such a buffer on its CPU threads; the model's
//! thread then only queues the copy to the device. Without it, each batch's bytes (38 MB at
//! batch 256) were copied twice on the model's thread, into a fresh tensor and then into pinned
//! memory, while the GPU waited. On the CPU the same buffer is handed to the model as a view,
//! with no copy at all, so the CPU runs (and every test) use this code too.
//!
//! Safety contract of this module:
//!
//! - The tensor is created here, 1-D, contiguous, `Uint8`, on the CPU, zero-filled (so every
//!   byte is initialised), and never replaced or resized: its data pointer is valid for `len`
//!   bytes for as long as the [`StagingBytes`] lives.
//! - Rust reaches those bytes only through [`StagingBytes::as_slice`] (`&self`) and
//!   [`StagingBytes::as_mut_slice`] (`&mut self`), so the borrow checker keeps Rust's own reads
//!   and writes apart.
//! - libtorch reaches them only through the views [`StagingBytes::to_device`] makes, which are
//!   read (copied to the device, or read by the model on the CPU) and never written.
//! - A device copy may still be reading after `to_device` returns. Writing the bytes again
//!   before the device is done would race with it (wrong pixels, not memory unsafety in Rust's
//!   sense: the memory stays valid, the storage being held by the tensor). The caller keeps the
//!   order: the pipeline reads each chunk's embeddings back, which waits for the device, before
//!   it lets the window's buffer go back to be filled again.

use std::ops::Range;
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

/// A byte buffer in a libtorch CPU tensor (pinned on CUDA); see the module's contract.
pub struct StagingBytes {
    /// In a mutex only so that the buffer can be shared between threads (`Tensor` is `Send`,
    /// not `Sync`): a window's rows travel from the decoding threads to the model's thread.
    tensor: Mutex<Tensor>,
    len: usize,
}

impl StagingBytes {
    /// `len` zero bytes for copies to `device`: pinned when it is a CUDA device.
    pub fn new(len: usize, device: Device) -> StagingBytes {
        let zeros = Tensor::zeros([len as i64], (Kind::Uint8, Device::Cpu));
        let tensor = match device {
            Device::Cuda(_) => zeros.pin_memory(device),
            _ => zeros,
        };
        debug_assert!(tensor.is_contiguous() && tensor.numel() == len);
        StagingBytes { tensor: Mutex::new(tensor), len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        let data = self.lock().data_ptr() as *const u8;
        // SAFETY: the module's contract: `data` points to `len` initialised bytes that live as
        // long as `self`; no `&mut` to them exists while `self` is borrowed shared.
        unsafe { std::slice::from_raw_parts(data, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let data = self.tensor.get_mut().unwrap_or_else(|e| e.into_inner()).data_ptr() as *mut u8;
        // SAFETY: as in `as_slice`; `&mut self` makes this the only Rust reference to the bytes,
        // and libtorch's views only read them (the caller waits for pending device copies).
        unsafe { std::slice::from_raw_parts_mut(data, self.len) }
    }

    /// The bytes in `range` as a `Uint8` tensor on `device`. On CUDA the copy is queued, not
    /// waited for: the bytes must stay as they are until the device has read them (the
    /// module's contract). On the CPU it is a view of the buffer, which the caller must only
    /// read, and only while it does not write the buffer.
    pub fn to_device(&self, range: Range<usize>, device: Device) -> Tensor {
        assert!(range.start <= range.end && range.end <= self.len, "range {range:?} outside {} bytes", self.len);
        let view = self.lock().narrow(0, range.start as i64, range.len() as i64);
        match device {
            Device::Cpu => view,
            _ => view.to_device_(device, Kind::Uint8, true, false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tensor> {
        self.tensor.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_through_the_slice_are_what_the_tensor_holds() {
        let mut bytes = StagingBytes::new(10, Device::Cpu);
        assert_eq!(bytes.as_slice(), &[0u8; 10]);
        for (i, b) in bytes.as_mut_slice().iter_mut().enumerate() {
            *b = i as u8 * 3;
        }
        let view = bytes.to_device(2..6, Device::Cpu);
        assert_eq!(Vec::<u8>::try_from(&view).unwrap(), vec![6, 9, 12, 15]);
        assert_eq!(bytes.as_slice()[9], 27);
    }

    #[test]
    #[should_panic(expected = "outside 4 bytes")]
    fn a_range_past_the_end_is_refused() {
        let _ = StagingBytes::new(4, Device::Cpu).to_device(2..5, Device::Cpu);
    }
}
