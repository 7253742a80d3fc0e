//! The model alone: how many rows per second a vision model embeds from random tensors already
//! in memory (no decoding, no I/O), with the plugin's own loader and forward. This is the ceiling
//! an end-to-end run is measured against (`cargo xtask bench vision --model-only`, the GPU check).
//!
//!   model_only --model_version resnet18 --model_weights FILE [--batch_size 32] [--device cpu|cuda:N]
//!              [--precision fp32|fp16|bf16] [--seconds 20]
//!
//! On CUDA, libtorch_cuda.so must be loaded before main (the GPU check sets LD_PRELOAD), as the
//! host does before a CUDA run. Prints one line of JSON on stdout.

use std::time::Instant;

mod common;

use anyhow::{bail, Context, Result};
use common::parse_device;
use deepembed_sdk::abi::autocast::autocast;
use deepembed_sdk::abi::{DeviceKind, Precision};
use deepembed_vision::model::EmbeddingModel;
use deepembed_vision::normalize::input_layout;
use deepembed_vision::options::VisionOptions;
use tch::{Device, Kind, Tensor};

fn main() -> Result<()> {
    // As the host runs: large freed blocks kept for reuse.
    deepembed_sdk::abi::large_blocks::keep_large_blocks();
    let mut args = std::env::args().skip(1);
    let (mut version, mut weights, mut batch, mut device, mut seconds, mut precision) =
        (None, None, 32i64, Device::Cpu, 20.0f64, Precision::Fp32);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model_version" => version = Some(value),
            "--model_weights" => weights = Some(value),
            "--batch_size" => batch = value.parse()?,
            "--seconds" => seconds = value.parse()?,
            "--device" => device = parse_device(&value)?,
            "--precision" => precision = Precision::parse(&value).context("--precision must be fp32, fp16 or bf16")?,
            other => bail!("unknown flag {other}"),
        }
    }
    let version = version.context("--model_version is required")?;
    let options: VisionOptions = serde_json::from_value(serde_json::json!({
        "use_case": "pretrained", "model_version": version, "model_weights": weights, "mode": "cls",
        "image_column": "images", "label_column": "labels", "max_image_pixels": 0, "decode": "cpu",
    }))?;
    let model = EmbeddingModel::load(&options, device)?;
    let size = model.transform.size as i64;
    // In the layout the run gives the model at this precision.
    let images = input_layout(Tensor::randn([batch, 3, size, size], (Kind::Float, device)), precision);
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    // As the pipeline runs it: under libtorch's autocast to the precision's type (fp32: none).
    let kind = if device.is_cuda() { DeviceKind::Cuda } else { DeviceKind::Cpu };
    let forward = || autocast(kind, precision, || model.forward(&images)).to_kind(Kind::Float);
    // Warm-up: kernel selection and the allocator's first blocks.
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
        serde_json::json!({"model": version, "batch_size": batch, "precision": precision.name(), "rows": rows, "seconds": elapsed,
                           "rows_per_second": rows as f64 / elapsed, "threads": tch::get_num_threads()})
    );
    Ok(())
}
