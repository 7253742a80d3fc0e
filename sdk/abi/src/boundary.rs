//! Everything that crosses between the host and a plugin library, and with [`crate::autocast`]
//! the only `unsafe` code of deepembed. The contract of the boundary:
//!
//! - The host builds a [`RunRequest`] and [`HostCallbacks`] in [`run_plugin`] and nowhere else
//!   (their fields are private), so every pointer in them is valid for the duration of the
//!   plugin's `run` call. The plugin side accepts them in [`serve`] and nowhere else.
//! - Each input stream is a host-owned `FFI_ArrowArrayStream`. [`serve`] moves it out (leaving
//!   a released stream behind); from then on the plugin owns it, reader included.
//! - The callbacks other than `log` reach the host's state for this run through `ctx`. They are
//!   reachable only through a [`HostHandle`], which cannot leave the closure given to
//!   [`serve`] (its lifetime is that call's) nor the thread (it holds raw pointers, so it is
//!   neither `Send` nor `Sync`).
//! - A batch handed to `emit` is a pair of C Data structs made by arrow's exporter; the host
//!   moves their contents out during the call and the plugin frees what is left afterwards.
//! - A panic never unwinds through an `extern "C"` function: both sides catch it at the edge
//!   ([`contain_panic`]) and turn it into an error value.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::library::{CheckTypeLayout, LibHeader, RootModule, RootModuleResult};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, package_version_strings, StableAbi};
use arrow::array::{Array, RecordBatch, StructArray};
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow::record_batch::RecordBatchReader;

use crate::settings::RunSettings;

/// The root module every plugin library exports (through the SDK's `export_plugin!`).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The [`SDK_ABI_VERSION`](crate::SDK_ABI_VERSION) the plugin was built with.
    pub sdk_abi_version: u32,
    /// The libtorch version the plugin was linked against ("2.11.0+cu130"), or "unknown".
    pub libtorch_version: RStr<'static>,
    /// The plugin's [`Manifest`](crate::Manifest) as JSON, or `!` and an error message.
    pub manifest: extern "C" fn() -> RString,
    /// Runs one extraction. Returns when the input is exhausted or on the first error.
    #[sabi(last_prefix_field)]
    pub run: extern "C" fn(host: HostCallbacks, request: RunRequest) -> RResult<(), RString>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "deepembed_plugin";
    const NAME: &'static str = "deepembed_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Builds the root module value. For the SDK's export macro and hand-written roots in tests.
pub fn leak_root(module: PluginMod) -> PluginModRef {
    module.leak_into_prefix()
}

/// A type naming the function that builds a plugin's root module.
pub trait RootFn {
    fn root() -> PluginModRef;
}

extern "C" fn erased_root<R: RootFn>() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(R::root)
}

/// The header a plugin library exports under [`ROOT_SYMBOL`](crate::ROOT_SYMBOL).
pub const fn lib_header<R: RootFn>() -> LibHeader {
    // SAFETY: the constructor is `erased_root::<R>`, which returns the root module built by
    // `R::root`, a `PluginModRef`: the type this header's layout is built from.
    unsafe { LibHeader::from_constructor::<PluginModRef>(erased_root::<R>, CheckTypeLayout::Yes) }
}

/// One input table of a run: a host-owned `*mut FFI_ArrowArrayStream`.
#[repr(C)]
#[derive(StableAbi)]
struct InputStream {
    name: RString,
    rows: u64,
    stream: *mut c_void,
}

/// What the host hands a plugin for one run. Built only by [`run_plugin`].
#[repr(C)]
#[derive(StableAbi)]
pub struct RunRequest {
    /// The plugin's own options, a JSON object keyed by snake_case name.
    options_json: RString,
    settings: RunSettings,
    /// One stream per input the manifest declares, in its order.
    inputs: RVec<InputStream>,
}

/// A plugin's log record: `level` is `log::Level as u8`. Callable from any thread, at any time.
pub type LogFn = extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>);

