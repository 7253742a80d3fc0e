//! Safe checkpoint reading into tch tensors: the tch-free [`deepembed_checkpoint`] crate
//! (PyTorch zip files, safetensors, plain and joblib pickles, read without running any code from
//! the file), re-exported, plus the tch glue plugins use: [`Checkpoint::state_dict`] and
//! [`StateDict`], named tch tensors.
//!
//! A state dict read from a file knows each tensor's name, shape and dtype from the file's index;
//! a tensor's elements are read only when they are asked for, one tensor at a time: whole by
//! [`StateDict::tensor`] (a model that keeps the tensors it is given), and by
//! [`StateDict::copy_into`] (a model with variables of its own) in pieces of 16 MiB, each copied
//! into its place in the variable, on the CPU or the device, converting the dtype on the way. So a
//! model never holds the file's weights beside its own: loading needs the model's size and one
//! tensor or piece, not twice the checkpoint (VGG-16 on the CPU peaked at 1,189 MiB, now 733).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Kind, Tensor};

pub use deepembed_checkpoint::{
    joblib, numpy, pandas, pickle, read_pickle_bytes, read_pickle_file, sklearn, tensor, ArrayData, DType,
    DefaultReducers, Error, NdArray, Object, RawTensor, StorageRef, TensorRef, Value,
};

/// An opened checkpoint (torch zip or safetensors): its pickled root value and its tensors.
pub struct Checkpoint {
    /// Shared with the state dicts made from it, which read their tensors from it.
    inner: Arc<deepembed_checkpoint::Checkpoint>,
    path: PathBuf,
}

impl Checkpoint {
    /// Opens a torch zip file or a safetensors file, telling them apart by content.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let inner = Arc::new(deepembed_checkpoint::Checkpoint::open(path)?);
        Ok(Checkpoint { inner, path: path.to_path_buf() })
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
    /// one, otherwise the root itself. Nested dicts are flattened with `.` between keys. Each
    /// tensor is checked against its storage now and read when asked for.
    pub fn state_dict(&self) -> Result<StateDict> {
        self.state_dict_where(|_| true)
    }

