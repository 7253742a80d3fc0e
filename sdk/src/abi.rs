//! The plugin boundary: everything that crosses between the host and a plugin library.
//!
//! This is the one module of the SDK that holds `unsafe` code. Each block says which invariant
//! makes it sound. The rules of the boundary:
//!
//! - The root module [`PluginMod`] is an abi_stable prefix type: abi_stable checks its layout
//!   and the SDK's version strings when the host loads a plugin, and fields may be appended in
//!   later SDK versions. [`SDK_ABI_VERSION`](crate::SDK_ABI_VERSION) covers changes in meaning
//!   that a layout check cannot see.
//! - Record batches cross as Arrow C Data / C Stream interface structs (a spec-level ABI,
//!   independent of the arrow crate versions on either side). tch tensors never cross.
//! - Strings and results cross as abi_stable's `RString` / `RStr` / `RResult`.
//! - A panic never unwinds through an `extern "C"` function: both sides catch it at the edge
//!   and turn it into an error value.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RStr, RString};
use abi_stable::{declare_root_module_statics, package_version_strings, StableAbi};
use arrow::array::{Array, RecordBatch, StructArray};
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};

use crate::device::Device;

/// The root module every plugin library exports (through [`export_plugin!`](crate::export_plugin)).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The [`SDK_ABI_VERSION`](crate::SDK_ABI_VERSION) the plugin was built with.
    pub sdk_abi_version: u32,
    /// The libtorch version the plugin was linked against ("2.11.0", or "none").
    pub libtorch_version: RStr<'static>,
    /// The plugin's manifest (name, version, modality, models, arguments) as JSON.
    pub manifest: extern "C" fn() -> RString,
    /// Runs one extraction. Returns when the input stream is exhausted or on the first error.
    #[sabi(last_prefix_field)]
    pub run: extern "C" fn(host: HostCallbacks, request: RunRequest) -> RResult<(), RString>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "deepembed_plugin";
    const NAME: &'static str = "deepembed_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Builds the root module value. Only for the export macro and for hand-written roots in tests.
pub fn leak_root(module: PluginMod) -> PluginModRef {
    module.leak_into_prefix()
}

/// What the host hands a plugin for one run.
#[repr(C)]
#[derive(StableAbi)]
pub struct RunRequest {
    /// Every argument of the run, host and plugin ones, as a JSON object keyed by snake_case name.
    pub args_json: RString,
    pub device: Device,
    /// A `*mut FFI_ArrowArrayStream` owned by the host. The plugin moves it out (leaving a
    /// released stream behind) and may read it from any one thread while `run` is executing.
    pub input_stream: *mut c_void,
}

/// Functions the host offers a plugin during `run`. `ctx` is the host's state for this run;
/// the plugin passes it back untouched. `begin`, `emit`, `skip` and `progress` must be called from
/// the thread that called `run`, before `run` returns. `log` may be called from any thread.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostCallbacks {
    pub ctx: *mut c_void,
    /// Declares the output (model string, file name, dims, details) as JSON. Called once.
    pub begin: extern "C" fn(ctx: *mut c_void, plan_json: RStr<'_>) -> RResult<(), RString>,
    /// Hands over one output batch: `array` is a `*mut FFI_ArrowArray` of a struct array and
    /// `schema` a `*mut FFI_ArrowSchema` of its struct type. The host moves both out.
    pub emit: extern "C" fn(ctx: *mut c_void, array: *mut c_void, schema: *mut c_void) -> RResult<(), RString>,
    /// Records an input row the plugin skipped (only allowed with `--on_error skip`).
    pub skip: extern "C" fn(ctx: *mut c_void, row: u64, reason: RStr<'_>) -> RResult<(), RString>,
    /// Reports `rows` more input rows done.
    pub progress: extern "C" fn(ctx: *mut c_void, rows: u64),
    /// A `log` record from the plugin. `level` is `log::Level as u8`.
    pub log: extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>),
    /// The most verbose level the host wants (`log::LevelFilter as u8`).
    pub max_log_level: u8,
}

/// Runs `f`, turning a panic into an error message. Every `extern "C"` entry point on either
/// side of the boundary goes through this, because a panic leaving one aborts the process.
pub fn contain_panic<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            Err(format!("{what} panicked: {message}"))
        }
    }
}

