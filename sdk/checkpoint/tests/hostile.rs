//! Hostile inputs, built here byte by byte, end in one-line errors: no stack overflow, no panic,
//! no runaway allocation or time.

mod common;

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use deepembed_checkpoint::{read_pickle_bytes, ArrayData, Checkpoint, Error, Value};
use zip::CompressionMethod;

fn expect_too_deep(name: &str, bytes: Vec<u8>) {
    let result = on_small_stack(move || read_pickle_bytes(&bytes).map(|_| ()));
    match result {
        Err(e @ Error::TooDeep { .. }) => assert!(e.to_string().contains("nests deeper than"), "{name}: {e}"),
        other => panic!("{name}: expected a nesting error, got {other:?}"),
    }
}

#[test]
fn deeply_nested_tuples_end_in_an_error() {
    let depth = 200_000;
    let bytes = [vec![0x80, 2, b'N'], vec![0x85; depth], vec![b'.']].concat();
    expect_too_deep("TUPLE1 chain", bytes);
    let bytes = [vec![0x80, 2], vec![b'('; depth], vec![b'N'], vec![b't'; depth], vec![b'.']].concat();
    expect_too_deep("MARK/TUPLE chain", bytes);
}

#[test]
fn deeply_nested_lists_dicts_and_sets_end_in_an_error() {
    let depth = 200_000;
    let bytes = [vec![0x80, 2], vec![b']'; depth], vec![b'a'; depth - 1], vec![b'.']].concat();
    expect_too_deep("APPEND chain", bytes);
    // {0: {0: {0: ... None}}}: dicts and keys pushed, then SETITEM from the inside out.
    let mut bytes = vec![0x80, 2];
    for _ in 0..depth {
        bytes.extend([b'}', b'K', 0]);
    }
    bytes.push(b'N');
    bytes.extend(vec![b's'; depth]);
    bytes.push(b'.');
    expect_too_deep("SETITEM chain", bytes);
}

#[test]
fn nesting_made_through_shared_references_ends_in_an_error() {
    // L0 = []; then, level by level, L[k].append(L[k+1]) through memo GETs: every list is
    // shallow when it is appended, the chain is deep in the end.
    let depth = 100_000u32;
    let mut bytes = vec![0x80, 4, b']', 0x94, b'0'];
    for k in 0..depth {
        bytes.push(b'j');
        bytes.extend(k.to_le_bytes());
        bytes.extend([b']', 0x94, b'a', b'0']);
    }
    bytes.extend([b'j', 0, 0, 0, 0, b'.']);
    expect_too_deep("memo chain", bytes);
}

#[test]
fn deeply_nested_call_arguments_and_states_end_in_an_error() {
    let depth = 100_000;
    // INST: m.f(m.f(m.f(...)))
    let bytes = [vec![0x80, 2], vec![b'('; depth], vec![b'N'], b"im\nf\n".repeat(depth), vec![b'.']].concat();
    expect_too_deep("INST chain", bytes);
    // BUILD: each object's state is the next object.
    let bytes = [
        vec![0x80, 4],
        global("m", "C"),
        vec![0x94, b'0'],
        [b'h', 0, b')', 0x81].repeat(depth),
        vec![b'b'; depth - 1],
        vec![b'.'],
    ]
    .concat();
    expect_too_deep("BUILD chain", bytes);
    // numpy.core.multiarray.scalar(dtype, (((...)))): a hook's arguments are limited too.
    let bytes = [
        vec![0x80, 2],
        global("numpy.core.multiarray", "scalar"),
        vec![b'('],
        numpy_dtype("f8"),
        vec![b'N'],
        vec![0x85; depth],
        vec![b't', b'R', b'.'],
    ]
    .concat();
    expect_too_deep("hook arguments", bytes);
}

