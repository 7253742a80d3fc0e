//! numpy arrays inside pickles, as inert data: plain pickles (`_reconstruct` + BUILD state,
//! protocol 5's `_frombuffer`, numpy scalars) and joblib's `NumpyArrayWrapper`, whose bytes
//! follow the wrapper in the stream. Lightning checkpoints, joblib-saved sklearn objects and
//! pytorch-tabular / pytorch-forecasting files hold such arrays.

use anyhow::{anyhow, bail, Result};

use super::pickle::Value;

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

pub(super) const MULTIARRAY: [&str; 2] = ["numpy._core.multiarray", "numpy.core.multiarray"];
pub(super) const NUMERIC: [&str; 2] = ["numpy._core.numeric", "numpy.core.numeric"];

impl NdArray {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per element of a fixed-size dtype (`<f8` -> 8, `<U3` -> 12).
    pub fn itemsize(&self) -> Result<usize> {
        itemsize(&self.dtype)
    }

    /// Elements as f64, in C order, for boolean, integer and float dtypes.
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        let ArrayData::Raw(bytes) = &self.data else {
            return match &self.data {
                ArrayData::Objects(items) => items
                    .iter()
                    .map(|v| v.as_f64().ok_or_else(|| anyhow!("object array holds a non-number {v:?}")))
                    .collect(),
                ArrayData::Raw(_) => unreachable!(),
            };
        };
        let (order, kind, size) = split_dtype(&self.dtype)?;
        let big = order == '>';
        let values: Vec<f64> = bytes
            .chunks_exact(size)
            .map(|c| {
                let mut b = c.to_vec();
                if big {
                    b.reverse();
                }
                match (kind, size) {
                    ('f', 8) => Ok(f64::from_le_bytes(b.try_into().unwrap())),
                    ('f', 4) => Ok(f32::from_le_bytes(b.try_into().unwrap()) as f64),
                    ('f', 2) => Ok(half::f16::from_le_bytes(b.try_into().unwrap()).to_f64()),
                    ('i', 8) => Ok(i64::from_le_bytes(b.try_into().unwrap()) as f64),
                    ('i', 4) => Ok(i32::from_le_bytes(b.try_into().unwrap()) as f64),
                    ('i', 2) => Ok(i16::from_le_bytes(b.try_into().unwrap()) as f64),
                    ('i', 1) => Ok(b[0] as i8 as f64),
                    ('u', 8) => Ok(u64::from_le_bytes(b.try_into().unwrap()) as f64),
                    ('u', 4) => Ok(u32::from_le_bytes(b.try_into().unwrap()) as f64),
                    ('u', 2) => Ok(u16::from_le_bytes(b.try_into().unwrap()) as f64),
                    ('u', 1) | ('b', 1) => Ok(b[0] as f64),
                    _ => Err(anyhow!("numpy dtype {} is not numeric", self.dtype)),
                }
            })
            .collect::<Result<_>>()?;
        Ok(self.c_order(values))
    }

    /// Elements as strings, in C order, for unicode (`<U..`) arrays and object arrays of str.
    pub fn to_strings(&self) -> Result<Vec<String>> {
        let values = match &self.data {
            ArrayData::Objects(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| anyhow!("object array holds a non-string {v:?}")))
                .collect::<Result<Vec<_>>>()?,
            ArrayData::Raw(bytes) => {
                let (order, kind, size) = split_dtype(&self.dtype)?;
                if kind != 'U' {
                    bail!("numpy dtype {} is not a string dtype", self.dtype);
                }
                bytes
                    .chunks_exact(size)
                    .map(|c| {
                        c.chunks_exact(4)
                            .map(|u| {
                                let u: [u8; 4] = u.try_into().unwrap();
                                if order == '>' {
                                    u32::from_be_bytes(u)
                                } else {
                                    u32::from_le_bytes(u)
                                }
                            })
                            .take_while(|&u| u != 0)
                            .map(|u| {
                                char::from_u32(u).ok_or_else(|| anyhow!("invalid character {u:#x} in a numpy string"))
                            })
                            .collect::<Result<String>>()
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        Ok(self.c_order(values))
    }

    /// Elements as pickle values, in C order: booleans as `Bool`, integers as `Int`, floats as
    /// `Float`, unicode as `Str`, object arrays as they are. The general form pandas columns and
    /// indexes need, whatever their dtype.
    pub fn to_values(&self) -> Result<Vec<Value>> {
        if let ArrayData::Objects(items) = &self.data {
            return Ok(self.c_order(items.clone()));
        }
        let (_, kind, size) = split_dtype(&self.dtype)?;
        match kind {
            'U' => Ok(self.to_strings()?.into_iter().map(Value::Str).collect()),
            'b' => Ok(self.to_f64()?.into_iter().map(|v| Value::Bool(v != 0.0)).collect()),
            'f' => Ok(self.to_f64()?.into_iter().map(Value::Float).collect()),
            // Read integers exactly: f64 would round those above 2^53.
            'i' | 'u' => {
                let ArrayData::Raw(bytes) = &self.data else { unreachable!() };
                let big = self.dtype.starts_with('>');
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
                Ok(self.c_order(values))
            }
            _ => bail!("numpy dtype {} cannot be read as values", self.dtype),
        }
    }

    /// Reorders Fortran-order elements into C order.
    fn c_order<T: Clone>(&self, values: Vec<T>) -> Vec<T> {
        if !self.fortran_order || self.shape.len() < 2 {
            return values;
        }
        let n = self.shape.len();
        let mut out = Vec::with_capacity(values.len());
        let mut index = vec![0usize; n];
        for _ in 0..values.len() {
            // Fortran offset of the current C-order index.
            let mut offset = 0;
            let mut stride = 1;
            for d in 0..n {
                offset += index[d] * stride;
                stride *= self.shape[d];
            }
            out.push(values[offset].clone());
            for d in (0..n).rev() {
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out
    }
}

/// `('<', 'f', 8)` from `<f8`; `|` and `=` count as little-endian here (x86, ARM).
fn split_dtype(dtype: &str) -> Result<(char, char, usize)> {
    let mut chars = dtype.chars();
    let order = chars.next().ok_or_else(|| anyhow!("empty numpy dtype"))?;
    let kind = chars.next().ok_or_else(|| anyhow!("numpy dtype {dtype} has no kind"))?;
    let count: usize = chars.as_str().parse().map_err(|_| anyhow!("numpy dtype {dtype} has no size"))?;
    let size = if kind == 'U' { count * 4 } else { count };
    Ok((order, kind, size))
}

fn itemsize(dtype: &str) -> Result<usize> {
    Ok(split_dtype(dtype)?.2)
}

fn is_object(dtype: &str) -> bool {
    dtype.get(1..2) == Some("O")
}

/// numpy's dtype descr from a pickled `numpy.dtype('f8', False, True)` with its BUILD state
/// `(3, '<', ...)`.
pub(super) fn dtype_descr(value: &Value) -> Result<String> {
    let Value::Object(o) = value else { bail!("expected a numpy dtype, got {value:?}") };
    if (o.module.as_str(), o.name.as_str()) != ("numpy", "dtype") {
        bail!("expected a numpy dtype, got {}.{}", o.module, o.name);
    }
    let code = o.args.first().and_then(Value::as_str).ok_or_else(|| anyhow!("numpy dtype without a type code"))?;
    let order = match &o.state {
        Some(Value::Tuple(items)) => items.get(1).and_then(Value::as_str).unwrap_or("|"),
        _ => "|",
    };
    let order = if order == "=" { "<" } else { order };
    Ok(format!("{order}{code}"))
}

/// `_reconstruct(ndarray, (0,), b'b')` then BUILD `(version, shape, dtype, is_fortran, data)`.
pub(super) fn from_reconstruct_state(state: &Value) -> Result<NdArray> {
    let Value::Tuple(items) = state else { bail!("numpy array state is not a tuple: {state:?}") };
    let [_version, shape, dtype, fortran, data] = items.as_slice() else {
        bail!("numpy array state has {} fields, expected 5", items.len())
    };
    let dtype = dtype_descr(dtype)?;
    let shape = shape_of(shape)?;
    let fortran_order = matches!(fortran, Value::Bool(true));
    let data = match data {
        Value::Bytes(b) => ArrayData::Raw(b.clone()),
        Value::Str(s) => ArrayData::Raw(s.chars().map(|c| c as u32 as u8).collect()),
        Value::List(items) => ArrayData::Objects(items.clone()),
        other => bail!("numpy array data is {other:?}"),
    };
    checked(NdArray { dtype, shape, fortran_order, data })
}

/// Protocol 5: `_frombuffer(buffer, dtype, shape, order)`.
pub(super) fn from_frombuffer(args: &[Value]) -> Result<NdArray> {
    let [buffer, dtype, shape, order] = args else { bail!("numpy _frombuffer takes 4 arguments, got {}", args.len()) };
    let Value::Bytes(bytes) = buffer else {
        bail!("numpy _frombuffer without in-band bytes (out-of-band buffers are not supported)")
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
pub(super) fn from_scalar(args: &[Value]) -> Result<NdArray> {
    let [dtype, data, ..] = args else { bail!("numpy scalar takes 2 arguments, got {}", args.len()) };
    let data = match data {
        Value::Bytes(b) => ArrayData::Raw(b.clone()),
        other => ArrayData::Objects(vec![other.clone()]),
    };
    checked(NdArray { dtype: dtype_descr(dtype)?, shape: vec![], fortran_order: false, data })
}

/// What joblib's `NumpyArrayWrapper` state says about the array whose bytes follow it.
pub(super) struct WrapperLayout {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub fortran_order: bool,
    /// joblib >= 1.2 writes a padding length byte, then padding, before the data.
    pub aligned: bool,
}

impl WrapperLayout {
    pub fn from_state(state: &Value) -> Result<WrapperLayout> {
        let field = |name: &str| state.get(name).ok_or_else(|| anyhow!("joblib array wrapper lacks '{name}'"));
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

    pub fn nbytes(&self) -> Result<usize> {
        Ok(self.shape.iter().product::<usize>() * itemsize(&self.dtype)?)
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
    match value {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|v| v.as_i64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| anyhow!("numpy shape holds {v:?}")))
            .collect(),
        Value::Int(n) => Ok(vec![usize::try_from(*n)?]),
        other => bail!("numpy shape is {other:?}"),
    }
}

/// Checks that the data holds exactly as many elements as the shape says.
fn checked(array: NdArray) -> Result<NdArray> {
    let n = array.len();
    match &array.data {
        ArrayData::Raw(bytes) => {
            let expected = n * itemsize(&array.dtype)?;
            if bytes.len() != expected {
                bail!(
                    "numpy array {:?} of {} holds {} bytes, expected {expected}",
                    array.shape,
                    array.dtype,
                    bytes.len()
                );
            }
        }
        ArrayData::Objects(items) if items.len() != n => {
            bail!("numpy object array {:?} holds {} items", array.shape, items.len())
        }
        ArrayData::Objects(_) => {}
    }
    Ok(array)
}
