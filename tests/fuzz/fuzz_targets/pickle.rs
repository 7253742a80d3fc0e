//! The pickle interpreter with the torch, numpy and joblib hooks, on any bytes.

#![no_main]
#![forbid(unsafe_code)]

use deepembed_checkpoint::{pickle, DefaultReducers, NoPersistentLoad};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pickle::load(data, &mut NoPersistentLoad, &DefaultReducers);
});
