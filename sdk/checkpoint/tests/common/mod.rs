//! Builders of hostile inputs: pickle opcodes by hand, torch zip archives with the `zip` crate.
#![allow(dead_code)]

use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

/// BINUNICODE.
pub fn s(text: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend((text.len() as u32).to_le_bytes());
    out.extend(text.as_bytes());
    out
}

/// LONG1 with 8 bytes: any i64.
pub fn int(v: i64) -> Vec<u8> {
    let mut out = vec![0x8a, 8];
    out.extend(v.to_le_bytes());
    out
}

/// GLOBAL.
pub fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

/// MARK, the items, TUPLE.
pub fn tuple(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'('];
    items.iter().for_each(|i| out.extend(i));
    out.push(b't');
    out
}

/// A `numpy.dtype(code)`, without BUILD state.
pub fn numpy_dtype(code: &str) -> Vec<u8> {
    [global("numpy", "dtype"), tuple(&[s(code)]), vec![b'R']].concat()
}

/// `{'name': _rebuild_tensor_v2(storage(numel floats, key '0'), offset, size, stride, False, OrderedDict())}`.
pub fn state_dict_pickle(name: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    let storage =
        [tuple(&[s("storage"), global("torch", "FloatStorage"), s("0"), s("cpu"), int(numel)]), vec![b'Q']].concat();
    let ints = |v: &[i64]| tuple(&v.iter().map(|&i| int(i)).collect::<Vec<_>>());
    let hooks = [global("collections", "OrderedDict"), vec![b')', b'R']].concat();
    let tensor = [
        global("torch._utils", "_rebuild_tensor_v2"),
        tuple(&[storage, int(offset), ints(size), ints(stride), vec![0x89], hooks]),
        vec![b'R'],
    ]
    .concat();
    [vec![0x80, 2, b'}'], s(name), tensor, vec![b's', b'.']].concat()
}

/// A torch zip archive: `archive/data.pkl`, `archive/byteorder` and the storages
/// `archive/data/<key>`, each stored or deflated.
pub fn torch_zip(pkl: &[u8], storages: &[(&str, &[u8], CompressionMethod)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(pkl).unwrap();
    zip.start_file("archive/byteorder", stored).unwrap();
    zip.write_all(b"little").unwrap();
    for (key, data, method) in storages {
        zip.start_file(format!("archive/data/{key}"), SimpleFileOptions::default().compression_method(*method))
            .unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Rewrites the uncompressed size of entry `name` in both its local and central headers.
pub fn patch_declared_size(archive: &mut [u8], name: &str, size: u32) {
    let mut patched = 0;
    for i in 0..archive.len().saturating_sub(46) {
        let (sig, name_at, size_at, len_at) = match &archive[i..i + 4] {
            b"PK\x03\x04" => ("local", 30, 22, 26),
            b"PK\x01\x02" => ("central", 46, 24, 28),
            _ => continue,
        };
        let _ = sig;
        let len = u16::from_le_bytes([archive[i + len_at], archive[i + len_at + 1]]) as usize;
        if archive.get(i + name_at..i + name_at + len) == Some(name.as_bytes()) {
            archive[i + size_at..i + size_at + 4].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
    }
    assert_eq!(patched, 2, "entry {name} should have a local and a central header");
}

/// Runs `f` on a thread with the 2 MiB stack test threads get by default, whatever
/// RUST_MIN_STACK says.
pub fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(2 << 20).spawn(f).unwrap().join().unwrap()
}
