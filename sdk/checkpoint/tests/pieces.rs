//! `Checkpoint::read_pieces`: a tensor's elements handed on in pieces, which put together are
//! exactly what reading the tensor whole gives, from every kind of source.

mod common;

use common::*;
use deepembed_checkpoint::{Checkpoint, TensorRef, Value};
use zip::CompressionMethod;

fn floats(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// `_rebuild_tensor_v2(storage(numel floats, key), offset, size, stride, False, OrderedDict())`.
fn tensor_pickle(key: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    let storage =
        [tuple(&[s("storage"), global("torch", "FloatStorage"), s(key), s("cpu"), int(numel)]), vec![b'Q']].concat();
    let ints = |v: &[i64]| tuple(&v.iter().map(|&i| int(i)).collect::<Vec<_>>());
    let hooks = [global("collections", "OrderedDict"), vec![b')', b'R']].concat();
    [
        global("torch._utils", "_rebuild_tensor_v2"),
        tuple(&[storage, int(offset), ints(size), ints(stride), vec![0x89], hooks]),
        vec![b'R'],
    ]
    .concat()
}

/// A dict of named tensors (EMPTY_DICT, MARK, key value ..., SETITEMS).
fn dict_pickle(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let items: Vec<u8> = entries.iter().flat_map(|(name, tensor)| [s(name), tensor.clone()].concat()).collect();
    [vec![0x80, 2, b'}', b'('], items, vec![b'u', b'.']].concat()
}

/// Every tensor of the checkpoint, read whole and read in pieces of `piece` bytes: the pieces
/// must be whole elements, at most `piece` bytes (at least one element), and together the same
/// bytes.
fn check_pieces(ckpt: &Checkpoint, piece: usize) {
    let refs: Vec<(String, TensorRef)> =
        ckpt.state_dict_refs().unwrap().into_iter().map(|(name, t)| (name, t.clone())).collect();
    for (name, t) in refs {
        let whole = ckpt.named_tensor(&name, &t).unwrap().data;
        let mut joined = Vec::new();
        ckpt.read_pieces(&name, &t, piece, |bytes| {
            assert!(bytes.len() % 4 == 0 && bytes.len() <= piece.max(4), "{name}: a piece of {} bytes", bytes.len());
            joined.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap();
        assert_eq!(joined, whole, "{name}, pieces of {piece} bytes");
    }
}

#[test]
fn pieces_of_stored_deflated_viewed_and_shared_storages_are_the_tensors_bytes() {
    let values = floats((0..30).map(|i| i as f32 * 0.5 - 3.0));
    let pkl = dict_pickle(&[
        // All of a stored storage, and all of a deflated one.
        ("stored", tensor_pickle("0", 30, 0, &[5, 6], &[6, 1])),
        ("deflated", tensor_pickle("1", 30, 0, &[30], &[1])),
        // A transposed view with an offset.
        ("view", tensor_pickle("2", 30, 2, &[4, 3], &[1, 4])),
        // Two tensors sharing a storage (read once, then kept).
        ("shared_a", tensor_pickle("3", 30, 0, &[30], &[1])),
        ("shared_b", tensor_pickle("3", 30, 10, &[2, 5], &[5, 1])),
    ]);
    let archive = torch_zip(
        &pkl,
        &[
            ("0", &values, CompressionMethod::Stored),
            ("1", &values, CompressionMethod::Deflated),
            ("2", &values, CompressionMethod::Stored),
            ("3", &values, CompressionMethod::Stored),
        ],
    );
    let ckpt = Checkpoint::from_bytes("pieces.pth", archive).unwrap();
    for piece in [1, 4, 6, 16, 44, 120, 1 << 20] {
        check_pieces(&ckpt, piece);
    }
}

#[test]
fn pieces_of_a_safetensors_file_are_the_tensors_bytes() {
    let header = r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"F32","shape":[],"data_offsets":[24,28]},"c":{"dtype":"F32","shape":[0],"data_offsets":[28,28]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(floats([1.0, -2.0, 3.5, 4.0, 5.25, -6.0, 7.0]));
    let ckpt = Checkpoint::from_bytes("pieces.safetensors", bytes).unwrap();
    assert!(matches!(ckpt.root().get("a"), Some(Value::Tensor(_))));
    for piece in [1, 4, 8, 12, 1 << 20] {
        check_pieces(&ckpt, piece);
    }
}

#[test]
fn a_storage_that_ends_early_or_a_failing_taker_is_an_error_naming_the_file_and_tensor() {
    // A deflated entry that inflates to 4 floats where the header says 8.
    let pkl = dict_pickle(&[("w", tensor_pickle("0", 8, 0, &[8], &[1]))]);
    let mut archive = torch_zip(&pkl, &[("0", &floats([1.0, 2.0, 3.0, 4.0]), CompressionMethod::Deflated)]);
    patch_declared_size(&mut archive, "archive/data/0", 32);
    let ckpt = Checkpoint::from_bytes("short.pth", archive).unwrap();
    let (name, t) = ckpt.state_dict_refs().unwrap().into_iter().next().unwrap();
    let err = ckpt.read_pieces(&name, t, 8, |_| Ok(())).unwrap_err().to_string();
    assert!(err.starts_with("short.pth: ") && err.contains("tensor 'w'"), "{err}");

    let values = floats((0..8).map(|i| i as f32));
    let archive = torch_zip(&pkl, &[("0", &values, CompressionMethod::Stored)]);
    let ckpt = Checkpoint::from_bytes("fine.pth", archive).unwrap();
    let (name, t) = ckpt.state_dict_refs().unwrap().into_iter().next().unwrap();
    let mut calls = 0;
    let err = ckpt
        .read_pieces(&name, t, 8, |_| {
            calls += 1;
            Err(deepembed_checkpoint::Error::Data("the destination is full".into()))
        })
        .unwrap_err()
        .to_string();
    assert_eq!(calls, 1, "reading stops at the first error");
    assert!(err.starts_with("fine.pth: ") && err.contains("tensor 'w'") && err.contains("full"), "{err}");
}

#[test]
fn a_safetensors_header_whose_length_looks_like_a_pickle_opcode_is_read() {
    // Headers of 128 or 640 bytes start with 0x80 0x00 / 0x80 0x02, a pickle's PROTO opcode.
    for len in [128usize, 640] {
        let json = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let header = format!("{json:<len$}");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(floats([2.5]));
        let ckpt = Checkpoint::from_bytes("padded.safetensors", bytes).unwrap_or_else(|e| panic!("{len}: {e}"));
        assert!(matches!(ckpt.root().get("a"), Some(Value::Tensor(_))), "{len}");
    }
}
