//! Logs to stderr, and the one progress bar. Plugin records arrive through the SDK's log bridge
//! with the plugin's name as target.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

/// The bar being drawn, so log lines can be printed above it instead of through it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// When `main` started, set at [`init`] when the level is debug or finer: every line then
/// carries the seconds since, so a run's log is its own timeline (where start-up goes: loading
/// CUDA, the model, the first window).
static STARTED: OnceLock<Instant> = OnceLock::new();

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = match record.level() {
            Level::Error => format!("error: {}", record.args()),
            Level::Warn => format!("warning: [{}] {}", short_target(record.target()), record.args()),
            _ => format!("[{}] {}", short_target(record.target()), record.args()),
        };
        if let Some(started) = STARTED.get() {
            line = format!("{:8.3} s {line}", started.elapsed().as_secs_f64());
        }
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

fn short_target(target: &str) -> &str {
    target.split("::").next().unwrap_or(target)
}

/// `quiet` keeps warnings and errors; `DEEPEMBED_LOG=debug|trace|...` overrides the level. At
/// debug and trace, each line starts with the seconds since this call (the start of `main`).
pub fn init(quiet: bool) {
    let level = std::env::var("DEEPEMBED_LOG").ok().and_then(|v| v.parse::<LevelFilter>().ok()).unwrap_or(if quiet {
        LevelFilter::Warn
    } else {
        LevelFilter::Info
    });
    if level >= LevelFilter::Debug {
        let _ = STARTED.set(Instant::now());
    }
    let _ = log::set_logger(&StderrLogger);
    log::set_max_level(level);
}

/// A progress bar over `total` rows, drawn on stderr only when it is a terminal and not quiet.
pub fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    let bar = if quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    };
    if let Ok(mut slot) = BAR.lock() {
        *slot = Some(bar.clone());
    }
    bar
}

pub fn finish_progress(bar: &ProgressBar) {
    bar.finish_and_clear();
    if let Ok(mut slot) = BAR.lock() {
        *slot = None;
    }
}
