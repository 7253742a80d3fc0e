//! `--device auto|cpu|cuda|cuda:N`, resolved to a device handle for the plugin.

use anyhow::{anyhow, bail, Result};
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

/// Counts the CUDA devices libtorch can use. The host links libtorch's CUDA library (see
/// build.rs), so this is libtorch's own answer; a CPU-only libtorch says none.
fn cuda_devices() -> Result<usize, String> {
    if !tch::Cuda::is_available() {
        return Err(
            "libtorch sees no usable CUDA device (a CPU-only libtorch, no driver, or CUDA_VISIBLE_DEVICES hides them)"
                .into(),
        );
    }
    Ok(tch::Cuda::device_count().max(0) as usize)
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
