//! The device of a run, as tch sees it.

use crate::abi::{Device, DeviceKind};

/// The tch device for a device handle the host resolved.
pub fn tch_device(device: Device) -> tch::Device {
    match device.kind {
        DeviceKind::Cpu => tch::Device::Cpu,
        DeviceKind::Cuda => tch::Device::Cuda(device.index as usize),
    }
}
