//! `--decode gpu`: baseline JPEGs decoded by nvJPEG on the CUDA device and resized there with
//! Pillow's arithmetic (`device_resize.rs`), so the CPU threads only read JPEG headers.
//!
//! Which images go to the device is decided per row from its header (`jpeg_frame.rs`): baseline
//! YCbCr JPEGs with standard chroma sampling and baseline greyscale JPEGs, what nvJPEG's batched
//! decoder takes. Greyscale ones are decoded in batches of their own, so that a backend refusing
//! them costs only their batches. Every other image (progressive JPEG, PNG, CMYK...) is decoded
//! and resized on the CPU threads as in the default path, and bad images are bad rows there, as
//! always.
//!
//! The preparing thread decodes a window's JPEGs with nvJPEG, on nvJPEG's own stream, into a
//! pooled device buffer (`device_buffers.rs`), while the model's thread runs the windows before
//! it: the GPU's JPEG decoder (or its cores, for nvJPEG's other backends) works beside the
//! model instead of between its batches. The model's thread resizes a chunk's decoded images
//! and embeds them. If nvJPEG fails on a batch, those images are decoded on the CPU instead,
//! with a warning, and a bad one is a bad row.
//!
//! Not bit-identical: nvJPEG's inverse DCT and chroma upsampling are not libjpeg's, so a decoded
//! sample may differ by a level or so (the resize after it is exact). The drift against the
//! default path is measured by `cargo xtask gpu-check` (docs/BENCHMARKS.md).

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use arrow::array::RecordBatch;
use deepembed_sdk::abi::nvjpeg::NvJpeg;
use deepembed_sdk::pipeline::{Embed, Prepare};
use deepembed_sdk::StagingBytes;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::device_buffers::{DecodedBatch, DeviceBuffers};
use crate::device_resize::DeviceResize;
use crate::image::decode::{check_size, Limits};
use crate::image::jpeg_frame::read_frame;
use crate::image::{self, Transform};
use crate::model::EmbeddingModel;
use crate::normalize::Normalizer;
use crate::window_decode::image_bytes;

/// Device memory for one nvJPEG call's output: a window's JPEGs, each padded to the largest
/// height and width among them, as bytes. One call per window where it fits (nvJPEG prepares
/// for a batch size, so calls of one size are cheapest).
const DECODE_BYTES: i64 = 4 << 30;
/// Device memory for one resize's float64 samples (8 bytes a sample, padded likewise).
const RESIZE_BYTES: i64 = 1 << 30;

/// One image of a window, ready for the model's thread.
pub enum GpuRow {
    /// Decoded on the device: slot `slot` of `batch`, `size` (width, height) at its top left.
    Decoded { batch: Arc<DecodedBatch>, slot: usize, size: (usize, usize) },
    /// Decoded and resized on the CPU: `transform.pixels()` bytes, HWC.
    Resized(Vec<u8>),
}

/// Decodes a batch of JPEGs into a (n, height, width, 3) byte tensor, image `i` at the top left
/// of slot `i`, and returns once they are decoded.
pub trait JpegDecoder: Send {
    fn decode_into(&mut self, jpegs: &[&[u8]], out: &Tensor) -> Result<()>;

    /// Whether it takes `jpeg` in a batch (one it refuses would fail the batch whole).
    fn takes(&mut self, _jpeg: &[u8]) -> bool {
        true
    }
}

impl JpegDecoder for NvJpeg {
    fn decode_into(&mut self, jpegs: &[&[u8]], out: &Tensor) -> Result<()> {
        NvJpeg::decode_into(self, jpegs, out).map_err(|e| anyhow!(e))
    }

    fn takes(&mut self, jpeg: &[u8]) -> bool {
        NvJpeg::takes(self, jpeg)
    }
}