    /// [`Checkpoint::state_dict`] with only the tensors whose names `keep` accepts (a whole
    /// SigLIP model's text tower is left out when only its vision tower is used).
    pub fn state_dict_where(&self, keep: impl Fn(&str) -> bool) -> Result<StateDict> {
        let mut weights = BTreeMap::new();
        for (name, t) in self.inner.state_dict_refs()? {
            if !keep(&name) {
                continue;
            }
            let dtype = self.inner.check(&name, t)?;
            let data = Data::File { file: Arc::clone(&self.inner), at: t.clone() };
            weights.insert(name, Weight { shape: t.size.clone(), kind: kind(dtype), data });
        }
        Ok(StateDict { source: self.path.clone(), weights })
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

/// Named tensors, as in a PyTorch state dict: each one's shape and dtype at hand, its elements in
/// memory or still in the file they come from.
pub struct StateDict {
    source: PathBuf,
    weights: BTreeMap<String, Weight>,
}

/// One named tensor of a [`StateDict`].
struct Weight {
    shape: Vec<i64>,
    kind: Kind,
    data: Data,
}

/// Where a weight's elements are.
enum Data {
    /// In memory: given, or made by code (a merged LoRA weight).
    Memory(Tensor),
    /// In a checkpoint file, read each time the weight is asked for (once, when a model is
    /// filled), so that nothing keeps the file's copy once the model has its own.
    File { file: Arc<deepembed_checkpoint::Checkpoint>, at: TensorRef },
}

impl Weight {
    fn in_memory(tensor: Tensor) -> Weight {
        Weight { shape: tensor.size(), kind: tensor.kind(), data: Data::Memory(tensor) }
    }

    /// The same weight, for another state dict: the tensor's storage or the file is shared.
    fn share(&self) -> Weight {
        let data = match &self.data {
            Data::Memory(t) => Data::Memory(t.shallow_clone()),
            Data::File { file, at } => Data::File { file: Arc::clone(file), at: at.clone() },
        };
        Weight { shape: self.shape.clone(), kind: self.kind, data }
    }

    /// The tensor, on the CPU: the one in memory, or a fresh read from the file.
    fn read(&self, name: &str) -> Result<Tensor> {
        match &self.data {
            Data::Memory(t) => Ok(t.shallow_clone()),
            // Read whole: two copies (file to bytes, bytes to libtorch) where pieces take three,
            // and the bytes are dropped once libtorch has its own.
            Data::File { file, at } => {
                to_tensor(&file.named_tensor(name, at)?).map_err(|e| anyhow!("{}: tensor '{name}': {e}", file.name()))
            }
        }
    }

    /// Copies the weight into `out` (a contiguous tensor of the same shape, of any dtype and on
    /// any device, not tracked by autograd), converting the dtype as it goes. From a file, the
    /// elements come in pieces of `PIECE_BYTES`: a weight of any size passes through that much
    /// memory on its way into `out`.
    fn fill(&self, name: &str, out: &Tensor) -> Result<()> {
        self.fill_in_pieces(name, out, PIECE_BYTES)
    }

    fn fill_in_pieces(&self, name: &str, out: &Tensor, piece: usize) -> Result<()> {
        match &self.data {
            Data::Memory(t) => {
                out.shallow_clone().f_copy_(t)?;
                Ok(())
            }
            Data::File { file, at } => {
                let flat = out.f_view([-1])?;
                let element = self.kind.elt_size_in_bytes();
                let mut start = 0;
                file.read_pieces(name, at, piece, |bytes| {
                    let count = (bytes.len() / element) as i64;
                    let copied = Tensor::f_from_data_size(bytes, &[count], self.kind)
                        .and_then(|piece| flat.f_narrow(0, start, count)?.f_copy_(&piece));
                    start += count;
                    copied.map_err(|e| Error::Data(format!("copying into libtorch: {e}")))
                })?;
                Ok(())
            }
        }
    }
}

/// The weight files of a Hugging Face model directory, in transformers' order of preference:
/// one file, or the shards its index names (each once, in sorted order).
fn hf_weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    for base in ["model.safetensors", "pytorch_model.bin"] {
        let single = dir.join(base);
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index = dir.join(format!("{base}.index.json"));
        if index.is_file() {
            return shards(dir, &index);
        }
    }
    bail!("{} holds no model.safetensors or pytorch_model.bin (nor a sharded one's .index.json)", dir.display())
}

/// The shard files a `*.index.json` names in its `weight_map`: plain file names in `dir`.
fn shards(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).with_context(|| format!("cannot read {}", index.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", index.display()))?;
    let map = json["weight_map"].as_object().ok_or_else(|| anyhow!("{} has no weight_map", index.display()))?;
    let mut names = std::collections::BTreeSet::new();
    for (tensor, file) in map {
        let file =
            file.as_str().ok_or_else(|| anyhow!("{}: weight_map[{tensor}] is not a file name", index.display()))?;
        if file.contains(['/', '\\']) || file.starts_with('.') {
            bail!("{}: shard {file:?} is not a file name in {}", index.display(), dir.display());
        }
        names.insert(file);
    }
    if names.is_empty() {
        bail!("{}: its weight_map is empty", index.display());
    }
    let files: Vec<PathBuf> = names.into_iter().map(|n| dir.join(n)).collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        bail!("{} names the shard {}, which is missing", index.display(), missing.display());
    }
    Ok(files)
}

/// The most bytes of a weight in memory at once on its way from a file into a tensor.
const PIECE_BYTES: usize = 16 << 20;

impl StateDict {
    /// A state dict of tensors in memory; `source` names it in messages.
    pub fn new(source: PathBuf, tensors: BTreeMap<String, Tensor>) -> StateDict {
        let weights = tensors.into_iter().map(|(name, t)| (name, Weight::in_memory(t))).collect();
        StateDict { source, weights }
    }

    /// A checkpoint file's state dict.
    pub fn load(path: &Path) -> Result<StateDict> {
        Checkpoint::open(path)?.state_dict()
    }

