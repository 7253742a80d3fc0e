//! The host's settings of one run, as typed values that cross the boundary. The host parses and
//! checks them; a plugin reads them and never sees them as strings.

use abi_stable::StableAbi;

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu = 0,
    Cuda = 1,
}

/// A device the host resolved (never "auto": the host decides before the run).
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
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            DeviceKind::Cpu => write!(f, "cpu"),
            DeviceKind::Cuda => write!(f, "cuda:{}", self.index),
        }
    }
}

/// What to do with an input row the model cannot use (an image that does not decode, say).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop the run with an error naming the row (the default).
    #[default]
    Fail = 0,
    /// Leave the row out and record it, with the reason, in `skipped_rows.json`.
    Skip = 1,
}

impl OnError {
    pub fn parse(text: &str) -> Option<OnError> {
        match text {
            "fail" => Some(OnError::Fail),
            "skip" => Some(OnError::Skip),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OnError::Fail => "fail",
            OnError::Skip => "skip",
        }
    }
}

/// The arithmetic the model runs in. The embeddings are written as float32 whatever it is.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// float32 throughout (the default, and the reference's).
    #[default]
    Fp32 = 0,
    /// libtorch's autocast to float16: matrix products and convolutions in half precision,
    /// reductions and normalisations in float32, as `torch.autocast("cuda")`. CUDA only.
    Fp16 = 1,
    /// libtorch's autocast to bfloat16, as `torch.autocast(device, dtype=torch.bfloat16)`, on
    /// CUDA or the CPU.
    Bf16 = 2,
}

impl Precision {
    pub fn parse(text: &str) -> Option<Precision> {
        match text {
            "fp32" => Some(Precision::Fp32),
            "fp16" => Some(Precision::Fp16),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }
}

/// The host's settings of a run.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSettings {
    /// Rows per input batch; at least 1.
    pub batch_size: u32,
    pub device: Device,
    pub on_error: OnError,
    pub precision: Precision,
}

impl RunSettings {
    /// `--batch_size`'s default, DeepTune's.
    pub const DEFAULT_BATCH_SIZE: u32 = 32;
}

impl Default for RunSettings {
    fn default() -> RunSettings {
        RunSettings {
            batch_size: RunSettings::DEFAULT_BATCH_SIZE,
            device: Device::CPU,
            on_error: OnError::Fail,
            precision: Precision::Fp32,
        }
    }
}
