//! Tensors pickled inside a fitted estimator: `torch._utils._rebuild_tensor_v2(storage, offset,
//! size, stride, ...)` where the storage is `torch.storage._load_from_bytes(b)`, and `b` is
//! torch's legacy (pre-1.6, non-zip) `torch.save` of that one storage. The SDK's checkpoint
//! reader leaves such tensors as inert objects; this reads them, as data.
//!
//! The legacy format is five pickles and then the raw storages (torch/serialization.py
//! `_legacy_save`): a magic number, the protocol version 1001, a sys-info dict, the saved
//! object (here the storage, as the persistent id `('storage', <class FloatStorage>, key,
//! location, numel, None)`), the list of storage keys; then per key a little-endian i64 element
//! count and the elements. The pickles are read by the SDK's inert interpreter: the bytes are
//! wrapped in a small outer pickle whose BUILD hook reads them one after another (the way joblib's
//! arrays are read), so no pickle parsing is duplicated here.

use anyhow::{anyhow, bail, Context, Result};
use deepembed_sdk::checkpoint::pickle::{self, Call, ClassName, PersistentLoad, Reducers};
use deepembed_sdk::checkpoint::{to_tensor, DType, Error, Object, RawTensor, Value};
use tch::Tensor;

/// The legacy format's magic number, 0x1950a86a20f9469cfc6c, as pickle's little-endian bytes.
pub const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL_VERSION: i64 = 1001;

/// The outer pickle's class: its BUILD reads the legacy bytes that follow it.
const WRAPPER_MODULE: &str = "deepembed.tabpfn";
const WRAPPER_NAME: &str = "legacy_storage";

/// One storage: its element type and bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    pub dtype: DType,
    pub data: Vec<u8>,
}

impl Storage {
    pub fn numel(&self) -> usize {
        self.data.len() / self.dtype.size()
    }
}

/// Reads the bytes `torch.storage._load_from_bytes` was given.
pub fn read_storage(bytes: &[u8]) -> Result<Storage> {
    let mut stream = Vec::with_capacity(bytes.len() + 64);
    // PROTO 2, GLOBAL, EMPTY_TUPLE, NEWOBJ, EMPTY_DICT, BUILD: the hook runs at BUILD.
    stream.extend_from_slice(b"\x80\x02c");
    stream.extend_from_slice(format!("{WRAPPER_MODULE}\n{WRAPPER_NAME}\n").as_bytes());
    stream.extend_from_slice(b")\x81}b");
    let payload_start = stream.len();
    stream.extend_from_slice(bytes);
    stream.push(b'.');
    let hook = LegacyHook { payload_end: payload_start + bytes.len() };
    let value = pickle::load(&stream, &mut LegacyPersistentLoad, &hook).map_err(|e| anyhow!("{e}"))?;
    let Value::Tuple(parts) = value else { bail!("the legacy storage did not decode to a storage") };
    match parts.as_slice() {
        [Value::Str(class), Value::Bytes(data)] => {
            let dtype =
                DType::from_storage_class(class).ok_or_else(|| anyhow!("storage type {class} is not supported"))?;
            Ok(Storage { dtype, data: data.clone() })
        }
        _ => bail!("the legacy storage did not decode to a storage"),
    }
}

/// A `_rebuild_tensor_v2(_load_from_bytes(b), offset, size, stride, ...)` call, as a CPU tensor
/// of the saved dtype holding a copy of the view's elements.
pub fn rebuild_tensor(call: &Object) -> Result<Tensor> {
    if call.module != "torch._utils" || !matches!(call.name.as_str(), "_rebuild_tensor_v2" | "_rebuild_tensor") {
        bail!("is a {}.{} call, not a pickled tensor", call.module, call.name);
    }
    let storage = match call.args.first() {
        Some(Value::Object(o)) if o.module == "torch.storage" && o.name == "_load_from_bytes" => {
            match o.args.as_slice() {
                [Value::Bytes(b)] => read_storage(b).context("its storage")?,
                _ => bail!("its storage is a _load_from_bytes call without bytes"),
            }
        }
        Some(other) => bail!("its storage is a {}, not torch.storage._load_from_bytes", other.type_name()),
        None => bail!("the tensor rebuild call has no arguments"),
    };
    let offset =
        call.args.get(1).and_then(Value::as_i64).ok_or_else(|| anyhow!("its storage offset is not an integer"))?;
    let ints = |i: usize, what: &str| -> Result<Vec<i64>> {
        match call.args.get(i) {
            Some(Value::Tuple(items) | Value::List(items)) => {
                items.iter().map(|v| v.as_i64().ok_or_else(|| anyhow!("its {what} holds a non-integer"))).collect()
            }
            _ => bail!("its {what} is not a tuple"),
        }
    };
    let (size, stride) = (ints(2, "size")?, ints(3, "stride")?);
    check_view(offset, &size, &stride, storage.numel())?;
    let flat = RawTensor { dtype: storage.dtype, shape: vec![storage.numel() as i64], data: storage.data };
    let tensor = to_tensor(&flat)?;
    Ok(tensor.f_as_strided(&size, &stride, Some(offset))?.f_contiguous()?)
}

