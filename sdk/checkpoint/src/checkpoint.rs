//! Where tensor bytes live: the storage entries of a torch zip archive, or a safetensors file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};
use crate::pickle::{self, StorageRef, TensorRef, Value};
use crate::tensor::{CheckedView, DType, RawTensor, TorchPersistentLoad};
use crate::DefaultReducers;

/// The largest `data.pkl` a torch archive may hold: 1 GiB. The pickle of a state dict is a few
/// kilobytes per tensor (the tensors themselves are separate entries), so this is generous; a
/// larger entry is refused before it is inflated, and it is read through `take`, so an entry
/// that lies about its size cannot make it read more either.
pub const MAX_PICKLE_BYTES: u64 = 1 << 30;

trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// An opened checkpoint: its pickled root value and the storages its tensors point into.
/// Tensors are read on demand, each only as far as the tensors of its storage need.
pub struct Checkpoint {
    name: String,
    root: Value,
    source: Source,
}

enum Source {
    /// A torch zip archive; storages are `<prefix>data/<key>` entries.
    TorchZip {
        archive: Mutex<zip::ZipArchive<Box<dyn ReadSeek>>>,
        prefix: String,
        /// Per storage key: the bytes its tensors need, and how many tensors refer to it.
        needs: HashMap<String, (usize, usize)>,
        /// Storages that several tensors share, once read.
        cache: Mutex<HashMap<String, Vec<u8>>>,
    },
    /// A safetensors file; per tensor name, the byte range of its data in the file, read as the
    /// tensor is asked for (one copy, and never the whole file in memory at once).
    SafeTensors { file: Mutex<Box<dyn ReadSeek>>, ranges: HashMap<String, (u64, u64)> },
}

