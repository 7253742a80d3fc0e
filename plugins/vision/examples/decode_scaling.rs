//! How the CPU side of a vision run scales with threads, without a model: the question the GPU
//! check left open (16 cores decoded about a third of 16 times one core's rate). For each thread
//! count it measures
//!
//! - **free**: every image decoded and resized by a rayon pool of that size, each thread into its
//!   own buffer, no other work: the machine's ceiling;
//! - **windows one at a time**: windows of `--window` images decoded by the plugin's
//!   `WindowDecoder` into window buffers used again from window to window, one window after
//!   the other (the next starts when the slowest image of this one is done), as a CPU run
//!   decodes, so its ratio to free is what that barrier costs;
//! - **next window started ahead**: the same, with the next window handed to the pool before
//!   this one is waited for, as a GPU run decodes.
//!
//! Both are called from this thread, outside the pool, as a run's preparing thread calls them.
//!
//! and once, on one thread, the Parquet read of the image column in batches of `--window` rows
//! (the preparing thread reads the input between windows).
//!
//!   decode_scaling --parquet images.parquet [--column images] [--threads 1,2,4,8,16]
//!                  [--window 256] [--seconds 5] [--images N]
//!
//! Each measurement is a warm-up pass over the images, then passes for `--seconds`: `--images`
//! (the first N) keeps one pass short on a large file (a pass over 20,480 images takes 40 s on
//! one thread).
//!
//! Prints a Markdown table on stdout. free/threads falling with the thread count means the
//! machine (shared cores, hyperthreads, memory bandwidth); windows far below free means the
//! pipeline's shape.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, BinaryArray};
use arrow::datatypes::DataType;
use deepembed_vision::image::jpeg_frame::read_frame;
use deepembed_vision::image::{decode::decode, resize, resize_into, Limits, Transform};
use deepembed_vision::window_buffers::WindowBuffers;
use deepembed_vision::window_decode::WindowDecoder;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;
use tch::Device;

fn main() -> Result<()> {
    // As the host runs: large freed blocks kept for reuse.
    deepembed_sdk::abi::large_blocks::keep_large_blocks();
    let mut args = std::env::args().skip(1);
    let (mut parquet, mut column, mut threads, mut window, mut seconds, mut limit) =
        (None, "images".to_string(), None, 256usize, 5.0f64, usize::MAX);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--parquet" => parquet = Some(value),
            "--column" => column = value,
            "--threads" => threads = Some(value.split(',').map(str::parse).collect::<Result<Vec<usize>, _>>()?),
            "--window" => window = value.parse()?,
            "--seconds" => seconds = value.parse()?,
            "--images" => limit = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    let parquet = parquet.context("--parquet is required")?;
    let cores = std::thread::available_parallelism()?.get();
    let threads = threads.unwrap_or_else(|| {
        let mut counts: Vec<usize> =
            std::iter::successors(Some(1), |n| Some(n * 2)).take_while(|&n| n < cores).collect();
        counts.push(cores);
        counts
    });

    let (mut images, read) = read_images(&parquet, &column, window)?;
    let (rows, bytes) = (images.len(), images.iter().map(Vec::len).sum::<usize>());
    images.truncate(limit);
    if images.is_empty() {
        bail!("{parquet} has no images in column '{column}'");
    }
    println!(
        "{} images (of {rows}); the Parquet read on one thread: {:.0} images/s ({:.0} MB/s); {cores} cores available",
        images.len(),
        rows as f64 / read.as_secs_f64(),
        bytes as f64 / 1e6 / read.as_secs_f64()
    );
    // What decoding alone costs, so the table's rates split into decoding and resizing.
    let decoding = rate(seconds, || {
        for bytes in &images {
            std::hint::black_box(decode(bytes, &Limits::default())?);
        }
        Ok(images.len())
    })?;
    println!(
        "Decoding alone on one thread: {decoding:.0} images/s ({:.2} ms an image); the resize runs {}",
        1e3 / decoding,
        resize::instruction_set()
    );
    // What the preparing side does per image with --decode gpu: read the JPEG's header.
    let mut on_device = 0;
    let headers = rate(seconds.min(1.0), || {
        on_device = images.iter().filter(|b| read_frame(b).is_some_and(|f| f.is_baseline_ycbcr())).count();
        Ok(images.len())
    })?;
    println!(
        "JPEG headers alone on one thread (what --decode gpu's preparation does): {headers:.0} images/s; \
         {on_device} of {} images would go to nvJPEG",
        images.len()
    );
    println!();
    let windows: Vec<ArrayRef> =
        images.chunks(window).map(|chunk| Arc::new(BinaryArray::from_iter_values(chunk.iter())) as ArrayRef).collect();
    println!(
        "| threads | free images/s | per thread | windows one at a time | one at a time / free | next window started ahead | ahead / free |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &threads {
        let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(n).build()?);
        let free = pool.install(|| rate(seconds, || free_pass(&images)))?;
        let mut decoder = WindowDecoder::new(Limits::default(), Transform::IMAGENET, WindowBuffers::new(Device::Cpu))
            .in_pool(pool.clone());
        let windowed = rate(seconds, || windows_pass(&windows, &mut decoder, false))?;
        let ahead = rate(seconds, || windows_pass(&windows, &mut decoder, true))?;
        println!(
            "| {n} | {free:.0} | {:.0} | {windowed:.0} | {:.2} | {ahead:.0} | {:.2} |",
            free / n as f64,
            windowed / free,
            ahead / free
        );
    }
    Ok(())
}

