//! `--decode gpu`: baseline JPEGs decoded by nvJPEG on the CUDA device and resized there with
//! Pillow's arithmetic (`device_resize.rs`), so the CPU threads only read JPEG headers.
//!
//! Which images go to the device is decided per row from its header (`jpeg_frame.rs`): baseline
//! YCbCr JPEGs with standard chroma sampling, what nvJPEG's batched decoder takes. Every other
//! image (progressive or greyscale JPEG, PNG, CMYK...) is decoded and resized on the CPU threads
//! as in the default path, and bad images are bad rows there, as always.
//!
//! Not bit-identical: nvJPEG's inverse DCT and chroma upsampling are not libjpeg's, so a decoded
//! sample may differ by a level or so (the resize after it is exact). The drift against the
//! default path is measured by `cargo xtask gpu-check` (docs/BENCHMARKS.md). If nvJPEG fails on
//! a batch, that batch is decoded on the CPU instead, with a warning.

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use arrow::array::{ArrayRef, RecordBatch};
use deepembed_sdk::abi::nvjpeg::NvJpeg;
use deepembed_sdk::pipeline::{Embed, Prepare};
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::device_resize::DeviceResize;
use crate::image::decode::{decode, Limits};
use crate::image::jpeg_frame::read_frame;
use crate::image::{self, Transform};
use crate::model::EmbeddingModel;
use crate::normalize::Normalizer;
use crate::window_decode::image_bytes;

/// Device memory for one nvJPEG call's output: a chunk's images, each padded to the largest
/// height and width among them, as bytes. One call per chunk where it fits (nvJPEG prepares for
/// a batch size, so calls of one size are cheapest).
const DECODE_BYTES: i64 = 4 << 30;
/// Device memory for one resize's float64 samples (8 bytes a sample, padded likewise).
const RESIZE_BYTES: i64 = 1 << 30;

/// One image of a window.
pub enum GpuRow {
    /// A baseline JPEG, decoded on the device: row `index` of its window's image column.
    Jpeg { column: Arc<ArrayRef>, index: usize, width: usize, height: usize, row: u64 },
    /// Decoded and resized on the CPU: `transform.pixels()` bytes, HWC.
    Resized(Vec<u8>),
}

/// The preparation: each row's JPEG header read, or the image decoded and resized on the CPU.
pub struct JpegRows {
    pub column: String,
    pub limits: Limits,
    pub transform: Transform,
    /// Rows sent to the device and rows decoded on the CPU, for the closing log line.
    pub on_device: u64,
    pub on_cpu: u64,
}

impl Prepare for JpegRows {
    type Row = GpuRow;

    fn prepare(&mut self, batch: &RecordBatch, first_row: u64) -> Result<Vec<Result<GpuRow, String>>> {
        let images =
            batch.column_by_name(&self.column).ok_or_else(|| anyhow!("input lacks column '{}'", self.column))?;
        let shared = Arc::new(images.clone());
        let rows: Vec<Result<GpuRow, String>> = image_bytes(images)?
            .par_iter()
            .enumerate()
            .map(|(i, bytes)| {
                self.row(*bytes, &shared, i, first_row + i as u64)
                    .map_err(|e| format!("column '{}': {e:#}", self.column))
            })
            .collect();
        for row in rows.iter().flatten() {
            match row {
                GpuRow::Jpeg { .. } => self.on_device += 1,
                GpuRow::Resized(_) => self.on_cpu += 1,
            }
        }
        Ok(rows)
    }
}

impl JpegRows {
    fn row(&self, bytes: Option<&[u8]>, column: &Arc<ArrayRef>, index: usize, row: u64) -> Result<GpuRow> {
        let bytes = bytes.ok_or_else(|| anyhow!("the image is null"))?;
        match read_frame(bytes) {
            Some(frame) if frame.is_baseline_ycbcr() => {
                if self.limits.check(frame.width as u64, frame.height as u64)? {
                    log::warn!("row {row}: a {}x{} image, over Pillow's warning threshold", frame.width, frame.height);
                }
                Ok(GpuRow::Jpeg { column: column.clone(), index, width: frame.width, height: frame.height, row })
            }
            _ => {
                let mut pixels = vec![0u8; self.transform.pixels()];
                image::resize_into(bytes, &mut pixels, &self.limits, &self.transform)?;
                Ok(GpuRow::Resized(pixels))
            }
        }
    }
}

