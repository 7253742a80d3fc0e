//! A pickle interpreter that builds inert data and never runs anything.
//!
//! Python's unpickler imports the classes a pickle names and calls them. This one records
//! each such call as a [`Value::Object`] (class name, arguments, state) and gives meaning to a
//! short list of harmless constructors only (OrderedDict, PyTorch's tensor rebuild functions,
//! a few containers). A pickle that names `os.system` therefore yields an object describing
//! that call, which nothing ever performs.
//!
//! numpy arrays become [`NdArray`] values (see [`super::numpy`]), including joblib's, whose bytes
//! follow their wrapper in the stream.
//!
//! Protocols 0 to 5 are read. Out-of-band buffers and the extension registry are refused.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{anyhow, bail, Context, Result};

use super::numpy::{self, ArrayData, NdArray, WrapperLayout};

/// An unpickled value. Containers own their contents; shared references in the pickle are
/// copied (the memo is resolved when the value is built).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64, as little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Set(Vec<Value>),
    /// Dicts keep insertion order, as Python's do.
    Dict(Vec<(Value, Value)>),
    /// A class or function named by the pickle, not resolved.
    Global {
        module: String,
        name: String,
    },
    /// A call the pickle asked for and that was not performed: `class(*args)` then `state`.
    Object(Box<Object>),
    /// A tensor: a view into a storage, as `torch._utils._rebuild_tensor_v2` describes it.
    Tensor(Box<TensorRef>),
    /// A storage named by a persistent id (the torch zip format's `('storage', ...)` tuples).
    Storage(StorageRef),
    /// A numpy array or scalar (shape `[]`).
    Array(Box<NdArray>),
    /// A reference back to a container that encloses it (the pickle holds a cycle).
    Cycle,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub module: String,
    pub name: String,
    pub args: Vec<Value>,
    /// What BUILD set: usually the instance `__dict__`.
    pub state: Option<Value>,
    /// Items appended (list subclasses) and set (dict subclasses).
    pub list_items: Vec<Value>,
    pub dict_items: Vec<(Value, Value)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// The key of the storage file in the archive (`data/<key>`).
    pub key: String,
    /// The storage class name, e.g. `FloatStorage`.
    pub dtype: String,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    /// In elements of the storage's dtype.
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::Array(a) if a.shape.is_empty() => a.to_f64().ok()?.first().copied(),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&NdArray> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    /// Entries of a dict, or of a dict-like object (OrderedDict subclasses, objects whose
    /// state is a dict).
    pub fn dict_entries(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(items) => Some(items),
            Value::Object(o) if !o.dict_items.is_empty() => Some(&o.dict_items),
            Value::Object(o) => match &o.state {
                Some(Value::Dict(items)) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }
    /// A short description for error messages: the Python type, never the (maybe huge) contents.
    pub fn type_name(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::List(_) => "list".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::Set(_) => "set".into(),
            Value::Dict(_) => "dict".into(),
            Value::Global { module, name } => format!("{module}.{name} (a class or function)"),
            Value::Object(o) => format!("{}.{}", o.module, o.name),
            Value::Tensor(_) => "torch.Tensor".into(),
            Value::Storage(_) => "torch storage".into(),
            Value::Array(a) => format!("numpy array ({})", a.dtype),
            Value::Cycle => "a reference cycle".into(),
        }
    }
    /// `self[key]` for a dict with string keys.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.dict_entries()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }
}

/// Resolves persistent ids (`BINPERSID`). The torch format uses them for storages.
pub trait PersistentLoad {
    fn load(&mut self, pid: Value) -> Result<Value>;
}

/// Refuses every persistent id: for plain pickles.
pub struct NoPersistentLoad;

impl PersistentLoad for NoPersistentLoad {
    fn load(&mut self, _pid: Value) -> Result<Value> {
        bail!("the pickle refers to external data (persistent id), which a plain pickle cannot have")
    }
}