/// The preparation: each row's JPEG header read; baseline JPEGs decoded on the device, in
/// groups; the other images decoded and resized on the CPU.
pub struct JpegRows {
    pub column: String,
    pub cpu: CpuSide,
    pub decoder: Box<dyn JpegDecoder>,
    pub buffers: DeviceBuffers,
    /// Device memory per nvJPEG call ([`DECODE_BYTES`]; smaller in the tests).
    pub decode_bytes: i64,
    /// Rows decoded on the device and on the CPU, of those the JPEGs the decoder refused, and
    /// batches it failed on, for the log.
    pub on_device: u64,
    pub on_cpu: u64,
    pub refused: u64,
    pub failed_batches: u64,
}

/// What a row becomes before the device decodes it.
enum Planned<'a> {
    Jpeg(DeviceJpeg<'a>),
    Ready(GpuRow),
}

/// A baseline JPEG for the device.
struct DeviceJpeg<'a> {
    bytes: &'a [u8],
    /// Width, height.
    size: (usize, usize),
    colours: Colours,
}

/// The colours of a JPEG for the device; each kind is decoded in batches of its own.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Colours {
    YCbCr,
    Grey,
}

impl JpegRows {
    pub fn new(
        column: String,
        limits: Limits,
        transform: Transform,
        decoder: Box<dyn JpegDecoder>,
        device: Device,
    ) -> JpegRows {
        JpegRows {
            column,
            cpu: CpuSide { limits, transform },
            decoder,
            buffers: DeviceBuffers::new(device),
            decode_bytes: DECODE_BYTES,
            on_device: 0,
            on_cpu: 0,
            refused: 0,
            failed_batches: 0,
        }
    }

    /// Decodes `jpegs` (bytes and size) in one batch on the device, or, if the decoder fails,
    /// decodes and resizes them on the CPU.
    fn decode_group(&mut self, jpegs: &[(&[u8], (usize, usize))]) -> Vec<Result<GpuRow>> {
        let (width, height) = padded(&jpegs.iter().map(|j| j.1).collect::<Vec<_>>());
        // Rows (and so slots) start at multiples of 256 bytes, the alignment of CUDA's own
        // allocations, in case a decoder backend relies on it; the resize reads only each
        // image's own pixels.
        let width = (width as usize).div_ceil(256) * 256;
        let batch = self.buffers.take(jpegs.len(), height as usize, width);
        let bytes: Vec<&[u8]> = jpegs.iter().map(|j| j.0).collect();
        match self.decoder.decode_into(&bytes, &batch.tensor()) {
            Ok(()) => {
                let batch = Arc::new(batch);
                jpegs
                    .iter()
                    .enumerate()
                    .map(|(slot, j)| Ok(GpuRow::Decoded { batch: batch.clone(), slot, size: j.1 }))
                    .collect()
            }
            Err(e) => {
                if self.failed_batches == 0 {
                    log::warn!("--decode gpu: {e:#}; decoding that batch on the CPU (the run's end counts any others)");
                }
                self.failed_batches += 1;
                let cpu = &self.cpu;
                bytes.par_iter().map(|b| Ok(GpuRow::Resized(cpu.resized(b)?))).collect()
            }
        }
    }
}

/// What the CPU does with `--decode gpu`: read headers, and decode and resize what the device
/// does not take.
#[derive(Clone, Copy)]
pub struct CpuSide {
    pub limits: Limits,
    pub transform: Transform,
}

impl CpuSide {
    /// A row's plan: a baseline JPEG within the limits goes to the device; any other image is
    /// decoded and resized on the CPU now.
    fn plan<'a>(&self, bytes: Option<&'a [u8]>) -> Result<Planned<'a>> {
        let bytes = bytes.ok_or_else(|| anyhow!("the image is null"))?;
        let frame = read_frame(bytes);
        let colours = match &frame {
            Some(f) if f.is_baseline_ycbcr() => Colours::YCbCr,
            Some(f) if f.is_baseline_grey() => Colours::Grey,
            _ => return Ok(Planned::Ready(GpuRow::Resized(self.resized(bytes)?))),
        };
        let frame = frame.expect("matched above");
        // As the CPU's decoder checks it, before anything the image's size is allocated.
        check_size(frame.width, frame.height, &self.limits)?;
        Ok(Planned::Jpeg(DeviceJpeg { bytes, size: (frame.width, frame.height), colours }))
    }

    fn resized(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut pixels = vec![0u8; self.transform.pixels()];
        image::resize_into(bytes, &mut pixels, &self.limits, &self.transform)?;
        Ok(pixels)
    }
}