/// Decodes a group of JPEGs into a (n, height, width, 3) byte tensor, image `i` at the top left
/// of slot `i`.
pub trait JpegDecoder {
    fn decode_into(&mut self, jpegs: &[&[u8]], out: &Tensor) -> Result<()>;
}

impl JpegDecoder for NvJpeg {
    fn decode_into(&mut self, jpegs: &[&[u8]], out: &Tensor) -> Result<()> {
        NvJpeg::decode_into(self, jpegs, out).map_err(|e| anyhow!(e))
    }
}

/// libjpeg-turbo on this thread: the fallback when nvJPEG fails on a batch, and, in the tests,
/// the decoder that must make this path give the default path's bytes.
pub struct CpuJpegDecoder {
    pub limits: Limits,
}

impl JpegDecoder for CpuJpegDecoder {
    fn decode_into(&mut self, jpegs: &[&[u8]], out: &Tensor) -> Result<()> {
        for (i, jpeg) in jpegs.iter().enumerate() {
            let image = decode(jpeg, &self.limits)?;
            let pixels = Tensor::from_slice(&image.pixels).view([image.height as i64, image.width as i64, 3]);
            out.get(i as i64).narrow(0, 0, image.height as i64).narrow(1, 0, image.width as i64).copy_(&pixels);
        }
        Ok(())
    }
}

/// The model side: a chunk's images made ready on the device ([`DevicePreprocess`]), normalised
/// and embedded.
pub struct DeviceImages<'m> {
    pub model: &'m EmbeddingModel,
    pub normalizer: Normalizer,
    pub preprocess: DevicePreprocess,
}

impl Embed<GpuRow> for DeviceImages<'_> {
    fn embed(&mut self, rows: &[&GpuRow]) -> Result<Tensor> {
        let images = self.preprocess.resized(rows)?;
        Ok(self.model.forward(&self.normalizer.apply(&images)))
    }
}

/// A chunk's JPEGs decoded and resized on the device, its CPU-resized images sent there.
pub struct DevicePreprocess {
    pub size: usize,
    pub resize: DeviceResize,
    pub decoder: Box<dyn JpegDecoder>,
    pub fallback: CpuJpegDecoder,
    pub device: Device,
    /// Batches nvJPEG failed on (decoded on the CPU instead); the first one is reported at once.
    pub failed_batches: u64,
    /// [`DECODE_BYTES`] and [`RESIZE_BYTES`] (smaller in the tests, to make several groups).
    pub budgets: (i64, i64),
}

impl DevicePreprocess {
    pub fn new(
        transform: &Transform,
        decoder: Box<dyn JpegDecoder>,
        limits: Limits,
        device: Device,
    ) -> DevicePreprocess {
        DevicePreprocess {
            size: transform.size,
            resize: DeviceResize::new(transform.filter, transform.size, device),
            decoder,
            fallback: CpuJpegDecoder { limits },
            device,
            failed_batches: 0,
            budgets: (DECODE_BYTES, RESIZE_BYTES),
        }
    }