/// Checks that a view lies inside a storage of `numel` elements: sizes, strides and offset
/// non-negative, and its last element (computed without overflow) inside.
fn check_view(offset: i64, size: &[i64], stride: &[i64], numel: usize) -> Result<()> {
    let describe = || format!("(offset {offset}, size {size:?}, stride {stride:?})");
    if size.len() != stride.len() {
        bail!("its view {} has {} sizes but {} strides", describe(), size.len(), stride.len());
    }
    if offset < 0 || size.iter().chain(stride).any(|&v| v < 0) {
        bail!("its view {} has a negative value", describe());
    }
    if size.contains(&0) {
        return Ok(());
    }
    let mut last = offset as u64;
    for (&n, &s) in size.iter().zip(stride) {
        last = (n as u64 - 1)
            .checked_mul(s as u64)
            .and_then(|x| x.checked_add(last))
            .ok_or_else(|| anyhow!("its view {} overflows", describe()))?;
    }
    let elements = size.iter().try_fold(1u64, |acc, &n| acc.checked_mul(n as u64));
    if last >= numel as u64 || elements.is_none_or(|e| i64::try_from(e).is_err()) {
        bail!("its view {} reaches outside its storage of {numel} elements", describe());
    }
    Ok(())
}

/// The legacy format's persistent ids: `('storage', storage_type, key, location, numel,
/// view_metadata)`, made a tuple `(class name, key, numel)`.
struct LegacyPersistentLoad;

impl PersistentLoad for LegacyPersistentLoad {
    fn load(&mut self, pid: Value) -> Result<Value, Error> {
        let bad = |msg: &str| Error::Data(format!("legacy storage reference {msg}"));
        let Value::Tuple(items) = pid else { return Err(bad("is not a tuple")) };
        match items.as_slice() {
            [Value::Str(tag), Value::Global { name, .. }, Value::Str(key), Value::Str(_location), numel, view]
                if tag == "storage" =>
            {
                if !matches!(view, Value::None) {
                    return Err(bad("is a view of another storage, which a lone storage never is"));
                }
                let numel = numel.as_i64().filter(|n| *n >= 0).ok_or_else(|| bad("has no element count"))?;
                Ok(Value::Tuple(vec![Value::Str(name.clone()), Value::Str(key.clone()), Value::Int(numel)]))
            }
            _ => Err(bad("is not ('storage', type, key, location, numel, view)")),
        }
    }
}

/// Reads the legacy pickles and the storage bytes at the wrapper's BUILD.
struct LegacyHook {
    /// Where the legacy bytes end in the wrapped stream: all of them must be used.
    payload_end: usize,
}

