//! numpy arrays inside pickles, as inert data: plain pickles (`_reconstruct` + BUILD state,
//! protocol 5's `_frombuffer`, numpy scalars) through [`NumpyReducers`], and joblib's
//! `NumpyArrayWrapper`, whose bytes follow the wrapper in the stream, through
//! [`crate::joblib::JoblibReducers`]. Lightning checkpoints, joblib-saved sklearn objects and
//! pytorch-tabular / pytorch-forecasting files hold such arrays.
//!
//! Every array built here has been checked: a known, non-zero item size (object arrays aside),
//! an element count and byte size that fit in `usize`, and data of exactly that size.

use crate::error::{data_err, Error, Result};
use crate::pickle::{Call, ClassName, Reducers, Value};

/// A numpy array: its dtype as numpy writes it (`<f8`, `|u1`, `<U3`, `|O8`...), shape and data.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub fortran_order: bool,
    pub data: ArrayData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    /// The raw bytes of a fixed-size dtype.
    Raw(Vec<u8>),
    /// The elements of an object array.
    Objects(Vec<Value>),
}

pub(crate) const MULTIARRAY: [&str; 2] = ["numpy._core.multiarray", "numpy.core.multiarray"];
pub(crate) const NUMERIC: [&str; 2] = ["numpy._core.numeric", "numpy.core.numeric"];

/// The numpy hooks: `_reconstruct` (with its BUILD state), `_frombuffer` and `scalar`.
pub struct NumpyReducers;

impl Reducers for NumpyReducers {
    fn reduce(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
        if class.is(&NUMERIC, "_frombuffer") {
            return Some(call.args().and_then(|args| from_frombuffer(&args)).map(|a| Value::Array(Box::new(a))));
        }
        if class.is(&MULTIARRAY, "scalar") {
            return Some(call.args().and_then(|args| from_scalar(&args)).map(|a| Value::Array(Box::new(a))));
        }
        None
    }

    fn build(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
        if class.is(&MULTIARRAY, "_reconstruct") {
            let state = call.arg(0).map(|s| s.unwrap_or(Value::None));
            return Some(state.and_then(|s| from_reconstruct_state(&s)).map(|a| Value::Array(Box::new(a))));
        }
        None
    }
}

impl NdArray {
    /// The number of elements (saturating; arrays built by this crate never saturate).
    pub fn len(&self) -> usize {
        element_count(&self.shape).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.shape.contains(&0)
    }

    /// Bytes per element of a fixed-size dtype (`<f8` -> 8, `<U3` -> 12).
    pub fn itemsize(&self) -> Result<usize> {
        itemsize(&self.dtype)
    }