    /// The chunk's images as (B, size, size, 3) bytes on the device.
    pub fn resized(&mut self, rows: &[&GpuRow]) -> Result<Tensor> {
        let size = self.size as i64;
        let mut images = Tensor::zeros([rows.len() as i64, size, size, 3], (Kind::Uint8, self.device));
        let (mut cpu, mut cpu_positions) = (Vec::new(), Vec::new());
        let mut jpegs = Vec::new();
        let mut column = None;
        for (position, row) in rows.iter().enumerate() {
            match row {
                GpuRow::Resized(pixels) => {
                    cpu.extend_from_slice(pixels);
                    cpu_positions.push(position as i64);
                }
                GpuRow::Jpeg { column: c, index, width, height, row } => {
                    // A chunk's rows come from one window: one image column.
                    column.get_or_insert_with(|| c.clone());
                    jpegs.push(ChunkJpeg { position, index: *index, size: (*width, *height), row: *row });
                }
            }
        }
        if !cpu_positions.is_empty() {
            let resized =
                Tensor::from_slice(&cpu).view([cpu_positions.len() as i64, size, size, 3]).to_device(self.device);
            let _ = images.index_copy_(0, &Tensor::from_slice(&cpu_positions).to_device(self.device), &resized);
        }
        let Some(column) = column else { return Ok(images) };
        let encoded = image_bytes(&column)?;
        // Similar sizes together, so that padding wastes little.
        jpegs.sort_by_key(|j| (j.size.1, j.size.0));
        let sizes: Vec<(usize, usize)> = jpegs.iter().map(|j| j.size).collect();
        for decoding in groups(&sizes, 1, self.budgets.0) {
            let (members, member_sizes) = (&jpegs[decoding.clone()], &sizes[decoding]);
            let decoded = self.decode(members, &encoded)?;
            for resizing in groups(member_sizes, 8, self.budgets.1) {
                let group_sizes = &member_sizes[resizing.clone()];
                let (width, height) = padded(group_sizes);
                let group = decoded.narrow(0, resizing.start as i64, resizing.len() as i64);
                let resized = self.resize.resize(&group.narrow(1, 0, height).narrow(2, 0, width), group_sizes);
                let positions: Vec<i64> = members[resizing].iter().map(|j| j.position as i64).collect();
                let _ = images.index_copy_(0, &Tensor::from_slice(&positions).to_device(self.device), &resized);
            }
        }
        Ok(images)
    }

    /// A group's JPEGs decoded (by nvJPEG, or on the CPU if it fails) into one padded
    /// (n, height, width, 3) byte tensor on the device.
    fn decode(&mut self, members: &[ChunkJpeg], encoded: &[Option<&[u8]>]) -> Result<Tensor> {
        let (width, height) = padded(&members.iter().map(|j| j.size).collect::<Vec<_>>());
        let decoded = Tensor::zeros([members.len() as i64, height, width, 3], (Kind::Uint8, self.device));
        let bytes = members
            .iter()
            .map(|j| encoded.get(j.index).copied().flatten().ok_or_else(|| anyhow!("row {}: the image is gone", j.row)))
            .collect::<Result<Vec<&[u8]>>>()?;
        if let Err(e) = self.decoder.decode_into(&bytes, &decoded) {
            if self.failed_batches == 0 {
                log::warn!("--decode gpu: {e:#}; decoding that batch on the CPU (the run's end counts any others)");
            }
            self.failed_batches += 1;
            for (slot, (j, jpeg)) in members.iter().zip(&bytes).enumerate() {
                self.fallback
                    .decode_into(&[jpeg], &decoded.narrow(0, slot as i64, 1))
                    .map_err(|e| anyhow!("row {}: {e:#}", j.row))?;
            }
        }
        Ok(decoded)
    }
}

/// The largest width and height among `sizes` (width, height).
fn padded(sizes: &[(usize, usize)]) -> (i64, i64) {
    let width = sizes.iter().map(|s| s.0).max().unwrap_or(1);
    let height = sizes.iter().map(|s| s.1).max().unwrap_or(1);
    (width as i64, height as i64)
}

/// A JPEG of a chunk: where it goes in the chunk, its row in the window's image column, its size
/// (width, height) and its input row.
struct ChunkJpeg {
    position: usize,
    index: usize,
    size: (usize, usize),
    row: u64,
}

/// Splits images of `sizes` (width, height), sorted by size, into consecutive groups whose
/// samples (`sample_bytes` each, 3 a pixel), padded to the group's largest height and width,
/// stay within `budget` bytes (a single image over it is a group of its own).
fn groups(sizes: &[(usize, usize)], sample_bytes: i64, budget: i64) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut height, mut width) = (0, 0i64, 0i64);
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let (h2, w2) = (height.max(h as i64), width.max(w as i64));
        let bytes = (i - start + 1) as i64 * h2 * w2 * 3 * sample_bytes;
        if i > start && bytes > budget {
            groups.push(start..i);
            (start, height, width) = (i, h as i64, w as i64);
        } else {
            (height, width) = (h2, w2);
        }
    }
    if start < sizes.len() {
        groups.push(start..sizes.len());
    }
    groups
}

