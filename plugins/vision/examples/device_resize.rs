//! What `--decode gpu`'s resize costs the device: a chunk of decoded images of mixed sizes
//! (about 500x375, as the benchmark's JPEGs) resized with `DeviceResize` again and again,
//! waited for, as milliseconds per chunk and images/s. The GPU check runs it beside the model's
//! own rate: the resize runs on the model's device, between its batches.
//!
//!   device_resize [--device cuda:0] [--images 256] [--rounds 10] [--size 224] [--tiles 32,224]
//!
//! `--tiles`: outputs per tile of each pass, each measured (the size itself is the plain
//! matrix product by the whole weight matrix; the plugin's default is the first).
//!
//! Each tile size's first round is also checked against the CPU's resize (`resize_into`, the
//! bit-identical default path) for the first 32 images: on a GPU, libtorch's kernels are other
//! code than the CPU's the tests ran. Prints one line of JSON per tile size on stdout, and exits
//! non-zero if any byte differs.

mod common;

use std::time::Instant;

use anyhow::{bail, Context, Result};
use common::parse_device;
use deepembed_vision::device_resize::DeviceResize;
use deepembed_vision::image::resize::{resize_into, Filter};
use deepembed_vision::image::RgbImage;
use tch::{Device, Kind, Tensor};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut device, mut images, mut rounds, mut size) = (Device::Cuda(0), 256usize, 10usize, 224usize);
    let mut tiles = "32,224".to_string();
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--device" => device = parse_device(&value)?,
            "--images" => images = value.parse()?,
            "--rounds" => rounds = value.parse()?,
            "--size" => size = value.parse()?,
            "--tiles" => tiles = value,
            other => bail!("unknown flag {other}"),
        }
    }
    // Sizes spread as bench/make_dataset.py draws them (400-639 x 300-479), from a fixed seed.
    let mut state = 0x2545_f491_u32;
    let mut next = |below: usize| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as usize % below
    };
    let sizes: Vec<(usize, usize)> = (0..images).map(|_| (400 + next(240), 300 + next(180))).collect();
    tch::manual_seed(0);
    let decoded = Tensor::randint(256, [images as i64, 480, 640, 3], (Kind::Uint8, device));
    let checked = images.min(32);
    let expected = cpu_resize(&decoded, &sizes[..checked], size);
    let mut failed = false;
    let wait = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    for tile in tiles.split(',') {
        let tile: usize = tile.parse().with_context(|| format!("--tiles: {tile} is not a number"))?;
        let mut resize = DeviceResize::with_tile(Filter::Bilinear, size, device, tile);
        // The first round makes and caches the weights, as a run's first chunks do.
        let first = resize.resize(&decoded, &sizes);
        wait();
        let ours =
            Vec::<u8>::try_from(first.narrow(0, 0, checked as i64).to_device(Device::Cpu).contiguous().view([-1]))?;
        let differing = ours.iter().zip(&expected).filter(|(a, b)| a != b).count();
        failed |= differing != 0;
        let started = Instant::now();
        for _ in 0..rounds {
            let _ = resize.resize(&decoded, &sizes);
        }
        wait();
        let seconds = started.elapsed().as_secs_f64() / rounds as f64;
        println!(
            "{{\"device\": \"{device:?}\", \"images\": {images}, \"size\": {size}, \"tile\": {tile}, \"ms_per_chunk\": {:.3}, \"images_per_s\": {:.0}, \"checked_images\": {checked}, \"differing_bytes\": {differing}}}",
            seconds * 1e3,
            images as f64 / seconds
        );
    }
    if failed {
        bail!("the device's resize differs from the CPU's");
    }
    Ok(())
}

/// The CPU path's bytes for the images of `sizes` = (width, height) at the top left of
/// `decoded`'s slots, one after another.
fn cpu_resize(decoded: &Tensor, sizes: &[(usize, usize)], size: usize) -> Vec<u8> {
    let mut expected = Vec::new();
    for (i, &(width, height)) in sizes.iter().enumerate() {
        let slot = decoded.get(i as i64).narrow(0, 0, height as i64).narrow(1, 0, width as i64);
        let pixels = Vec::<u8>::try_from(slot.to_device(Device::Cpu).contiguous().view([-1])).expect("bytes");
        let mut out = vec![0u8; size * size * 3];
        resize_into(&RgbImage { width, height, pixels }, size, size, Filter::Bilinear, &mut out);
        expected.extend(out);
    }
    expected
}
