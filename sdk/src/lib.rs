//! The crate deepembed plugins build against.
//!
//! - [`abi`] (the `deepembed-abi` crate): the stable boundary between host and plugins, the
//!   only crate with `unsafe` code. Its plain types are re-exported here.
//! - [`plugin`]: the [`Plugin`] trait, the [`RunContext`] of a run and [`export_plugin!`].
//! - [`options`]: typed plugin options that declare their own flags ([`options!`]), and the
//!   options several plugins share.
//! - [`pipeline`]: the one batch pipeline every plugin runs: prepare rows on CPU threads, embed
//!   them on the device, emit them in input order, with skip/fail handling in one place.
//! - [`output`]: the output columns, fixed from the input schema before the first row.
//! - [`text`]: the text plugins' preparation (tokenizing) and batching (length-sorted, padded).
//! - [`checkpoint`]: safe reading of PyTorch, safetensors and pickle files into tch tensors;
//!   [`weights`]: fetching them by name with shape checks; [`lora`]: merging peft adapters.
//! - [`activation`]: transformers' activation functions, by their config names.
//! - [`iso8601`]: timestamps in text, as pandas reads ISO 8601.
//! - [`device`], [`logging`]: the tch device of a run and the log bridge to the host.

#![forbid(unsafe_code)]

// The options! macro names this crate `deepembed_sdk` (serde's `crate` attribute needs a path
// string), which must resolve inside the SDK's own tests too.
extern crate self as deepembed_sdk;

pub mod activation;
pub mod checkpoint;
pub mod device;
pub mod iso8601;
pub mod logging;
pub mod lora;
pub mod options;
pub mod output;
pub mod pipeline;
pub mod plugin;
pub mod suspect_rows;
pub mod text;
pub mod weights;

pub use anyhow;
pub use arrow;
pub use deepembed_abi as abi;
pub use deepembed_abi::staging::StagingBytes;
pub use deepembed_abi::{
    ArgKind, ArgSpec, Device, DeviceKind, InputSpec, Manifest, OnError, OutputPlan, Precision, RunSettings,
    SDK_ABI_VERSION,
};
pub use log;
pub use options::Options;
pub use plugin::{Plugin, RunContext};
pub use serde;
/// The tch this SDK links (one libtorch per process: plugins use this one).
pub use tch;

/// The libtorch this SDK was built against ("2.11.0+cu130"), or "unknown".
pub const LIBTORCH_VERSION: &str = env!("DEEPEMBED_LIBTORCH_VERSION");

/// The part of a libtorch version that must match between host and plugin ("2.11.0").
pub fn libtorch_release(version: &str) -> &str {
    version.split('+').next().unwrap_or(version)
}
