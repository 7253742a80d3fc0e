//! Links the host to libtorch.
//!
//! - The libtorch directory goes into the binary's run path, so `deepembed` runs without
//!   LD_LIBRARY_PATH. LD_LIBRARY_PATH still wins (RUNPATH semantics), which is how another
//!   machine's own torch is used instead.
//! - `libtorch_cuda.so`, when this libtorch has it, is linked even though no symbol of it is
//!   referenced: the linker's default `--as-needed` would drop it, and without it loaded libtorch
//!   reports no CUDA device. Linked by the executable, it is loaded before any plugin, in the
//!   global scope that every plugin's libtorch calls see.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{lib}");
        if Path::new(&lib).join("libtorch_cuda.so").is_file() {
            println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed,-L{lib},-ltorch_cuda,--as-needed");
        }
    }
}
