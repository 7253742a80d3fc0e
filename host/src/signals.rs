//! SIGINT and SIGTERM: a run interrupted by the user or the scheduler (Slurm sends SIGTERM
//! before it kills a job) leaves no `.partial` file and no half-made run directory behind.
//!
//! The run registers its directory once it exists ([`guard`]) and clears it when the run is
//! over ([`release`]). The handler, on its own thread, removes the registered directory while
//! holding the lock, so a run cannot finish or start a directory meanwhile, then exits.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static RUN_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Installs the handler. Without it the default action kills the process where it stands.
pub fn install() {
    let installed = ctrlc::set_handler(|| {
        let guard = RUN_DIR.lock();
        if let Ok(dir) = &guard {
            if let Some(dir) = dir.as_ref() {
                let _ = std::fs::remove_dir_all(dir);
                eprintln!("\ninterrupted: removed the unfinished {}", dir.display());
            }
        }
        // 128 + SIGINT, as a shell reports an interrupted command.
        std::process::exit(130);
    });
    if let Err(e) = installed {
        log::debug!("no signal handler: {e}");
    }
}

/// Marks `dir` as the unfinished output of the current run.
pub fn guard(dir: &Path) {
    if let Ok(mut slot) = RUN_DIR.lock() {
        *slot = Some(dir.to_path_buf());
    }
}

/// The run is over (complete, or cleaned up after a failure).
pub fn release() {
    if let Ok(mut slot) = RUN_DIR.lock() {
        *slot = None;
    }
}