    /// The weights of a Hugging Face model directory, found as transformers finds them:
    /// `model.safetensors`, its shards (`model.safetensors.index.json`), `pytorch_model.bin`, its
    /// shards (`pytorch_model.bin.index.json`). `prefix` is removed when the file nests the base
    /// model under it (task models save `bert.*`, `transformer.*`); `probe` is a key of the bare
    /// model. Old BERT names (`LayerNorm.gamma` / `.beta`) are read as transformers renames them.
    pub fn load_hf_dir(dir: &Path, prefix: &str, probe: &str) -> Result<StateDict> {
        StateDict::load_hf_dir_where(dir, prefix, probe, |_| true)
    }

    /// [`StateDict::load_hf_dir`] with only the tensors whose names (as stored) `keep` accepts.
    pub fn load_hf_dir_where(dir: &Path, prefix: &str, probe: &str, keep: impl Fn(&str) -> bool) -> Result<StateDict> {
        let files = hf_weight_files(dir)?;
        let mut sd = Checkpoint::open(&files[0])?.state_dict_where(&keep)?;
        for shard in &files[1..] {
            let more = Checkpoint::open(shard)?.state_dict_where(&keep)?;
            for (name, weight) in more.weights {
                if sd.weights.insert(name.clone(), weight).is_some() {
                    bail!("{}: tensor {name} is in two shards", dir.display());
                }
            }
        }
        if files.len() > 1 {
            sd.source = dir.to_path_buf();
        }
        let sd = sd.renamed(|k| {
            Some(k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"))
        });
        Ok(if !sd.contains(probe) && sd.contains(&format!("{prefix}{probe}")) { sd.strip_prefix(prefix) } else { sd })
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The tensor `name` on the CPU, in the dtype it was saved with (read from the file now,
    /// when it is there), or `None` when there is no such tensor.
    pub fn get(&self, name: &str) -> Result<Option<Tensor>> {
        self.weights.get(name).map(|w| w.read(name)).transpose()
    }

    /// [`StateDict::get`] for a tensor that must be there.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        self.get(name)?.ok_or_else(|| anyhow!("{} has no weight {name}", self.source.display()))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains_key(name)
    }

    /// A tensor's shape, without reading it.
    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        self.weights.get(name).map(|w| w.shape.clone())
    }

    /// A tensor's dtype as saved, without reading it.
    pub fn kind(&self, name: &str) -> Option<Kind> {
        self.weights.get(name).map(|w| w.kind)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.weights.keys()
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Adds (or replaces) a tensor held in memory.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.weights.insert(name.into(), Weight::in_memory(tensor));
    }

    /// Removes a tensor; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        self.weights.remove(name).is_some()
    }

    /// The tensors `rename` gives a name, under that name (the last one wins where two get the
    /// same). They share their elements with these (nothing is read or copied).
    pub fn renamed(&self, rename: impl Fn(&str) -> Option<String>) -> StateDict {
        let weights = self.weights.iter().filter_map(|(k, w)| rename(k).map(|name| (name, w.share()))).collect();
        StateDict { source: self.source.clone(), weights }
    }

    /// The tensors whose names start with `prefix`, with the prefix removed.
    pub fn strip_prefix(&self, prefix: &str) -> StateDict {
        self.renamed(|k| k.strip_prefix(prefix).map(str::to_string))
    }