/// A joblib `NumpyArrayWrapper` of an object array: after its BUILD, joblib writes the array as a
/// pickle of its own.
fn joblib_object_wrapper() -> Vec<u8> {
    [
        vec![0x80, 2],
        global("joblib.numpy_pickle", "NumpyArrayWrapper"),
        vec![b')', 0x81, b'}', b'('],
        s("dtype"),
        numpy_dtype("O8"),
        s("shape"),
        vec![b'K', 1, 0x85],
        s("order"),
        s("C"),
        vec![b'u', b'b'],
    ]
    .concat()
}

#[test]
fn nested_joblib_object_arrays_end_in_an_error() {
    // Every wrapper's data is another wrapper, without end.
    expect_too_deep("joblib arrays", joblib_object_wrapper().repeat(10_000));
}

#[test]
fn a_joblib_object_array_still_loads() {
    // The nested pickle: numpy's _reconstruct of a 1-element object array holding 'a'.
    let array = [
        vec![0x80, 2],
        global("numpy.core.multiarray", "_reconstruct"),
        tuple(&[global("numpy", "ndarray"), vec![b'K', 0, 0x85], vec![b'C', 1, b'b']]),
        vec![b'R'],
        tuple(&[
            vec![b'K', 1],
            vec![b'K', 1, 0x85],
            numpy_dtype("O8"),
            vec![0x89],
            [vec![b']'], s("a"), vec![b'a']].concat(),
        ]),
        vec![b'b', b'.'],
    ]
    .concat();
    let bytes = [joblib_object_wrapper(), array, vec![b'.']].concat();
    let value = on_small_stack(move || read_pickle_bytes(&bytes)).unwrap();
    let Value::Array(a) = value else { panic!("{value:?}") };
    assert_eq!(a.shape, [1]);
    assert_eq!(a.data, ArrayData::Objects(vec![Value::Str("a".into())]));
}

#[test]
fn zero_size_dtypes_and_overflowing_shapes_are_errors() {
    // protocol 5's numpy _frombuffer(b'', dtype('V0'), (4,), 'C')
    let frombuffer = |code: &str, shape: Vec<u8>| {
        [
            vec![0x80, 2],
            global("numpy.core.numeric", "_frombuffer"),
            tuple(&[vec![b'C', 0], numpy_dtype(code), shape, s("C")]),
            vec![b'R', b'.'],
        ]
        .concat()
    };
    let err = read_pickle_bytes(&frombuffer("V0", vec![b'K', 4, 0x85])).unwrap_err().to_string();
    assert!(err.contains("item size") && !err.contains('\n'), "{err}");
    let huge = tuple(&[int(1 << 40), int(1 << 40)]);
    let err = read_pickle_bytes(&frombuffer("f8", huge.clone())).unwrap_err().to_string();
    assert!(err.contains("too many elements"), "{err}");
    // joblib wrappers: the data's size is computed before it is read.
    let wrapper = |code: &str, shape: Vec<u8>| {
        [
            vec![0x80, 2],
            global("joblib.numpy_pickle", "NumpyArrayWrapper"),
            vec![b')', 0x81, b'}', b'('],
            s("dtype"),
            numpy_dtype(code),
            s("shape"),
            shape,
            s("order"),
            s("C"),
            vec![b'u', b'b', b'.'],
        ]
        .concat()
    };
    let err = read_pickle_bytes(&wrapper("f0", vec![b'K', 4, 0x85])).unwrap_err().to_string();
    assert!(err.contains("item size"), "{err}");
    let err = read_pickle_bytes(&wrapper("f8", huge)).unwrap_err().to_string();
    assert!(err.contains("too large"), "{err}");
}

fn load_state_dict(name: &str, archive: Vec<u8>) -> Result<Vec<(String, Vec<u8>)>, String> {
    let ckpt = Checkpoint::from_bytes(name, archive).map_err(|e| e.to_string())?;
    let sd = ckpt.raw_state_dict().map_err(|e| e.to_string())?;
    Ok(sd.into_iter().map(|(k, t)| (k, t.data)).collect())
}