/// The image column's bytes, and how long reading them took.
fn read_images(path: &str, column: &str, batch: usize) -> Result<(Vec<Vec<u8>>, Duration)> {
    let start = Instant::now();
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(File::open(path).with_context(|| format!("opening {path}"))?)?;
    let index = builder.schema().index_of(column).with_context(|| format!("{path} has no column '{column}'"))?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let mut images = Vec::new();
    for batch in builder.with_projection(mask).with_batch_size(batch).build()? {
        let array = batch?.column(0).clone();
        match array.data_type() {
            DataType::Binary => images.extend(array.as_binary::<i32>().iter().flatten().map(<[u8]>::to_vec)),
            DataType::LargeBinary => images.extend(array.as_binary::<i64>().iter().flatten().map(<[u8]>::to_vec)),
            other => bail!("column '{column}' has type {other}, expected binary"),
        }
    }
    Ok((images, start.elapsed()))
}

/// Images per second of `pass` (which returns how many images it did), repeated for `seconds`.
fn rate(seconds: f64, mut pass: impl FnMut() -> Result<usize>) -> Result<f64> {
    pass()?; // warm-up: threads started, allocator arenas made
    let start = Instant::now();
    let mut done = 0;
    while start.elapsed().as_secs_f64() < seconds {
        done += pass()?;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

fn free_pass(images: &[Vec<u8>]) -> Result<usize> {
    let transform = Transform::IMAGENET;
    images.par_iter().try_for_each_init(
        || vec![0u8; transform.pixels()],
        |out, bytes| resize_into(bytes, out, &Limits::default(), &transform),
    )?;
    Ok(images.len())
}

/// Every window decoded as the vision plugin does (plugins/vision/src/window_decode.rs), with
/// the next one started on the pool before this one is waited for when `ahead`.
fn windows_pass(windows: &[ArrayRef], decoder: &mut WindowDecoder, ahead: bool) -> Result<usize> {
    let mut done = 0;
    for (k, images) in windows.iter().enumerate() {
        if let (true, Some(next)) = (ahead, windows.get(k + 1)) {
            decoder.start(k as u64 + 1, next.clone());
        }
        let decoded = decoder.finish(k as u64, images)?;
        if let Some(Err(e)) = decoded.outcomes.iter().find(|o| o.is_err()) {
            bail!("an image failed: {e:#}");
        }
        std::hint::black_box(decoded.pixels.bytes());
        done += images.len();
    }
    Ok(done)
}