impl Prepare for JpegRows {
    type Row = GpuRow;

    fn prepare(&mut self, batch: &RecordBatch, _first_row: u64) -> Result<Vec<Result<GpuRow, String>>> {
        let images =
            batch.column_by_name(&self.column).ok_or_else(|| anyhow!("input lacks column '{}'", self.column))?;
        let encoded = image_bytes(images)?;
        let cpu = &self.cpu;
        let mut planned: Vec<Result<Planned>> = encoded.par_iter().map(|bytes| cpu.plan(*bytes)).collect();
        // The decoder has the last word: nvJPEG's hardware decoder refuses some JPEGs that the
        // header check lets through, and those are decoded on the CPU instead.
        let decoder = &mut self.decoder;
        let refused: Vec<(usize, &[u8])> = planned
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Ok(Planned::Jpeg(j)) if !decoder.takes(j.bytes) => Some((i, j.bytes)),
                _ => None,
            })
            .collect();
        let redone: Vec<Result<Planned>> =
            refused.par_iter().map(|(_, bytes)| Ok(Planned::Ready(GpuRow::Resized(cpu.resized(bytes)?)))).collect();
        self.refused += refused.len() as u64;
        for ((i, _), plan) in refused.into_iter().zip(redone) {
            planned[i] = plan;
        }
        // The device's rows, by colours and then size (similar sizes together pad little), in
        // groups of one kind that fit.
        let mut jpegs: Vec<(usize, &DeviceJpeg)> = planned
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Ok(Planned::Jpeg(jpeg)) => Some((i, jpeg)),
                _ => None,
            })
            .collect();
        jpegs.sort_by_key(|(_, j)| (j.colours, j.size.1, j.size.0));
        let mut decoded: Vec<Option<Result<GpuRow>>> = (0..planned.len()).map(|_| None).collect();
        for kind in jpegs.chunk_by(|a, b| a.1.colours == b.1.colours) {
            let sizes: Vec<(usize, usize)> = kind.iter().map(|(_, j)| j.size).collect();
            for group in groups(&sizes, 1, self.decode_bytes) {
                let members = &kind[group];
                let rows = self.decode_group(&members.iter().map(|(_, j)| (j.bytes, j.size)).collect::<Vec<_>>());
                for ((row, _), decoded_row) in members.iter().zip(rows) {
                    decoded[*row] = Some(decoded_row);
                }
            }
        }
        let column = &self.column;
        let rows: Vec<Result<GpuRow, String>> = planned
            .into_iter()
            .zip(decoded)
            .map(|(plan, decoded)| {
                let row = match plan {
                    Ok(Planned::Jpeg(..)) => decoded.expect("every JPEG planned for the device is decoded"),
                    Ok(Planned::Ready(row)) => Ok(row),
                    Err(e) => Err(e),
                };
                row.map_err(|e| format!("column '{column}': {e:#}"))
            })
            .collect();
        for row in rows.iter().flatten() {
            match row {
                GpuRow::Decoded { .. } => self.on_device += 1,
                GpuRow::Resized(_) => self.on_cpu += 1,
            }
        }
        Ok(rows)
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

/// A chunk's decoded images resized on the device, its CPU-resized images sent there.
pub struct DevicePreprocess {
    pub size: usize,
    pub resize: DeviceResize,
    pub device: Device,
    /// Device memory per resize ([`RESIZE_BYTES`]; smaller in the tests).
    pub resize_bytes: i64,
    /// What a chunk sends to the device (its CPU-resized images, the positions and slots that
    /// place its decoded ones), in one asynchronous copy from pinned memory: a copy from
    /// ordinary memory would wait for the device's queued work first. Reused from chunk to
    /// chunk, as `Embed` allows.
    staging: Option<StagingBytes>,
}

impl DevicePreprocess {
    pub fn new(transform: &Transform, device: Device) -> DevicePreprocess {
        DevicePreprocess {
            size: transform.size,
            resize: DeviceResize::new(transform.filter, transform.size, device),
            device,
            resize_bytes: RESIZE_BYTES,
            staging: None,
        }
    }

