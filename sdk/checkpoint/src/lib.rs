//! Safe checkpoint reading, without tch and without running any code from the file: PyTorch
//! `torch.save` zip files (state dicts, nested dicts, Lightning `.ckpt`), safetensors files, and
//! plain or joblib pickles holding numpy arrays, pandas frames and fitted scikit-learn scalers and
//! transforms.
//!
//! libtorch's own unpickler cannot read a plain `torch.save(model.state_dict())` (an
//! OrderedDict), and Python's would execute whatever the pickle names. So the torch format is
//! read here: the zip archive's `data.pkl` goes through the inert [`pickle`] interpreter, and a
//! tensor is read by copying its elements out of its storage entry into a [`RawTensor`] (plain
//! bytes: dtype, shape, C-order little-endian data). The deepembed SDK turns those into tch
//! tensors. The same interpreter reads joblib and plain pickles; [`numpy`], [`pandas`] and
//! [`sklearn`] interpret the arrays, frames and fitted transformers found in them, still as data.
//!
//! # Public API
//!
//! - [`Checkpoint`]: [`Checkpoint::open`] (a path), [`Checkpoint::from_bytes`],
//!   [`Checkpoint::open_reader`]; [`Checkpoint::root`] (the unpickled value),
//!   [`Checkpoint::tensor`] / [`Checkpoint::named_tensor`] (one [`RawTensor`]),
//!   [`Checkpoint::state_dict_refs`] / [`Checkpoint::raw_state_dict`] (the model weights).
//! - [`read_pickle_file`], [`read_pickle_bytes`]: a plain or joblib pickle as a [`Value`].
//! - [`pickle::load`] / [`pickle::load_with_limits`]: the interpreter, with a
//!   [`pickle::PersistentLoad`] and a [`pickle::Reducers`] hook set; [`pickle::Limits`].
//! - [`Reducers`] hooks: [`TorchReducers`], [`NumpyReducers`], [`JoblibReducers`], together
//!   [`DefaultReducers`]. pandas and scikit-learn objects need their whole BUILD state, so they
//!   are read after loading, from the inert [`Object`]s: [`pandas::DataFrame::from_value`],
//!   [`pandas::Series::from_value`], [`pandas::Index::from_value`],
//!   [`sklearn::StandardScaler::from_value`], [`sklearn::FeatureTransform::from_value`].
//! - [`Value`], [`Object`], [`TensorRef`], [`StorageRef`], [`NdArray`], [`ArrayData`],
//!   [`DType`], [`RawTensor`]; [`Error`] and [`Result`].
//!
//! # Entry points for fuzzing
//!
//! Each takes bytes, and ends in a value or an [`Error`]: never a panic, an abort (stack
//! overflow) or an allocation out of proportion to the input.
//!
//! - [`pickle::load`]`(bytes, &mut NoPersistentLoad, &DefaultReducers)`: the interpreter with
//!   the numpy and joblib hooks (numpy pickles, joblib streams).
//! - [`read_pickle_bytes`]`(bytes)`: the same, as a plain or joblib pickle file.
//! - [`Checkpoint::from_bytes`]`(name, bytes)`: a torch zip archive or a safetensors file; then
//!   [`Checkpoint::raw_state_dict`] (or [`Checkpoint::tensor`] on each tensor of the root) to
//!   read the tensors.
//! - [`pandas::DataFrame::from_value`], [`sklearn::StandardScaler::from_value`],
//!   [`sklearn::FeatureTransform::from_value`] on the value of
//!   [`read_pickle_bytes`].
//!
//! # Limits
//!
//! - Pickles ([`pickle::Limits::for_input`]): nesting depth 200 (tuples, arguments and nested
//!   joblib pickles included; this fits a 2 MiB thread stack), 16 nested pickles, at most
//!   2^18 + 4·len values and 16 MiB + 4·len bytes of strings and data materialised, shared
//!   references counted each time they are copied.
//! - Torch archives: `data.pkl` at most [`MAX_PICKLE_BYTES`] (1 GiB), read through `take`; a
//!   storage entry must hold exactly the bytes the pickle declares for it, and is read only as
//!   far as the tensors that use it need; a tensor view must lie inside its storage, with every
//!   size, stride and offset checked, and may exceed its storage (stride 0) by at most
//!   [`tensor::MAX_EXPANDED_VIEW_BYTES`] (256 MiB).
//! - safetensors: the header is at most [`MAX_SAFETENSORS_HEADER_BYTES`] (100 MB,
//!   the safetensors crate's limit) and must describe exactly the data after it; each tensor's
//!   data are read from the file when it is asked for.
//! - pandas: a `RangeIndex` or slice placement expands to at most
//!   [`pandas::MAX_MATERIALISED_LABELS`] (2^24) labels.

#![forbid(unsafe_code)]

mod checkpoint;
mod error;
pub mod joblib;
pub mod numpy;
pub mod pandas;
pub mod pickle;
pub mod sklearn;
pub mod tensor;

use std::path::Path;

pub use checkpoint::{Checkpoint, MAX_PICKLE_BYTES, MAX_SAFETENSORS_HEADER_BYTES};
pub use error::{Error, Result};
pub use joblib::JoblibReducers;
pub use numpy::{ArrayData, NdArray, NumpyReducers};
pub use pickle::{
    Call, ClassName, Limits, NoPersistentLoad, NoReducers, Object, Reducers, StorageRef, TensorRef, Value,
};
pub use tensor::{DType, RawTensor, TorchReducers};

/// The hooks every reader of this crate uses: torch tensors, numpy arrays, joblib arrays.
pub struct DefaultReducers;

impl Reducers for DefaultReducers {
    fn reduce(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
        TorchReducers.reduce(class, call).or_else(|| NumpyReducers.reduce(class, call))
    }
    fn build(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
        NumpyReducers.build(class, call).or_else(|| JoblibReducers.build(class, call))
    }
}

/// Reads a plain pickle file (`pickle.dump`, or `joblib.dump` without compression, as
/// pytorch-tabular's `datamodule.sav`) as inert data. Errors name the file.
pub fn read_pickle_file(path: &Path) -> Result<Value> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|err| Error::Io { what: "the file".into(), err }.in_file(&name))?;
    read_pickle_bytes(&bytes).map_err(|e| e.in_file(&name))
}

/// [`read_pickle_file`] for a file's bytes. A bytes-in entry point for fuzzing.
pub fn read_pickle_bytes(bytes: &[u8]) -> Result<Value> {
    if bytes.first() != Some(&0x80) {
        return Err(Error::Format(
            "not an uncompressed pickle (joblib files saved with compress=... are not supported)".into(),
        ));
    }
    pickle::load(bytes, &mut NoPersistentLoad, &DefaultReducers)
}