fn floats(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

#[test]
fn tensor_views_that_overflow_or_leave_their_storage_are_one_line_errors() {
    let storage = floats((0..12).map(|i| i as f32));
    let cases: [(i64, &[i64], &[i64]); 8] = [
        (i64::MAX, &[2], &[1]),
        (0, &[i64::MAX, 2], &[1, 1]),
        (0, &[1 << 62, 1 << 62], &[1, 1]),
        (0, &[2, 2], &[i64::MAX, 1]),
        (0, &[5], &[3]),
        (-1, &[1], &[1]),
        (0, &[-2], &[1]),
        (3, &[3, 2], &[-1, 1]),
    ];
    for (offset, size, stride) in cases {
        let pkl = state_dict_pickle("w", 12, offset, size, stride);
        let archive = torch_zip(&pkl, &[("0", &storage, CompressionMethod::Stored)]);
        let err = load_state_dict("hostile.pth", archive).expect_err("should fail");
        assert!(err.starts_with("hostile.pth: ") && err.contains("tensor 'w'"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
    // A transposed view still reads right.
    let pkl = state_dict_pickle("w", 12, 1, &[2, 3], &[1, 4]);
    let archive = torch_zip(&pkl, &[("0", &storage, CompressionMethod::Stored)]);
    let sd = load_state_dict("ok.pth", archive).unwrap();
    assert_eq!(sd[0].1, floats([1., 5., 9., 2., 6., 10.]));
}

/// A reader that counts the bytes read through it.
struct Counting {
    inner: Cursor<Vec<u8>>,
    read: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Seek for Counting {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn storages_are_read_only_as_far_as_their_tensors_need() {
    // A 64 MiB storage of which the one tensor uses the first 4 elements.
    let numel = 16 << 20;
    let mut storage = vec![0u8; numel * 4];
    storage[..16].copy_from_slice(&floats([1., 2., 3., 4.]));
    let pkl = state_dict_pickle("w", numel as i64, 0, &[4], &[1]);
    let archive = torch_zip(&pkl, &[("0", &storage, CompressionMethod::Stored)]);
    let read = Arc::new(AtomicU64::new(0));
    let ckpt =
        Checkpoint::open_reader("big.pth", Counting { inner: Cursor::new(archive), read: read.clone() }).unwrap();
    let sd = ckpt.raw_state_dict().unwrap();
    assert_eq!(sd["w"].data, floats([1., 2., 3., 4.]));
    let read = read.load(Ordering::Relaxed);
    assert!(read < 1 << 20, "read {read} bytes of a {} byte archive", storage.len());
}

#[test]
fn a_storage_entry_larger_than_declared_is_refused_before_it_is_inflated() {
    // 32 MiB of zeros, deflated to a few tens of kilobytes, for a storage of 4 floats.
    let zeros = vec![0u8; 32 << 20];
    let pkl = state_dict_pickle("w", 4, 0, &[4], &[1]);
    let archive = torch_zip(&pkl, &[("0", &zeros, CompressionMethod::Deflated)]);
    let start = Instant::now();
    let err = load_state_dict("bomb.pth", archive).unwrap_err();
    assert!(err.contains("holds 33554432 bytes, but the pickle declares 4"), "{err}");
    assert!(err.starts_with("bomb.pth: "), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_deflated_storage_is_inflated_only_as_far_as_needed() {
    let numel = 8 << 20;
    let mut storage = vec![0u8; numel * 4];
    storage[..8].copy_from_slice(&floats([7., 8.]));
    let pkl = state_dict_pickle("w", numel as i64, 0, &[2], &[1]);
    let archive = torch_zip(&pkl, &[("0", &storage, CompressionMethod::Deflated)]);
    assert_eq!(load_state_dict("deflated.pth", archive).unwrap(), [("w".to_string(), floats([7., 8.]))]);
}

#[test]
fn declared_sizes_that_disagree_with_the_archive_are_refused() {
    let storage = floats([1., 2., 3., 4.]);
    // data.pkl declaring 4 GiB: refused by its declared size, nothing inflated.
    let pkl = state_dict_pickle("w", 4, 0, &[4], &[1]);
    let mut archive = torch_zip(&pkl, &[("0", &storage, CompressionMethod::Stored)]);
    patch_declared_size(&mut archive, "archive/data.pkl", u32::MAX);
    let err = load_state_dict("big-pickle.pth", archive).unwrap_err();
    assert!(err.starts_with("big-pickle.pth: ") && err.contains("data.pkl"), "{err}");
    // A stored storage entry whose declared size (matching the pickle's 2^29 floats) is not
    // what it occupies.
    let pkl = state_dict_pickle("w", 1 << 29, 0, &[4], &[1]);
    let mut archive = torch_zip(&pkl, &[("0", &storage, CompressionMethod::Stored)]);
    patch_declared_size(&mut archive, "archive/data/0", 1 << 31);
    let err = load_state_dict("lying.pth", archive).unwrap_err();
    assert!(err.starts_with("lying.pth: ") && err.contains("storage '0'"), "{err}");
    // A storage entry that is missing.
    let archive = torch_zip(&state_dict_pickle("w", 4, 0, &[4], &[1]), &[]);
    let err = load_state_dict("missing.pth", archive).unwrap_err();
    assert!(err.contains("missing from the archive"), "{err}");
}

#[test]
fn ten_thousand_safetensors_tensors_load_quickly() {
    let n = 10_000;
    let header: Vec<String> = (0..n)
        .map(|i| format!("\"t{i:05}\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[{},{}]}}", 4 * i, 4 * i + 4))
        .collect();
    let header = format!("{{{}}}", header.join(","));
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(floats((0..n).map(|i| i as f32)));
    let start = Instant::now();
    let ckpt = Checkpoint::from_bytes("many.safetensors", bytes).unwrap();
    let sd = ckpt.raw_state_dict().unwrap();
    assert_eq!(sd.len(), n);
    assert_eq!(sd["t09999"].data, 9999f32.to_le_bytes());
    assert_eq!(sd["t00000"].shape, [1]);
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

/// A safetensors file: the header's length, the header, the data.
fn safetensors_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    bytes
}

/// Tensors are read from the file when asked for, so a header that does not fit the file is
/// refused at opening, before anything the size of the data is allocated.
#[test]
fn safetensors_headers_that_do_not_fit_the_file_are_refused_at_opening() {
    let header = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let data = floats([1.0, 2.0, 3.0, 4.0]);
    let whole = Checkpoint::from_bytes("ok.safetensors", safetensors_file(header, &data)).unwrap();
    let sd = whole.raw_state_dict().unwrap();
    assert_eq!((sd["w"].shape.clone(), sd["w"].data.clone()), (vec![2, 2], data.clone()));

    let error = |name: &str, bytes: Vec<u8>| Checkpoint::from_bytes(name, bytes).err().expect(name).to_string();
    let short = error("short.safetensors", safetensors_file(header, &data[..12]));
    assert!(
        short.contains("short.safetensors") && short.contains("describes 16 bytes of data, but 12 follow"),
        "{short}"
    );
    let long = error("long.safetensors", safetensors_file(header, &[&data[..], &[0; 4]].concat()));
    assert!(long.contains("describes 16 bytes of data, but 20 follow"), "{long}");
    // A length beyond the file, and one beyond any header: neither is allocated.
    let mut beyond = safetensors_file(header, &data);
    beyond[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
    let beyond = error("beyond.safetensors", beyond);
    assert!(beyond.contains("header claims 1000000 bytes; the file holds"), "{beyond}");
    let mut huge = safetensors_file(header, &data);
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let huge = error("huge.safetensors", huge);
    assert!(huge.contains("over the limit"), "{huge}");
    // Offsets with a gap between tensors.
    let gap = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let gap = error("gap.safetensors", safetensors_file(gap, &[0; 12]));
    assert!(gap.contains("not a safetensors file"), "{gap}");
}
