//! SIGINT and SIGTERM: a run interrupted by the user or the scheduler (Slurm sends SIGTERM
//! before it kills a job) leaves no `.partial` file and no half-made run directory behind, except
//! a resumable run's committed pieces, which stay for `--resume` ([`keep_on_interrupt`]).
//!
//! The handler (on its own thread) raises a flag that the plugin sees through the boundary's
//! `cancelled` callback. While a run is writing, the SDK's pipeline stops at the next window,
//! the host removes the run directory as after any failure, and `main` exits with 130; exiting
//! from under a running model instead would run libtorch's static destructors beneath it. A
//! plugin that does not stop within a few seconds is not waited for, and before a run writes
//! anything there is nothing to wait for: the handler removes what is registered itself, under
//! the lock that keeps a run directory from appearing or finishing meanwhile, and exits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static RUN_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Whether the registered directory holds committed work that an interrupt must not remove.
static KEEP: AtomicBool = AtomicBool::new(false);

/// How long a run may take to stop by itself.
const GRACE: Duration = Duration::from_secs(5);

/// The exit status of an interrupted run: 128 + SIGINT, as a shell reports it.
pub const EXIT_STATUS: u8 = 130;

/// Installs the handler. Without it the default action kills the process where it stands.
pub fn install() {
    let installed = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            return;
        }
        let writing = |slot: &Mutex<Option<PathBuf>>| slot.lock().map(|dir| dir.is_some()).unwrap_or(false);
        if writing(&RUN_DIR) {
            let asked = Instant::now();
            while asked.elapsed() < GRACE {
                if !writing(&RUN_DIR) {
                    // The run stopped and cleaned up after itself: main exits.
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Nothing written yet, or a run that does not stop: holding the lock, no run directory
        // can appear or be finished while this one is removed and the process exits.
        let guard = RUN_DIR.lock();
        if let Ok(Some(dir)) = guard.as_deref() {
            if KEEP.load(Ordering::SeqCst) {
                eprintln!("\ninterrupted: the committed part of {} is kept; continue it with --resume", dir.display());
            } else {
                let _ = std::fs::remove_dir_all(dir);
                eprintln!("\ninterrupted: removed the unfinished {}", dir.display());
            }
        }
        std::process::exit(i32::from(EXIT_STATUS));
    });
    if let Err(e) = installed {
        log::debug!("no signal handler: {e}");
    }
}

/// Whether SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Marks `dir` as the unfinished output of the current run, removed on an interrupt unless it
/// holds committed work (`keep`).
pub fn guard(dir: &Path, keep: bool) {
    if let Ok(mut slot) = RUN_DIR.lock() {
        KEEP.store(keep, Ordering::SeqCst);
        *slot = Some(dir.to_path_buf());
    }
}

/// The run directory now holds committed pieces: an interrupt leaves it for `--resume`.
pub fn keep_on_interrupt() {
    KEEP.store(true, Ordering::SeqCst);
}

/// The run is over (complete, or cleaned up after a failure).
pub fn release() {
    if let Ok(mut slot) = RUN_DIR.lock() {
        *slot = None;
    }
}
