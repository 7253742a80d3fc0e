//! Bakes the libtorch directory into the binary's run path, so `deepembed` runs without
//! LD_LIBRARY_PATH. LD_LIBRARY_PATH still wins (RUNPATH semantics), which is how another
//! machine's own torch is used instead.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{lib}");
    }
}