/// The interpreter's working values. Lists, dicts and objects are shared, because the memo can
/// hand out a container that later opcodes still fill.
#[derive(Debug, Clone)]
enum Item {
    Value(Value),
    List(Rc<RefCell<Vec<Item>>>),
    Dict(Rc<RefCell<Vec<(Item, Item)>>>),
    Tuple(Rc<Vec<Item>>),
    Set(Rc<RefCell<Vec<Item>>>),
    Object(Rc<RefCell<PendingObject>>),
}

#[derive(Debug, Clone)]
struct PendingObject {
    module: String,
    name: String,
    args: Vec<Item>,
    state: Option<Item>,
    list_items: Vec<Item>,
    dict_items: Vec<(Item, Item)>,
    /// What the object turned out to be, for the few classes we understand (numpy arrays).
    resolved: Option<Value>,
}

impl PendingObject {
    fn new(module: String, name: String, args: Vec<Item>) -> PendingObject {
        PendingObject { module, name, args, state: None, list_items: vec![], dict_items: vec![], resolved: None }
    }
}

/// Guards the conversion of shared items into owned values against nesting bombs.
const MAX_DEPTH: usize = 512;

impl Item {
    fn into_value(&self) -> Result<Value> {
        self.to_value(&mut Vec::new())
    }

    /// `path` holds the containers being converted, outermost first: meeting one again is a
    /// cycle (Python objects may refer to themselves, as omegaconf nodes do to their parents).
    fn to_value(&self, path: &mut Vec<usize>) -> Result<Value> {
        if path.len() > MAX_DEPTH {
            bail!("pickle nests deeper than {MAX_DEPTH} levels");
        }
        let id = match self {
            Item::List(l) => Some(Rc::as_ptr(l) as *const () as usize),
            Item::Dict(d) => Some(Rc::as_ptr(d) as *const () as usize),
            Item::Set(s) => Some(Rc::as_ptr(s) as *const () as usize),
            Item::Object(o) => Some(Rc::as_ptr(o) as *const () as usize),
            Item::Value(_) | Item::Tuple(_) => None,
        };
        if let Some(id) = id {
            if path.contains(&id) {
                return Ok(Value::Cycle);
            }
            path.push(id);
        }
        let value = self.convert(path);
        if id.is_some() {
            path.pop();
        }
        value
    }

    fn convert(&self, path: &mut Vec<usize>) -> Result<Value> {
        fn all(items: &[Item], path: &mut Vec<usize>) -> Result<Vec<Value>> {
            items.iter().map(|i| i.to_value(path)).collect()
        }
        fn pairs(items: &[(Item, Item)], path: &mut Vec<usize>) -> Result<Vec<(Value, Value)>> {
            items.iter().map(|(k, v)| Ok((k.to_value(path)?, v.to_value(path)?))).collect()
        }
        Ok(match self {
            Item::Value(v) => v.clone(),
            Item::List(l) => Value::List(all(&l.borrow(), path)?),
            Item::Tuple(t) => Value::Tuple(all(t, path)?),
            Item::Set(s) => Value::Set(all(&s.borrow(), path)?),
            Item::Dict(m) => Value::Dict(pairs(&m.borrow(), path)?),
            Item::Object(o) => {
                let o = o.borrow();
                if let Some(value) = &o.resolved {
                    return Ok(value.clone());
                }
                Value::Object(Box::new(Object {
                    module: o.module.clone(),
                    name: o.name.clone(),
                    args: all(&o.args, path)?,
                    state: o.state.as_ref().map(|s| s.to_value(path)).transpose()?,
                    list_items: all(&o.list_items, path)?,
                    dict_items: pairs(&o.dict_items, path)?,
                }))
            }
        })
    }
}

