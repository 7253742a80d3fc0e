//! The stable boundary between the deepembed host and its plugins.
//!
//! This is the one deepembed crate that holds `unsafe` code, each block with the invariant that
//! makes it sound: the host-plugin boundary in [`boundary`], in [`autocast`] the libtorch
//! autocast switches tch does not bind, in [`staging`] byte buffers that Rust code fills and a
//! device copies from, in [`exit`] ending the process without libtorch's teardown, in
//! [`large_blocks`] glibc's allocator settings, and in [`nvjpeg`] NVIDIA's GPU JPEG decoder,
//! loaded at run time.
//! Everything else here is plain data that crosses the boundary:
//!
//! - [`PluginMod`], the root module a plugin library exports: an abi_stable prefix type whose
//!   layout abi_stable checks at load time. [`SDK_ABI_VERSION`] covers changes of meaning that
//!   a layout check cannot see (a callback's contract, the JSON shapes of [`manifest`]).
//! - [`RunSettings`]: the host's settings of a run (batch size, device, what to do with a bad
//!   row, precision) as typed fields, each with one default, here.
//! - Record batches cross as Arrow C Data / C Stream interface structs, a spec-level ABI that is
//!   independent of the arrow crate versions on either side. tch tensors never cross.
//! - A panic never unwinds through an `extern "C"` function: both sides catch it at the edge.
//!
//! The host drives a run with [`run_plugin`]; the plugin side answers with [`serve`].

pub mod autocast;
mod boundary;
pub mod exit;
pub mod large_blocks;
mod libtorch_dir;
pub mod manifest;
pub mod nvjpeg;
mod settings;
pub mod staging;

pub use abi_stable;
pub use boundary::{
    contain_panic, leak_root, lib_header, run_plugin, serve, HostCallbacks, HostHandle, HostInput, HostSink, LogFn,
    PluginInput, PluginMod, PluginModRef, PluginRun, RootFn, RunRequest,
};
pub use libtorch_dir::loaded_libtorch_dir;
pub use manifest::{ArgKind, ArgSpec, InputSpec, Manifest, OutputPlan};
pub use settings::{Device, DeviceKind, OnError, Precision, RunSettings};

/// Bumped whenever the meaning of the boundary changes in a way abi_stable's layout check
/// cannot see (a callback's contract, the JSON shapes). The host refuses other versions.
pub const SDK_ABI_VERSION: u32 = 3;

/// The symbol under which a plugin library exports its [`lib_header`]; abi_stable's loader
/// looks it up by this exact name. `export_plugin!` spells it out because `#[export_name]`
/// needs a literal.
pub const ROOT_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

#[cfg(test)]
mod tests {
    #[test]
    fn exported_symbol_name_is_the_one_abi_stable_looks_up() {
        assert_eq!(abi_stable::library::ROOT_MODULE_LOADER_NAME, super::ROOT_SYMBOL);
    }
}
