//! The pixel buffers of prepared windows, used again once the model is done with them.
//!
//! A window's resized images share one buffer (at batch 256, 38 MB). Allocated per window, each
//! buffer was a fresh mapping from the system: its pages faulted in by the decoding threads and
//! unmapped again after the model's turn, window after window. Here a buffer goes back to a
//! small pool when the window's last image is dropped, and the next window takes it.

use std::sync::{Arc, Mutex};

/// Windows in flight at once: prepared and waiting (three on a GPU), one in the model's hands,
/// one being prepared. Buffers beyond that are freed.
const KEPT: usize = 5;

#[derive(Clone, Default)]
pub struct WindowBuffers(Arc<Mutex<Vec<Vec<u8>>>>);

impl WindowBuffers {
    /// A buffer of `len` bytes: a returned one if any, else a new one. A returned buffer's bytes
    /// are left as they were (every image slot is written before it is read; a failed image's
    /// slot is never read), so taking one costs no pass over its bytes.
    pub fn take(&self, len: usize) -> WindowPixels {
        let mut bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        bytes.resize(len, 0);
        WindowPixels { bytes, home: self.clone() }
    }
}

/// One window's pixel buffer; it returns to its [`WindowBuffers`] when dropped.
pub struct WindowPixels {
    pub bytes: Vec<u8>,
    home: WindowBuffers,
}

impl Drop for WindowPixels {
    fn drop(&mut self) {
        let mut kept = self.home.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT {
            kept.push(std::mem::take(&mut self.bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_taken_again_without_a_new_allocation() {
        let buffers = WindowBuffers::default();
        let first = buffers.take(1000);
        let address = first.bytes.as_ptr();
        drop(first);
        let again = buffers.take(600);
        assert_eq!((again.bytes.as_ptr(), again.bytes.len()), (address, 600));
        drop(again);
        assert_eq!(buffers.take(1000).bytes.len(), 1000);
    }

    #[test]
    fn at_most_kept_buffers_stay() {
        let buffers = WindowBuffers::default();
        let many: Vec<WindowPixels> = (0..KEPT + 3).map(|_| buffers.take(10)).collect();
        drop(many);
        assert_eq!(buffers.0.lock().unwrap().len(), KEPT);
    }
}
