//! Safe checkpoint reading into tch tensors: the tch-free [`deepembed_checkpoint`] crate
//! (PyTorch zip files, safetensors, plain and joblib pickles, read without running any code from
//! the file), re-exported, plus the tch glue plugins use: [`Checkpoint::state_dict`] and
//! [`StateDict`], named tch tensors.
//!
//! A tensor comes out of the reader as a [`RawTensor`] (a copy of its elements, contiguous) and
//! is copied once more into a CPU tch tensor of the dtype it was saved with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use tch::{Kind, Tensor};

pub use deepembed_checkpoint::{
    joblib, numpy, pandas, pickle, read_pickle_bytes, read_pickle_file, sklearn, tensor, ArrayData, DType,
    DefaultReducers, Error, NdArray, Object, RawTensor, StorageRef, TensorRef, Value,
};

/// An opened checkpoint (torch zip or safetensors): its pickled root value and its tensors.
pub struct Checkpoint {
    inner: deepembed_checkpoint::Checkpoint,
    path: PathBuf,
}

impl Checkpoint {
    /// Opens a torch zip file or a safetensors file, telling them apart by content.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        Ok(Checkpoint { inner: deepembed_checkpoint::Checkpoint::open(path)?, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The unpickled top-level value (for safetensors: a dict of tensor names to tensors).
    pub fn root(&self) -> &Value {
        self.inner.root()
    }

    /// The tch-free reader underneath.
    pub fn raw(&self) -> &deepembed_checkpoint::Checkpoint {
        &self.inner
    }

    /// Reads one tensor (a copy, in the dtype it was saved with, on the CPU).
    pub fn tensor(&self, t: &TensorRef) -> Result<Tensor> {
        to_tensor(&self.inner.tensor(t)?)
    }

    /// The model weights: the `state_dict` entry of a Lightning checkpoint or of a dict that has
    /// one, otherwise the root itself. Nested dicts are flattened with `.` between keys.
    pub fn state_dict(&self) -> Result<StateDict> {
        self.state_dict_where(|_| true)
    }

    /// [`Checkpoint::state_dict`] with only the tensors whose names `keep` accepts; the others
    /// are never read (a whole SigLIP model's text tower, when only its vision tower is used).
    pub fn state_dict_where(&self, keep: impl Fn(&str) -> bool) -> Result<StateDict> {
        let mut tensors = BTreeMap::new();
        for (name, t) in self.inner.state_dict_refs()? {
            if !keep(&name) {
                continue;
            }
            // One tensor at a time: its raw copy is dropped once tch has its own.
            let tensor = to_tensor(&self.inner.named_tensor(&name, t)?)
                .map_err(|e| anyhow!("{}: tensor '{name}': {e}", self.path.display()))?;
            tensors.insert(name, tensor);
        }
        Ok(StateDict { source: self.path.clone(), tensors })
    }
}

/// The tch kind of a dtype.
pub fn kind(dtype: DType) -> Kind {
    match dtype {
        DType::F64 => Kind::Double,
        DType::F32 => Kind::Float,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
    }
}

/// A CPU tch tensor holding a copy of `raw`.
pub fn to_tensor(raw: &RawTensor) -> Result<Tensor> {
    Ok(Tensor::f_from_data_size(&raw.data, &raw.shape, kind(raw.dtype))?)
}

/// Named tensors, as in a PyTorch state dict.
pub struct StateDict {
    source: PathBuf,
    pub tensors: BTreeMap<String, Tensor>,
}

impl StateDict {
    pub fn new(source: PathBuf, tensors: BTreeMap<String, Tensor>) -> StateDict {
        StateDict { source, tensors }
    }

    /// Loads a checkpoint file's state dict.
    pub fn load(path: &Path) -> Result<StateDict> {
        Checkpoint::open(path)?.state_dict()
    }

    /// The weights of a Hugging Face model directory (`model.safetensors`, else
    /// `pytorch_model.bin`), with `prefix` removed when the file nests the base model under it
    /// (task models save `bert.*`, `transformer.*`); `probe` is a key of the bare model.
    pub fn load_hf_dir(dir: &Path, prefix: &str, probe: &str) -> Result<StateDict> {
        StateDict::load_hf_dir_where(dir, prefix, probe, |_| true)
    }

    /// [`StateDict::load_hf_dir`] reading only the tensors whose names (as stored) `keep`
    /// accepts.
    pub fn load_hf_dir_where(dir: &Path, prefix: &str, probe: &str, keep: impl Fn(&str) -> bool) -> Result<StateDict> {
        let file = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow!("{} holds no model.safetensors or pytorch_model.bin", dir.display()))?;
        let sd = Checkpoint::open(&file)?.state_dict_where(keep)?;
        Ok(if !sd.contains(probe) && sd.contains(&format!("{prefix}{probe}")) { sd.strip_prefix(prefix) } else { sd })
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        self.tensors.get(name).map(Tensor::size)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// The tensors whose names start with `prefix`, with the prefix removed.
    pub fn strip_prefix(&self, prefix: &str) -> StateDict {
        let tensors = self
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|rest| (rest.to_string(), v.shallow_clone())))
            .collect();
        StateDict { source: self.source.clone(), tensors }
    }

    /// Copies these weights into `vs`: every variable must be present with the same shape.
    /// Keys in `ignored(key)` may be left over; any other leftover is an error too, because it
    /// means the file was made for another model.
    pub fn copy_into(&self, vs: &mut tch::nn::VarStore, ignored: impl Fn(&str) -> bool) -> Result<()> {
        let variables = vs.variables();
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in variables.iter().map(|(k, v)| (k.clone(), v.shallow_clone())) {
                match self.tensors.get(&name) {
                    None => missing.push(name),
                    Some(t) if t.size() != var.size() => {
                        mismatched.push(format!("{name}: file has {:?}, model needs {:?}", t.size(), var.size()))
                    }
                    Some(t) => {
                        // `copy_` crosses devices itself: no temporary copy on the device.
                        var.f_copy_(&t.to_kind(var.kind()))?;
                    }
                }
            }
            Ok(())
        })?;
        let unexpected: Vec<&String> =
            self.tensors.keys().filter(|k| !variables.contains_key(*k) && !ignored(k)).collect();
        if missing.is_empty() && mismatched.is_empty() && unexpected.is_empty() {
            return Ok(());
        }
        let mut problems = Vec::new();
        if !mismatched.is_empty() {
            problems.push(format!("shapes differ for {}", summarize(&mismatched)));
        }
        if !missing.is_empty() {
            problems.push(format!("missing weights {}", summarize(&missing)));
        }
        if !unexpected.is_empty() {
            problems.push(format!("unexpected weights {}", summarize(&unexpected)));
        }
        Err(anyhow!("{} does not match the model: {}", self.source.display(), problems.join("; ")))
    }
}

fn summarize<T: std::fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(5).map(|s| s.to_string()).collect();
    if items.len() > shown.len() {
        format!("{} (and {} more)", shown.join(", "), items.len() - shown.len())
    } else {
        shown.join(", ")
    }
}
