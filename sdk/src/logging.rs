//! Plugin side of the log bridge. A cdylib has its own copy of the `log` crate's global logger,
//! so records go nowhere unless the plugin installs one that forwards to the host.

use std::sync::RwLock;

use abi_stable::std_types::RStr;
use deepembed_abi::{abi_stable, LogFn};
use log::{LevelFilter, Log, Metadata, Record};

struct Bridge {
    plugin: String,
    host_log: LogFn,
}

static BRIDGE: RwLock<Option<Bridge>> = RwLock::new(None);

struct HostLogger;

impl Log for HostLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Ok(bridge) = BRIDGE.read() else { return };
        let Some(bridge) = bridge.as_ref() else { return };
        // Records name the plugin, so the user can tell who said what.
        let message = record.args().to_string();
        (bridge.host_log)(record.level() as u8, RStr::from_str(&bridge.plugin), RStr::from_str(&message));
    }

    fn flush(&self) {}
}

static LOGGER: HostLogger = HostLogger;

/// Points this library's `log` records at the host for the coming run.
pub(crate) fn install(plugin: &str, host_log: LogFn, max_level: u8) {
    if let Ok(mut bridge) = BRIDGE.write() {
        *bridge = Some(Bridge { plugin: plugin.to_string(), host_log });
    }
    // Fails only when already set by an earlier run of this library, which is the same logger.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level_filter(max_level));
}

fn level_filter(value: u8) -> LevelFilter {
    match value {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}