    /// Elements as f64, in C order, for boolean, integer and float dtypes.
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        let bytes = match &self.data {
            ArrayData::Objects(items) => {
                let values = items
                    .iter()
                    .map(|v| v.as_f64().ok_or_else(|| Error::data(format!("object array holds a {}", v.type_name()))))
                    .collect::<Result<Vec<_>>>()?;
                return self.c_order(values);
            }
            ArrayData::Raw(bytes) => bytes,
        };
        let (order, kind, size) = split_dtype(&self.dtype)?;
        let convert: fn(&[u8; 8]) -> f64 = match (kind, size) {
            ('f', 8) => |b| f64::from_le_bytes(*b),
            ('f', 4) => |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            ('f', 2) => |b| half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
            ('i', 8) => |b| i64::from_le_bytes(*b) as f64,
            ('i', 4) => |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            ('i', 2) => |b| i16::from_le_bytes([b[0], b[1]]) as f64,
            ('i', 1) => |b| b[0] as i8 as f64,
            ('u', 8) => |b| u64::from_le_bytes(*b) as f64,
            ('u', 4) => |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            ('u', 2) => |b| u16::from_le_bytes([b[0], b[1]]) as f64,
            ('u', 1) | ('b', 1) => |b| b[0] as f64,
            _ => data_err!("numpy dtype {} is not numeric", self.dtype),
        };
        let values = bytes
            .chunks_exact(size)
            .map(|c| {
                // `size` is at most 8 here: the little-endian bytes, zero-padded.
                let mut b = [0u8; 8];
                b[..size].copy_from_slice(c);
                if order == '>' {
                    b[..size].reverse();
                }
                convert(&b)
            })
            .collect();
        self.c_order(values)
    }

    /// Elements as strings, in C order, for unicode (`<U..`) arrays and object arrays of str.
    pub fn to_strings(&self) -> Result<Vec<String>> {
        let values = match &self.data {
            ArrayData::Objects(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| Error::data(format!("object array holds a {}", v.type_name())))
                })
                .collect::<Result<Vec<_>>>()?,
            ArrayData::Raw(bytes) => {
                let (order, kind, size) = split_dtype(&self.dtype)?;
                if kind != 'U' {
                    data_err!("numpy dtype {} is not a string dtype", self.dtype);
                }
                bytes
                    .chunks_exact(size)
                    .map(|c| {
                        c.chunks_exact(4)
                            .map(|u| {
                                let u = [u[0], u[1], u[2], u[3]];
                                if order == '>' {
                                    u32::from_be_bytes(u)
                                } else {
                                    u32::from_le_bytes(u)
                                }
                            })
                            .take_while(|&u| u != 0)
                            .map(|u| {
                                char::from_u32(u)
                                    .ok_or_else(|| Error::data(format!("invalid character {u:#x} in a numpy string")))
                            })
                            .collect::<Result<String>>()
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        self.c_order(values)
    }

    /// Elements as pickle values, in C order: booleans as `Bool`, integers as `Int`, floats as
    /// `Float`, unicode as `Str`, object arrays as they are. The general form pandas columns and
    /// indexes need, whatever their dtype.
    pub fn to_values(&self) -> Result<Vec<Value>> {
        let bytes = match &self.data {
            ArrayData::Objects(items) => return self.c_order(items.clone()),
            ArrayData::Raw(bytes) => bytes,
        };
        let (order, kind, size) = split_dtype(&self.dtype)?;
        match kind {
            'U' => Ok(self.to_strings()?.into_iter().map(Value::Str).collect()),
            'b' => Ok(self.to_f64()?.into_iter().map(|v| Value::Bool(v != 0.0)).collect()),
            'f' => Ok(self.to_f64()?.into_iter().map(Value::Float).collect()),
            // Read integers exactly: f64 would round those above 2^53.
            'i' | 'u' if size <= 8 => {
                let big = order == '>';
                let values = bytes
                    .chunks_exact(size)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        for (i, byte) in c.iter().enumerate() {
                            b[if big { size - 1 - i } else { i }] = *byte;
                        }
                        // Sign-extend signed integers narrower than 8 bytes.
                        if kind == 'i' && size < 8 && c[if big { 0 } else { size - 1 }] & 0x80 != 0 {
                            b[size..].fill(0xff);
                        }
                        let v = u64::from_le_bytes(b);
                        if kind == 'u' && v > i64::MAX as u64 {
                            Value::Float(v as f64)
                        } else {
                            Value::Int(v as i64)
                        }
                    })
                    .collect();
                self.c_order(values)
            }
            _ => data_err!("numpy dtype {} cannot be read as values", self.dtype),
        }
    }

    /// Reorders Fortran-order elements into C order.
    fn c_order<T: Clone>(&self, values: Vec<T>) -> Result<Vec<T>> {
        if values.len() != self.len() {
            data_err!("numpy array {:?} holds {} elements", self.shape, values.len());
        }
        if !self.fortran_order || self.shape.len() < 2 {
            return Ok(values);
        }
        let n = self.shape.len();
        let mut out = Vec::with_capacity(values.len());
        let mut index = vec![0usize; n];
        for _ in 0..values.len() {
            // Fortran offset of the current C-order index; below len(), checked above.
            let (offset, _) = index
                .iter()
                .zip(&self.shape)
                .fold((0, 1), |(offset, stride), (&i, &n)| (offset + i * stride, stride * n));
            out.push(values[offset].clone());
            for d in (0..n).rev() {
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(out)
    }
}

/// The product of a shape's dimensions, `None` when it overflows.
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// `('<', 'f', 8)` from `<f8`; `|` and `=` count as little-endian here (x86, ARM). The size is
/// never 0: a zero-size dtype is refused.
fn split_dtype(dtype: &str) -> Result<(char, char, usize)> {
    let mut chars = dtype.chars();
    let order = chars.next().ok_or_else(|| Error::data("empty numpy dtype"))?;
    let kind = chars.next().ok_or_else(|| Error::data(format!("numpy dtype {dtype} has no kind")))?;
    let count: usize =
        chars.as_str().parse().map_err(|_| Error::data(format!("numpy dtype {dtype} has no item size")))?;
    let size = if kind == 'U' { count.checked_mul(4) } else { Some(count) };
    match size {
        Some(size) if size > 0 => Ok((order, kind, size)),
        _ => data_err!("numpy dtype {dtype} has an item size of {count}, which is not supported"),
    }
}

fn itemsize(dtype: &str) -> Result<usize> {
    Ok(split_dtype(dtype)?.2)
}

fn is_object(dtype: &str) -> bool {
    dtype.get(1..2) == Some("O")
}

/// numpy's dtype descr from a pickled `numpy.dtype('f8', False, True)` with its BUILD state
/// `(3, '<', ...)`.
pub(crate) fn dtype_descr(value: &Value) -> Result<String> {
    let Value::Object(o) = value else { data_err!("expected a numpy dtype, got {}", value.type_name()) };
    if (o.module.as_str(), o.name.as_str()) != ("numpy", "dtype") {
        data_err!("expected a numpy dtype, got {}.{}", o.module, o.name);
    }
    let code = o.args.first().and_then(Value::as_str).ok_or_else(|| Error::data("numpy dtype without a type code"))?;
    let order = match &o.state {
        Some(Value::Tuple(items)) => items.get(1).and_then(Value::as_str).unwrap_or("|"),
        _ => "|",
    };
    let order = if order == "=" { "<" } else { order };
    Ok(format!("{order}{code}"))
}

/// `_reconstruct(ndarray, (0,), b'b')` then BUILD `(version, shape, dtype, is_fortran, data)`.
pub(crate) fn from_reconstruct_state(state: &Value) -> Result<NdArray> {
    let Value::Tuple(items) = state else { data_err!("numpy array state is a {}, not a tuple", state.type_name()) };
    let [_version, shape, dtype, fortran, data] = items.as_slice() else {
        data_err!("numpy array state has {} fields, expected 5", items.len())
    };
    let dtype = dtype_descr(dtype)?;
    let shape = shape_of(shape)?;
    let fortran_order = matches!(fortran, Value::Bool(true));
    let data = match data {
        Value::Bytes(b) => ArrayData::Raw(b.clone()),
        Value::Str(s) => ArrayData::Raw(s.chars().map(|c| c as u32 as u8).collect()),
        Value::List(items) => ArrayData::Objects(items.clone()),
        other => data_err!("numpy array data is a {}", other.type_name()),
    };
    checked(NdArray { dtype, shape, fortran_order, data })
}

/// Protocol 5: `_frombuffer(buffer, dtype, shape, order)`.
pub(crate) fn from_frombuffer(args: &[Value]) -> Result<NdArray> {
    let [buffer, dtype, shape, order] = args else {
        data_err!("numpy _frombuffer takes 4 arguments, got {}", args.len())
    };
    let Value::Bytes(bytes) = buffer else {
        data_err!("numpy _frombuffer without in-band bytes (out-of-band buffers are not supported)")
    };
    let shape = shape_of(shape)?;
    checked(NdArray {
        dtype: dtype_descr(dtype)?,
        fortran_order: order.as_str() == Some("F"),
        shape,
        data: ArrayData::Raw(bytes.clone()),
    })
}

/// A numpy scalar: `scalar(dtype, bytes)`.
pub(crate) fn from_scalar(args: &[Value]) -> Result<NdArray> {
    let [dtype, data, ..] = args else { data_err!("numpy scalar takes 2 arguments, got {}", args.len()) };
    let data = match data {
        Value::Bytes(b) => ArrayData::Raw(b.clone()),
        other => ArrayData::Objects(vec![other.clone()]),
    };
    checked(NdArray { dtype: dtype_descr(dtype)?, shape: vec![], fortran_order: false, data })
}

/// What joblib's `NumpyArrayWrapper` state says about the array whose bytes follow it.
pub(crate) struct WrapperLayout {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub fortran_order: bool,
    /// joblib >= 1.2 writes a padding length byte, then padding, before the data.
    pub aligned: bool,
}

impl WrapperLayout {
    pub fn from_state(state: &Value) -> Result<WrapperLayout> {
        let field =
            |name: &str| state.get(name).ok_or_else(|| Error::data(format!("joblib array wrapper lacks '{name}'")));
        Ok(WrapperLayout {
            dtype: dtype_descr(field("dtype")?)?,
            shape: shape_of(field("shape")?)?,
            fortran_order: field("order")?.as_str() == Some("F"),
            aligned: state.get("numpy_array_alignment_bytes").is_some_and(|v| !matches!(v, Value::None)),
        })
    }

    pub fn is_object(&self) -> bool {
        is_object(&self.dtype)
    }

    /// The data's size in bytes, checked.
    pub fn nbytes(&self) -> Result<usize> {
        let size = itemsize(&self.dtype)?;
        element_count(&self.shape)
            .and_then(|n| n.checked_mul(size))
            .ok_or_else(|| Error::data(format!("numpy array {:?} of {} is too large", self.shape, self.dtype)))
    }

    pub fn into_array(self, data: ArrayData) -> Result<NdArray> {
        let mut array = NdArray { dtype: self.dtype, shape: self.shape, fortran_order: self.fortran_order, data };
        // An object array arrives as its own (C-order) pickle.
        if let ArrayData::Objects(_) = array.data {
            array.fortran_order = false;
        }
        checked(array)
    }
}

fn shape_of(value: &Value) -> Result<Vec<usize>> {
    let dim = |v: &Value| {
        v.as_i64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Error::data(format!("numpy shape holds a {} that is not a size", v.type_name())))
    };
    match value {
        Value::Tuple(items) | Value::List(items) => items.iter().map(dim).collect(),
        Value::Int(_) => Ok(vec![dim(value)?]),
        other => data_err!("numpy shape is a {}", other.type_name()),
    }
}