/// Checks that `--decode gpu` can run on `device` and loads nvJPEG, before anything is written.
pub fn load_decoder(device: Device) -> Result<NvJpeg> {
    match device {
        Device::Cuda(0) => {}
        Device::Cuda(n) => bail!(
            "--decode gpu runs on cuda:0 only (nvJPEG decodes on the thread's current device); to use GPU {n}, \
             run with CUDA_VISIBLE_DEVICES={n} and --device cuda:0"
        ),
        _ => bail!(
            "--decode gpu needs a CUDA device, and this run is on the CPU; leave --decode at cpu, or use --device cuda"
        ),
    }
    let nvjpeg = NvJpeg::load().map_err(|e| anyhow!("--decode gpu: {e}"))?;
    log::info!("decoding baseline JPEGs with {}", nvjpeg.describe());
    Ok(nvjpeg)
}

#[cfg(test)]
mod tests {
    use arrow::array::BinaryArray;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn jpeg(width: usize, height: usize, subsamp: turbojpeg::Subsamp, seed: u32) -> Vec<u8> {
        let mut state = seed | 1;
        let pixels: Vec<u8> = (0..width * height * 3)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                // A gradient with noise, so chroma and the resize's taps matter.
                ((i % (width * 3)) as u32 * 200 / (width as u32 * 3) + (state >> 28)) as u8
            })
            .collect();
        let image = turbojpeg::Image {
            pixels: &pixels[..],
            width,
            pitch: width * 3,
            height,
            format: turbojpeg::PixelFormat::RGB,
        };
        turbojpeg::compress(image, 90, subsamp).unwrap().to_vec()
    }

    /// Baseline JPEGs of mixed sizes and samplings (to the device), a greyscale JPEG (on the
    /// CPU), a null and bytes that are no image (bad rows, as on the default path).
    fn batch() -> RecordBatch {
        let images = [
            Some(jpeg(500, 375, turbojpeg::Subsamp::Sub2x2, 1)),
            None,
            Some(jpeg(224, 224, turbojpeg::Subsamp::None, 2)),
            Some(jpeg(61, 300, turbojpeg::Subsamp::Sub2x1, 3)),
            Some(jpeg(120, 90, turbojpeg::Subsamp::Gray, 4)),
            Some(b"not an image".to_vec()),
            Some(jpeg(500, 375, turbojpeg::Subsamp::Sub1x2, 5)),
        ];
        let column = BinaryArray::from(images.iter().map(|i| i.as_deref()).collect::<Vec<_>>());
        let schema = Schema::new(vec![Field::new("images", DataType::Binary, true)]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(column)]).unwrap()
    }

    /// With libjpeg-turbo standing in for nvJPEG, this path (rows sorted by size into padded
    /// groups, resized by matrix products, put back in chunk order, CPU-decoded rows beside them)
    /// gives every row the default path's bytes, and the same reasons for bad rows.
    #[test]
    fn with_the_cpus_decoder_this_path_gives_the_default_paths_bytes() {
        let batch = batch();
        let (limits, transform) = (Limits::default(), Transform::IMAGENET);
        let mut prepare = JpegRows { column: "images".into(), limits, transform, on_device: 0, on_cpu: 0 };
        let rows = prepare.prepare(&batch, 10).unwrap();
        assert_eq!((prepare.on_device, prepare.on_cpu), (4, 1));
        let kinds: Vec<&str> = rows
            .iter()
            .map(|r| match r {
                Ok(GpuRow::Jpeg { .. }) => "device",
                Ok(GpuRow::Resized(_)) => "cpu",
                Err(_) => "bad",
            })
            .collect();
        assert_eq!(kinds, ["device", "bad", "device", "device", "cpu", "bad", "device"]);
        let bytes = image_bytes(batch.column(0)).unwrap();
        for (i, row) in rows.iter().enumerate() {
            let default =
                image::resize_into(bytes[i].unwrap_or_default(), &mut vec![0; transform.pixels()], &limits, &transform);
            if let (Err(ours), Err(theirs)) = (row, default) {
                // The default path words a null row the same way (window_decode.rs).
                let theirs = if bytes[i].is_none() { "the image is null".to_string() } else { format!("{theirs:#}") };
                assert_eq!(ours, &format!("column 'images': {theirs}"), "row {i}");
            }
        }
        let good: Vec<&GpuRow> = rows.iter().flatten().collect();
        let cpu_decoder = Box::new(CpuJpegDecoder { limits });
        let mut preprocess = DevicePreprocess::new(&transform, cpu_decoder, limits, Device::Cpu);
        let ours = preprocess.resized(&good).unwrap();
        // Budgets that split the chunk into several decoding and resizing groups: the same bytes.
        preprocess.budgets = (600 * 400 * 3 * 2, 300 * 300 * 3 * 8 * 2);
        assert!(ours.equal(&preprocess.resized(&good).unwrap()));
        let ours = Vec::<u8>::try_from(ours.contiguous().view([-1])).unwrap();
        let expected: Vec<u8> = bytes
            .iter()
            .filter_map(|b| {
                let mut out = vec![0u8; transform.pixels()];
                image::resize_into((*b)?, &mut out, &limits, &transform).ok().map(|()| out)
            })
            .flatten()
            .collect();
        assert_eq!(ours.len(), expected.len());
        assert!(
            ours == expected,
            "{} of {} bytes differ",
            ours.iter().zip(&expected).filter(|(a, b)| a != b).count(),
            expected.len()
        );
    }

    /// A decoder that fails (as nvJPEG on a batch it cannot take) leaves the batch to the CPU:
    /// the same bytes.
    #[test]
    fn a_failing_decoder_falls_back_to_the_cpu() {
        struct Failing;
        impl JpegDecoder for Failing {
            fn decode_into(&mut self, _: &[&[u8]], _: &Tensor) -> Result<()> {
                bail!("no")
            }
        }
        let batch = batch();
        let (limits, transform) = (Limits::default(), Transform::IMAGENET);
        let rows = JpegRows { column: "images".into(), limits, transform, on_device: 0, on_cpu: 0 }
            .prepare(&batch, 0)
            .unwrap();
        let good: Vec<&GpuRow> = rows.iter().flatten().collect();
        let failing = DevicePreprocess::new(&transform, Box::new(Failing), limits, Device::Cpu).resized(&good).unwrap();
        let cpu = DevicePreprocess::new(&transform, Box::new(CpuJpegDecoder { limits }), limits, Device::Cpu)
            .resized(&good)
            .unwrap();
        assert!(failing.equal(&cpu));
    }

    #[test]
    fn groups_stay_within_their_bytes_and_keep_order() {
        // 4 images of 8192 x 8192 (1.5 GiB of float64 each) are one group each; small ones share.
        let sizes = [(10, 10), (20, 10), (8192, 8192), (8192, 8192), (30, 30)];
        assert_eq!(groups(&sizes, 8, RESIZE_BYTES), [0..2, 2..3, 3..4, 4..5]);
        assert_eq!(groups(&[(500, 375); 300], 8, RESIZE_BYTES).len(), 300 * 500 * 375 * 24 / (1 << 30) + 1);
        assert_eq!(groups(&[(500, 375); 300], 1, DECODE_BYTES), vec![std::ops::Range { start: 0, end: 300 }]);
        assert!(groups(&[], 8, RESIZE_BYTES).is_empty());
    }

    #[test]
    fn decode_gpu_on_the_cpu_or_another_gpu_is_refused_saying_what_to_do() {
        let err = load_decoder(Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("--decode gpu needs a CUDA device") && err.contains("--decode"), "{err}");
        let err = load_decoder(Device::Cuda(2)).err().unwrap().to_string();
        assert!(err.contains("CUDA_VISIBLE_DEVICES=2"), "{err}");
    }
}