/// Reads one pickle from `data`.
pub fn load(data: &[u8], persistent: &mut dyn PersistentLoad) -> Result<Value> {
    Machine { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), persistent }
        .run()
        .context("reading pickle")
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u64, Item>,
    persistent: &'a mut dyn PersistentLoad,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| anyhow!("pickle ends early at byte {}", self.pos))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn len(&mut self, n: u64) -> Result<usize> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.data.len() - self.pos)
            .ok_or_else(|| anyhow!("pickle item length {n} runs past the data"))
    }
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| anyhow!("pickle ends inside a text line"))?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).context("pickle text line is not UTF-8")
    }
    fn pop(&mut self) -> Result<Item> {
        // Items below the innermost MARK belong to an outer construct.
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            bail!("pickle pops past a MARK at byte {}", self.pos);
        }
        self.stack.pop().ok_or_else(|| anyhow!("pickle stack underflow at byte {}", self.pos))
    }
    fn top(&mut self) -> Result<&Item> {
        self.stack.last().ok_or_else(|| anyhow!("pickle stack is empty at byte {}", self.pos))
    }
    fn pop_mark(&mut self) -> Result<Vec<Item>> {
        let mark = self.marks.pop().ok_or_else(|| anyhow!("pickle MARK missing at byte {}", self.pos))?;
        if mark > self.stack.len() {
            bail!("pickle MARK points past the stack");
        }
        Ok(self.stack.split_off(mark))
    }
    fn push(&mut self, v: Value) {
        self.stack.push(Item::Value(v));
    }
    fn memo_put(&mut self, key: u64) -> Result<()> {
        let item = self.top()?.clone();
        self.memo.insert(key, item);
        Ok(())
    }
    fn memo_get(&mut self, key: u64) -> Result<()> {
        let item = self.memo.get(&key).cloned().ok_or_else(|| anyhow!("pickle memo key {key} not found"))?;
        self.stack.push(item);
        Ok(())
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                } // PROTO
                0x95 => {
                    self.u64()?;
                } // FRAME (framing is advisory)
                b'.' => return self.pop()?.into_value(),   // STOP
                b'(' => self.marks.push(self.stack.len()), // MARK
                b'0' => {
                    self.pop()?;
                } // POP
                b'1' => {
                    self.pop_mark()?;
                } // POP_MARK
                b'2' => {
                    let t = self.top()?.clone();
                    self.stack.push(t);
                } // DUP
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into()?);
                    self.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as u64;
                    let n = self.len(n)?;
                    let b = self.take(n)?;
                    self.push(long_value(b));
                }
                0x8b => {
                    let n = self.u32()? as u64;
                    let n = self.len(n)?;
                    let b = self.take(n)?;
                    self.push(long_value(b));
                }
                b'I' => {
                    let l = self.line()?;
                    self.push(text_int(l)?);
                }
                b'L' => {
                    let l = self.line()?;
                    self.push(text_int(l.trim_end_matches('L'))?);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into()?);
                    self.push(Value::Float(v));
                }
                b'F' => {
                    let l = self.line()?;
                    self.push(Value::Float(l.trim().parse().context("pickle FLOAT")?));
                }
                b'X' => {
                    let n = self.u32()? as u64;
                    self.push_str(n)?;
                }
                0x8c => {
                    let n = self.u8()? as u64;
                    self.push_str(n)?;
                }
                0x8d => {
                    let n = self.u64()?;
                    self.push_str(n)?;
                }
                b'V' => {
                    let l = self.line()?;
                    self.push(Value::Str(unescape_raw_unicode(l)));
                }
                b'S' => {
                    let l = self.line()?;
                    self.push(Value::Str(l.trim_matches(|c| c == '\'' || c == '"').to_string()));
                }
                b'T' => {
                    let n = self.u32()? as u64;
                    self.push_bytes(n)?;
                }
                b'U' => {
                    let n = self.u8()? as u64;
                    self.push_bytes(n)?;
                }
                b'B' => {
                    let n = self.u32()? as u64;
                    self.push_bytes(n)?;
                }
                b'C' => {
                    let n = self.u8()? as u64;
                    self.push_bytes(n)?;
                }
                0x8e | 0x96 => {
                    let n = self.u64()?;
                    self.push_bytes(n)?;
                } // BINBYTES8, BYTEARRAY8
                b'}' => self.stack.push(Item::Dict(Rc::default())),
                b']' => self.stack.push(Item::List(Rc::default())),
                b')' => self.stack.push(Item::Tuple(Rc::new(vec![]))),
                0x8f => self.stack.push(Item::Set(Rc::default())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Item::Tuple(Rc::new(items)));
                }
                0x85 => {
                    let a = self.pop()?;
                    self.stack.push(Item::Tuple(Rc::new(vec![a])));
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.stack.push(Item::Tuple(Rc::new(vec![a, b])));
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.stack.push(Item::Tuple(Rc::new(vec![a, b, c])));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Item::List(Rc::new(RefCell::new(items))));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items)?;
                    self.stack.push(Item::Dict(Rc::new(RefCell::new(pairs))));
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Item::Set(Rc::new(RefCell::new(items))));
                } // FROZENSET
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![(k, v)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items)?;
                    self.set_items(pairs)?;
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    self.add_to_set(items)?;
                } // ADDITEMS
                b'p' => {
                    let l = self.line()?;
                    let k = l.trim().parse().context("pickle PUT")?;
                    self.memo_put(k)?;
                }
                b'q' => {
                    let k = self.u8()? as u64;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()? as u64;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?;
                } // MEMOIZE
                b'g' => {
                    let l = self.line()?;
                    let k = l.trim().parse().context("pickle GET")?;
                    self.memo_get(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u64;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.u32()? as u64;
                    self.memo_get(k)?;
                }
                b'c' => {
                    let module = python3_module(self.line()?);
                    let name = self.line()?.to_string();
                    self.push(Value::Global { module, name });
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?.into_value()?;
                    let module = self.pop()?.into_value()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => {
                            self.push(Value::Global { module: python3_module(&module), name })
                        }
                        _ => bail!("pickle STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let r = self.call(callable, args)?;
                    self.stack.push(r);
                } // REDUCE
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let r = self.call(class, args)?;
                    self.stack.push(r);
                } // NEWOBJ
                0x92 => {
                    self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let r = self.call(class, args)?;
                    self.stack.push(r);
                } // NEWOBJ_EX
                b'i' => {
                    // INST
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    let args = self.pop_mark()?;
                    let r = self.call(Item::Value(Value::Global { module, name }), Item::Tuple(Rc::new(args)))?;
                    self.stack.push(r);
                }
                b'o' => {
                    // OBJ
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        bail!("pickle OBJ without a class");
                    }
                    let class = items.remove(0);
                    let r = self.call(class, Item::Tuple(Rc::new(items)))?;
                    self.stack.push(r);
                }
                b'b' => {
                    let state = self.pop()?;
                    self.build(state)?;
                } // BUILD
                b'Q' => {
                    let pid = self.pop()?.into_value()?;
                    let v = self.persistent.load(pid)?;
                    self.push(v);
                } // BINPERSID
                b'P' => {
                    let l = self.line()?.to_string();
                    let v = self.persistent.load(Value::Str(l))?;
                    self.push(v);
                } // PERSID
                0x82..=0x84 => {
                    bail!("pickle uses the copyreg extension registry (opcode 0x{op:02x}), which is not supported")
                }
                0x97 | 0x98 => bail!("pickle uses out-of-band buffers (protocol 5), which are not supported"),
                _ => bail!("unknown pickle opcode 0x{op:02x} at byte {at}"),
            }
        }
    }

    /// joblib writes an array's bytes right after its `NumpyArrayWrapper` is built: for
    /// object arrays a nested pickle, otherwise (joblib >= 1.2) a padding length byte and
    /// padding, then the raw data.
    fn joblib_array(&mut self, state: &Value) -> Result<NdArray> {
        let layout = WrapperLayout::from_state(state)?;
        if layout.is_object() {
            let mut nested = Machine {
                data: self.data,
                pos: self.pos,
                stack: Vec::new(),
                marks: Vec::new(),
                memo: HashMap::new(),
                persistent: &mut *self.persistent,
            };
            let value = nested.run()?;
            self.pos = nested.pos;
            let items = match value {
                Value::Array(a) => match a.data {
                    ArrayData::Objects(items) => items,
                    ArrayData::Raw(_) => bail!("joblib object array arrived as raw bytes"),
                },
                other => bail!("joblib object array arrived as {other:?}"),
            };
            return layout.into_array(ArrayData::Objects(items));
        }
        if layout.aligned {
            let padding = self.u8()? as usize;
            self.take(padding)?;
        }
        let n = layout.nbytes()?;
        let n = self.len(n as u64)?;
        let bytes = self.take(n)?.to_vec();
        layout.into_array(ArrayData::Raw(bytes))
    }

    fn push_str(&mut self, n: u64) -> Result<()> {
        let n = self.len(n)?;
        let bytes = self.take(n)?;
        // Python writes surrogates with 'surrogatepass'; keep such strings readable, lossy.
        self.push(Value::Str(String::from_utf8_lossy(bytes).into_owned()));
        Ok(())
    }

    fn push_bytes(&mut self, n: u64) -> Result<()> {
        let n = self.len(n)?;
        let bytes = self.take(n)?.to_vec();
        self.push(Value::Bytes(bytes));
        Ok(())
    }

    fn append(&mut self, items: Vec<Item>) -> Result<()> {
        match self.top()? {
            Item::List(l) => l.borrow_mut().extend(items),
            Item::Object(o) => o.borrow_mut().list_items.extend(items),
            other => bail!("pickle APPEND on a non-list ({other:?})"),
        }
        Ok(())
    }

    fn set_items(&mut self, pairs: Vec<(Item, Item)>) -> Result<()> {
        match self.top()? {
            Item::Dict(d) => d.borrow_mut().extend(pairs),
            Item::Object(o) => o.borrow_mut().dict_items.extend(pairs),
            other => bail!("pickle SETITEM on a non-dict ({other:?})"),
        }
        Ok(())
    }

    fn add_to_set(&mut self, items: Vec<Item>) -> Result<()> {
        match self.top()? {
            Item::Set(s) => s.borrow_mut().extend(items),
            other => bail!("pickle ADDITEMS on a non-set ({other:?})"),
        }
        Ok(())
    }

    fn build(&mut self, state: Item) -> Result<()> {
        match self.top()?.clone() {
            Item::Object(o) => {
                let (module, name) = {
                    let o = o.borrow();
                    (o.module.clone(), o.name.clone())
                };
                let resolved = match (module.as_str(), name.as_str()) {
                    (m, "_reconstruct") if numpy::MULTIARRAY.contains(&m) => {
                        Some(Value::Array(Box::new(numpy::from_reconstruct_state(&state.into_value()?)?)))
                    }
                    ("joblib.numpy_pickle", "NumpyArrayWrapper") => {
                        Some(Value::Array(Box::new(self.joblib_array(&state.into_value()?)?)))
                    }
                    _ => None,
                };
                let mut o = o.borrow_mut();
                o.state = Some(state);
                o.resolved = resolved;
            }
            // OrderedDict carries `_metadata` (module versions) as state; it means nothing here.
            Item::Dict(_) => {}
            // BUILD on a rebuilt tensor or array sets Python attributes: nothing to keep.
            Item::Value(Value::Tensor(_) | Value::Array(_)) => {}
            other => bail!("pickle BUILD on {other:?}"),
        }
        Ok(())
    }

    /// A call the pickle asks for. Only known-harmless constructors get meaning; everything else
    /// becomes an inert [`Object`].
    fn call(&mut self, callable: Item, args: Item) -> Result<Item> {
        let (module, name) = match callable.into_value()? {
            Value::Global { module, name } => (module, name),
            other => bail!("pickle calls a non-class value {other:?}"),
        };
        let args: Vec<Item> = match args {
            Item::Tuple(t) => t.as_ref().clone(),
            other => bail!("pickle call arguments are not a tuple: {other:?}"),
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") | ("builtins", "dict") if args.is_empty() => Ok(Item::Dict(Rc::default())),
            ("builtins", "list") if args.is_empty() => Ok(Item::List(Rc::default())),
            ("builtins", "bytes") | ("builtins", "bytearray") if args.is_empty() => {
                Ok(Item::Value(Value::Bytes(vec![])))
            }
            ("builtins", "set") | ("builtins", "frozenset") if args.is_empty() => Ok(Item::Set(Rc::default())),
            // Protocol 2 (torch.save's default) writes sets as `set([items])`, ordered dicts as
            // `OrderedDict([(k, v), ...])` and bytes as `_codecs.encode(text, 'latin1')`.
            ("builtins", "set") | ("builtins", "frozenset") if args.len() == 1 => match &args[0] {
                Item::List(items) => Ok(Item::Set(Rc::new(RefCell::new(items.borrow().clone())))),
                other => bail!("pickle: set() of {other:?}"),
            },
            ("collections", "OrderedDict") | ("builtins", "dict") if args.len() == 1 => {
                let Item::List(items) = &args[0] else { bail!("pickle: {name}() of a non-list") };
                let mut pairs = Vec::new();
                for item in items.borrow().iter() {
                    match item {
                        Item::Tuple(t) if t.len() == 2 => pairs.push((t[0].clone(), t[1].clone())),
                        other => bail!("pickle: {name}() item {other:?} is not a pair"),
                    }
                }
                Ok(Item::Dict(Rc::new(RefCell::new(pairs))))
            }
            ("_codecs", "encode") if args.len() == 2 => match (args[0].into_value()?, args[1].into_value()?) {
                (Value::Str(text), Value::Str(encoding)) if encoding == "latin1" || encoding == "latin-1" => {
                    // Each char is one byte (< 256) in latin-1.
                    let bytes = text.chars().map(|c| u8::try_from(c as u32)).collect::<Result<Vec<u8>, _>>();
                    Ok(Item::Value(Value::Bytes(bytes.map_err(|_| anyhow!("pickle: non-latin-1 text in bytes"))?)))
                }
                _ => Ok(Item::Object(Rc::new(RefCell::new(PendingObject::new(module, name, args))))),
            },
            // A tensor whose storage is a zip entry; other storages (a nested legacy
            // `torch.storage._load_from_bytes`) stay inert objects.
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor")
                if matches!(args.first(), Some(Item::Value(Value::Storage(_)))) =>
            {
                Ok(Item::Value(rebuild_tensor(&args)?))
            }
            // A Parameter is its tensor for our purposes.
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state")
            | ("torch.nn.parameter", "Parameter") => {
                let data = args.first().ok_or_else(|| anyhow!("pickle: {module}.{name} without data"))?;
                Ok(data.clone())
            }
            (m, "_frombuffer") if numpy::NUMERIC.contains(&m) => {
                let args = args.iter().map(|a| a.into_value()).collect::<Result<Vec<_>>>()?;
                Ok(Item::Value(Value::Array(Box::new(numpy::from_frombuffer(&args)?))))
            }
            (m, "scalar") if numpy::MULTIARRAY.contains(&m) => {
                let args = args.iter().map(|a| a.into_value()).collect::<Result<Vec<_>>>()?;
                Ok(Item::Value(Value::Array(Box::new(numpy::from_scalar(&args)?))))
            }
            _ => Ok(Item::Object(Rc::new(RefCell::new(PendingObject::new(module, name, args))))),
        }
    }
}

