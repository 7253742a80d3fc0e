//! The model alone: how many rows per second a vision model embeds from random tensors already
//! in memory (no decoding, no I/O), with the plugin's own loader and forward. This is the ceiling
//! an end-to-end run is measured against (`cargo xtask bench vision --model-only`, the GPU check).
//!
//!   model_only --model_version resnet18 --model_weights FILE [--batch_size 32] [--device cpu|cuda:N]
//!              [--precision fp32|fp16] [--seconds 20]
//!
//! On CUDA, libtorch_cuda.so must be loaded before main (the GPU check sets LD_PRELOAD), as the
//! host does before a CUDA run. Prints one line of JSON on stdout.

use std::time::Instant;

mod common;

use anyhow::{bail, Context, Result};
use common::parse_device;
use deepembed_vision::model::EmbeddingModel;
use deepembed_vision::options::VisionOptions;
use tch::{Device, Kind, Tensor};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut version, mut weights, mut batch, mut device, mut seconds, mut fp16) =
        (None, None, 32i64, Device::Cpu, 20.0f64, false);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model_version" => version = Some(value),
            "--model_weights" => weights = Some(value),
            "--batch_size" => batch = value.parse()?,
            "--seconds" => seconds = value.parse()?,
            "--device" => device = parse_device(&value)?,
            // As the pipeline runs it: fp16 is libtorch's CUDA autocast.
            "--precision" => {
                fp16 = match value.as_str() {
                    "fp32" => false,
                    "fp16" => true,
                    _ => bail!("--precision must be fp32 or fp16"),
                }
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let version = version.context("--model_version is required")?;
    let options: VisionOptions = serde_json::from_value(serde_json::json!({
        "use_case": "pretrained", "model_version": version, "model_weights": weights, "mode": "cls",
        "image_column": "images", "label_column": "labels", "max_image_pixels": 0,
    }))?;
    let model = EmbeddingModel::load(&options, device)?;
    let size = model.transform.size as i64;
    let images = Tensor::randn([batch, 3, size, size], (Kind::Float, device));
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    // Warm-up: kernel selection and the allocator's first blocks.
    let forward = || tch::autocast(fp16, || model.forward(&images)).to_kind(Kind::Float);
    for _ in 0..3 {
        let _ = forward();
    }
    sync();
    let start = Instant::now();
    let mut rows = 0i64;
    while start.elapsed().as_secs_f64() < seconds {
        // Read back as the pipeline does, so a GPU's queue cannot run ahead of the clock.
        let out = forward().to_device(Device::Cpu);
        rows += out.size()[0];
    }
    sync();
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"model": version, "batch_size": batch, "fp16": fp16, "rows": rows, "seconds": elapsed,
                           "rows_per_second": rows as f64 / elapsed, "threads": tch::get_num_threads()})
    );
    Ok(())
}