impl Checkpoint {
    /// Opens a torch zip file or a safetensors file, telling them apart by content. Errors name
    /// the file.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|err| Error::Io { what: "the file".into(), err }.in_file(&name))?;
        Self::open_reader(&name, file)
    }

    /// [`Checkpoint::open`] for a file's bytes: a torch zip archive or a safetensors file.
    /// `name` stands for the file in error messages. A bytes-in entry point for fuzzing.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Checkpoint> {
        Self::open_reader(name, Cursor::new(bytes))
    }

    /// [`Checkpoint::open`] for any seekable reader (from its start). A torch archive is read by
    /// entry and a safetensors file by tensor, as tensors are asked for.
    pub fn open_reader<R: Read + Seek + Send + 'static>(name: &str, reader: R) -> Result<Checkpoint> {
        Self::open_boxed(Box::new(reader)).map_err(|e| e.in_file(name)).map(|(root, source)| Checkpoint {
            name: name.to_string(),
            root,
            source,
        })
    }

    fn open_boxed(mut reader: Box<dyn ReadSeek>) -> Result<(Value, Source)> {
        let io = |err| Error::Io { what: "the file".into(), err };
        // A zip's signature; a safetensors file's header length (8 bytes) and then its JSON,
        // which starts with '{'; a pickle's PROTO opcode. The JSON is checked before the pickle:
        // a header of 128 or 640 bytes starts with the same two bytes as a pickle.
        let mut magic = Vec::with_capacity(9);
        (&mut reader).take(9).read_to_end(&mut magic).map_err(io)?;
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        if magic.starts_with(b"PK\x03\x04") {
            open_torch_zip(reader)
        } else if magic.len() == 9 && magic[8] == b'{' {
            open_safetensors(reader)
        } else if magic.len() >= 2 && magic[0] == 0x80 && magic[1] <= 5 {
            Err(Error::Format(
                "this is a legacy (before PyTorch 1.6) torch.save file, which is not supported; re-save it with a current torch.save".into(),
            ))
        } else if magic.len() == 9 {
            open_safetensors(reader)
        } else {
            Err(Error::Format("not a PyTorch zip checkpoint nor a safetensors file".into()))
        }
    }

    /// The name given at opening (the path, for [`Checkpoint::open`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The unpickled top-level value (for safetensors: a dict of tensor names to tensors).
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Reads one tensor: a copy of its elements, in the dtype it was saved with. Errors name
    /// the file and the storage.
    pub fn tensor(&self, t: &TensorRef) -> Result<RawTensor> {
        self.read(t).map_err(|e| e.in_file(&self.name))
    }

    /// [`Checkpoint::tensor`], with errors naming the tensor as well.
    pub fn named_tensor(&self, name: &str, t: &TensorRef) -> Result<RawTensor> {
        self.read(t).map_err(self.naming(name))
    }

    /// Checks what the pickle says of a tensor (its dtype, and that its view fits its storage)
    /// without reading it, and gives its dtype. Errors name the file and the tensor, as a read's
    /// would.
    pub fn check(&self, name: &str, t: &TensorRef) -> Result<DType> {
        checked_view(t).map(|view| view.dtype).map_err(self.naming(name))
    }

    /// Reads one tensor's elements (C order, in the dtype it was saved with) in pieces of at most
    /// `piece` bytes, rounded down to whole elements, handing each to `take` in order. A tensor
    /// that is all of its storage streams from the file through one buffer of that size, so a
    /// tensor of any size never needs its own size in memory beside where it goes; other views
    /// are read whole, then handed on in pieces. Errors (also `take`'s) name the file and the
    /// tensor.
    pub fn read_pieces(
        &self,
        name: &str,
        t: &TensorRef,
        piece: usize,
        mut take: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.pieces(t, piece, &mut take).map_err(self.naming(name))
    }

    /// What errors about tensor `name` are wrapped in: its name, then the file's.
    fn naming<'a>(&'a self, name: &'a str) -> impl Fn(Error) -> Error + 'a {
        move |e| e.context(format!("tensor '{name}'")).in_file(&self.name)
    }

    /// The model weights' names and tensors: the `state_dict` entry of a Lightning checkpoint or
    /// of a dict that has one, otherwise the root itself. Nested dicts are flattened with `.`
    /// between keys. An error if there are none.
    pub fn state_dict_refs(&self) -> Result<Vec<(String, &TensorRef)>> {
        let root = match self.root.get("state_dict") {
            Some(inner) if inner.dict_entries().is_some() => inner,
            _ => &self.root,
        };
        let mut refs = Vec::new();
        collect_tensors(root, "", &mut refs);
        if refs.is_empty() {
            return Err(Error::Format("holds no tensors: it is not a state dict or a checkpoint of one".into())
                .in_file(&self.name));
        }
        Ok(refs)
    }

    /// The tensors of [`Checkpoint::state_dict_refs`], read.
    pub fn raw_state_dict(&self) -> Result<BTreeMap<String, RawTensor>> {
        self.state_dict_refs()?.into_iter().map(|(name, t)| Ok((name.clone(), self.named_tensor(&name, t)?))).collect()
    }

    fn read(&self, t: &TensorRef) -> Result<RawTensor> {
        let key = &t.storage.key;
        let view = checked_view(t)?;
        let shape = t.size.clone();
        let dtype = view.dtype;
        match &self.source {
            Source::TorchZip { archive, prefix, needs, cache } => {
                if let Some(bytes) = lock(cache).get(key) {
                    if bytes.len() >= view.needed_bytes {
                        return Ok(RawTensor { dtype, shape, data: view.gather(bytes) });
                    }
                }
                let (needed, refs) = needs.get(key).copied().unwrap_or((0, 1));
                let needed = needed.max(view.needed_bytes);
                let entry = format!("{prefix}data/{key}");
                let bytes = read_storage(&mut lock(archive), &entry, &t.storage, dtype, needed)?;
                if refs > 1 {
                    let data = view.gather(&bytes);
                    lock(cache).insert(key.clone(), bytes);
                    return Ok(RawTensor { dtype, shape, data });
                }
                Ok(RawTensor { dtype, shape, data: view.take(bytes) })
            }
            Source::SafeTensors { file, ranges } => {
                let (start, end) = safetensors_range(ranges, &t.storage, dtype)?;
                let bytes = read_range(&mut **lock(file), start, end)
                    .map_err(|err| Error::Io { what: format!("the data of tensor '{key}'"), err })?;
                Ok(RawTensor { dtype, shape, data: view.take(bytes) })
            }
        }
    }

    fn pieces(&self, t: &TensorRef, piece: usize, take: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let key = &t.storage.key;
        let view = checked_view(t)?;
        let dtype = view.dtype;
        let piece = (piece / dtype.size()).max(1) * dtype.size();
        let len = view.numel * dtype.size();
        // All of its storage, in C order: the file's bytes are the tensor's, as they come.
        let whole = view.offset == 0 && view.is_contiguous() && view.numel as u64 == t.storage.numel;
        match &self.source {
            Source::TorchZip { archive, prefix, needs, .. }
                if whole && needs.get(key).is_none_or(|&(_, refs)| refs <= 1) =>
            {
                let entry = format!("{prefix}data/{key}");
                let mut archive = lock(archive);
                let file = open_storage(&mut archive, &entry, &t.storage, dtype)?;
                let ended = |at: usize| Error::Storage {
                    key: key.clone(),
                    msg: format!("entry {entry} ends after {at} bytes; its tensor needs {len}"),
                };
                stream_pieces(file, len, piece, &ended, take)
            }
            // `whole`: the storage's bytes, which the range is checked to hold, are `len`.
            Source::SafeTensors { file, ranges } if whole => {
                let (start, _) = safetensors_range(ranges, &t.storage, dtype)?;
                let mut file = lock(file);
                file.seek(SeekFrom::Start(start))
                    .map_err(|err| Error::Io { what: format!("the data of tensor '{key}'"), err })?;
                let ended = |at: usize| Error::Storage {
                    key: key.clone(),
                    msg: format!("the file ends {at} bytes into the tensor's {len}"),
                };
                stream_pieces((&mut **file).take(len as u64), len, piece, &ended, take)
            }
            // A view into a storage, or one that several tensors share (kept once read).
            _ => self.read(t)?.data.chunks(piece).try_for_each(take),
        }
    }
}

