//! Ending the process without the teardown of the C++ libraries it loaded.
//!
//! Returning from `main` runs libtorch's static destructors: they deregister each of its
//! thousands of operators one by one (about 0.1 s on the 2-core machine, a sixth of a small
//! run's start-up and loading; a CUDA run also tears down its device context). None of that
//! teardown leaves anything behind that outlives the process. Once every output is written,
//! closed and reported, the host ends the process at once instead.
//!
//! Safety contract: `_exit` ends the process immediately, skipping `atexit` handlers and C++
//! static destructors, and leaving other threads where they are. Nothing in Rust's memory model
//! can be violated by a process that no longer runs; what the caller must guarantee is that no
//! work remains: files written and closed (data the kernel holds is kept, as after any exit),
//! threads that write finished, stdout and stderr flushed (done here).

use std::io::Write;

extern "C" {
    /// POSIX `_exit`, from the C library every Rust program on Linux links.
    fn _exit(status: i32) -> !;
}

/// Flushes stdout and stderr, then ends the process with `status`, skipping the C++ static
/// destructors of loaded libraries. Call it only once all the run's output is written and
/// closed (see the module's contract).
pub fn exit_without_teardown(status: u8) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: the module's contract; `_exit` takes any status and does not return.
    unsafe { _exit(i32::from(status)) }
}
