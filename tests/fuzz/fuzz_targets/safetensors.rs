//! A safetensors file: the header, then every tensor, whole and in pieces.

#![no_main]
#![forbid(unsafe_code)]

use deepembed_checkpoint::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Zip archives and legacy pickles are the torch_zip target's.
    if data.starts_with(b"PK\x03\x04") || data.first() == Some(&0x80) {
        return;
    }
    if let Ok(checkpoint) = Checkpoint::from_bytes("fuzz.safetensors", data.to_vec()) {
        deepembed_fuzz::read_every_tensor(&checkpoint);
    }
});
