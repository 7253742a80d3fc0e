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
        let _ = checkpoint.raw_state_dict();
        // Each tensor again in pieces (as a model's variables are filled): where both reads
        // succeed, the pieces make the same bytes.
        for (name, t) in checkpoint.state_dict_refs().unwrap_or_default() {
            let mut joined = Vec::new();
            let pieces = checkpoint.read_pieces(&name, t, 24, |piece| {
                joined.extend_from_slice(piece);
                Ok(())
            });
            if let (Ok(()), Ok(whole)) = (pieces, checkpoint.named_tensor(&name, t)) {
                assert_eq!(joined, whole.data, "{name}");
            }
        }
    }
});
