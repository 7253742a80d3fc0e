//! A vision run: images are decoded and resized in parallel on CPU threads (the pipeline's
//! preparation; on a GPU the next window is started before this one is waited for:
//! `window_decode.rs`) while the model embeds the previous batch on the device. With
//! `--decode gpu`, baseline JPEGs are decoded and resized on the device instead
//! (`gpu_decode.rs`).

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use deepembed_sdk::output::{require_column, Carry, EmbeddingNames, OutputColumns};
use deepembed_sdk::pipeline::{self, Batching, Embed, Prepare};
use deepembed_sdk::{OutputPlan, RunContext};
use tch::{Device, Tensor};

use crate::gpu_decode::{self, DeviceImages, DevicePreprocess, JpegRows};
use crate::image;
use crate::model::EmbeddingModel;
use crate::normalize::Normalizer;
use crate::options::{Decode, VisionOptions};
use crate::window_buffers::{WindowBuffers, WindowPixels};
use crate::window_decode::{Decoded, WindowDecoder};

pub fn run(ctx: &mut RunContext<'_>, opts: &VisionOptions) -> Result<()> {
    let schema = ctx.input_schema("df")?.clone();
    check_columns(&schema, opts)?;
    let device = ctx.tch_device();
    // Before the model is loaded or anything is written: --decode gpu needs CUDA and nvJPEG.
    let nvjpeg = match opts.decode {
        Decode::Gpu => Some(gpu_decode::load_decoder(device)?),
        Decode::Cpu => None,
    };
    let model = EmbeddingModel::load(opts, device)?;
    let model_str = opts.model_str();
    let mut details = model.details.clone();
    if nvjpeg.is_some() {
        details.insert("decode".into(), "gpu".into());
    }
    let plan = OutputPlan {
        file_name: format!("{model_str}_{}_embeddings.parquet", opts.mode),
        model_str,
        dims: model.dims as usize,
        details,
    };
    // DeepTune's columns: "0".."N-1", then `label`, then every other input column.
    let columns = OutputColumns::new(
        &schema,
        plan.dims,
        EmbeddingNames::Index,
        Some((&opts.label_column, "label")),
        Carry::AllExcept(vec![opts.image_column.clone()]),
    )?;
    ctx.begin(&plan)?;
    log::debug!("resizing {} (the same bytes either way)", image::resize::instruction_set());
    let input = ctx.take_input("df")?;
    let normalizer = Normalizer::new(&model.transform, device, ctx.precision());
    let Some(nvjpeg) = nvjpeg else {
        let decoding = Decoding {
            column: opts.image_column.clone(),
            decoder: WindowDecoder::new(opts.image_limits(), model.transform, WindowBuffers::new(device)),
        };
        pipeline::run(
            ctx,
            input,
            &columns,
            decoding,
            &mut Images { model: &model, normalizer, device },
            Batching::InputOrder,
        )?;
        return Ok(());
    };
    let rows = JpegRows::new(opts.image_column.clone(), opts.image_limits(), model.transform, Box::new(nvjpeg), device);
    let mut images =
        DeviceImages { model: &model, normalizer, preprocess: DevicePreprocess::new(&model.transform, device) };
    let rows = pipeline::run(ctx, input, &columns, rows, &mut images, Batching::InputOrder)?;
    log::info!(
        "--decode gpu: {} images decoded on the device, {} on the CPU (those not baseline JPEGs, and {} that nvJPEG \
         refused)",
        rows.on_device,
        rows.on_cpu,
        rows.refused
    );
    if rows.failed_batches > 0 {
        log::warn!("--decode gpu: nvJPEG failed on {} batches, decoded on the CPU instead", rows.failed_batches);
    }
    Ok(())
}

/// Fails early, naming what is missing, instead of at the first batch.
fn check_columns(schema: &Schema, opts: &VisionOptions) -> Result<()> {
    let field = require_column(schema, &opts.image_column, "--image_column")?;
    if !image_type_supported(field.data_type()) {
        bail!("column '{}' has type {}, expected encoded image bytes (binary)", opts.image_column, field.data_type());
    }
    if let Some(g) = &opts.grouper {
        require_column(schema, g, "--grouper")?;
    }
    Ok(())
}

