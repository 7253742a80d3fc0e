//! Safe checkpoint reading: PyTorch `torch.save` zip files (state dicts, nested dicts,
//! Lightning `.ckpt`) and safetensors files, into tch tensors, without running any code from
//! the file.
//!
//! libtorch's own unpickler cannot read a plain `torch.save(model.state_dict())` (an
//! OrderedDict), and Python's would execute whatever the pickle names. So the torch format is
//! read here: the zip archive's `data.pkl` goes through the inert [`pickle`] interpreter, and
//! tensors are views into the archive's storage files. The same interpreter reads joblib and
//! plain pickles; [`numpy`], [`pandas`] and [`sklearn`] interpret the arrays, frames and fitted
//! transformers found in them, still as data.

pub mod numpy;
pub mod pandas;
pub mod pickle;
pub mod sklearn;
mod storage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tch::Tensor;

pub use numpy::{ArrayData, NdArray};
pub use pickle::{Object, StorageRef, TensorRef, Value};
use storage::StorageSource;

/// Reads a plain pickle file (`pickle.dump`, or `joblib.dump` without compression, as
/// pytorch-tabular's `datamodule.sav`) as inert data.
pub fn read_pickle_file(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.first() != Some(&0x80) {
        bail!(
            "{} is not an uncompressed pickle (joblib files saved with compress=... are not supported)",
            path.display()
        );
    }
    pickle::load(&bytes, &mut pickle::NoPersistentLoad).with_context(|| format!("reading {}", path.display()))
}

/// An opened checkpoint: its pickled root value and the storages its tensors point into.
pub struct Checkpoint {
    path: PathBuf,
    root: Value,
    storages: StorageSource,
}

impl Checkpoint {
    /// Opens a torch zip file or a safetensors file, telling them apart by content.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let (root, storages) = storage::open(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
        Ok(Checkpoint { path: path.to_path_buf(), root, storages })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The unpickled top-level value (for safetensors: a dict of tensor names to tensors).
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Materialises one tensor (a copy, in the dtype it was saved with, on the CPU).
    pub fn tensor(&self, t: &TensorRef) -> Result<Tensor> {
        self.storages.tensor(t).with_context(|| format!("reading tensor data from {}", self.path.display()))
    }

    /// The model weights: the `state_dict` entry of a Lightning checkpoint or of a dict that has
    /// one, otherwise the root itself. Nested dicts are flattened with `.` between keys.
    pub fn state_dict(&self) -> Result<StateDict> {
        let root = match self.root.get("state_dict") {
            Some(inner) if inner.dict_entries().is_some() => inner,
            _ => &self.root,
        };
        let mut refs = Vec::new();
        collect_tensors(root, "", &mut refs);
        if refs.is_empty() {
            bail!("{} holds no tensors: it is not a state dict or a checkpoint of one", self.path.display());
        }
        let mut tensors = BTreeMap::new();
        for (name, t) in refs {
            tensors.insert(name, self.tensor(t)?);
        }
        Ok(StateDict { source: self.path.clone(), tensors })
    }
}

fn collect_tensors<'a>(value: &'a Value, prefix: &str, out: &mut Vec<(String, &'a TensorRef)>) {
    match value {
        Value::Tensor(t) => out.push((prefix.to_string(), t)),
        _ => {
            if let Some(entries) = value.dict_entries() {
                for (k, v) in entries {
                    let key = match k {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        _ => continue,
                    };
                    let name = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
                    collect_tensors(v, &name, out);
                }
            }
        }
    }
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
        let file = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow!("{} holds no model.safetensors or pytorch_model.bin", dir.display()))?;
        let sd = StateDict::load(&file)?;
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
                        var.f_copy_(&t.to_kind(var.kind()).to_device(var.device()))?;
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
