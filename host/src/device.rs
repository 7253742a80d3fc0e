//! `--device auto|cpu|cuda|cuda:N`, resolved to a device handle for the plugin.

use anyhow::{anyhow, bail, Result};
use deepembed_sdk::abi::abi_stable::library::RawLibrary;
use deepembed_sdk::Device;

/// Resolves the user's choice. `auto` is the first usable CUDA device, else the CPU; an explicit
/// CUDA request that cannot be met is an error saying why.
pub fn resolve(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "cpu" => Ok(Device::CPU),
        "auto" => match cuda_devices() {
            Ok(n) if n > 0 => Ok(Device::cuda(0)),
            Ok(_) => {
                log::info!("no CUDA device is usable; running on the CPU");
                Ok(Device::CPU)
            }
            Err(why) => {
                log::info!("running on the CPU: {why}");
                Ok(Device::CPU)
            }
        },
        _ => {
            let index = match spec.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<u32>().ok())
                    .ok_or_else(|| anyhow!("--device '{spec}' is not one of auto, cpu, cuda, cuda:N"))?,
                None => bail!("--device '{spec}' is not one of auto, cpu, cuda, cuda:N"),
            };
            let count = cuda_devices().map_err(|why| anyhow!("--device {spec}: {why}"))?;
            if count == 0 {
                bail!("--device {spec}: libtorch's CUDA support loaded, but it sees no CUDA device (check the driver and CUDA_VISIBLE_DEVICES)");
            }
            if index as usize >= count {
                let visible = if count == 1 {
                    "only cuda:0 is visible".to_string()
                } else {
                    format!("only cuda:0 to cuda:{} are visible", count - 1)
                };
                bail!("--device {spec}: {visible}");
            }
            Ok(Device::cuda(index))
        }
    }
}

/// libtorch's switch that puts cuDNN's fused attention last among its attention kernels.
const CUDNN_ATTENTION_LAST: &str = "TORCH_CUDNN_SDPA_DEPRIORITIZED";

/// Asks libtorch to try its flash and memory-efficient attention kernels before cuDNN's, unless
/// the user set the switch. Call it first thing in `main`, while the process has one thread:
/// changing the environment races with any other thread reading it.
///
/// Since 2.11, libtorch tries cuDNN's kernel first for fp16 and bf16 on Hopper and Blackwell
/// GPUs (`check_prefer_cudnn_attention` in its `sdp_utils.cpp`), and cuDNN builds an execution
/// plan for every new shape of the inputs, reported to take up to hundreds of milliseconds.
/// Texts sorted by length give almost every batch a new sequence length: on an H200, an
/// all-MiniLM-L6-v2-sized model ran at 2,577 texts/s in fp16 against 8,312 in fp32
/// (docs/BENCHMARKS.md; the GPU check's text table runs deepembed both ways). Models whose shapes
/// never change (ViT) get flash attention instead, the default of earlier releases. libtorch
/// reads the switch once, at the first attention on a GPU; `TORCH_CUDNN_SDPA_DEPRIORITIZED=0`
/// keeps cuDNN first.
pub fn put_cudnn_attention_last() {
    if std::env::var_os(CUDNN_ATTENTION_LAST).is_none() {
        std::env::set_var(CUDNN_ATTENTION_LAST, "1");
    }
}

/// Loads libtorch's CUDA library, then counts the devices libtorch can use.
fn cuda_devices() -> Result<usize, String> {
    load_cuda_library()?;
    if !tch::Cuda::is_available() {
        // libtorch's own reason ("Found no NVIDIA driver on your system...") says what to fix.
        let why = tch::Tensor::f_zeros([1], (tch::Kind::Float, tch::Device::Cuda(0)))
            .err()
            .and_then(|e| e.to_string().lines().next().map(str::to_string))
            .unwrap_or_else(|| "no driver, or CUDA_VISIBLE_DEVICES hides them".into());
        return Err(format!("libtorch sees no usable CUDA device: {why}"));
    }
    let count = tch::Cuda::device_count().max(0) as usize;
    log::debug!("libtorch's CUDA library loaded; {count} CUDA device(s)");
    Ok(count)
}

/// The linker's `--as-needed` drops `libtorch_cuda.so` from the binary and every plugin, since
/// no symbol of it is referenced directly, and without it libtorch reports no CUDA. Loading it
/// before any tensor exists runs its initialisers, which register the CUDA backend with the
/// libtorch already in the process, for the host and every plugin. It is loaded only when CUDA
/// is asked for (`auto`, `cuda`): on a CPU run it would cost 350 MiB and a third of a second.
/// It comes from the directory of the libtorch this process runs (LD_LIBRARY_PATH's or the
/// build's), never another copy.
fn load_cuda_library() -> Result<(), String> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let dir = deepembed_sdk::abi::loaded_libtorch_dir()
                .ok_or("libtorch_cpu.so is not among this process's libraries")?;
            let path = dir.join("libtorch_cuda.so");
            if !path.is_file() {
                return Err(format!("{} has no libtorch_cuda.so: this libtorch is a CPU-only build", dir.display()));
            }
            let library =
                RawLibrary::load_at(&path).map_err(|e| format!("libtorch's CUDA library could not be loaded ({e})"))?;
            // Kept for the life of the process: unloading would leave the registrations dangling.
            std::mem::forget(library);
            Ok(())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_spellings() {
        assert_eq!(super::resolve("cpu").unwrap(), deepembed_sdk::Device::CPU);
        assert_eq!(super::resolve(" CPU ").unwrap(), deepembed_sdk::Device::CPU);
        for bad in ["gpu", "cuda:", "cuda:x", "cuda0", "mps"] {
            let err = super::resolve(bad).unwrap_err().to_string();
            assert!(err.contains("auto, cpu, cuda, cuda:N") || err.contains("--device"), "{bad}: {err}");
        }
    }
}
