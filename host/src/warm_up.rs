//! Starting the CUDA device on a thread of its own while the run opens its inputs and loads
//! the model.
//!
//! The first CUDA tensor of a process creates the device's context, and the first matrix
//! product creates cuBLAS's handle and workspace: together a few tenths of a second on a data
//! centre GPU, spent before any weight can reach the device. Started here, right after the
//! device is resolved, that work overlaps reading the Parquet footers and the checkpoint, which
//! need no device. Whoever touches the device first waits for the context if it is not ready
//! (the CUDA runtime creates it once, under its own lock), so nothing can be used before it is.
//! libtorch hands the cuBLAS handle back to its pool when this thread ends, and the model's
//! thread takes it from there instead of creating another.
//!
//! `DEEPEMBED_CUDA_WARM_UP=0` turns it off, to measure what it saves (the GPU check does).

use std::time::Instant;

use deepembed_sdk::{Device, DeviceKind};
use tch::{Kind, Tensor};

const SWITCH: &str = "DEEPEMBED_CUDA_WARM_UP";

/// Starts the warm-up for a CUDA `device`; does nothing for the CPU or when switched off.
/// Failures are only logged: the run meets the same failure itself and reports it there.
pub fn start(device: Device) {
    if device.kind != DeviceKind::Cuda || std::env::var_os(SWITCH).is_some_and(|v| v == "0") {
        return;
    }
    let spawned = std::thread::Builder::new().name("cuda-warm-up".into()).spawn(move || {
        let started = Instant::now();
        match warm_up(tch::Device::Cuda(device.index as usize)) {
            Ok(()) => log::debug!("{device} ready: context and cuBLAS in {:.2} s", started.elapsed().as_secs_f64()),
            Err(e) => log::debug!("warming up {device} failed (the run will say why if it matters): {e}"),
        }
    });
    if let Err(e) = spawned {
        log::debug!("no thread to warm up {device} on: {e}");
    }
}

/// One small matrix product on the device, waited for: the context, libtorch's allocator for
/// the device, and a cuBLAS handle with its workspace exist afterwards.
fn warm_up(device: tch::Device) -> Result<(), tch::TchError> {
    let a = Tensor::f_ones([64, 64], (Kind::Float, device))?;
    a.f_matmul(&a)?.f_sum(Kind::Float)?.f_double_value(&[])?;
    Ok(())
}