    /// The chunk's images as (B, size, size, 3) bytes on the device.
    pub fn resized(&mut self, rows: &[&GpuRow]) -> Result<Tensor> {
        let size = self.size as i64;
        // Every row is copied in below, a CPU-resized one or a decoded one: nothing to clear.
        let mut images = Tensor::empty([rows.len() as i64, size, size, 3], (Kind::Uint8, self.device));
        let (mut cpu, mut cpu_positions) = (Vec::new(), Vec::new());
        // Decoded rows by the batch they were decoded in.
        let mut batches: Vec<(&Arc<DecodedBatch>, Vec<ChunkImage>)> = Vec::new();
        for (position, row) in rows.iter().enumerate() {
            match row {
                GpuRow::Resized(pixels) => {
                    cpu.extend_from_slice(pixels);
                    cpu_positions.push(position as i64);
                }
                GpuRow::Decoded { batch, slot, size } => {
                    let entry = match batches.iter().position(|(b, _)| Arc::ptr_eq(b, batch)) {
                        Some(i) => &mut batches[i].1,
                        None => {
                            batches.push((batch, Vec::new()));
                            &mut batches.last_mut().expect("just pushed").1
                        }
                    };
                    entry.push(ChunkImage { position, slot: *slot, size: *size });
                }
            }
        }
        // The host's side of the chunk: the CPU-resized pixels, then, 8-byte aligned, the
        // indices: the CPU rows' positions, per resize group its slots, positions and resize
        // plan, and the resize weights of image sides not seen before (their tiles' starts, then as float64
        // their weights).
        let cpu_rows = cpu_positions.len();
        let mut indices: Vec<i64> = cpu_positions;
        let sides = batches.iter().flat_map(|(_, members)| members.iter().flat_map(|m| [m.size.0, m.size.1]));
        let new_bands = self.resize.missing(sides);
        let mut resizes = Vec::new();
        for (batch, members) in &mut batches {
            // Similar sizes together, so that padding wastes little.
            members.sort_by_key(|m| (m.size.1, m.size.0));
            let sizes: Vec<(usize, usize)> = members.iter().map(|m| m.size).collect();
            for group in groups(&sizes, 8, self.resize_bytes) {
                let start = indices.len();
                indices.extend(members[group.clone()].iter().map(|m| m.slot as i64));
                indices.extend(members[group.clone()].iter().map(|m| m.position as i64));
                let plan = self.resize.plan(&sizes[group.clone()]);
                indices.extend_from_slice(&plan.indices);
                resizes.push((Arc::clone(*batch), sizes[group].to_vec(), plan, start));
            }
        }
        let band_starts = indices.len();
        indices.extend(new_bands.iter().flat_map(|b| b.starts.iter().copied()));
        let weights: Vec<f64> = new_bands.iter().flat_map(|b| b.weights.iter().copied()).collect();
        let pixels_len = cpu.len().div_ceil(8) * 8;
        let sent = self.send(&cpu, &indices, &weights, pixels_len);
        let indices_end = pixels_len + 8 * indices.len();
        let indices = sent.narrow(0, pixels_len as i64, (8 * indices.len()) as i64).view_dtype(Kind::Int64);
        let weights = sent.narrow(0, indices_end as i64, (8 * weights.len()) as i64).view_dtype(Kind::Double);
        // Copied out of the chunk's upload, which they would otherwise keep alive.
        let (mut start, mut offset) = (band_starts as i64, 0);
        for band in &new_bands {
            let (tiles, len) = (band.starts.len() as i64, band.weights.len() as i64);
            self.resize.install(band, indices.narrow(0, start, tiles).copy(), weights.narrow(0, offset, len).copy());
            (start, offset) = (start + tiles, offset + len);
        }
        if cpu_rows > 0 {
            let resized = sent.narrow(0, 0, cpu.len() as i64).view([cpu_rows as i64, size, size, 3]);
            let _ = images.index_copy_(0, &indices.narrow(0, 0, cpu_rows as i64), &resized);
        }
        for (batch, sizes, plan, start) in resizes {
            let (n, start) = (sizes.len() as i64, start as i64);
            let (width, height) = padded(&sizes);
            let picked = batch.tensor().index_select(0, &indices.narrow(0, start, n));
            let planned = indices.narrow(0, start + 2 * n, plan.indices.len() as i64);
            let resized =
                self.resize.resize_planned(&picked.narrow(1, 0, height).narrow(2, 0, width), &sizes, &plan, &planned);
            let _ = images.index_copy_(0, &indices.narrow(0, start + n, n), &resized);
        }
        Ok(images)
    }

