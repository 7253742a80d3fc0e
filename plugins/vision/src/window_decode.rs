//! Decoding a window's images into its pixel buffer on the rayon pool, with the next window
//! started before this one is waited for.
//!
//! Decoding one window at a time leaves threads idle at each window's end: once the last
//! images are taken, the other threads wait for them before the next window starts. On 16
//! cores that barrier cost 11% of the decoding rate (decode_scaling, H200 check). Here the
//! next window is handed to the pool ([`WindowDecoder::start`]) before the current one is
//! waited for ([`WindowDecoder::finish`]), so a thread with nothing left of this window takes
//! images of the next. The pool still does the current window first: a rayon thread looks for
//! work in the current window's split tasks before it takes the started job from the pool's
//! queue. A run starts windows ahead on a GPU only (the SDK's pipeline shows the next window there).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use deepembed_image::decode::Limits;
use rayon::prelude::*;
use rayon::ThreadPool;

use crate::image::{self, Transform};
use crate::window_buffers::{WindowBuffers, WindowPixels};

/// A window decoded: its buffer (one slot of `transform.pixels()` bytes per row) and each
/// row's outcome.
pub struct Decoded {
    pub pixels: WindowPixels,
    pub outcomes: Vec<Result<()>>,
}

/// Call its methods from a thread outside the pool it decodes on (a run's preparing thread):
/// `finish` blocks until a started window is done, which on a thread of the pool itself could
/// wait for work only that thread would do.
pub struct WindowDecoder {
    limits: Limits,
    transform: Transform,
    buffers: WindowBuffers,
    /// The pool that decodes: rayon's global pool unless [`in_pool`](Self::in_pool) set one.
    pool: Option<Arc<ThreadPool>>,
    /// Windows started and not yet finished, in the order started: each key and where its
    /// result arrives. A run has at most two here: the one it is about to finish, started
    /// during the window before, and the one after it, started just before that finish.
    started: VecDeque<(u64, Receiver<Result<Decoded>>)>,
}

impl WindowDecoder {
    pub fn new(limits: Limits, transform: Transform, buffers: WindowBuffers) -> WindowDecoder {
        WindowDecoder { limits, transform, buffers, pool: None, started: VecDeque::new() }
    }

    /// Decodes on `pool` instead of rayon's global pool (to measure by thread count).
    pub fn in_pool(self, pool: Arc<ThreadPool>) -> WindowDecoder {
        WindowDecoder { pool: Some(pool), ..self }
    }

    /// Starts decoding `images` (a column of encoded images) on the pool, in the background.
    /// `key` names the window (its first row; keys grow from window to window); the
    /// [`finish`](Self::finish) with that key takes the result.
    pub fn start(&mut self, key: u64, images: ArrayRef) {
        let (limits, transform, buffers) = (self.limits, self.transform, self.buffers.clone());
        let (tx, rx) = sync_channel(1);
        let job = move || {
            // A panic must not reach rayon's handler, which aborts the process: it becomes
            // this window's error, as a panic in `finish`'s own decoding would be.
            let decoded = catch_unwind(AssertUnwindSafe(|| decode(&images, &limits, &transform, &buffers)))
                .unwrap_or_else(|_| Err(anyhow!("decoding the window panicked")));
            let _ = tx.send(decoded);
        };
        match &self.pool {
            Some(pool) => pool.spawn(job),
            None => rayon::spawn(job),
        }
        self.started.push_back((key, rx));
    }

    /// The window `key`, whose images are `images`: the result of [`start`](Self::start) if it
    /// was started, else decoded now (waiting for it either way). Windows started with a
    /// smaller key and never finished are dropped (their results thrown away when they come).
    pub fn finish(&mut self, key: u64, images: &ArrayRef) -> Result<Decoded> {
        while self.started.front().is_some_and(|(started, _)| *started < key) {
            self.started.pop_front();
        }
        match self.started.front() {
            Some((started, _)) if *started == key => {
                let (_, rx) = self.started.pop_front().expect("checked above");
                rx.recv().map_err(|_| anyhow!("the thread decoding the window stopped"))?
            }
            _ => {
                let now = || decode(images, &self.limits, &self.transform, &self.buffers);
                match &self.pool {
                    Some(pool) => pool.install(now),
                    None => now(),
                }
            }
        }
    }
}

