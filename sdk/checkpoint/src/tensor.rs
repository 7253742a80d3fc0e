//! Tensors as plain data: [`DType`], [`RawTensor`], the torch pickle hooks and the checked copy
//! of a tensor's elements out of its storage.

use crate::error::{Error, Result};
use crate::pickle::{Call, ClassName, PersistentLoad, Reducers, StorageRef, TensorRef, Value};

/// The element types this crate reads (torch storage classes and safetensors dtypes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The dtype of a torch storage class (`FloatStorage` and friends).
    pub fn from_storage_class(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    /// The torch storage class of this dtype.
    pub fn storage_class(self) -> &'static str {
        match self {
            DType::F32 => "FloatStorage",
            DType::F64 => "DoubleStorage",
            DType::F16 => "HalfStorage",
            DType::BF16 => "BFloat16Storage",
            DType::I64 => "LongStorage",
            DType::I32 => "IntStorage",
            DType::I16 => "ShortStorage",
            DType::I8 => "CharStorage",
            DType::U8 => "ByteStorage",
            DType::Bool => "BoolStorage",
        }
    }

    pub(crate) fn from_safetensors(dtype: safetensors::Dtype) -> Option<DType> {
        use safetensors::Dtype::*;
        Some(match dtype {
            F32 => DType::F32,
            F64 => DType::F64,
            F16 => DType::F16,
            BF16 => DType::BF16,
            I64 => DType::I64,
            I32 => DType::I32,
            I16 => DType::I16,
            I8 => DType::I8,
            U8 => DType::U8,
            BOOL => DType::Bool,
            _ => return None,
        })
    }
}

/// A tensor read from a file, as plain data: its dtype, its shape (`[]` for a scalar) and its
/// elements in C (row-major) order, contiguous, little-endian, `numel * dtype.size()` bytes.
/// It owns its bytes: a copy, never a view of the file or of another tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTensor {
    pub dtype: DType,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

impl RawTensor {
    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.data.len() / self.dtype.size()
    }
}

/// The torch hooks: `_rebuild_tensor_v2` / `_rebuild_tensor` on a storage become
/// [`Value::Tensor`]; `_rebuild_parameter` and `Parameter` are their tensor. Tensors whose storage
/// is not a zip entry (a nested legacy `torch.storage._load_from_bytes`) stay inert objects.
pub struct TorchReducers;