/// `t`'s view, checked against its storage.
fn checked_view(t: &TensorRef) -> Result<CheckedView> {
    CheckedView::new(t, t.storage.numel).map_err(|msg| Error::Storage { key: t.storage.key.clone(), msg })
}

/// Where a safetensors storage's bytes are in the file, checked to be its elements' size.
fn safetensors_range(ranges: &HashMap<String, (u64, u64)>, storage: &StorageRef, dtype: DType) -> Result<(u64, u64)> {
    let key = &storage.key;
    let &(start, end) =
        ranges.get(key).ok_or_else(|| Error::Storage { key: key.clone(), msg: "is not in the file".into() })?;
    if end - start != storage.numel.saturating_mul(dtype.size() as u64) {
        return Err(Error::Storage {
            key: key.clone(),
            msg: format!("holds {} bytes, not {} {dtype:?} elements", end - start, storage.numel),
        });
    }
    Ok((start, end))
}

/// A lock on the reader or the cache. A panic while one was held (in a reader's own code)
/// leaves nothing half-changed that a later read relies on: each read seeks before it reads,
/// and a cached storage is inserted whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads the first `needed` bytes of a storage entry, after checking the entry against what
/// the pickle declares of it.
fn read_storage(
    archive: &mut zip::ZipArchive<Box<dyn ReadSeek>>,
    entry: &str,
    storage: &StorageRef,
    dtype: DType,
    needed: usize,
) -> Result<Vec<u8>> {
    let file = open_storage(archive, entry, storage, dtype)?;
    // Reserved at once, not grown while reading (ViT-B/16's weights loaded 15% faster). The size is
    // the archive's claim, so a failed reservation is not an error: a lie ends at the check below.
    let mut bytes = Vec::new();
    let _ = bytes.try_reserve_exact(needed);
    file.take(needed as u64)
        .read_to_end(&mut bytes)
        .map_err(|err| Error::Io { what: format!("entry {entry}"), err })?;
    if bytes.len() != needed {
        return Err(Error::Storage {
            key: storage.key.clone(),
            msg: format!("entry {entry} ends after {} bytes; its tensors need {needed}", bytes.len()),
        });
    }
    Ok(bytes)
}

