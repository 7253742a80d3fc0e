//! joblib's uncompressed pickles (`joblib.dump(obj, path)`, as pytorch-tabular's
//! `datamodule.sav`): each numpy array is a `NumpyArrayWrapper` whose BUILD is followed in the
//! stream by the array's bytes, or, for object arrays, by a whole nested pickle of the array.

use crate::error::{data_err, Error, Result};
use crate::numpy::{ArrayData, WrapperLayout};
use crate::pickle::{Call, ClassName, Reducers, Value};

/// The joblib hook: reads the array data that follows a `NumpyArrayWrapper`. Nested pickles
/// (object arrays) count against [`crate::pickle::Limits::max_nested_pickles`].
pub struct JoblibReducers;

impl Reducers for JoblibReducers {
    fn build(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
        if class.is(&["joblib.numpy_pickle"], "NumpyArrayWrapper") {
            return Some(read_array(call).map(|a| Value::Array(Box::new(a))));
        }
        None
    }
}

/// joblib writes an array's bytes right after its wrapper is built: for object arrays a nested
/// pickle, otherwise (joblib >= 1.2) a padding length byte and padding, then the raw data.
fn read_array(call: &mut Call<'_, '_>) -> Result<crate::numpy::NdArray> {
    let state = call.arg(0)?.unwrap_or(Value::None);
    let layout = WrapperLayout::from_state(&state)?;
    if layout.is_object() {
        let offset = call.offset();
        let items = match call.load_nested()? {
            Value::Array(a) => match a.data {
                ArrayData::Objects(items) => items,
                ArrayData::Raw(_) => data_err!("joblib object array at byte {offset} arrived as raw bytes"),
            },
            other => data_err!("joblib object array at byte {offset} arrived as a {}", other.type_name()),
        };
        return layout.into_array(ArrayData::Objects(items));
    }
    if layout.aligned {
        let padding = call.read(1)?[0] as usize;
        call.read(padding)?;
    }
    let n = layout.nbytes()?;
    let offset = call.offset();
    let bytes = call.read(n).map_err(|_| {
        Error::data(format!(
            "joblib array {:?} of {} ({n} bytes) at byte {offset} runs past the data",
            layout.shape, layout.dtype
        ))
    })?;
    layout.into_array(ArrayData::Raw(bytes.to_vec()))
}
