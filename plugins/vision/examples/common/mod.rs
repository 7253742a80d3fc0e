//! What the examples share.

use anyhow::{bail, Result};
use tch::Device;

/// `cpu` or `cuda:N`, as the host's `--device` takes them (no `auto`: an example measures one
/// device on purpose).
pub fn parse_device(text: &str) -> Result<Device> {
    match text {
        "cpu" => Ok(Device::Cpu),
        _ => match text.strip_prefix("cuda:") {
            Some(i) => Ok(Device::Cuda(i.parse()?)),
            None => bail!("--device must be cpu or cuda:N"),
        },
    }
}