    /// `pixels`, zero-padded to `pixels_len` bytes, then `indices`, then `floats`, copied to the
    /// device in one asynchronous copy through the pinned staging buffer (its previous copy is
    /// done: the pipeline read the previous chunk back before this call).
    fn send(&mut self, pixels: &[u8], indices: &[i64], floats: &[f64], pixels_len: usize) -> Tensor {
        let indices_end = pixels_len + 8 * indices.len();
        let len = indices_end + 8 * floats.len();
        if self.staging.as_ref().is_none_or(|s| s.len() < len) {
            self.staging = Some(StagingBytes::new(len.next_power_of_two(), self.device));
        }
        let staging = self.staging.as_mut().expect("made above");
        let bytes = staging.as_mut_slice();
        bytes[..pixels.len()].copy_from_slice(pixels);
        bytes[pixels.len()..pixels_len].fill(0);
        for (chunk, index) in bytes[pixels_len..indices_end].chunks_exact_mut(8).zip(indices) {
            chunk.copy_from_slice(&index.to_ne_bytes());
        }
        for (chunk, float) in bytes[indices_end..len].chunks_exact_mut(8).zip(floats) {
            chunk.copy_from_slice(&float.to_ne_bytes());
        }
        staging.to_device(0..len, self.device)
    }
}

/// A decoded image of a chunk: its position in the chunk, its slot in its decoded batch, its
/// size (width, height).
struct ChunkImage {
    position: usize,
    slot: usize,
    size: (usize, usize),
}

/// The largest width and height among `sizes` (width, height).
fn padded(sizes: &[(usize, usize)]) -> (i64, i64) {
    let width = sizes.iter().map(|s| s.0).max().unwrap_or(1);
    let height = sizes.iter().map(|s| s.1).max().unwrap_or(1);
    (width as i64, height as i64)
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
        // nvJPEG may come with a CUDA runtime of its own (torchvision's copy does), whose current
        // device the preparing thread cannot be sure to have set: not risked until measured.
        Device::Cuda(n) => bail!(
            "--decode gpu runs on cuda:0 only for now; to use GPU {n}, run with CUDA_VISIBLE_DEVICES={n} and \
             --device cuda:0"
        ),
        _ => bail!(
            "--decode gpu needs a CUDA device, and this run is on the CPU; leave --decode at cpu, or use --device cuda"
        ),
    }
    let nvjpeg = NvJpeg::load(0).map_err(|e| anyhow!("--decode gpu: {e}"))?;
    log::info!("decoding baseline JPEGs with {}", nvjpeg.describe());
    Ok(nvjpeg)
}

#[cfg(test)]
mod tests {
    use arrow::array::BinaryArray;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::image::decode::decode;

    /// libjpeg-turbo standing in for nvJPEG: the decoder with which this path must give the
    /// default path's bytes.
    struct CpuJpegDecoder {
        limits: Limits,
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

    fn jpeg(width: usize, height: usize, subsamp: turbojpeg::Subsamp, seed: u32) -> Vec<u8> {
        encode(width, height, seed, |c| c.set_subsamp(subsamp))
    }

    /// A progressive JPEG, which nvJPEG's batched decoding does not take.
    fn progressive_jpeg(width: usize, height: usize) -> Vec<u8> {
        encode(width, height, 7, |c| c.set_progressive(true))
    }

