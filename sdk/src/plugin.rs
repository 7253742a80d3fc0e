//! What a plugin author implements ([`Plugin`]) and what a run gives them ([`RunContext`]).

use abi_stable::std_types::{RResult, RStr, RString};
use anyhow::{anyhow, bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ffi_stream::RecordBatchStreamReader;
use arrow::record_batch::RecordBatchReader;
use deepembed_abi::{abi_stable, HostCallbacks, HostHandle, PluginInput, PluginMod, PluginModRef, RootFn, RunRequest};

use crate::abi::{Device, OnError, Precision, RunSettings};
use crate::options::Options;
use crate::{Manifest, OutputPlan};

/// A modality backend. Implementations are stateless values built with `Default` for each call.
pub trait Plugin: Default {
    /// The plugin's own flags, as a typed struct (see [`options!`](crate::options!)).
    type Options: Options;

    fn manifest(&self) -> Manifest;

    fn run(&self, options: Self::Options, ctx: &mut RunContext<'_>) -> Result<()>;
}

/// One input table of a run, before it is taken.
struct Input {
    name: String,
    rows: u64,
    schema: SchemaRef,
    reader: Option<RecordBatchStreamReader>,
}

/// One run: the host's settings, the input tables and the way to the host.
pub struct RunContext<'a> {
    settings: RunSettings,
    inputs: Vec<Input>,
    host: HostHandle<'a>,
    begun: bool,
}

impl<'a> RunContext<'a> {
    fn new(settings: RunSettings, inputs: Vec<PluginInput>, host: HostHandle<'a>) -> RunContext<'a> {
        let inputs = inputs
            .into_iter()
            .map(|i| Input { name: i.name, rows: i.rows, schema: i.reader.schema(), reader: Some(i.reader) })
            .collect();
        RunContext { settings, inputs, host, begun: false }
    }

    pub fn settings(&self) -> RunSettings {
        self.settings
    }

    /// Rows per input batch, and the most rows the model sees at once.
    pub fn batch_size(&self) -> usize {
        self.settings.batch_size.max(1) as usize
    }

    pub fn device(&self) -> Device {
        self.settings.device
    }

    /// The device as tch names it.
    pub fn tch_device(&self) -> tch::Device {
        crate::device::tch_device(self.settings.device)
    }

    /// The arithmetic the model runs in; the SDK's pipeline applies it (see
    /// [`crate::pipeline`]). A plugin that runs its model outside the pipeline calls
    /// [`RunContext::require_fp32`] unless it applies it itself.
    pub fn precision(&self) -> Precision {
        self.settings.precision
    }

    /// Refuses a run asked for in reduced precision, for a plugin whose model runs only in float32.
    pub fn require_fp32(&self, why: &str) -> anyhow::Result<()> {
        match self.settings.precision {
            Precision::Fp32 => Ok(()),
            other => anyhow::bail!(
                "--precision {} is not available for this plugin: {why}; use --precision fp32",
                other.name()
            ),
        }
    }

    pub fn on_error(&self) -> OnError {
        self.settings.on_error
    }

    fn input(&self, name: &str) -> Result<&Input> {
        self.inputs.iter().find(|i| i.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
            anyhow!("the plugin asked for input '{name}', but the run has {}", known.join(", "))
        })
    }

    /// The schema of a declared input, available before any batch is read.
    pub fn input_schema(&self, name: &str) -> Result<&SchemaRef> {
        Ok(&self.input(name)?.schema)
    }

    /// Rows in a declared input, from its file's metadata.
    pub fn input_rows(&self, name: &str) -> Result<u64> {
        Ok(self.input(name)?.rows)
    }

    /// Takes a declared input's batches (in file order, `batch_size` rows each). The reader is
    /// `Send`, so it can feed a preparing thread while the model runs on this one. An input
    /// declared with several passes ([`InputSpec::passes`](crate::InputSpec)) can be taken that
    /// many times, each time from its first row.
    pub fn take_input(&mut self, name: &str) -> Result<RecordBatchStreamReader> {
        if !self.inputs.iter().any(|i| i.name == name) {
            bail!("no input '{name}'");
        }
        let input = self.inputs.iter_mut().find(|i| i.name == name && i.reader.is_some());
        input.and_then(|i| i.reader.take()).ok_or_else(|| {
            anyhow!("input '{name}' was already read as many times as the plugin declared (InputSpec::passes)")
        })
    }

    /// Declares the output. Must come before the first [`emit`](Self::emit).
    pub fn begin(&mut self, plan: &OutputPlan) -> Result<()> {
        if self.begun {
            bail!("the plugin declared its output twice");
        }
        self.host.begin(&serde_json::to_string(plan)?).map_err(|e| anyhow!(e))?;
        self.begun = true;
        Ok(())
    }

    /// Hands one batch of output rows to the host, which appends it to the Parquet file.
    pub fn emit(&mut self, batch: &RecordBatch) -> Result<()> {
        if !self.begun {
            bail!("plugin emitted output before declaring it with begin()");
        }
        self.host.emit(batch).map_err(|e| anyhow!(e))
    }

    /// Records a skipped input row (0-based row number in the input file). Fails, naming the
    /// row, unless the user asked for `--on_error skip`, so callers can use it on every bad row.
    pub fn skip_row(&mut self, row: u64, reason: &str) -> Result<()> {
        if self.on_error() == OnError::Fail {
            bail!("row {row}: {reason} (use --on_error skip to leave such rows out)");
        }
        self.host.skip(row, reason).map_err(|e| anyhow!(e))
    }

    /// Whether the user interrupted the run (Ctrl-C, or a scheduler's SIGTERM). A plugin that
    /// runs its own loop should stop with an error when so; the pipeline checks per window.
    pub fn cancelled(&self) -> bool {
        self.host.cancelled()
    }

    /// Reports `rows` more input rows done, for the progress bar.
    pub fn progress(&self, rows: u64) {
        self.host.progress(rows)
    }
}

/// The root module for plugin type `P`. Used by [`export_plugin!`](crate::export_plugin).
pub fn root_module<P: Plugin>() -> PluginModRef {
    deepembed_abi::leak_root(PluginMod {
        sdk_abi_version: crate::SDK_ABI_VERSION,
        libtorch_version: RStr::from_str(crate::LIBTORCH_VERSION),
        manifest: manifest_entry::<P>,
        run: run_entry::<P>,
    })
}

/// Names [`root_module::<P>`] for the library header (see [`export_plugin!`](crate::export_plugin)).
pub struct Root<P>(std::marker::PhantomData<P>);

impl<P: Plugin> RootFn for Root<P> {
    fn root() -> PluginModRef {
        root_module::<P>()
    }
}

extern "C" fn manifest_entry<P: Plugin>() -> RString {
    let manifest = deepembed_abi::contain_panic("plugin manifest", || {
        serde_json::to_string(&P::default().manifest()).map_err(|e| e.to_string())
    });
    // The host treats an unparsable manifest as a broken plugin and says so.
    RString::from(manifest.unwrap_or_else(|e| format!("!{e}")))
}

extern "C" fn run_entry<P: Plugin>(host: HostCallbacks, request: RunRequest) -> RResult<(), RString> {
    deepembed_abi::serve(host, request, |run| {
        let plugin = P::default();
        let name = plugin.manifest().name;
        crate::logging::install(&name, run.host.log_fn(), run.host.max_log_level());
        let run_plugin = || -> Result<()> {
            let options =
                crate::options::parse::<P::Options>(&run.options_json).context("reading the plugin's options")?;
            let mut ctx = RunContext::new(run.settings, run.inputs, run.host);
            plugin.run(options, &mut ctx)
        };
        // `{:#}` keeps anyhow's context chain on one line.
        run_plugin().map_err(|e| format!("{e:#}"))
    })
}

/// Exports a [`Plugin`] implementation as this library's deepembed root module. A plugin crate
/// is an rlib holding the plugin, plus a thin cdylib whose whole source is this macro, so
/// several plugins can be linked into one test binary.
///
/// ```ignore
/// deepembed_sdk::export_plugin!(my_plugin::MyPlugin);
/// ```
///
/// `export_plugin!(root = my_fn)` exports a hand-built root module instead (`fn() ->
/// PluginModRef`); the tests use it to build deliberately incompatible plugins.
#[macro_export]
macro_rules! export_plugin {
    (root = $root:path) => {
        #[doc(hidden)]
        pub struct __DeepembedRoot;
        impl $crate::abi::RootFn for __DeepembedRoot {
            fn root() -> $crate::abi::PluginModRef {
                $root()
            }
        }
        /// The header abi_stable's loader looks up by this exact symbol name (abi::ROOT_SYMBOL).
        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static __DEEPEMBED_LIB_HEADER: $crate::abi::abi_stable::library::LibHeader =
            $crate::abi::lib_header::<__DeepembedRoot>();
    };
    ($plugin:ty) => {
        $crate::export_plugin!(root = $crate::plugin::root_module::<$plugin>);
    };
}