/// Decodes and resizes each row of `images` into its slot of a window buffer, in parallel.
fn decode(images: &ArrayRef, limits: &Limits, transform: &Transform, buffers: &WindowBuffers) -> Result<Decoded> {
    let encoded = image_bytes(images)?;
    let mut pixels = buffers.take(encoded.len() * transform.pixels());
    let outcomes = pixels
        .bytes_mut()
        .par_chunks_mut(transform.pixels())
        .zip(encoded.par_iter())
        .map(|(out, bytes)| match bytes {
            Some(bytes) => image::resize_into(bytes, out, limits, transform),
            None => Err(anyhow!("the image is null")),
        })
        .collect();
    Ok(Decoded { pixels, outcomes })
}

/// The encoded bytes of each row (None for a null).
pub(crate) fn image_bytes(column: &ArrayRef) -> Result<Vec<Option<&[u8]>>> {
    Ok(match column.data_type() {
        DataType::Binary => column.as_binary::<i32>().iter().collect(),
        DataType::LargeBinary => column.as_binary::<i64>().iter().collect(),
        DataType::BinaryView => column.as_binary_view().iter().collect(),
        DataType::Struct(_) => {
            let s = column.as_struct();
            let bytes = s.column_by_name("bytes").ok_or_else(|| anyhow!("image struct has no 'bytes' field"))?;
            let mut out = image_bytes(bytes)?;
            for (i, slot) in out.iter_mut().enumerate() {
                if s.is_null(i) {
                    *slot = None;
                }
            }
            out
        }
        other => bail!("image column has type {other}, expected binary"),
    })
}

#[cfg(test)]
mod tests {
    use arrow::array::BinaryArray;
    use tch::Device;

    use super::*;

    fn jpeg_column() -> ArrayRef {
        // A 2x2 image as the smallest JPEG turbojpeg writes.
        let image = turbojpeg::Image {
            pixels: &[255u8; 12][..],
            width: 2,
            pitch: 6,
            height: 2,
            format: turbojpeg::PixelFormat::RGB,
        };
        let jpeg = turbojpeg::compress(image, 90, turbojpeg::Subsamp::None).unwrap();
        Arc::new(BinaryArray::from(vec![Some(&jpeg[..]), None, Some(&b"not an image"[..])]))
    }

    fn decoder() -> WindowDecoder {
        WindowDecoder::new(Limits::default(), Transform::IMAGENET, WindowBuffers::new(Device::Cpu))
    }

    fn summary(decoded: &Decoded) -> Vec<bool> {
        decoded.outcomes.iter().map(Result::is_ok).collect()
    }

    #[test]
    fn a_started_window_gives_what_decoding_it_now_gives() {
        let images = jpeg_column();
        let now = decoder().finish(0, &images).unwrap();
        let mut ahead = decoder();
        ahead.start(7, images.clone());
        let started = ahead.finish(7, &images).unwrap();
        assert_eq!(summary(&now), vec![true, false, false]);
        assert_eq!(summary(&started), summary(&now));
        assert_eq!(started.pixels.bytes(), now.pixels.bytes());
    }

    #[test]
    fn windows_started_ahead_are_finished_in_turn_and_stale_ones_dropped() {
        let images = jpeg_column();
        let mut decoder = decoder();
        // As the pipeline calls it: the next window started before this one is finished.
        decoder.start(0, images.clone());
        decoder.start(3, images.clone());
        assert_eq!(summary(&decoder.finish(0, &images).unwrap()), vec![true, false, false]);
        assert_eq!(decoder.started.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![3]);
        decoder.start(6, images.clone());
        // A window never started is decoded now; the stale one before it goes, the later stays.
        assert_eq!(summary(&decoder.finish(5, &images).unwrap()), vec![true, false, false]);
        assert_eq!(decoder.started.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![6]);
        assert!(decoder.finish(6, &images).is_ok());
        assert!(decoder.started.is_empty());
    }

    #[test]
    fn a_column_of_another_type_fails_the_started_window() {
        let mut decoder = decoder();
        let numbers: ArrayRef = Arc::new(arrow::array::Int32Array::from(vec![1]));
        decoder.start(0, numbers.clone());
        let err = decoder.finish(0, &numbers).err().unwrap().to_string();
        assert!(err.contains("expected binary"), "{err}");
    }
}