/// Checks that the shape's element count fits, and that the data holds exactly that many
/// elements.
fn checked(array: NdArray) -> Result<NdArray> {
    let n = element_count(&array.shape)
        .ok_or_else(|| Error::data(format!("numpy array shape {:?} has too many elements", array.shape)))?;
    match &array.data {
        ArrayData::Raw(bytes) => {
            let expected = n
                .checked_mul(itemsize(&array.dtype)?)
                .ok_or_else(|| Error::data(format!("numpy array {:?} of {} is too large", array.shape, array.dtype)))?;
            if bytes.len() != expected {
                data_err!(
                    "numpy array {:?} of {} holds {} bytes, expected {expected}",
                    array.shape,
                    array.dtype,
                    bytes.len()
                );
            }
        }
        ArrayData::Objects(items) if items.len() != n => {
            data_err!("numpy object array {:?} holds {} items", array.shape, items.len())
        }
        ArrayData::Objects(_) => {}
    }
    Ok(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dtype(code: &str) -> Value {
        Value::Object(Box::new(crate::pickle::Object {
            module: "numpy".into(),
            name: "dtype".into(),
            args: vec![Value::Str(code.into())],
            state: Some(Value::Tuple(vec![Value::Int(3), Value::Str("<".into())])),
            list_items: vec![],
            dict_items: vec![],
        }))
    }

    #[test]
    fn zero_size_dtypes_and_overflowing_shapes_are_errors() {
        for code in ["f0", "U0", "V0", "S0"] {
            let args = [Value::Bytes(vec![]), dtype(code), Value::Tuple(vec![Value::Int(4)]), Value::Str("C".into())];
            let err = from_frombuffer(&args).unwrap_err().to_string();
            assert!(err.contains("item size"), "{code}: {err}");
        }
        let huge = Value::Tuple(vec![Value::Int(1 << 40), Value::Int(1 << 40)]);
        let args = [Value::Bytes(vec![]), dtype("f8"), huge, Value::Str("C".into())];
        let err = from_frombuffer(&args).unwrap_err().to_string();
        assert!(err.contains("too many elements"), "{err}");
        let array = NdArray { dtype: "<f0".into(), shape: vec![3], fortran_order: false, data: ArrayData::Raw(vec![]) };
        assert!(array.to_f64().is_err());
        assert!(array.to_values().is_err());
    }
}