fn image_type_supported(t: &DataType) -> bool {
    match t {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => true,
        // Hugging Face datasets write images as struct<bytes: binary, path: string>.
        DataType::Struct(fields) => fields.iter().any(|f| f.name() == "bytes" && image_type_supported(f.data_type())),
        _ => false,
    }
}

/// One decoded and resized image (`transform.pixels()` bytes, HWC): its slot in its window's
/// pixel buffer. A window's images share one buffer, filled in parallel, so decoding threads
/// allocate nothing per image (per-image buffers, freed on another thread, grew the allocator's
/// arenas), and the buffer is used again by a later window ([`WindowBuffers`]). The conversion
/// to floats happens on the model's device ([`Normalizer`]).
struct Image {
    pixels: Arc<WindowPixels>,
    slot: usize,
}

/// The preparation: each row's image decoded and resized; on a GPU, the next window started on
/// the pool before this one is waited for ([`WindowDecoder`]).
struct Decoding {
    column: String,
    decoder: WindowDecoder,
}

impl Decoding {
    fn column<'b>(&self, batch: &'b RecordBatch) -> Result<&'b ArrayRef> {
        batch.column_by_name(&self.column).ok_or_else(|| anyhow!("input lacks column '{}'", self.column))
    }
}

impl Prepare for Decoding {
    type Row = Image;

    fn look_ahead(&mut self, next: &RecordBatch, first_row: u64) {
        // A missing column fails in `prepare`, with its message.
        if let Ok(images) = self.column(next) {
            self.decoder.start(first_row, images.clone());
        }
    }

    fn prepare(&mut self, batch: &RecordBatch, first_row: u64) -> Result<Vec<Result<Image, String>>> {
        let images = self.column(batch)?;
        let Decoded { pixels, outcomes } = self.decoder.finish(first_row, images)?;
        let pixels = Arc::new(pixels);
        Ok(outcomes
            .into_iter()
            .enumerate()
            .map(|(slot, outcome)| match outcome {
                Ok(()) => Ok(Image { pixels: pixels.clone(), slot }),
                Err(e) => Err(format!("column '{}': {e:#}", self.column)),
            })
            .collect())
    }
}

/// The model side: a chunk of resized images as one (B, size, size, 3) byte tensor on the
/// device, normalised there.
struct Images<'m> {
    model: &'m EmbeddingModel,
    normalizer: Normalizer,
    device: Device,
}

impl Embed<Image> for Images<'_> {
    fn embed(&mut self, rows: &[&Image]) -> Result<Tensor> {
        let size = self.model.transform.size as i64;
        let per_image = self.model.transform.pixels();
        // A chunk's rows are slots of one window's buffer. The slots from its lowest to its
        // highest go to the device as they are (on CUDA, an asynchronous copy from pinned
        // memory; on the CPU, a view), and usually that is the chunk. Rows left out of the
        // window (bad images) leave gaps, whose bytes travel too and are dropped there: a gather
        // on the host would be a synchronous copy on this thread, with the device waiting.
        let first = rows[0];
        if !rows.iter().all(|r| Arc::ptr_eq(&r.pixels, &first.pixels)) {
            bail!("a chunk's images come from more than one window");
        }
        let low = rows.iter().map(|r| r.slot).min().expect("a chunk has rows");
        let high = rows.iter().map(|r| r.slot).max().expect("a chunk has rows") + 1;
        let bytes = first.pixels.to_device(low * per_image..high * per_image);
        let mut images = bytes.view([(high - low) as i64, size, size, 3]);
        if rows.iter().enumerate().any(|(k, r)| r.slot != low + k) {
            let offsets: Vec<i64> = rows.iter().map(|r| (r.slot - low) as i64).collect();
            images = images.index_select(0, &Tensor::from_slice(&offsets).to_device(self.device));
        }
        Ok(self.model.forward(&self.normalizer.apply(&images)))
    }
}
