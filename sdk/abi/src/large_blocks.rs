//! Keeping large freed blocks in the process instead of handing them back to the kernel.
//!
//! glibc's allocator serves every request above its mmap threshold (at most 32 MiB) with a
//! fresh `mmap` and returns it with `munmap` when freed. libtorch allocates each CPU tensor
//! with plain `posix_memalign`, and a model's activations at a useful batch size are far above
//! that: ResNet-18 at batch 64 makes several 205 MB tensors per batch. Every batch therefore
//! maps them anew and the kernel zeroes every page on first touch. Measured on 2 cores, a CPU
//! run of ResNet-18 spent 34 of its 120 CPU seconds in the kernel doing exactly that.
//!
//! [`keep_large_blocks`] tells glibc to serve large blocks from its heap and to keep freed
//! memory there (`mallopt`: no mmap for large blocks, trim only beyond 2 GiB of free memory at
//! the top). The next batch reuses the same pages. The cost is resident memory: the process
//! keeps what the batches used once it reached it, instead of mapping it again each time. It
//! stays bounded by the batch size, not by the row count, but where tensor sizes change from
//! batch to batch (text) the heap can hold about three times one batch's working set
//! (docs/BENCHMARKS.md: a GPT-2-sized model, 500-700 MiB more at its peak, 1.14-1.27x faster).
//!
//! What it covers: the main thread's heap, where the pipeline runs the model (the SDK's
//! pipeline embeds on the thread that calls it, the host's main thread). Other threads allocate
//! from heaps of their own of at most 64 MiB, and glibc still maps a block larger than that for
//! them; keep the model on the main thread for this to hold.
//!
//! A user who tunes glibc's allocator through `GLIBC_TUNABLES` keeps their settings: then this
//! does nothing. Other C libraries (musl) and other systems are left as they are.
//!
//! Safety contract: `mallopt` only changes glibc's allocator parameters under its own lock; it
//! is sound at any time from any thread. Called first thing in `main`, before other threads
//! start, the settings apply to every allocation of the run.

/// Sets glibc's allocator to keep large freed blocks (see the module's documentation). Returns
/// whether it did: false on other C libraries, or when the user tunes glibc through
/// `GLIBC_TUNABLES`.
pub fn keep_large_blocks() -> bool {
    if user_tunes_malloc(std::env::var("GLIBC_TUNABLES").ok().as_deref()) {
        return false;
    }
    set()
}

/// Whether `GLIBC_TUNABLES` (its value, if set) sets any of glibc's malloc tunables.
fn user_tunes_malloc(tunables: Option<&str>) -> bool {
    tunables.is_some_and(|t| t.split(':').any(|setting| setting.starts_with("glibc.malloc.")))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set() -> bool {
    use std::ffi::c_int;
    extern "C" {
        /// glibc's `mallopt(3)`: 1 on success, 0 on error.
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    // <malloc.h>'s parameter numbers.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_MAX: c_int = -4;
    // SAFETY: the module's contract; both parameters take any non-negative int.
    unsafe { mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, c_int::MAX) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::user_tunes_malloc;

    #[test]
    fn a_users_malloc_tunables_are_left_alone_and_others_are_not() {
        assert!(!user_tunes_malloc(None));
        assert!(user_tunes_malloc(Some("glibc.malloc.perturb=0")));
        assert!(user_tunes_malloc(Some("glibc.cpu.hwcaps=-AVX512F:glibc.malloc.arena_max=2")));
        assert!(!user_tunes_malloc(Some("glibc.cpu.hwcaps=-AVX512F")));
        assert!(!user_tunes_malloc(Some("")));
    }
}