    /// A gradient with noise (so chroma and the resize's taps matter) as a quality-90 JPEG,
    /// with `settings` applied to the compressor.
    fn encode(
        width: usize,
        height: usize,
        seed: u32,
        settings: impl FnOnce(&mut turbojpeg::Compressor) -> turbojpeg::Result<()>,
    ) -> Vec<u8> {
        let mut state = seed | 1;
        let pixels: Vec<u8> = (0..width * height * 3)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
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
        let mut compressor = turbojpeg::Compressor::new().unwrap();
        compressor.set_quality(90).unwrap();
        settings(&mut compressor).unwrap();
        compressor.compress_to_vec(image).unwrap()
    }

    /// Baseline JPEGs of mixed sizes and samplings, colour and greyscale (to the device), a
    /// progressive JPEG (on the CPU), a null and bytes that are no image (bad rows, as on the
    /// default path).
    fn batch() -> RecordBatch {
        let images = [
            Some(jpeg(500, 375, turbojpeg::Subsamp::Sub2x2, 1)),
            None,
            Some(jpeg(224, 224, turbojpeg::Subsamp::None, 2)),
            Some(jpeg(61, 300, turbojpeg::Subsamp::Sub2x1, 3)),
            Some(jpeg(120, 90, turbojpeg::Subsamp::Gray, 4)),
            Some(b"not an image".to_vec()),
            Some(jpeg(500, 375, turbojpeg::Subsamp::Sub1x2, 5)),
            Some(progressive_jpeg(130, 70)),
            Some(jpeg(333, 250, turbojpeg::Subsamp::Gray, 6)),
        ];
        let column = BinaryArray::from(images.iter().map(|i| i.as_deref()).collect::<Vec<_>>());
        let schema = Schema::new(vec![Field::new("images", DataType::Binary, true)]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(column)]).unwrap()
    }