/// A storage entry, opened for reading after checking it against what the pickle declares of
/// it.
fn open_storage<'a>(
    archive: &'a mut zip::ZipArchive<Box<dyn ReadSeek>>,
    entry: &str,
    storage: &StorageRef,
    dtype: DType,
) -> Result<zip::read::ZipFile<'a, Box<dyn ReadSeek>>> {
    let key = &storage.key;
    let fail = |msg: String| Error::Storage { key: key.clone(), msg };
    let file = match archive.by_name(entry) {
        Ok(file) => file,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(fail(format!("entry {entry} is missing from the archive")))
        }
        Err(err) => return Err(Error::Zip { what: format!("entry {entry}"), err }),
    };
    let declared = storage.numel.checked_mul(dtype.size() as u64).ok_or_else(|| fail("is too large".into()))?;
    if file.size() != declared {
        return Err(fail(format!(
            "entry {entry} holds {} bytes, but the pickle declares {} {dtype:?} elements ({declared} bytes)",
            file.size(),
            storage.numel
        )));
    }
    if file.compression() == zip::CompressionMethod::Stored && file.compressed_size() != file.size() {
        return Err(fail(format!(
            "stored entry {entry} declares {} bytes but occupies {} in the archive",
            file.size(),
            file.compressed_size()
        )));
    }
    Ok(file)
}

/// Hands `len` bytes of `reader` to `take` in pieces of `piece` bytes (the last one shorter),
/// through one buffer; `what` names the source when it ends early.
fn stream_pieces(
    mut reader: impl Read,
    len: usize,
    piece: usize,
    what: &dyn Fn(usize) -> Error,
    take: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buffer = vec![0u8; piece.min(len)];
    let mut done = 0;
    while done < len {
        let n = piece.min(len - done);
        let mut filled = 0;
        while filled < n {
            match reader.read(&mut buffer[filled..n]) {
                Ok(0) => return Err(what(done + filled)),
                Ok(read) => filled += read,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(Error::Io { what: "the tensor's data".into(), err }),
            }
        }
        take(&buffer[..n])?;
        done += n;
    }
    Ok(())
}

