//! The device a run executes on, as it crosses the boundary: a kind plus an index.

use abi_stable::StableAbi;

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu = 0,
    Cuda = 1,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub kind: DeviceKind,
    /// The CUDA ordinal; 0 for the CPU.
    pub index: u32,
}

impl Device {
    pub const CPU: Device = Device { kind: DeviceKind::Cpu, index: 0 };

    pub fn cuda(index: u32) -> Device {
        Device { kind: DeviceKind::Cuda, index }
    }

    pub fn to_tch(self) -> tch::Device {
        match self.kind {
            DeviceKind::Cpu => tch::Device::Cpu,
            DeviceKind::Cuda => tch::Device::Cuda(self.index as usize),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            DeviceKind::Cpu => write!(f, "cpu"),
            DeviceKind::Cuda => write!(f, "cuda:{}", self.index),
        }
    }
}