fn pairs(items: Vec<Item>) -> Result<Vec<(Item, Item)>> {
    if items.len() % 2 != 0 {
        bail!("pickle dict items come in an odd count");
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// Protocol 2 pickles name some modules by their Python 2 names; Python maps them back
/// (`fix_imports`), and so do we.
fn python3_module(module: &str) -> String {
    match module {
        "__builtin__" => "builtins",
        "copy_reg" => "copyreg",
        other => other,
    }
    .to_string()
}

fn long_value(bytes: &[u8]) -> Value {
    if bytes.len() <= 8 {
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let mut buf = [if negative { 0xff } else { 0 }; 8];
        buf[..bytes.len()].copy_from_slice(bytes);
        Value::Int(i64::from_le_bytes(buf))
    } else {
        Value::BigInt(bytes.to_vec())
    }
}

fn text_int(line: &str) -> Result<Value> {
    match line.trim() {
        "00" => Ok(Value::Bool(false)),
        "01" => Ok(Value::Bool(true)),
        s => Ok(Value::Int(s.parse().with_context(|| format!("pickle INT '{s}'"))?)),
    }
}

/// Protocol 0's UNICODE opcode escapes `\uXXXX` and backslashes; enough for names and keys.
fn unescape_raw_unicode(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'u') {
            chars.next();
            let hex: String = chars.by_ref().take(4).collect();
            match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                Some(ch) => out.push(ch),
                None => out.push_str(&hex),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, ...)`
fn rebuild_tensor(args: &[Item]) -> Result<Value> {
    let arg = |i: usize| -> Result<Value> {
        args.get(i).ok_or_else(|| anyhow!("tensor rebuild call has {} arguments", args.len()))?.into_value()
    };
    let storage = match arg(0)? {
        Value::Storage(s) => s,
        other => bail!("tensor rebuild without a storage: {other:?}"),
    };
    let offset = arg(1)?.as_i64().ok_or_else(|| anyhow!("tensor storage offset is not an integer"))?;
    let ints = |v: Value| -> Result<Vec<i64>> {
        match v {
            Value::Tuple(items) | Value::List(items) => {
                items.iter().map(|i| i.as_i64().ok_or_else(|| anyhow!("tensor shape holds a non-integer"))).collect()
            }
            other => bail!("tensor shape is not a tuple: {other:?}"),
        }
    };
    let size = ints(arg(2)?)?;
    let stride = ints(arg(3)?)?;
    if size.len() != stride.len() {
        bail!("tensor has {} sizes but {} strides", size.len(), stride.len());
    }
    Ok(Value::Tensor(Box::new(TensorRef { storage, offset, size, stride })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_plain(bytes: &[u8]) -> Result<Value> {
        load(bytes, &mut NoPersistentLoad)
    }

    #[test]
    fn a_memoized_container_sees_items_added_after_it_was_memoized() {
        // [d, d] where d = {'a': 1}; d is memoized (BINPUT 1) while still empty.
        let bytes = b"\x80\x02]q\x00(}q\x01X\x01\x00\x00\x00aK\x01sh\x01e.";
        let d = Value::Dict(vec![(Value::Str("a".into()), Value::Int(1))]);
        assert_eq!(load_plain(bytes).unwrap(), Value::List(vec![d.clone(), d]));
    }

    #[test]
    fn a_container_that_contains_itself_loads_with_the_cycle_marked() {
        // l = []; l.append(l)
        assert_eq!(load_plain(b"\x80\x02]q\x00h\x00a.").unwrap(), Value::List(vec![Value::Cycle]));
    }

    #[test]
    fn unknown_callables_become_inert_objects() {
        // os.system('echo hi') as protocol 0: GLOBAL, MARK, STRING, TUPLE, REDUCE.
        let bytes = b"cos\nsystem\n(S'echo hi'\ntR.";
        match load_plain(bytes).unwrap() {
            Value::Object(o) => {
                assert_eq!((o.module.as_str(), o.name.as_str()), ("os", "system"));
                assert_eq!(o.args, vec![Value::Str("echo hi".into())]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_pickles_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            b"\x80\x02",
            b"\x80\x02h\x05.",
            b"\x80\x02(t0",
            b"\x80\x02X\xff\xff\xff\x7fab.",
            b"\x80\x02\xff.",
        ] {
            assert!(load_plain(bytes).is_err(), "{bytes:?} should fail");
        }
    }

    #[test]
    fn long_integers_of_any_width() {
        // LONG1 with 1 byte (-1), 8 bytes (i64::MIN), and 9 bytes (2**64).
        assert_eq!(load_plain(b"\x80\x02\x8a\x01\xff.").unwrap(), Value::Int(-1));
        assert_eq!(load_plain(b"\x80\x02\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80.").unwrap(), Value::Int(i64::MIN));
        assert!(matches!(
            load_plain(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").unwrap(),
            Value::BigInt(_)
        ));
    }
}