/// Wraps a host-side record batch reader so it can be handed to a plugin.
pub fn export_stream(reader: Box<dyn arrow::record_batch::RecordBatchReader + Send>) -> Box<FFI_ArrowArrayStream> {
    Box::new(FFI_ArrowArrayStream::new(reader))
}

/// Plugin side: takes ownership of the input stream the host passed in a [`RunRequest`].
pub fn import_stream(ptr: *mut c_void) -> Result<RecordBatchStreamReader, String> {
    if ptr.is_null() {
        return Err("the host passed no input stream".into());
    }
    // SAFETY: the host guarantees `ptr` points to a live, initialised FFI_ArrowArrayStream that
    // it does not use again (RunRequest's contract). `from_raw` moves the struct out and leaves
    // an empty one behind, so the host's later drop of its box releases nothing twice.
    unsafe { RecordBatchStreamReader::from_raw(ptr.cast::<FFI_ArrowArrayStream>()) }.map_err(|e| e.to_string())
}

/// Plugin side: converts a batch to the C Data structs the `emit` callback expects.
/// The returned boxes must stay alive until `emit` returns; the host moves their contents out.
pub fn export_batch(batch: &RecordBatch) -> Result<(Box<FFI_ArrowArray>, Box<FFI_ArrowSchema>), String> {
    let array = StructArray::from(batch.clone());
    let data = array.to_data();
    let ffi_array = FFI_ArrowArray::new(&data);
    let ffi_schema = FFI_ArrowSchema::try_from(array.data_type()).map_err(|e| e.to_string())?;
    Ok((Box::new(ffi_array), Box::new(ffi_schema)))
}

/// Host side: takes the batch a plugin passed to `emit`.
pub fn import_batch(array: *mut c_void, schema: *mut c_void) -> Result<RecordBatch, String> {
    if array.is_null() || schema.is_null() {
        return Err("plugin emitted a null batch".into());
    }
    // SAFETY: `emit`'s contract: `array` and `schema` point to initialised C Data structs that
    // stay alive for the duration of the call and that the plugin will not release itself.
    // `from_raw` moves each struct out, leaving released (empty) structs behind.
    let (array, schema) = unsafe {
        (
            FFI_ArrowArray::from_raw(array.cast::<FFI_ArrowArray>()),
            FFI_ArrowSchema::from_raw(schema.cast::<FFI_ArrowSchema>()),
        )
    };
    // SAFETY: the array was produced by arrow's own exporter for this schema (export_batch).
    let data = unsafe { arrow::ffi::from_ffi(array, &schema) }.map_err(|e| e.to_string())?;
    Ok(RecordBatch::from(StructArray::from(data)))
}

/// The header a plugin library exports under abi_stable's well-known symbol name.
pub const fn lib_header(
    erased: extern "C" fn() -> abi_stable::library::RootModuleResult,
) -> abi_stable::library::LibHeader {
    // SAFETY: `erased` returns the root module of type PluginModRef (export_plugin! wires it to
    // a `fn() -> PluginModRef`), which is the type this header's layout is built from.
    unsafe {
        abi_stable::library::LibHeader::from_constructor::<PluginModRef>(
            erased,
            abi_stable::library::CheckTypeLayout::Yes,
        )
    }
}

/// The host's side of a run: what it does with the plugin's calls. `run_plugin` turns these
/// methods into the C callbacks of [`HostCallbacks`].
pub trait HostSink {
    fn begin(&mut self, plan_json: &str) -> Result<(), String>;
    fn emit(&mut self, batch: RecordBatch) -> Result<(), String>;
    fn skip(&mut self, row: u64, reason: &str) -> Result<(), String>;
    fn progress(&mut self, rows: u64);
}