impl Reducers for TorchReducers {
    fn reduce(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
        let module = class.module.as_str();
        match (module, class.name.as_str()) {
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => match call.args() {
                Ok(args) if matches!(args.first(), Some(Value::Storage(_))) => Some(rebuild_tensor(&args)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            },
            // A Parameter is its tensor for our purposes.
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")
            | ("torch.nn.parameter", "Parameter") => {
                Some(call.arg(0).and_then(|data| data.ok_or_else(|| Error::data(format!("{class} without data")))))
            }
            _ => None,
        }
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, ...)`
fn rebuild_tensor(args: &[Value]) -> Result<Value> {
    let arg =
        |i: usize| args.get(i).ok_or_else(|| Error::data(format!("tensor rebuild call has {} arguments", args.len())));
    let Value::Storage(storage) = arg(0)? else { unreachable!("checked by the caller") };
    let offset = arg(1)?.as_i64().ok_or_else(|| Error::data("tensor storage offset is not an integer"))?;
    let ints = |v: &Value| -> Result<Vec<i64>> {
        match v {
            Value::Tuple(items) | Value::List(items) => items
                .iter()
                .map(|i| i.as_i64().ok_or_else(|| Error::data("tensor size or stride holds a non-integer")))
                .collect(),
            other => Err(Error::data(format!("tensor size or stride is a {}, not a tuple", other.type_name()))),
        }
    };
    let size = ints(arg(2)?)?;
    let stride = ints(arg(3)?)?;
    if size.len() != stride.len() {
        return Err(Error::data(format!("tensor has {} sizes but {} strides", size.len(), stride.len())));
    }
    Ok(Value::Tensor(Box::new(TensorRef { storage: storage.clone(), offset, size, stride })))
}

/// The torch format's persistent ids: `('storage', storage_type, key, location, numel)`.
pub(crate) struct TorchPersistentLoad;

impl PersistentLoad for TorchPersistentLoad {
    fn load(&mut self, pid: Value) -> Result<Value> {
        let Value::Tuple(items) = pid else {
            return Err(Error::data(format!("unexpected persistent id, a {}", pid.type_name())));
        };
        match items.as_slice() {
            [Value::Str(tag), Value::Global { name, .. }, key, Value::Str(location), numel] if tag == "storage" => {
                let key = match key {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => return Err(Error::data(format!("storage key is a {}, not a string", other.type_name()))),
                };
                let numel = numel
                    .as_i64()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| Error::Storage { key: key.clone(), msg: "element count is not a size".into() })?;
                Ok(Value::Storage(StorageRef { key, dtype: name.clone(), location: location.clone(), numel }))
            }
            _ => Err(Error::data(format!("unexpected persistent id, a tuple of {} items", items.len()))),
        }
    }
}

/// A tensor view, checked against its storage: every size, stride and the offset are
/// non-negative, the element count and every offset computed from them fit, and the last
/// element lies inside the storage.
pub(crate) struct CheckedView {
    pub dtype: DType,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
    pub numel: usize,
    /// Bytes of storage the view needs: up to and including its last element.
    pub needed_bytes: usize,
}

/// The most bytes a view may expand to beyond its storage's size (a stride-0 `expand` saved as
/// is): copying makes them real.
pub const MAX_EXPANDED_VIEW_BYTES: usize = 256 << 20;

impl CheckedView {
    /// Checks `t` against a storage of `storage_numel` elements. The error message is one line
    /// (the caller adds the file and tensor names).
    pub fn new(t: &TensorRef, storage_numel: u64) -> Result<CheckedView, String> {
        let dtype = DType::from_storage_class(&t.storage.dtype)
            .ok_or_else(|| format!("tensor storage type {} is not supported", t.storage.dtype))?;
        let describe = || format!("(offset {}, size {:?}, stride {:?})", t.offset, t.size, t.stride);
        if t.size.len() != t.stride.len() {
            return Err(format!("has {} sizes but {} strides", t.size.len(), t.stride.len()));
        }
        let offset = usize::try_from(t.offset).map_err(|_| format!("has a negative storage offset {}", describe()))?;
        let size: Vec<usize> = t
            .size
            .iter()
            .map(|&n| usize::try_from(n))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("has a negative size {}", describe()))?;
        let stride: Vec<usize> = t
            .stride
            .iter()
            .map(|&s| usize::try_from(s))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("has a negative stride {}", describe()))?;
        let too_large = || format!("view {} overflows", describe());
        let numel = size.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(too_large)?;
        let bytes = numel.checked_mul(dtype.size()).ok_or_else(too_large)?;
        // Offsets and byte counts must also fit torch's i64.
        if i64::try_from(bytes).is_err() {
            return Err(too_large());
        }
        let storage_numel =
            usize::try_from(storage_numel).map_err(|_| format!("storage of {storage_numel} elements is too large"))?;
        let storage_bytes = storage_numel.checked_mul(dtype.size()).ok_or_else(too_large)?;
        let needed_bytes = if numel == 0 {
            0
        } else {
            let mut last = offset;
            for (&n, &s) in size.iter().zip(&stride) {
                last = (n - 1).checked_mul(s).and_then(|x| last.checked_add(x)).ok_or_else(too_large)?;
            }
            if last >= storage_numel {
                return Err(format!(
                    "view {} reaches element {last}, outside its storage of {storage_numel} elements",
                    describe()
                ));
            }
            (last + 1) * dtype.size()
        };
        if bytes > storage_bytes && bytes - storage_bytes > MAX_EXPANDED_VIEW_BYTES {
            return Err(format!(
                "view {} expands a storage of {storage_bytes} bytes to {bytes} bytes, more than {MAX_EXPANDED_VIEW_BYTES} beyond it",
                describe()
            ));
        }
        Ok(CheckedView { dtype, offset, size, stride, numel, needed_bytes })
    }

    /// The view's elements from `storage`, which it owns: `storage` itself when the view is all
    /// of it in C order (most state dicts' tensors), else [`CheckedView::gather`]'s copy.
    pub fn take(&self, storage: Vec<u8>) -> Vec<u8> {
        if self.offset == 0 && self.is_contiguous() && storage.len() == self.numel * self.dtype.size() {
            storage
        } else {
            self.gather(&storage)
        }
    }

    /// Copies the view's elements out of `storage` (which holds at least `needed_bytes`), in C
    /// order.
    pub fn gather(&self, storage: &[u8]) -> Vec<u8> {
        let elem = self.dtype.size();
        let total = self.numel * elem;
        if self.numel == 0 {
            return Vec::new();
        }
        let start = self.offset * elem;
        if self.is_contiguous() {
            return storage[start..start + total].to_vec();
        }
        let mut out = Vec::with_capacity(total);
        let n = self.size.len();
        // Walk the outer dimensions with an odometer; copy the innermost run.
        let (inner_size, inner_stride) = (self.size[n - 1], self.stride[n - 1]);
        let mut index = vec![0usize; n - 1];
        loop {
            let base = self.offset + index.iter().zip(&self.stride).map(|(&i, &s)| i * s).sum::<usize>();
            if inner_stride == 1 {
                out.extend_from_slice(&storage[base * elem..(base + inner_size) * elem]);
            } else {
                for i in 0..inner_size {
                    let at = (base + i * inner_stride) * elem;
                    out.extend_from_slice(&storage[at..at + elem]);
                }
            }
            let mut d = n - 1;
            loop {
                if d == 0 {
                    return out;
                }
                d -= 1;
                index[d] += 1;
                if index[d] < self.size[d] {
                    break;
                }
                index[d] = 0;
            }
        }
    }

    /// Whether the elements lie in C order, one after another (dimensions of size 1 aside).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&n, &s) in self.size.iter().zip(&self.stride).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected *= n;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(offset: i64, size: &[i64], stride: &[i64], numel: u64) -> Result<CheckedView, String> {
        let storage = StorageRef { key: "0".into(), dtype: "FloatStorage".into(), location: "cpu".into(), numel };
        CheckedView::new(&TensorRef { storage, offset, size: size.to_vec(), stride: stride.to_vec() }, numel)
    }

    #[test]
    fn strided_views_copy_in_c_order() {
        let storage: Vec<u8> = (0..12u32).flat_map(|v| (v as f32).to_le_bytes()).collect();
        // The transpose of a 3x4 matrix, starting at element 0.
        let v = view(0, &[4, 3], &[1, 4], 12).unwrap();
        let out: Vec<f32> =
            v.gather(&storage).chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(out, [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]);
        let v = view(5, &[], &[], 12).unwrap();
        assert_eq!(v.gather(&storage), 5f32.to_le_bytes());
    }

    #[test]
    fn overflowing_or_outside_views_are_errors() {
        let cases: [(i64, &[i64], &[i64]); 7] = [
            (i64::MAX, &[2], &[1]),
            (0, &[i64::MAX, 2], &[1, 1]),
            (0, &[2, 2], &[i64::MAX, 1]),
            (-1, &[1], &[1]),
            (0, &[-1], &[1]),
            (0, &[3], &[-1]),
            (0, &[5], &[3]),
        ];
        for (offset, size, stride) in cases {
            assert!(view(offset, size, stride, 12).is_err(), "{offset} {size:?} {stride:?}");
        }
        // A stride-0 expansion to 2^40 elements of a one-element storage.
        assert!(view(0, &[1 << 40], &[0], 1).is_err());
        assert!(view(0, &[1000], &[0], 1).is_ok());
    }
}