fn open_torch_zip(reader: Box<dyn ReadSeek>) -> Result<(Value, Source)> {
    // torch.save writes the archive from the file's first byte. The zip crate's default guesses
    // the start from the central directory, and guesses wrong when the first entry is exactly as
    // long as the extra record PyTorch puts before the end record (76 bytes: an archive saved
    // under a 21-character name).
    let config = zip::read::Config { archive_offset: zip::read::ArchiveOffset::Known(0) };
    let mut archive = zip::ZipArchive::with_config(config, reader)
        .map_err(|err| Error::Zip { what: "is not readable".into(), err })?;
    let pkl_name = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .ok_or_else(|| Error::Format("zip archive has no data.pkl: not a torch.save file".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let entry_error = |name: &str| {
        let name = name.to_string();
        move |err| Error::Io { what: format!("entry {name}"), err }
    };
    let byteorder = format!("{prefix}byteorder");
    if let Ok(f) = archive.by_name(&byteorder) {
        let mut order = Vec::new();
        f.take(16).read_to_end(&mut order).map_err(entry_error(&byteorder))?;
        let order = String::from_utf8_lossy(&order);
        if order.trim() != "little" {
            return Err(Error::Format(format!(
                "checkpoint was saved on a {} endian machine, which is not supported",
                order.trim()
            )));
        }
    }
    let pkl = {
        let file = archive.by_name(&pkl_name).map_err(|err| Error::Zip { what: format!("entry {pkl_name}"), err })?;
        let declared = file.size();
        if declared > MAX_PICKLE_BYTES {
            return Err(Error::OverLimit { what: pkl_name, size: declared, limit: MAX_PICKLE_BYTES });
        }
        let mut pkl = Vec::new();
        file.take(declared).read_to_end(&mut pkl).map_err(entry_error(&pkl_name))?;
        if pkl.len() as u64 != declared {
            return Err(Error::Format(format!("entry {pkl_name} declares {declared} bytes but holds {}", pkl.len())));
        }
        pkl
    };
    let root = pickle::load(&pkl, &mut TorchPersistentLoad, &DefaultReducers)
        .map_err(|e| e.context(format!("entry {pkl_name}")))?;
    // How far each storage must be read, and whether tensors share it.
    let mut refs = Vec::new();
    collect_all_tensors(&root, &mut refs);
    let mut needs: HashMap<String, (usize, usize)> = HashMap::new();
    for t in refs {
        let needed = CheckedView::new(t, t.storage.numel).map_or(0, |v| v.needed_bytes);
        let entry = needs.entry(t.storage.key.clone()).or_default();
        *entry = (entry.0.max(needed), entry.1 + 1);
    }
    let source = Source::TorchZip { archive: Mutex::new(archive), prefix, needs, cache: Mutex::default() };
    Ok((root, source))
}

/// The largest safetensors header read: the safetensors crate's own limit (100 MB).
pub const MAX_SAFETENSORS_HEADER_BYTES: u64 = 100_000_000;

/// Reads a safetensors file's header (its length, then its JSON), which must describe exactly
/// the data the file holds after it; the tensors' data are read later, each when asked for.
fn open_safetensors(mut file: Box<dyn ReadSeek>) -> Result<(Value, Source)> {
    let io = |err| Error::Io { what: "the file".into(), err };
    let not_safetensors = |msg: String| Error::Format(format!("not a safetensors file: {msg}"));
    let file_len = file.seek(SeekFrom::End(0)).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).map_err(io)?;
    let header_len = u64::from_le_bytes(length);
    if header_len > MAX_SAFETENSORS_HEADER_BYTES {
        return Err(not_safetensors(format!(
            "its header claims {header_len} bytes, over the limit of {MAX_SAFETENSORS_HEADER_BYTES}"
        )));
    }
    if 8 + header_len > file_len {
        return Err(not_safetensors(format!("its header claims {header_len} bytes; the file holds {file_len}")));
    }
    let mut header = Vec::with_capacity(header_len as usize);
    (&mut file).take(header_len).read_to_end(&mut header).map_err(io)?;
    // Deserialising checks the tensors: offsets in order, without gaps, each the size its
    // dtype and shape make.
    let metadata: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| not_safetensors(e.to_string()))?;
    let data_start = 8 + header_len;
    if data_start.checked_add(metadata.data_len() as u64) != Some(file_len) {
        return Err(not_safetensors(format!(
            "its header describes {} bytes of data, but {} follow it",
            metadata.data_len(),
            file_len - data_start
        )));
    }
    let mut tensors: Vec<_> = metadata.tensors().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = Vec::with_capacity(tensors.len());
    let mut ranges = HashMap::with_capacity(tensors.len());
    for (name, info) in tensors {
        let fail = |msg: String| Error::Tensor { name: name.clone(), msg };
        let dtype = DType::from_safetensors(info.dtype)
            .ok_or_else(|| fail(format!("dtype {:?} is not supported", info.dtype)))?;
        let size = info
            .shape
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<Result<Vec<i64>, _>>()
            .map_err(|_| fail(format!("shape {:?} is too large", info.shape)))?;
        // The header's check above matched the element count to the data; C-contiguous strides fit.
        let mut stride = vec![1i64; size.len()];
        for i in (0..size.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1]
                .checked_mul(size[i + 1].max(1))
                .ok_or_else(|| fail(format!("shape {:?} is too large", info.shape)))?;
        }
        let (start, end) = info.data_offsets;
        let range = (data_start + start as u64, data_start + end as u64);
        let numel = ((end - start) / dtype.size()) as u64;
        let storage =
            StorageRef { key: name.clone(), dtype: dtype.storage_class().into(), location: "cpu".into(), numel };
        ranges.insert(name.clone(), range);
        entries.push((Value::Str(name), Value::Tensor(Box::new(TensorRef { storage, offset: 0, size, stride }))));
    }
    Ok((Value::Dict(entries), Source::SafeTensors { file: Mutex::new(file), ranges }))
}

/// Bytes `start..end` of `file`, which the header check placed inside it.
fn read_range(file: &mut dyn ReadSeek, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = vec![0u8; (end - start) as usize];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// The tensors of a state dict, by their flattened names.
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

/// Every tensor anywhere in a value (its depth is bounded by the pickle limits).
fn collect_all_tensors<'a>(value: &'a Value, out: &mut Vec<&'a TensorRef>) {
    let all = |items: &'a [Value], out: &mut Vec<&'a TensorRef>| items.iter().for_each(|v| collect_all_tensors(v, out));
    match value {
        Value::Tensor(t) => out.push(t),
        Value::List(items) | Value::Tuple(items) | Value::Set(items) => all(items, out),
        Value::Dict(pairs) => pairs.iter().for_each(|(k, v)| {
            collect_all_tensors(k, out);
            collect_all_tensors(v, out);
        }),
        Value::Object(o) => {
            all(&o.args, out);
            all(&o.list_items, out);
            o.dict_items.iter().for_each(|(_, v)| collect_all_tensors(v, out));
            if let Some(state) = &o.state {
                collect_all_tensors(state, out);
            }
        }
        _ => {}
    }
}