/// Host side: runs a plugin over `input`, routing its output to `sink` and its log records to
/// this process's logger.
pub fn run_plugin(
    module: PluginModRef,
    sink: &mut dyn HostSink,
    args_json: String,
    device: Device,
    input: Box<dyn arrow::record_batch::RecordBatchReader + Send>,
) -> Result<(), String> {
    let mut stream = export_stream(input);
    let mut sink_ref: &mut dyn HostSink = sink;
    let callbacks = HostCallbacks {
        // A thin pointer to the fat `&mut dyn HostSink`, valid until this function returns.
        ctx: (&mut sink_ref as *mut &mut dyn HostSink).cast::<c_void>(),
        begin: sink_begin,
        emit: sink_emit,
        skip: sink_skip,
        progress: sink_progress,
        log: forward_log,
        max_log_level: log::max_level() as u8,
    };
    let request = RunRequest {
        args_json: RString::from(args_json),
        device,
        input_stream: (&mut *stream as *mut FFI_ArrowArrayStream).cast::<c_void>(),
    };
    let run = module.run();
    // The plugin contains its own panics; this guards against one that escapes anyway.
    let result = contain_panic("plugin", || match run(callbacks, request) {
        RResult::ROk(()) => Ok(()),
        RResult::RErr(e) => Err(e.into_string()),
    });
    drop(stream);
    result
}

/// Recovers the sink behind a callback's `ctx`.
///
/// # Safety
/// `ctx` must be the pointer `run_plugin` put in [`HostCallbacks::ctx`], used while that
/// `run_plugin` call is still executing and from the thread that called the plugin's `run`
/// (the callbacks' contract), so the `&mut` is unique and live.
unsafe fn sink_from<'a>(ctx: *mut c_void) -> &'a mut dyn HostSink {
    unsafe { &mut **ctx.cast::<&mut dyn HostSink>() }
}

fn to_rresult(result: Result<(), String>) -> RResult<(), RString> {
    match result {
        Ok(()) => RResult::ROk(()),
        Err(e) => RResult::RErr(RString::from(e)),
    }
}

extern "C" fn sink_begin(ctx: *mut c_void, plan_json: RStr<'_>) -> RResult<(), RString> {
    // SAFETY: called by the plugin under the callbacks' contract (see `sink_from`).
    to_rresult(contain_panic("host", || unsafe { sink_from(ctx) }.begin(plan_json.as_str())))
}

extern "C" fn sink_emit(ctx: *mut c_void, array: *mut c_void, schema: *mut c_void) -> RResult<(), RString> {
    to_rresult(contain_panic("host", || {
        let batch = import_batch(array, schema)?;
        // SAFETY: as in sink_begin.
        unsafe { sink_from(ctx) }.emit(batch)
    }))
}

extern "C" fn sink_skip(ctx: *mut c_void, row: u64, reason: RStr<'_>) -> RResult<(), RString> {
    // SAFETY: as in sink_begin.
    to_rresult(contain_panic("host", || unsafe { sink_from(ctx) }.skip(row, reason.as_str())))
}

extern "C" fn sink_progress(ctx: *mut c_void, rows: u64) {
    // SAFETY: as in sink_begin.
    let _ = contain_panic("host", || {
        unsafe { sink_from(ctx) }.progress(rows);
        Ok(())
    });
}

/// Hands a plugin's log record to the host's logger, with the plugin's name as target.
extern "C" fn forward_log(level: u8, target: RStr<'_>, message: RStr<'_>) {
    let _ = contain_panic("host logger", || {
        log::logger().log(
            &log::Record::builder()
                .level(crate::logging::level(level))
                .target(target.as_str())
                .args(format_args!("{}", message.as_str()))
                .build(),
        );
        Ok(())
    });
}

/// Loads a shared library with RTLD_NOW | RTLD_GLOBAL and keeps it loaded for the life of the
/// process, so its symbols serve every library loaded after it.
pub fn load_library_global(name: &str) -> Result<(), String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: the only libraries loaded this way are libtorch's own (libtorch_cuda.so), whose
    // initialisers register backends with the libtorch already in the process. The handle is
    // leaked on purpose: unloading would leave those registrations dangling.
    let library = unsafe { Library::open(Some(name), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| e.to_string())?;
    std::mem::forget(library);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn exported_symbol_name_is_the_one_abi_stable_looks_up() {
        // export_plugin! spells the symbol out because `#[export_name]` needs a literal.
        assert_eq!(abi_stable::library::ROOT_MODULE_LOADER_NAME, "_1as_0lib_1header_0root_bmodule_bloader");
    }
}
