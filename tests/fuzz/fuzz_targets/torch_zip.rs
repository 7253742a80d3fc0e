//! A torch.save zip archive (.pth, Lightning .ckpt): the pickle, then every tensor it names, whole
//! and in pieces.

#![no_main]
#![forbid(unsafe_code)]

use deepembed_checkpoint::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Inputs that are not zip archives are the safetensors target's.
    if !data.starts_with(b"PK\x03\x04") {
        return;
    }
    if let Ok(checkpoint) = Checkpoint::from_bytes("fuzz.pth", data.to_vec()) {
        deepembed_fuzz::read_every_tensor(&checkpoint);
    }
});