impl Reducers for LegacyHook {
    fn build(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value, Error>> {
        if class.module != WRAPPER_MODULE || class.name != WRAPPER_NAME {
            return None;
        }
        Some(self.read(call))
    }
}

impl LegacyHook {
    fn read(&self, call: &mut Call<'_, '_>) -> Result<Value, Error> {
        let bad = |msg: String| Error::Data(format!("legacy torch storage: {msg}"));
        match call.load_nested()? {
            Value::BigInt(magic) if magic == MAGIC => {}
            _ => return Err(bad("does not start with torch's legacy magic number".into())),
        }
        match call.load_nested()? {
            Value::Int(PROTOCOL_VERSION) => {}
            other => return Err(bad(format!("protocol version is {other:?}, not {PROTOCOL_VERSION}"))),
        }
        let sys_info = call.load_nested()?;
        if !matches!(sys_info.get("little_endian"), Some(Value::Bool(true))) {
            return Err(bad("was saved on a big-endian machine (or says nothing of it)".into()));
        }
        let (class, key, numel) = match call.load_nested()? {
            Value::Tuple(t) => match t.as_slice() {
                [Value::Str(class), Value::Str(key), Value::Int(numel)] => (class.clone(), key.clone(), *numel),
                _ => return Err(bad("its object is not a storage".into())),
            },
            other => return Err(bad(format!("its object is a {}, not a storage", other.type_name()))),
        };
        let dtype =
            DType::from_storage_class(&class).ok_or_else(|| bad(format!("storage type {class} is not supported")))?;
        let keys = match call.load_nested()? {
            Value::List(keys) => keys,
            other => return Err(bad(format!("its key list is a {}", other.type_name()))),
        };
        if keys != [Value::Str(key.clone())] {
            return Err(bad(format!("holds {} storages; a pickled storage holds its own only", keys.len())));
        }
        let count = i64::from_le_bytes(call.read(8)?.try_into().map_err(|_| bad("is cut short".into()))?);
        if count != numel {
            return Err(bad(format!("storage {key} holds {count} elements but its reference says {numel}")));
        }
        let bytes = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| bad(format!("storage {key} is too large")))?;
        let data = call.read(bytes)?.to_vec();
        if call.offset() != self.payload_end {
            return Err(bad(format!("{} bytes follow its storage", self.payload_end.saturating_sub(call.offset()))));
        }
        Ok(Value::Tuple(vec![Value::Str(class), Value::Bytes(data)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy payload as torch writes it (pickle protocol 2), built opcode by opcode.
    fn payload(class: &str, key: &str, values: &[f32], declared: i64, trailing: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        // 1. magic: LONG1 of 10 bytes
        b.extend_from_slice(b"\x80\x02\x8a\x0a");
        b.extend_from_slice(&MAGIC);
        b.push(b'.');
        // 2. protocol: BININT2 1001
        b.extend_from_slice(b"\x80\x02M\xe9\x03.");
        // 3. sys_info: {'little_endian': True}
        b.extend_from_slice(b"\x80\x02}X");
        b.extend_from_slice(&13u32.to_le_bytes());
        b.extend_from_slice(b"little_endian\x88s.");
        // 4. the storage: BINPERSID of ('storage', GLOBAL torch <class>, key, 'cpu', numel, None)
        b.extend_from_slice(b"\x80\x02(X");
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(b"storagec");
        b.extend_from_slice(format!("torch\n{class}\n").as_bytes());
        for s in [key, "cpu"] {
            b.push(b'X');
            b.extend_from_slice(&(s.len() as u32).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        b.push(b'J');
        b.extend_from_slice(&(declared as i32).to_le_bytes());
        b.extend_from_slice(b"NtQ.");
        // 5. keys: [key]
        b.extend_from_slice(b"\x80\x02]X");
        b.extend_from_slice(&(key.len() as u32).to_le_bytes());
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(b"a.");
        b.extend_from_slice(&(values.len() as i64).to_le_bytes());
        for v in values {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(trailing);
        b
    }

    fn rebuild(bytes: Vec<u8>, offset: i64, size: &[i64], stride: &[i64]) -> Object {
        let storage = Value::Object(Box::new(Object {
            module: "torch.storage".into(),
            name: "_load_from_bytes".into(),
            args: vec![Value::Bytes(bytes)],
            state: None,
            list_items: vec![],
            dict_items: vec![],
        }));
        let tuple = |v: &[i64]| Value::Tuple(v.iter().map(|&i| Value::Int(i)).collect());
        Object {
            module: "torch._utils".into(),
            name: "_rebuild_tensor_v2".into(),
            args: vec![
                storage,
                Value::Int(offset),
                tuple(size),
                tuple(stride),
                Value::Bool(false),
                Value::Dict(vec![]),
            ],
            state: None,
            list_items: vec![],
            dict_items: vec![],
        }
    }

    #[test]
    fn a_storage_reads_back_its_elements() {
        let values = [1.5f32, -2.0, 3.25];
        let s = read_storage(&payload("FloatStorage", "94832101018960", &values, 3, b"")).unwrap();
        assert_eq!(s.dtype, DType::F32);
        assert_eq!(s.numel(), 3);
        assert_eq!(s.data, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
        let empty = read_storage(&payload("FloatStorage", "1", &[], 0, b"")).unwrap();
        assert_eq!(empty.numel(), 0);
    }

    #[test]
    fn inconsistent_payloads_are_refused() {
        let values = [1.0f32, 2.0];
        let cases = [
            (payload("FloatStorage", "k", &values, 3, b""), "reference says 3"),
            (payload("FloatStorage", "k", &values, 2, b"xx"), "2 bytes follow"),
            (payload("ComplexStorage", "k", &values, 2, b""), "ComplexStorage is not supported"),
        ];
        for (bytes, expected) in cases {
            let err = read_storage(&bytes).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let mut bad_magic = payload("FloatStorage", "k", &values, 2, b"");
        bad_magic[4] ^= 1;
        assert!(read_storage(&bad_magic).unwrap_err().to_string().contains("magic"));
        // Cut short inside the elements.
        let full = payload("FloatStorage", "k", &values, 2, b"");
        assert!(read_storage(&full[..full.len() - 1]).is_err());
    }

    #[test]
    fn views_are_copied_out_in_c_order() {
        // A 2x3 matrix 0..6 stored from element 1; its transpose as a (3, 2) view.
        let values: Vec<f32> = (0..7).map(|v| v as f32 - 1.0).collect();
        let bytes = payload("FloatStorage", "k", &values, 7, b"");
        let t = rebuild_tensor(&rebuild(bytes.clone(), 1, &[3, 2], &[1, 3])).unwrap();
        assert_eq!(t.size(), [3, 2]);
        assert_eq!(Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        for (offset, size, stride) in [(2, vec![3, 2], vec![1, 3]), (-1, vec![1], vec![1]), (0, vec![8], vec![1])] {
            let err = rebuild_tensor(&rebuild(bytes.clone(), offset, &size, &stride)).unwrap_err().to_string();
            assert!(err.contains("view"), "{err}");
        }
        assert_eq!(rebuild_tensor(&rebuild(bytes, 0, &[0, 4], &[4, 1])).unwrap().size(), [0, 4]);
    }
}