    fn kinds(rows: &[Result<GpuRow, String>]) -> Vec<&'static str> {
        rows.iter()
            .map(|r| match r {
                Ok(GpuRow::Decoded { .. }) => "device",
                Ok(GpuRow::Resized(_)) => "cpu",
                Err(_) => "bad",
            })
            .collect()
    }

    fn bytes_of(images: Tensor) -> Vec<u8> {
        Vec::<u8>::try_from(images.contiguous().view([-1])).unwrap()
    }

    /// The default path's resized bytes of every good row, in order.
    fn default_path(batch: &RecordBatch) -> Vec<u8> {
        let (limits, transform) = (Limits::default(), Transform::IMAGENET);
        image_bytes(batch.column(0))
            .unwrap()
            .iter()
            .filter_map(|b| {
                let mut out = vec![0u8; transform.pixels()];
                image::resize_into((*b)?, &mut out, &limits, &transform).ok().map(|()| out)
            })
            .flatten()
            .collect()
    }

    /// With libjpeg-turbo standing in for nvJPEG, this path (JPEGs decoded in padded groups on
    /// the preparing side, resized by matrix products in groups on the model's side and put
    /// back in chunk order, CPU-decoded rows beside them) gives every row the default path's
    /// bytes, and the same reasons for bad rows.
    #[test]
    fn with_the_cpus_decoder_this_path_gives_the_default_paths_bytes() {
        let batch = batch();
        let (limits, transform) = (Limits::default(), Transform::IMAGENET);
        let decoder = Box::new(CpuJpegDecoder { limits });
        let mut prepare = JpegRows::new("images".into(), limits, transform, decoder, Device::Cpu);
        let rows = prepare.prepare(&batch, 10).unwrap();
        assert_eq!((prepare.on_device, prepare.on_cpu), (6, 1));
        assert_eq!(kinds(&rows), ["device", "bad", "device", "device", "device", "bad", "device", "cpu", "device"]);
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
        let mut preprocess = DevicePreprocess::new(&transform, Device::Cpu);
        let ours = bytes_of(preprocess.resized(&good).unwrap());
        // Every side's weights went to the device with the chunk's upload, none on their own.
        let sides = good.iter().filter_map(|r| match r {
            GpuRow::Decoded { size, .. } => Some([size.0, size.1]),
            GpuRow::Resized(_) => None,
        });
        assert!(preprocess.resize.missing(sides.flatten()).is_empty());
        assert_eq!(preprocess.resize.direct_uploads, 0);
        let expected = default_path(&batch);
        assert_eq!(ours.len(), expected.len());
        assert!(
            ours == expected,
            "{} of {} bytes differ",
            ours.iter().zip(&expected).filter(|(a, b)| a != b).count(),
            expected.len()
        );

        // Budgets that split the window into several decoding groups, and the chunk into several
        // resizing groups: the same bytes.
        prepare.decode_bytes = 600 * 400 * 3 * 2;
        preprocess.resize_bytes = 300 * 300 * 3 * 8 * 2;
        let rows = prepare.prepare(&batch, 10).unwrap();
        let mut batches: Vec<*const DecodedBatch> = rows
            .iter()
            .flatten()
            .filter_map(|r| match r {
                GpuRow::Decoded { batch, .. } => Some(Arc::as_ptr(batch)),
                GpuRow::Resized(_) => None,
            })
            .collect();
        batches.dedup();
        assert!(batches.len() > 1, "one decoding group");
        let good: Vec<&GpuRow> = rows.iter().flatten().collect();
        assert!(bytes_of(preprocess.resized(&good).unwrap()) == expected);
    }

    /// JPEGs the decoder refuses (as nvJPEG's hardware decoder refuses some) are decoded on the
    /// CPU, with the default path's bytes, and the rest of their window still on the device.
    #[test]
    fn jpegs_the_decoder_refuses_go_to_the_cpu() {
        /// The stand-in, refusing 4:2:2 JPEGs.
        struct Refusing(CpuJpegDecoder);
        impl JpegDecoder for Refusing {
            fn decode_into(&mut self, jpegs: &[&[u8]], out: &Tensor) -> Result<()> {
                assert!(jpegs.iter().all(|j| self.takes(j)), "a refused JPEG reached the decoder");
                self.0.decode_into(jpegs, out)
            }
            fn takes(&mut self, jpeg: &[u8]) -> bool {
                read_frame(jpeg).is_none_or(|f| f.components.first().map(|c| (c.1, c.2)) != Some((2, 1)))
            }
        }
        let batch = batch();
        let (limits, transform) = (Limits::default(), Transform::IMAGENET);
        let decoder = Box::new(Refusing(CpuJpegDecoder { limits }));
        let mut prepare = JpegRows::new("images".into(), limits, transform, decoder, Device::Cpu);
        let rows = prepare.prepare(&batch, 0).unwrap();
        assert_eq!(kinds(&rows), ["device", "bad", "device", "cpu", "device", "bad", "device", "cpu", "device"]);
        assert_eq!((prepare.on_device, prepare.on_cpu, prepare.refused, prepare.failed_batches), (5, 2, 1, 0));
        let good: Vec<&GpuRow> = rows.iter().flatten().collect();
        assert!(
            bytes_of(DevicePreprocess::new(&transform, Device::Cpu).resized(&good).unwrap()) == default_path(&batch)
        );
    }

    /// A decoder that fails (as nvJPEG on a batch it cannot take) leaves the batch to the CPU:
    /// the same bytes, and the failure counted.
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
        let mut prepare = JpegRows::new("images".into(), limits, transform, Box::new(Failing), Device::Cpu);
        let rows = prepare.prepare(&batch, 0).unwrap();
        assert_eq!(kinds(&rows), ["cpu", "bad", "cpu", "cpu", "cpu", "bad", "cpu", "cpu", "cpu"]);
        // One batch of colour JPEGs, one of greyscale ones.
        assert_eq!(prepare.failed_batches, 2);
        let good: Vec<&GpuRow> = rows.iter().flatten().collect();
        assert!(
            bytes_of(DevicePreprocess::new(&transform, Device::Cpu).resized(&good).unwrap()) == default_path(&batch)
        );
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
        assert!(err.contains("--decode gpu needs a CUDA device") && err.contains("leave --decode at cpu"), "{err}");
        let err = load_decoder(Device::Cuda(2)).err().unwrap().to_string();
        assert!(err.contains("CUDA_VISIBLE_DEVICES=2"), "{err}");
    }
}
