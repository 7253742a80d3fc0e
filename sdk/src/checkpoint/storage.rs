//! Where tensor bytes live: the storage files of a torch zip archive, or a safetensors file.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Kind, Tensor};

use super::pickle::{self, PersistentLoad, StorageRef, TensorRef, Value};

pub(super) enum StorageSource {
    /// A torch zip archive; storages are `<prefix>data/<key>` entries.
    TorchZip {
        archive: RefCell<zip::ZipArchive<File>>,
        prefix: String,
        /// Storages already read, as flat tensors, so views of one storage share it.
        cache: RefCell<HashMap<String, Tensor>>,
    },
    /// A safetensors file, held in memory; one storage per tensor name.
    SafeTensors { bytes: Vec<u8> },
}

pub(super) fn open(path: &Path) -> Result<(Value, StorageSource)> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut magic = [0u8; 8];
    let n = file.read(&mut magic)?;
    if n >= 4 && magic[..4] == *b"PK\x03\x04" {
        open_torch_zip(File::open(path)?)
    } else if n >= 2 && magic[0] == 0x80 && magic[1] <= 5 {
        bail!("this is a legacy (before PyTorch 1.6) torch.save file, which is not supported; re-save it with a current torch.save")
    } else if n == 8 {
        open_safetensors(path)
    } else {
        bail!("not a PyTorch zip checkpoint nor a safetensors file")
    }
}

fn open_torch_zip(file: File) -> Result<(Value, StorageSource)> {
    let mut archive = zip::ZipArchive::new(file).context("not a readable zip archive")?;
    let pkl_name = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .ok_or_else(|| anyhow!("zip archive has no data.pkl: not a torch.save file"))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut f) = archive.by_name(&format!("{prefix}byteorder")) {
        let mut order = String::new();
        f.read_to_string(&mut order)?;
        if order.trim() != "little" {
            bail!("checkpoint was saved on a {order} endian machine, which is not supported");
        }
    }
    let mut pkl = Vec::new();
    archive.by_name(&pkl_name)?.read_to_end(&mut pkl)?;
    let root = pickle::load(&pkl, &mut TorchPersistentLoad)?;
    let source = StorageSource::TorchZip { archive: RefCell::new(archive), prefix, cache: RefCell::default() };
    Ok((root, source))
}

/// The torch format's persistent ids: `('storage', storage_type, key, location, numel)`.
struct TorchPersistentLoad;

impl PersistentLoad for TorchPersistentLoad {
    fn load(&mut self, pid: Value) -> Result<Value> {
        let Value::Tuple(items) = pid else { bail!("unexpected persistent id {pid:?}") };
        match items.as_slice() {
            [Value::Str(tag), Value::Global { name, .. }, key, Value::Str(location), _numel] if tag == "storage" => {
                let key = match key {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => bail!("storage key {other:?} is not a string"),
                };
                Ok(Value::Storage(StorageRef { key, dtype: name.clone(), location: location.clone() }))
            }
            _ => bail!("unexpected persistent id {items:?}"),
        }
    }
}

fn open_safetensors(path: &Path) -> Result<(Value, StorageSource)> {
    let bytes = std::fs::read(path)?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).context("not a safetensors file")?;
    let mut entries = Vec::new();
    let mut tensors: Vec<_> = metadata.tensors().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, info) in tensors {
        let size: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        let mut stride = vec![1i64; size.len()];
        for i in (0..size.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * size[i + 1].max(1);
        }
        let dtype = safetensors_storage_name(info.dtype)?;
        let storage = StorageRef { key: name.clone(), dtype: dtype.to_string(), location: "cpu".into() };
        let tensor = TensorRef { storage, offset: 0, size, stride };
        entries.push((Value::Str(name), Value::Tensor(Box::new(tensor))));
    }
    Ok((Value::Dict(entries), StorageSource::SafeTensors { bytes }))
}

fn safetensors_storage_name(dtype: safetensors::Dtype) -> Result<&'static str> {
    use safetensors::Dtype::*;
    Ok(match dtype {
        F32 => "FloatStorage",
        F64 => "DoubleStorage",
        F16 => "HalfStorage",
        BF16 => "BFloat16Storage",
        I64 => "LongStorage",
        I32 => "IntStorage",
        I16 => "ShortStorage",
        I8 => "CharStorage",
        U8 => "ByteStorage",
        BOOL => "BoolStorage",
        other => bail!("safetensors dtype {other:?} is not supported"),
    })
}

/// The element kind of a torch storage class (`FloatStorage` and friends).
fn storage_kind(name: &str) -> Result<Kind> {
    Ok(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        other => bail!("tensor storage type {other} is not supported"),
    })
}

impl StorageSource {
    pub(super) fn tensor(&self, t: &TensorRef) -> Result<Tensor> {
        let kind = storage_kind(&t.storage.dtype)?;
        match self {
            StorageSource::TorchZip { archive, prefix, cache } => {
                let mut cache = cache.borrow_mut();
                if !cache.contains_key(&t.storage.key) {
                    let name = format!("{prefix}data/{}", t.storage.key);
                    let mut bytes = Vec::new();
                    archive
                        .borrow_mut()
                        .by_name(&name)
                        .with_context(|| format!("storage {name} is missing from the archive"))?
                        .read_to_end(&mut bytes)?;
                    cache.insert(t.storage.key.clone(), flat_tensor(&bytes, kind)?);
                }
                view(&cache[&t.storage.key], t)
            }
            StorageSource::SafeTensors { bytes } => {
                let st = safetensors::SafeTensors::deserialize(bytes)?;
                let data = st.tensor(&t.storage.key)?;
                view(&flat_tensor(data.data(), kind)?, t)
            }
        }
    }
}

fn flat_tensor(bytes: &[u8], kind: Kind) -> Result<Tensor> {
    let elem = kind.elt_size_in_bytes();
    if bytes.len() % elem != 0 {
        bail!("storage of {} bytes is not a whole number of {kind:?} elements", bytes.len());
    }
    Ok(Tensor::f_from_data_size(bytes, &[(bytes.len() / elem) as i64], kind)?)
}

/// The tensor `t` describes: its view of `storage`, made contiguous (sharing the storage's
/// memory when it already is).
fn view(storage: &Tensor, t: &TensorRef) -> Result<Tensor> {
    let numel = storage.size()[0];
    // The last element the view touches must lie inside the storage.
    let last: i64 =
        t.offset + t.size.iter().zip(&t.stride).map(|(&n, &s)| if n == 0 { 0 } else { (n - 1) * s }).sum::<i64>();
    let empty = t.size.contains(&0);
    if t.offset < 0 || t.stride.iter().any(|&s| s < 0) || (!empty && last >= numel) {
        bail!(
            "tensor view (offset {}, size {:?}, stride {:?}) lies outside its storage of {numel} elements",
            t.offset,
            t.size,
            t.stride
        );
    }
    Ok(storage.f_as_strided(&t.size, &t.stride, Some(t.offset))?.f_contiguous()?)
}