/// Functions the host offers a plugin during `run`. Built only by [`run_plugin`]; the plugin
/// reaches them through a [`HostHandle`].
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostCallbacks {
    /// The host's state for this run; valid until `run` returns, on the thread that called it.
    ctx: *mut c_void,
    begin: extern "C" fn(ctx: *mut c_void, plan_json: RStr<'_>) -> RResult<(), RString>,
    /// `array` is a `*mut FFI_ArrowArray` of a struct array, `schema` a `*mut FFI_ArrowSchema`
    /// of its type; the host moves both out.
    emit: extern "C" fn(ctx: *mut c_void, array: *mut c_void, schema: *mut c_void) -> RResult<(), RString>,
    skip: extern "C" fn(ctx: *mut c_void, row: u64, reason: RStr<'_>) -> RResult<(), RString>,
    progress: extern "C" fn(ctx: *mut c_void, rows: u64),
    /// Whether the user interrupted the run (SIGINT, SIGTERM): the plugin should stop.
    cancelled: extern "C" fn(ctx: *mut c_void) -> bool,
    log: extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>),
    /// The most verbose level the host wants (`log::LevelFilter as u8`).
    max_log_level: u8,
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

fn to_rresult(result: Result<(), String>) -> RResult<(), RString> {
    match result {
        Ok(()) => RResult::ROk(()),
        Err(e) => RResult::RErr(RString::from(e)),
    }
}

fn from_rresult(result: RResult<(), RString>) -> Result<(), String> {
    match result {
        RResult::ROk(()) => Ok(()),
        RResult::RErr(e) => Err(e.into_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Host side

/// The host's side of a run: what it does with the plugin's calls.
pub trait HostSink {
    fn begin(&mut self, plan_json: &str) -> Result<(), String>;
    fn emit(&mut self, batch: RecordBatch) -> Result<(), String>;
    fn skip(&mut self, row: u64, reason: &str) -> Result<(), String>;
    fn progress(&mut self, rows: u64);
    fn cancelled(&mut self) -> bool;
}

/// One input table the host streams to the plugin.
pub struct HostInput {
    pub name: String,
    pub rows: u64,
    pub reader: Box<dyn RecordBatchReader + Send>,
}

/// Host side: runs a plugin over `inputs`, routing its output to `sink` and its log records to
/// this process's logger.
pub fn run_plugin(
    module: PluginModRef,
    sink: &mut dyn HostSink,
    options_json: String,
    settings: RunSettings,
    inputs: Vec<HostInput>,
) -> Result<(), String> {
    // The streams stay here, boxed (so their addresses are stable), until the plugin returns.
    let mut streams: Vec<(String, u64, Box<FFI_ArrowArrayStream>)> =
        inputs.into_iter().map(|i| (i.name, i.rows, Box::new(FFI_ArrowArrayStream::new(i.reader)))).collect();
    let mut sink_ref: &mut dyn HostSink = sink;
    let callbacks = HostCallbacks {
        // A thin pointer to the fat `&mut dyn HostSink`, valid until this function returns.
        ctx: (&mut sink_ref as *mut &mut dyn HostSink).cast::<c_void>(),
        begin: sink_begin,
        emit: sink_emit,
        skip: sink_skip,
        progress: sink_progress,
        cancelled: sink_cancelled,
        log: forward_log,
        max_log_level: log::max_level() as u8,
    };
    let inputs = streams
        .iter_mut()
        .map(|(name, rows, stream)| InputStream {
            name: RString::from(name.as_str()),
            rows: *rows,
            stream: (&mut **stream as *mut FFI_ArrowArrayStream).cast::<c_void>(),
        })
        .collect();
    let request = RunRequest { options_json: RString::from(options_json), settings, inputs };
    let run = module.run();
    // The plugin contains its own panics; this guards against one that escapes anyway.
    let result = contain_panic("plugin", || from_rresult(run(callbacks, request)));
    drop(streams);
    result
}

/// Recovers the sink behind a callback's `ctx`.
///
/// # Safety
/// `ctx` must be the pointer `run_plugin` put in [`HostCallbacks::ctx`], used while that
/// `run_plugin` call is still executing and from the thread that called the plugin's `run`
/// (which [`HostHandle`] enforces), so the `&mut` is unique and live.
unsafe fn sink_from<'a>(ctx: *mut c_void) -> &'a mut dyn HostSink {
    // SAFETY: see the function's contract; `ctx` points to a live `&mut dyn HostSink`.
    unsafe { &mut **ctx.cast::<&mut dyn HostSink>() }
}

extern "C" fn sink_begin(ctx: *mut c_void, plan_json: RStr<'_>) -> RResult<(), RString> {
    // SAFETY: called through a HostHandle, under the callbacks' contract (see `sink_from`).
    to_rresult(contain_panic("host", || unsafe { sink_from(ctx) }.begin(plan_json.as_str())))
}

extern "C" fn sink_emit(ctx: *mut c_void, array: *mut c_void, schema: *mut c_void) -> RResult<(), RString> {
    to_rresult(contain_panic("host", || {
        // SAFETY: HostHandle::emit passes pointers to live C Data structs made by arrow's own
        // exporter for one struct array and its type, and frees what is left after this call.
        let batch = unsafe { import_batch(array, schema) }?;
        // SAFETY: as in sink_begin.
        unsafe { sink_from(ctx) }.emit(batch)
    }))
}

extern "C" fn sink_skip(ctx: *mut c_void, row: u64, reason: RStr<'_>) -> RResult<(), RString> {
    // SAFETY: as in sink_begin.
    to_rresult(contain_panic("host", || unsafe { sink_from(ctx) }.skip(row, reason.as_str())))
}

extern "C" fn sink_progress(ctx: *mut c_void, rows: u64) {
    let _ = contain_panic("host", || {
        // SAFETY: as in sink_begin.
        unsafe { sink_from(ctx) }.progress(rows);
        Ok(())
    });
}

extern "C" fn sink_cancelled(ctx: *mut c_void) -> bool {
    // SAFETY: as in sink_begin.
    contain_panic("host", || Ok(unsafe { sink_from(ctx) }.cancelled())).unwrap_or(false)
}

/// Hands a plugin's log record to the host's logger, with the plugin's name as target.
extern "C" fn forward_log(level: u8, target: RStr<'_>, message: RStr<'_>) {
    let level = match level {
        0 | 1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    };
    let _ = contain_panic("host logger", || {
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(target.as_str())
                .args(format_args!("{}", message.as_str()))
                .build(),
        );
        Ok(())
    });
}

/// Takes the batch a plugin passed to `emit`.
///
/// # Safety
/// `array` and `schema` must be null or point to initialised `FFI_ArrowArray` and
/// `FFI_ArrowSchema` structs, exported by arrow for one struct array and its data type, that
/// stay alive for this call and that their owner will not release after it (it may drop the
/// released shells this function leaves behind).
unsafe fn import_batch(array: *mut c_void, schema: *mut c_void) -> Result<RecordBatch, String> {
    if array.is_null() || schema.is_null() {
        return Err("plugin emitted a null batch".into());
    }
    // SAFETY: the pointers are valid and initialised (contract); `from_raw` moves each struct
    // out, leaving released (empty) structs behind, so nothing is released twice.
    let (array, schema) = unsafe {
        (
            FFI_ArrowArray::from_raw(array.cast::<FFI_ArrowArray>()),
            FFI_ArrowSchema::from_raw(schema.cast::<FFI_ArrowSchema>()),
        )
    };
    // SAFETY: the array was exported by arrow for exactly this schema (contract).
    let data = unsafe { arrow::ffi::from_ffi(array, &schema) }.map_err(|e| e.to_string())?;
    if !matches!(data.data_type(), arrow::datatypes::DataType::Struct(_)) {
        return Err(format!("plugin emitted a {} array, not a struct array of columns", data.data_type()));
    }
    Ok(RecordBatch::from(StructArray::from(data)))
}

// ---------------------------------------------------------------------------------------------
// Plugin side

/// One input table, as the plugin receives it.
pub struct PluginInput {
    /// The declared input's name (`df`, `train_df`, ...).
    pub name: String,
    /// Rows in the table, from its metadata.
    pub rows: u64,
    /// The table's record batches, in file order. `Send`: it may feed another thread.
    pub reader: RecordBatchStreamReader,
}

/// A run, as the plugin receives it in [`serve`].
pub struct PluginRun<'a> {
    pub options_json: String,
    pub settings: RunSettings,
    pub inputs: Vec<PluginInput>,
    pub host: HostHandle<'a>,
}

/// The plugin's way to the host during one run. It lives no longer than the closure given to
/// [`serve`], and raw pointers keep it on the thread that runs it.
#[derive(Clone, Copy)]
pub struct HostHandle<'a> {
    callbacks: HostCallbacks,
    _run: PhantomData<&'a mut ()>,
}

impl HostHandle<'_> {
    /// Declares the output (an [`OutputPlan`](crate::OutputPlan) as JSON). Called once.
    pub fn begin(&self, plan_json: &str) -> Result<(), String> {
        from_rresult((self.callbacks.begin)(self.callbacks.ctx, RStr::from_str(plan_json)))
    }

    /// Hands one batch of output rows to the host.
    pub fn emit(&self, batch: &RecordBatch) -> Result<(), String> {
        let array = StructArray::from(batch.clone());
        let mut ffi_array = Box::new(FFI_ArrowArray::new(&array.to_data()));
        let mut ffi_schema = Box::new(FFI_ArrowSchema::try_from(array.data_type()).map_err(|e| e.to_string())?);
        let array_ptr = (&mut *ffi_array as *mut FFI_ArrowArray).cast::<c_void>();
        let schema_ptr = (&mut *ffi_schema as *mut FFI_ArrowSchema).cast::<c_void>();
        // The host moves the contents out; the boxes free the released shells (or, if the host
        // failed before taking them, the data itself) when they drop here.
        from_rresult((self.callbacks.emit)(self.callbacks.ctx, array_ptr, schema_ptr))
    }

    /// Records a skipped input row (0-based row number in the input file).
    pub fn skip(&self, row: u64, reason: &str) -> Result<(), String> {
        from_rresult((self.callbacks.skip)(self.callbacks.ctx, row, RStr::from_str(reason)))
    }

    /// Reports `rows` more input rows done.
    pub fn progress(&self, rows: u64) {
        (self.callbacks.progress)(self.callbacks.ctx, rows)
    }

    /// Whether the user interrupted the run; a plugin stops at the next batch when so.
    pub fn cancelled(&self) -> bool {
        (self.callbacks.cancelled)(self.callbacks.ctx)
    }

    /// The host's log function, which may be kept and called from any thread at any time.
    pub fn log_fn(&self) -> LogFn {
        self.callbacks.log
    }

    /// The most verbose level the host wants (`log::LevelFilter as u8`).
    pub fn max_log_level(&self) -> u8 {
        self.callbacks.max_log_level
    }
}

/// Plugin side: accepts a run from the host and hands it, as safe values, to `f`. The plugin's
/// `run` entry point is exactly a call of this. Panics in `f` become an error.
pub fn serve(
    host: HostCallbacks,
    request: RunRequest,
    f: impl for<'a> FnOnce(PluginRun<'a>) -> Result<(), String>,
) -> RResult<(), RString> {
    to_rresult(contain_panic("plugin", || {
        let RunRequest { options_json, settings, inputs } = request;
        let mut accepted = Vec::with_capacity(inputs.len());
        for input in inputs {
            if input.stream.is_null() {
                return Err(format!("the host passed no stream for input '{}'", input.name));
            }
            // SAFETY: `run_plugin` built this request from live, initialised, boxed streams
            // that it keeps until `run` returns and never reads (module contract). `from_raw`
            // moves the stream out and leaves a released one behind, so the host's later drop
            // releases nothing twice; the reader owns its state from here on.
            let reader = unsafe { RecordBatchStreamReader::from_raw(input.stream.cast::<FFI_ArrowArrayStream>()) }
                .map_err(|e| format!("input '{}': {e}", input.name))?;
            accepted.push(PluginInput { name: input.name.into_string(), rows: input.rows, reader });
        }
        let run = PluginRun {
            options_json: options_json.into_string(),
            settings,
            inputs: accepted,
            host: HostHandle { callbacks: host, _run: PhantomData },
        };
        f(run)
    }))
}