    /// Copies these weights into `vs`, one tensor at a time (each is read, copied and dropped
    /// before the next): every variable must be present with the same shape. Keys in
    /// `ignored(key)` may be left over; any other leftover is an error too, because it means the
    /// file was made for another model. The shapes are all checked before anything is read.
    pub fn copy_into(&self, vs: &mut tch::nn::VarStore, ignored: impl Fn(&str) -> bool) -> Result<()> {
        let variables = vs.variables();
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        for (name, var) in &variables {
            match self.weights.get(name) {
                None => missing.push(name.clone()),
                Some(w) if w.shape != var.size() => {
                    mismatched.push(format!("{name}: file has {:?}, model needs {:?}", w.shape, var.size()))
                }
                Some(_) => {}
            }
        }
        let unexpected: Vec<&String> =
            self.weights.keys().filter(|k| !variables.contains_key(*k) && !ignored(k)).collect();
        if missing.is_empty() && mismatched.is_empty() && unexpected.is_empty() {
            // Each straight from the file into the variable (on the CPU or the device), in
            // pieces: the file's copy of the model never exists beside the model's own.
            return tch::no_grad(|| variables.iter().try_for_each(|(name, var)| self.weights[name].fill(name, var)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, VarStore};
    use tch::Device;

    /// A safetensors file in the temporary directory: `w` (bf16, [3, 5]) and `b` (f32, [5]).
    fn safetensors_file(name: &str) -> (PathBuf, Vec<f32>, Vec<f32>) {
        // Values bf16 holds exactly, so the expected floats are the file's.
        let w: Vec<f32> = (0..15).map(|i| i as f32 * 0.25 - 1.5).collect();
        let b: Vec<f32> = (0..5).map(|i| 2.0 - i as f32).collect();
        let header = r#"{"w":{"dtype":"BF16","shape":[3,5],"data_offsets":[0,30]},"b":{"dtype":"F32","shape":[5],"data_offsets":[30,50]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(w.iter().flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes()));
        bytes.extend(b.iter().flat_map(|x| x.to_le_bytes()));
        let path = std::env::temp_dir().join(format!("deepembed-{}-{name}.safetensors", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        (path, w, b)
    }

    fn floats(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
    }

    #[test]
    fn a_weight_streams_from_its_file_in_pieces_into_any_dtype() {
        let (path, w, b) = safetensors_file("pieces");
        let sd = StateDict::load(&path).unwrap();
        assert_eq!((sd.shape("w"), sd.kind("w")), (Some(vec![3, 5]), Some(Kind::BFloat16)));
        // Pieces of one element, of a few, of three and a half (rounded down), of all.
        for piece in [2, 6, 7, 1 << 20] {
            let out = Tensor::zeros([3, 5], (Kind::Float, Device::Cpu));
            sd.weights["w"].fill_in_pieces("w", &out, piece).unwrap();
            assert_eq!(floats(&out), w, "pieces of {piece} bytes");
            let out = Tensor::zeros([5], (Kind::Double, Device::Cpu));
            sd.weights["b"].fill_in_pieces("b", &out, piece).unwrap();
            assert_eq!(floats(&out), b, "pieces of {piece} bytes");
        }
        let read = sd.tensor("w").unwrap();
        assert_eq!((read.size(), read.kind(), floats(&read)), (vec![3, 5], Kind::BFloat16, w));
        assert!(sd.get("missing").unwrap().is_none());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn copy_into_fills_the_variables_from_the_file_and_checks_every_shape_first() {
        let (path, w, b) = safetensors_file("copy");
        let sd = StateDict::load(&path).unwrap();
        let zeros = nn::Init::Const(0.0);

        let mut vs = VarStore::new(Device::Cpu);
        let (var_w, var_b) = (vs.root().var("w", &[3, 5], zeros), vs.root().var("b", &[5], zeros));
        sd.copy_into(&mut vs, |_| false).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((floats(&var_w), floats(&var_b)), (w, b));

        // A model whose `w` is transposed: nothing is copied, not even `b`, which fits.
        let mut vs = VarStore::new(Device::Cpu);
        let var_b = vs.root().var("b", &[5], zeros);
        let _ = vs.root().var("w", &[5, 3], zeros);
        let err = sd.copy_into(&mut vs, |_| false).unwrap_err().to_string();
        assert!(err.contains("shapes differ for w: file has [3, 5], model needs [5, 3]"), "{err}");
        assert_eq!(floats(&var_b), [0.0; 5]);

        // A model without `b`: unexpected unless ignored.
        let mut vs = VarStore::new(Device::Cpu);
        let _ = vs.root().var("w", &[3, 5], zeros);
        let err = sd.copy_into(&mut vs, |_| false).unwrap_err().to_string();
        assert!(err.contains("unexpected weights b"), "{err}");
        sd.copy_into(&mut vs, |k| k == "b").unwrap();
        std::fs::remove_file(path).unwrap();
    }
}
