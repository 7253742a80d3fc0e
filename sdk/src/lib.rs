//! The crate deepembed plugins build against.
//!
//! - [`abi`]: the stable boundary between host and plugins (the only `unsafe` code).
//! - [`plugin`]: the [`Plugin`] trait, the [`RunContext`] of a run and [`export_plugin!`].
//! - [`manifest`]: what a plugin declares (arguments, models) and its [`OutputPlan`].
//! - [`device`], [`args`], [`logging`]: the device handle, run arguments and log bridge.
//! - [`checkpoint`]: a safe reader for PyTorch and safetensors checkpoints; [`lora`]: merging
//!   peft LoRA adapters into base weights.
//! - [`columns`]: helpers for output columns and pass-through; [`text`]: the run loop of text
//!   plugins (tokenizing thread, length-bucketed batches).

pub mod abi;
pub mod args;
pub mod checkpoint;
pub mod columns;
pub mod device;
pub mod logging;
pub mod lora;
pub mod manifest;
pub mod plugin;
pub mod text;

pub use abi_stable;
pub use anyhow;
pub use args::Args;
pub use arrow;
pub use device::{Device, DeviceKind};
pub use log;
pub use manifest::{ArgKind, ArgSpec, Manifest, OutputPlan};
pub use plugin::{OnError, Plugin, RunContext};

/// Bumped whenever the meaning of the boundary changes in a way abi_stable's layout check
/// cannot see (a callback's contract, the JSON shapes). The host refuses other versions.
pub const SDK_ABI_VERSION: u32 = 1;

/// The libtorch this SDK was built against ("2.11.0+cu130"), or "unknown".
pub const LIBTORCH_VERSION: &str = env!("DEEPEMBED_LIBTORCH_VERSION");

/// The part of a libtorch version that must match between host and plugin ("2.11.0").
pub fn libtorch_release(version: &str) -> &str {
    version.split('+').next().unwrap_or(version)
}
