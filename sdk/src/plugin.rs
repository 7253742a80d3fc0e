//! What a plugin author implements ([`Plugin`]) and what a run gives them ([`RunContext`]).

use std::ffi::c_void;

use abi_stable::std_types::{RResult, RStr, RString};
use anyhow::{anyhow, bail, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ffi_stream::RecordBatchStreamReader;
use arrow::record_batch::RecordBatchReader;

use crate::abi::{self, HostCallbacks, PluginMod, PluginModRef, RunRequest};
use crate::args::Args;
use crate::device::Device;
use crate::manifest::{Manifest, OutputPlan};

/// A modality backend. Implementations are stateless values built with `Default` for each call.
pub trait Plugin: Default {
    fn manifest(&self) -> Manifest;
    fn run(&self, ctx: &mut RunContext) -> Result<()>;
}

/// What to do with an input row the model cannot use (an image that does not decode, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Stop the run with an error naming the row (the default).
    Fail,
    /// Leave the row out and record it, with the reason, in `skipped_rows.json`.
    Skip,
}

/// One run: its arguments, device, input stream and output sink.
pub struct RunContext {
    args: Args,
    device: Device,
    input: Option<RecordBatchStreamReader>,
    input_schema: SchemaRef,
    host: HostCallbacks,
    begun: bool,
}

impl RunContext {
    pub fn args(&self) -> &Args {
        &self.args
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn batch_size(&self) -> usize {
        self.args.int("batch_size").ok().flatten().filter(|&n| n > 0).unwrap_or(32) as usize
    }

    pub fn on_error(&self) -> OnError {
        match self.args.str("on_error") {
            Some("skip") => OnError::Skip,
            _ => OnError::Fail,
        }
    }

    /// The schema of the input file, available before any batch is read.
    pub fn input_schema(&self) -> &SchemaRef {
        &self.input_schema
    }

    /// Takes the input batches (in file order, `batch_size` rows each). The reader is `Send`,
    /// so it can feed a decoding thread while the model runs on this one.
    pub fn take_input(&mut self) -> Result<RecordBatchStreamReader> {
        self.input.take().ok_or_else(|| anyhow!("the input stream was already taken"))
    }

    /// Declares the output. Must come before the first [`emit`](Self::emit).
    pub fn begin(&mut self, plan: &OutputPlan) -> Result<()> {
        let json = serde_json::to_string(plan)?;
        host_result((self.host.begin)(self.host.ctx, RStr::from_str(&json)))?;
        self.begun = true;
        Ok(())
    }

    /// Hands one batch of output rows to the host, which appends it to the Parquet file.
    pub fn emit(&mut self, batch: &RecordBatch) -> Result<()> {
        if !self.begun {
            bail!("plugin emitted output before declaring it with begin()");
        }
        let (mut array, mut schema) = abi::export_batch(batch).map_err(|e| anyhow!(e))?;
        let array_ptr = (&mut *array as *mut arrow::ffi::FFI_ArrowArray).cast::<c_void>();
        let schema_ptr = (&mut *schema as *mut arrow::ffi::FFI_ArrowSchema).cast::<c_void>();
        host_result((self.host.emit)(self.host.ctx, array_ptr, schema_ptr))
    }

    /// Records a skipped input row (0-based row number in the input file). Fails unless the user
    /// asked for `--on_error skip`, so callers can use it on every bad row.
    pub fn skip_row(&mut self, row: u64, reason: &str) -> Result<()> {
        if self.on_error() == OnError::Fail {
            bail!("row {row}: {reason} (use --on_error skip to leave such rows out)");
        }
        host_result((self.host.skip)(self.host.ctx, row, RStr::from_str(reason)))
    }

    /// Reports `rows` more input rows done, for the progress bar.
    pub fn progress(&self, rows: u64) {
        (self.host.progress)(self.host.ctx, rows)
    }
}

fn host_result(result: RResult<(), RString>) -> Result<()> {
    match result {
        RResult::ROk(()) => Ok(()),
        RResult::RErr(message) => Err(anyhow!(message.into_string())),
    }
}

/// The root module for plugin type `P`. Used by [`export_plugin!`](crate::export_plugin).
pub fn root_module<P: Plugin>() -> PluginModRef {
    abi::leak_root(PluginMod {
        sdk_abi_version: crate::SDK_ABI_VERSION,
        libtorch_version: RStr::from_str(crate::LIBTORCH_VERSION),
        manifest: manifest_entry::<P>,
        run: run_entry::<P>,
    })
}

extern "C" fn manifest_entry<P: Plugin>() -> RString {
    let manifest = abi::contain_panic("plugin manifest", || {
        serde_json::to_string(&P::default().manifest()).map_err(|e| e.to_string())
    });
    // The host treats an unparsable manifest as a broken plugin and says so.
    RString::from(manifest.unwrap_or_else(|e| format!("!{e}")))
}

extern "C" fn run_entry<P: Plugin>(host: HostCallbacks, request: RunRequest) -> RResult<(), RString> {
    let result = abi::contain_panic("plugin", || {
        let plugin = P::default();
        let name = plugin.manifest().name;
        crate::logging::install(&name, host.log, host.max_log_level);
        let args = Args::from_json(request.args_json.as_str()).map_err(|e| e.to_string())?;
        let input = abi::import_stream(request.input_stream)?;
        let input_schema = input.schema();
        let mut ctx = RunContext { args, device: request.device, input: Some(input), input_schema, host, begun: false };
        // `{:#}` keeps anyhow's context chain on one line.
        plugin.run(&mut ctx).map_err(|e| format!("{e:#}"))
    });
    match result {
        Ok(()) => RResult::ROk(()),
        Err(message) => RResult::RErr(RString::from(message)),
    }
}

/// Exports a [`Plugin`] implementation as this library's deepembed root module.
///
/// ```ignore
/// #[derive(Default)]
/// struct MyPlugin;
/// impl deepembed_sdk::Plugin for MyPlugin { ... }
/// deepembed_sdk::export_plugin!(MyPlugin);
/// ```
///
/// `export_plugin!(root = my_fn)` exports a hand-built root module instead (`fn() ->
/// PluginModRef`); the SDK's tests use it to build deliberately incompatible plugins.
#[macro_export]
macro_rules! export_plugin {
    (root = $root:path) => {
        /// The header abi_stable's loader looks up by this exact symbol name.
        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static __DEEPEMBED_LIB_HEADER: $crate::abi_stable::library::LibHeader = {
            extern "C" fn erased() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader($root)
            }
            $crate::abi::lib_header(erased)
        };
    };
    ($plugin:ty) => {
        $crate::export_plugin!(root = $crate::plugin::root_module::<$plugin>);
    };
}
