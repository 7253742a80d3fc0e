//! What the fuzz targets share.

#![forbid(unsafe_code)]

use deepembed_checkpoint::Checkpoint;

/// Reads every tensor of the checkpoint's state dict whole, and again in pieces (as a model's
/// variables are filled): where both reads succeed, the pieces make the same bytes.
pub fn read_every_tensor(checkpoint: &Checkpoint) {
    let _ = checkpoint.raw_state_dict();
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
