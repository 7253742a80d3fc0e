//! A pickle interpreter that builds inert data and never runs anything.
//!
//! Python's unpickler imports the classes a pickle names and calls them. This one records
//! each such call as a [`Value::Object`] (class name, arguments, state) and gives meaning only to
//! Python's own containers (dict, OrderedDict, list, set, bytes) and to what a [`Reducers`] hook
//! recognises: the torch, numpy and joblib hooks of [`crate::DefaultReducers`] turn tensor rebuild
//! calls and numpy arrays into data. A pickle that names `os.system` therefore yields an object
//! describing that call, which nothing ever performs.
//!
//! Protocols 0 to 5 are read. Out-of-band buffers and the extension registry are refused.
//!
//! # Limits
//!
//! Working values live in an arena owned by the interpreter, so sharing one (memo `GET`, `DUP`)
//! costs nothing and dropping them never recurses. The returned [`Value`] is a tree: shared
//! references are copied into it. [`Limits`] bounds that copy (nesting depth, number of values,
//! bytes of strings and array data, counted over every materialisation of a load) so that a
//! small hostile pickle ends in [`Error::TooDeep`] or [`Error::TooLarge`] instead of a stack
//! overflow or an exhausted memory.

use std::collections::HashMap;
use std::fmt;

use crate::error::{Error, Result};
use crate::numpy::NdArray;

/// An unpickled value. Containers own their contents; shared references in the pickle are
/// copied (within [`Limits`]).
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
    /// A tensor, as `torch._utils._rebuild_tensor_v2` describes it: a storage and the
    /// offset, size and stride of the tensor's elements in it. Reading it copies those
    /// elements out ([`crate::Checkpoint::tensor`]).
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
    /// The key of the storage file in the archive (`data/<key>`), or the safetensors name.
    pub key: String,
    /// The storage class name, e.g. `FloatStorage`.
    pub dtype: String,
    pub location: String,
    /// The number of elements the pickle says the storage holds.
    pub numel: u64,
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

/// A class or function a pickle names: `module.name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClassName {
    pub module: String,
    pub name: String,
}

impl ClassName {
    /// Whether this is `name` in one of `modules`.
    pub fn is(&self, modules: &[&str], name: &str) -> bool {
        self.name == name && modules.contains(&self.module.as_str())
    }
}

impl fmt::Display for ClassName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
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
        Err(Error::data("the pickle refers to external data (persistent id), which a plain pickle cannot have"))
    }
}

/// Hooks that give meaning to calls a pickle asks for, as data: the interpreter itself knows
/// only Python's containers. Each hook returns `None` for a class it does not know, leaving the
/// call an inert [`Object`]; `Some(Ok(value))` replaces the call (or, for `build`, the built
/// object) with `value`; `Some(Err(_))` fails the load.
///
/// Arguments and state reach a hook through [`Call`], which materialises them only when asked
/// (within the load's [`Limits`]), so unknown classes cost nothing.
pub trait Reducers {
    /// `class(*args)` (opcodes REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ).
    fn reduce(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
        let _ = (class, call);
        None
    }
    /// BUILD on an object made by `class(...)`; the state is [`Call::arg`] 0. A hook may read
    /// bytes that follow in the stream (joblib puts array data there).
    fn build(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
        let _ = (class, call);
        None
    }
}

/// No hooks: every call stays an inert object.
pub struct NoReducers;
impl Reducers for NoReducers {}

impl<T: Reducers + ?Sized> Reducers for &T {
    fn reduce(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
        (**self).reduce(class, call)
    }
    fn build(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
        (**self).build(class, call)
    }
}

/// A list of hooks, asked in order; the first that knows a class decides.
impl Reducers for [&dyn Reducers] {
    fn reduce(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
        self.iter().find_map(|r| r.reduce(class, call))
    }
    fn build(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
        self.iter().find_map(|r| r.build(class, call))
    }
}

/// What one load may cost. [`Limits::for_input`] gives the defaults [`load`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Nesting of the returned value: every container, tuple, object, argument list and state
    /// counts one level. Python's own unpickler would hit its recursion limit near 1000 frames.
    pub max_depth: usize,
    /// Pickles inside pickles (joblib writes each object-dtype array as its own pickle).
    pub max_nested_pickles: usize,
    /// Values materialised over the whole load, shared references counted each time they are
    /// copied.
    pub max_values: usize,
    /// Bytes of strings, bytes and array data materialised over the whole load.
    pub max_payload_bytes: usize,
}

impl Limits {
    /// The default nesting limit. It fits, with room to spare, a 2 MiB thread stack (the
    /// default of test threads) in a debug build.
    pub const MAX_DEPTH: usize = 200;
    /// The default limit of nested pickles.
    pub const MAX_NESTED_PICKLES: usize = 16;

    /// Limits for a pickle of `len` bytes: depth 200, 16 nested pickles, 2^18 + 4·len values
    /// and 16 MiB + 4·len payload bytes. A pickle without shared references materialises at
    /// most about one value per byte and its payload a couple of times (once when a numpy
    /// array is built, once into the result), so these leave ample room for legitimate files
    /// while a few hundred hostile bytes stop after some tens of megabytes (a `Value` takes
    /// 56 bytes and more).
    pub fn for_input(len: usize) -> Limits {
        Limits {
            max_depth: Self::MAX_DEPTH,
            max_nested_pickles: Self::MAX_NESTED_PICKLES,
            max_values: (1usize << 18).saturating_add(len.saturating_mul(4)),
            max_payload_bytes: (16usize << 20).saturating_add(len.saturating_mul(4)),
        }
    }
}

/// Reads one pickle from `data` with [`Limits::for_input`]. `persistent` resolves persistent
/// ids (use [`NoPersistentLoad`] for plain pickles); `reducers` gives meaning to calls (use
/// [`crate::DefaultReducers`] for torch, numpy and joblib data, [`NoReducers`] for none).
///
/// This is the interpreter's bytes-in entry point, suited to fuzzing: any input ends in a
/// value or an [`Error`], never a panic, an abort or a runaway allocation.
pub fn load(data: &[u8], persistent: &mut dyn PersistentLoad, reducers: &dyn Reducers) -> Result<Value> {
    load_with_limits(data, persistent, reducers, Limits::for_input(data.len()))
}

/// [`load`] with explicit limits.
pub fn load_with_limits(
    data: &[u8],
    persistent: &mut dyn PersistentLoad,
    reducers: &dyn Reducers,
    limits: Limits,
) -> Result<Value> {
    let mut machine = Machine {
        data,
        pos: 0,
        at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        heap: Vec::new(),
        persistent,
        reducers,
        limits,
        values_used: 0,
        payload_used: 0,
        nested: 0,
    };
    machine.run()
}

/// What a [`Reducers`] hook sees of a call: the class's arguments (for BUILD: the state), read
/// on demand, and the stream after the current opcode.
pub struct Call<'m, 'a> {
    machine: &'m mut Machine<'a>,
    items: &'m [Item],
}

impl<'a> Call<'_, 'a> {
    /// The number of arguments (1 for BUILD: the state).
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Argument `i`, materialised (within the load's limits); `None` past the last.
    pub fn arg(&mut self, i: usize) -> Result<Option<Value>> {
        match self.items.get(i) {
            Some(&item) => self.machine.materialise(item).map(Some),
            None => Ok(None),
        }
    }
    /// All arguments, materialised.
    pub fn args(&mut self) -> Result<Vec<Value>> {
        self.items.iter().map(|&item| self.machine.materialise(item)).collect()
    }
    /// The next `n` bytes of the stream (after the opcode being run), consumed.
    pub fn read(&mut self, n: usize) -> Result<&'a [u8]> {
        self.machine.take(n)
    }
    /// The offset in the stream where the next [`Call::read`] starts.
    pub fn offset(&self) -> usize {
        self.machine.pos
    }
    /// A whole pickle that follows in the stream (up to its STOP), read with the same hooks and
    /// limits, within [`Limits::max_nested_pickles`].
    pub fn load_nested(&mut self) -> Result<Value> {
        self.machine.run_nested()
    }
}

/// The interpreter's working values: scalars inline, everything else in the arena.
#[derive(Debug, Clone, Copy)]
enum Item {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Node(usize),
}

/// What a leaf value costs each time it is copied out.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    values: usize,
    bytes: usize,
    depth: usize,
}

enum Node {
    /// A built value (a string, a global, a tensor, an array...), with its size.
    Leaf(Value, Size),
    List(Vec<Item>),
    Tuple(Vec<Item>),
    Set(Vec<Item>),
    Dict(Vec<(Item, Item)>),
    Object(Box<PendingObject>),
}

struct PendingObject {
    class: ClassName,
    args: Vec<Item>,
    state: Option<Item>,
    list_items: Vec<Item>,
    dict_items: Vec<(Item, Item)>,
    /// What a [`Reducers::build`] hook made of the object: a leaf node.
    resolved: Option<usize>,
}

/// The size of a value built outside the arena (by a hook or a persistent load). Recursion is
/// bounded: such values are made from materialised (depth-limited) values, a level or two more.
fn measure(value: &Value) -> Size {
    fn add(a: Size, b: Size) -> Size {
        Size {
            values: a.values.saturating_add(b.values),
            bytes: a.bytes.saturating_add(b.bytes),
            depth: a.depth.max(b.depth + 1),
        }
    }
    let one = Size { values: 1, bytes: 0, depth: 1 };
    let all = |items: &[Value]| items.iter().map(measure).fold(one, add);
    match value {
        Value::Str(s) => Size { bytes: s.len(), ..one },
        Value::Bytes(b) | Value::BigInt(b) => Size { bytes: b.len(), ..one },
        Value::Global { module, name } => Size { bytes: module.len() + name.len(), ..one },
        Value::List(items) | Value::Tuple(items) | Value::Set(items) => all(items),
        Value::Dict(pairs) => pairs.iter().flat_map(|(k, v)| [measure(k), measure(v)]).fold(one, add),
        Value::Object(o) => {
            let mut size = add(all(&o.args), all(&o.list_items));
            size = o.dict_items.iter().flat_map(|(k, v)| [measure(k), measure(v)]).fold(size, add);
            match &o.state {
                Some(state) => add(size, measure(state)),
                None => size,
            }
        }
        Value::Array(a) => {
            let data = match &a.data {
                crate::numpy::ArrayData::Raw(bytes) => Size { bytes: bytes.len(), ..one },
                crate::numpy::ArrayData::Objects(items) => all(items),
            };
            add(one, data)
        }
        Value::Tensor(t) => Size { bytes: t.storage.key.len() + 8 * t.size.len() * 2, ..one },
        _ => one,
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the opcode being run starts.
    at: usize,
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u64, Item>,
    heap: Vec<Node>,
    persistent: &'a mut dyn PersistentLoad,
    reducers: &'a dyn Reducers,
    limits: Limits,
    values_used: usize,
    payload_used: usize,
    nested: usize,
}

impl<'a> Machine<'a> {
    fn err(&self, msg: impl fmt::Display) -> Error {
        Error::Pickle { offset: self.at, msg: msg.to_string() }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| Error::Pickle { offset: self.pos, msg: "pickle ends early".into() })?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn len(&mut self, n: u64) -> Result<usize> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.data.len() - self.pos)
            .ok_or_else(|| self.err(format!("item length {n} runs past the data")))
    }
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| self.err("pickle ends inside a text line"))?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| self.err("text line is not UTF-8"))
    }
    fn pop(&mut self) -> Result<Item> {
        // Items below the innermost MARK belong to an outer construct.
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err("pops past a MARK"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }
    fn top(&self) -> Result<Item> {
        self.stack.last().copied().ok_or_else(|| self.err("stack is empty"))
    }
    fn pop_mark(&mut self) -> Result<Vec<Item>> {
        let mark = self.marks.pop().ok_or_else(|| self.err("MARK missing"))?;
        if mark > self.stack.len() {
            return Err(self.err("MARK points past the stack"));
        }
        Ok(self.stack.split_off(mark))
    }
    fn alloc(&mut self, node: Node) -> Item {
        self.heap.push(node);
        Item::Node(self.heap.len() - 1)
    }
    fn leaf(&mut self, value: Value) -> Item {
        let size = measure(&value);
        self.alloc(Node::Leaf(value, size))
    }
    fn push(&mut self, item: Item) {
        self.stack.push(item);
    }
    fn push_value(&mut self, value: Value) {
        let item = self.leaf(value);
        self.stack.push(item);
    }
    fn push_node(&mut self, node: Node) {
        let item = self.alloc(node);
        self.stack.push(item);
    }
    fn memo_put(&mut self, key: u64) -> Result<()> {
        let item = self.top()?;
        self.memo.insert(key, item);
        Ok(())
    }
    fn memo_get(&mut self, key: u64) -> Result<()> {
        let item = self.memo.get(&key).copied().ok_or_else(|| self.err(format!("memo key {key} not found")))?;
        self.stack.push(item);
        Ok(())
    }
    fn node_mut(&mut self, item: Item) -> Option<&mut Node> {
        match item {
            Item::Node(id) => self.heap.get_mut(id),
            _ => None,
        }
    }
    fn str_of(&self, item: Item) -> Option<&str> {
        match item {
            Item::Node(id) => match &self.heap[id] {
                Node::Leaf(Value::Str(s), _) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }
    fn describe(&self, item: Item) -> String {
        match item {
            Item::None => "None".into(),
            Item::Bool(_) => "bool".into(),
            Item::Int(_) => "int".into(),
            Item::Float(_) => "float".into(),
            Item::Node(id) => match &self.heap[id] {
                Node::Leaf(v, _) => v.type_name(),
                Node::List(_) => "list".into(),
                Node::Tuple(_) => "tuple".into(),
                Node::Set(_) => "set".into(),
                Node::Dict(_) => "dict".into(),
                Node::Object(o) => o.class.to_string(),
            },
        }
    }

    /// Counts `values` values and `bytes` payload bytes against the load's limits.
    fn spend(&mut self, values: usize, bytes: usize) -> Result<()> {
        self.values_used = self.values_used.saturating_add(values);
        self.payload_used = self.payload_used.saturating_add(bytes);
        if self.values_used > self.limits.max_values {
            return Err(Error::TooLarge { offset: self.at, what: "values", limit: self.limits.max_values });
        }
        if self.payload_used > self.limits.max_payload_bytes {
            return Err(Error::TooLarge {
                offset: self.at,
                what: "bytes of strings and data",
                limit: self.limits.max_payload_bytes,
            });
        }
        Ok(())
    }

    /// Materialises a working item as a [`Value`], within the limits.
    fn materialise(&mut self, item: Item) -> Result<Value> {
        self.convert(item, 1, &mut Vec::new())
    }

    /// `path` holds the containers being converted, outermost first: meeting one again is a
    /// cycle (Python objects may refer to themselves, as omegaconf nodes do to their parents).
    fn convert(&mut self, item: Item, depth: usize, path: &mut Vec<usize>) -> Result<Value> {
        if depth > self.limits.max_depth {
            return Err(Error::TooDeep { offset: self.at, limit: self.limits.max_depth });
        }
        let id = match item {
            Item::None => return self.spend(1, 0).map(|_| Value::None),
            Item::Bool(b) => return self.spend(1, 0).map(|_| Value::Bool(b)),
            Item::Int(i) => return self.spend(1, 0).map(|_| Value::Int(i)),
            Item::Float(f) => return self.spend(1, 0).map(|_| Value::Float(f)),
            Item::Node(id) => id,
        };
        if let Node::Leaf(_, size) = &self.heap[id] {
            let size = *size;
            if depth - 1 + size.depth > self.limits.max_depth {
                return Err(Error::TooDeep { offset: self.at, limit: self.limits.max_depth });
            }
            self.spend(size.values, size.bytes)?;
            let Node::Leaf(value, _) = &self.heap[id] else { unreachable!() };
            return Ok(value.clone());
        }
        if path.contains(&id) {
            return self.spend(1, 0).map(|_| Value::Cycle);
        }
        self.spend(1, 0)?;
        path.push(id);
        let value = self.convert_node(id, depth, path);
        path.pop();
        value
    }

    fn convert_node(&mut self, id: usize, depth: usize, path: &mut Vec<usize>) -> Result<Value> {
        fn all(m: &mut Machine<'_>, items: &[Item], depth: usize, path: &mut Vec<usize>) -> Result<Vec<Value>> {
            items.iter().map(|&i| m.convert(i, depth + 1, path)).collect()
        }
        fn pairs(
            m: &mut Machine<'_>,
            items: &[(Item, Item)],
            depth: usize,
            path: &mut Vec<usize>,
        ) -> Result<Vec<(Value, Value)>> {
            items.iter().map(|&(k, v)| Ok((m.convert(k, depth + 1, path)?, m.convert(v, depth + 1, path)?))).collect()
        }
        // Children are handles (Copy): clone the lists so the arena is free for the recursion.
        Ok(match &self.heap[id] {
            Node::Leaf(..) => unreachable!("leaves are converted by convert"),
            Node::List(items) => Value::List(all(self, &items.clone(), depth, path)?),
            Node::Tuple(items) => Value::Tuple(all(self, &items.clone(), depth, path)?),
            Node::Set(items) => Value::Set(all(self, &items.clone(), depth, path)?),
            Node::Dict(items) => Value::Dict(pairs(self, &items.clone(), depth, path)?),
            Node::Object(o) => {
                if let Some(resolved) = o.resolved {
                    return self.convert(Item::Node(resolved), depth, path);
                }
                let (class, args, state, list_items, dict_items) =
                    (o.class.clone(), o.args.clone(), o.state, o.list_items.clone(), o.dict_items.clone());
                self.spend(0, class.module.len() + class.name.len())?;
                Value::Object(Box::new(Object {
                    module: class.module,
                    name: class.name,
                    args: all(self, &args, depth, path)?,
                    state: state.map(|s| self.convert(s, depth + 1, path)).transpose()?,
                    list_items: all(self, &list_items, depth, path)?,
                    dict_items: pairs(self, &dict_items, depth, path)?,
                }))
            }
        })
    }

    /// Runs a pickle that follows in the stream with fresh stack, marks and memo (joblib writes
    /// object arrays so), sharing the arena and the limits.
    fn run_nested(&mut self) -> Result<Value> {
        if self.nested >= self.limits.max_nested_pickles {
            return Err(Error::TooDeep { offset: self.pos, limit: self.limits.max_nested_pickles });
        }
        self.nested += 1;
        let saved = (std::mem::take(&mut self.stack), std::mem::take(&mut self.marks), std::mem::take(&mut self.memo));
        let at = self.at;
        let value = self.run();
        (self.stack, self.marks, self.memo) = saved;
        self.at = at;
        self.nested -= 1;
        value
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            self.at = self.pos;
            let op = self.u8()?;
            match self.step(op) {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                Err(e @ (Error::Pickle { .. } | Error::TooDeep { .. } | Error::TooLarge { .. })) => return Err(e),
                Err(e) => return Err(e.context(format!("pickle byte {}", self.at))),
            }
        }
    }

    /// Runs one opcode; the value at STOP.
    fn step(&mut self, op: u8) -> Result<Option<Value>> {
        match op {
            0x80 => {
                self.u8()?;
            } // PROTO
            0x95 => {
                self.u64()?;
            } // FRAME (framing is advisory)
            b'.' => {
                let item = self.pop()?;
                return self.materialise(item).map(Some);
            } // STOP
            b'(' => self.marks.push(self.stack.len()), // MARK
            b'0' => {
                self.pop()?;
            } // POP
            b'1' => {
                self.pop_mark()?;
            } // POP_MARK
            b'2' => {
                let t = self.top()?;
                self.push(t);
            } // DUP
            b'N' => self.push(Item::None),
            0x88 => self.push(Item::Bool(true)),
            0x89 => self.push(Item::Bool(false)),
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Item::Int(v as i64));
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Item::Int(v as i64));
            }
            b'M' => {
                let v = self.u16()?;
                self.push(Item::Int(v as i64));
            }
            0x8a => {
                let n = self.u8()? as u64;
                let n = self.len(n)?;
                let b = self.take(n)?;
                self.push_long(b);
            }
            0x8b => {
                let n = self.u32()? as u64;
                let n = self.len(n)?;
                let b = self.take(n)?;
                self.push_long(b);
            }
            b'I' => {
                let l = self.line()?;
                let item = self.text_int(l)?;
                self.push(item);
            }
            b'L' => {
                let l = self.line()?;
                let item = self.text_int(l.trim_end_matches('L'))?;
                self.push(item);
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Item::Float(v));
            }
            b'F' => {
                let l = self.line()?;
                let v = l.trim().parse().map_err(|_| self.err(format!("FLOAT '{l}'")))?;
                self.push(Item::Float(v));
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
                self.push_value(Value::Str(unescape_raw_unicode(l)));
            }
            b'S' => {
                let l = self.line()?;
                self.push_value(Value::Str(l.trim_matches(|c| c == '\'' || c == '"').to_string()));
            }
            b'T' | b'B' => {
                let n = self.u32()? as u64;
                self.push_bytes(n)?;
            }
            b'U' | b'C' => {
                let n = self.u8()? as u64;
                self.push_bytes(n)?;
            }
            0x8e | 0x96 => {
                let n = self.u64()?;
                self.push_bytes(n)?;
            } // BINBYTES8, BYTEARRAY8
            b'}' => self.push_node(Node::Dict(Vec::new())),
            b']' => self.push_node(Node::List(Vec::new())),
            b')' => self.push_node(Node::Tuple(Vec::new())),
            0x8f => self.push_node(Node::Set(Vec::new())),
            b't' => {
                let items = self.pop_mark()?;
                self.push_node(Node::Tuple(items));
            }
            0x85 => {
                let a = self.pop()?;
                self.push_node(Node::Tuple(vec![a]));
            }
            0x86 => {
                let b = self.pop()?;
                let a = self.pop()?;
                self.push_node(Node::Tuple(vec![a, b]));
            }
            0x87 => {
                let c = self.pop()?;
                let b = self.pop()?;
                let a = self.pop()?;
                self.push_node(Node::Tuple(vec![a, b, c]));
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push_node(Node::List(items));
            }
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.push_node(Node::Dict(pairs));
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.push_node(Node::Set(items));
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
                let pairs = self.pairs(items)?;
                self.set_items(pairs)?;
            }
            0x90 => {
                let items = self.pop_mark()?;
                let top = self.top()?;
                match self.node_mut(top) {
                    Some(Node::Set(s)) => s.extend(items),
                    _ => return Err(self.err(format!("ADDITEMS on a {}", self.describe(top)))),
                }
            } // ADDITEMS
            b'p' => {
                let l = self.line()?;
                let k = l.trim().parse().map_err(|_| self.err(format!("PUT '{l}'")))?;
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
                let k = l.trim().parse().map_err(|_| self.err(format!("GET '{l}'")))?;
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
                self.push_value(Value::Global { module, name });
            }
            0x93 => {
                // STACK_GLOBAL
                let name = self.pop()?;
                let module = self.pop()?;
                match (self.str_of(module), self.str_of(name)) {
                    (Some(module), Some(name)) => {
                        let global = Value::Global { module: python3_module(module), name: name.to_string() };
                        self.push_value(global);
                    }
                    _ => return Err(self.err("STACK_GLOBAL needs two strings")),
                }
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let args = self.tuple_items(args)?;
                let r = self.call(callable, args)?;
                self.push(r);
            } // REDUCE, NEWOBJ
            0x92 => {
                self.pop()?;
                let args = self.pop()?;
                let class = self.pop()?;
                let args = self.tuple_items(args)?;
                let r = self.call(class, args)?;
                self.push(r);
            } // NEWOBJ_EX
            b'i' => {
                // INST
                let module = python3_module(self.line()?);
                let name = self.line()?.to_string();
                let args = self.pop_mark()?;
                let class = self.leaf(Value::Global { module, name });
                let r = self.call(class, args)?;
                self.push(r);
            }
            b'o' => {
                // OBJ
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return Err(self.err("OBJ without a class"));
                }
                let class = items.remove(0);
                let r = self.call(class, items)?;
                self.push(r);
            }
            b'b' => {
                let state = self.pop()?;
                self.build(state)?;
            } // BUILD
            b'Q' => {
                let pid = self.pop()?;
                let pid = self.materialise(pid)?;
                let v = self.persistent.load(pid)?;
                self.push_value(v);
            } // BINPERSID
            b'P' => {
                let l = self.line()?.to_string();
                let v = self.persistent.load(Value::Str(l))?;
                self.push_value(v);
            } // PERSID
            0x82..=0x84 => {
                return Err(self
                    .err(format!("uses the copyreg extension registry (opcode 0x{op:02x}), which is not supported")));
            }
            0x97 | 0x98 => return Err(self.err("uses out-of-band buffers (protocol 5), which are not supported")),
            _ => return Err(self.err(format!("unknown opcode 0x{op:02x}"))),
        }
        Ok(None)
    }

    fn tuple_items(&self, args: Item) -> Result<Vec<Item>> {
        match args {
            Item::Node(id) => match &self.heap[id] {
                Node::Tuple(items) => Ok(items.clone()),
                _ => Err(self.err(format!("call arguments are a {}, not a tuple", self.describe(args)))),
            },
            _ => Err(self.err(format!("call arguments are a {}, not a tuple", self.describe(args)))),
        }
    }

    fn pairs(&self, items: Vec<Item>) -> Result<Vec<(Item, Item)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("dict items come in an odd count"));
        }
        Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
    }

    fn push_long(&mut self, bytes: &[u8]) {
        if bytes.len() <= 8 {
            let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
            let mut buf = [if negative { 0xff } else { 0 }; 8];
            buf[..bytes.len()].copy_from_slice(bytes);
            self.push(Item::Int(i64::from_le_bytes(buf)));
        } else {
            self.push_value(Value::BigInt(bytes.to_vec()));
        }
    }

    fn text_int(&self, line: &str) -> Result<Item> {
        match line.trim() {
            "00" => Ok(Item::Bool(false)),
            "01" => Ok(Item::Bool(true)),
            s => s.parse().map(Item::Int).map_err(|_| self.err(format!("INT '{s}'"))),
        }
    }

    fn push_str(&mut self, n: u64) -> Result<()> {
        let n = self.len(n)?;
        let bytes = self.take(n)?;
        // Python writes surrogates with 'surrogatepass'; keep such strings readable, lossy.
        self.push_value(Value::Str(String::from_utf8_lossy(bytes).into_owned()));
        Ok(())
    }

    fn push_bytes(&mut self, n: u64) -> Result<()> {
        let n = self.len(n)?;
        let bytes = self.take(n)?.to_vec();
        self.push_value(Value::Bytes(bytes));
        Ok(())
    }

    fn append(&mut self, items: Vec<Item>) -> Result<()> {
        let top = self.top()?;
        match self.node_mut(top) {
            Some(Node::List(l)) => l.extend(items),
            Some(Node::Object(o)) => o.list_items.extend(items),
            _ => return Err(self.err(format!("APPEND on a {}", self.describe(top)))),
        }
        Ok(())
    }

    fn set_items(&mut self, pairs: Vec<(Item, Item)>) -> Result<()> {
        let top = self.top()?;
        match self.node_mut(top) {
            Some(Node::Dict(d)) => d.extend(pairs),
            Some(Node::Object(o)) => o.dict_items.extend(pairs),
            _ => return Err(self.err(format!("SETITEM on a {}", self.describe(top)))),
        }
        Ok(())
    }

    fn build(&mut self, state: Item) -> Result<()> {
        let top = self.top()?;
        let class = match self.node_mut(top) {
            Some(Node::Object(o)) => o.class.clone(),
            // OrderedDict carries `_metadata` (module versions) as state; it means nothing here.
            Some(Node::Dict(_)) => return Ok(()),
            // BUILD on a rebuilt tensor or array sets Python attributes: nothing to keep.
            Some(Node::Leaf(Value::Tensor(_) | Value::Array(_), _)) => return Ok(()),
            _ => return Err(self.err(format!("BUILD on a {}", self.describe(top)))),
        };
        let reducers = self.reducers;
        let items = [state];
        let resolved = reducers.build(&class, &mut Call { machine: self, items: &items }).transpose()?;
        let resolved = resolved.map(|v| match self.leaf(v) {
            Item::Node(id) => id,
            _ => unreachable!("leaves are nodes"),
        });
        if let Some(Node::Object(o)) = self.node_mut(top) {
            o.state = Some(state);
            o.resolved = resolved;
        }
        Ok(())
    }

    /// A call the pickle asks for. Python's containers are made here; the hooks give meaning to
    /// other classes; everything else becomes an inert [`Object`].
    fn call(&mut self, callable: Item, args: Vec<Item>) -> Result<Item> {
        let class = match callable {
            Item::Node(id) => match &self.heap[id] {
                Node::Leaf(Value::Global { module, name }, _) => {
                    ClassName { module: module.clone(), name: name.clone() }
                }
                _ => return Err(self.err(format!("calls a {}, not a class", self.describe(callable)))),
            },
            _ => return Err(self.err(format!("calls a {}, not a class", self.describe(callable)))),
        };
        let builtin = |names: &[&str]| class.module == "builtins" && names.contains(&class.name.as_str());
        let dict = class.is(&["collections"], "OrderedDict") || builtin(&["dict"]);
        let set = builtin(&["set", "frozenset"]);
        if args.is_empty() {
            if dict {
                return Ok(self.alloc(Node::Dict(Vec::new())));
            }
            if set {
                return Ok(self.alloc(Node::Set(Vec::new())));
            }
            if builtin(&["list"]) {
                return Ok(self.alloc(Node::List(Vec::new())));
            }
            if builtin(&["bytes", "bytearray"]) {
                return Ok(self.leaf(Value::Bytes(Vec::new())));
            }
        }
        if args.len() == 1 && (dict || set) {
            // Protocol 2 (torch.save's default) writes sets as `set([items])` and ordered dicts
            // as `OrderedDict([(k, v), ...])`.
            let items = match self.node_mut(args[0]) {
                Some(Node::List(items)) => items.clone(),
                _ => return Err(self.err(format!("{class}() of a {}", self.describe(args[0])))),
            };
            if set {
                return Ok(self.alloc(Node::Set(items)));
            }
            let mut pairs = Vec::with_capacity(items.len());
            for item in items {
                match self.node_mut(item) {
                    Some(Node::Tuple(t)) if t.len() == 2 => pairs.push((t[0], t[1])),
                    _ => return Err(self.err(format!("{class}() item {} is not a pair", self.describe(item)))),
                }
            }
            return Ok(self.alloc(Node::Dict(pairs)));
        }
        // Protocol 2 writes bytes as `_codecs.encode(text, 'latin1')`.
        if class.is(&["_codecs"], "encode") && args.len() == 2 {
            if let (Some(text), Some("latin1" | "latin-1")) = (self.str_of(args[0]), self.str_of(args[1])) {
                // Each char is one byte (< 256) in latin-1.
                let bytes = text.chars().map(|c| u8::try_from(c as u32)).collect::<Result<Vec<u8>, _>>();
                let bytes = bytes.map_err(|_| self.err("non-latin-1 text in bytes"))?;
                return Ok(self.leaf(Value::Bytes(bytes)));
            }
        }
        let reducers = self.reducers;
        match reducers.reduce(&class, &mut Call { machine: self, items: &args }) {
            Some(value) => {
                let value = value?;
                Ok(self.leaf(value))
            }
            None => Ok(self.alloc(Node::Object(Box::new(PendingObject {
                class,
                args,
                state: None,
                list_items: Vec::new(),
                dict_items: Vec::new(),
                resolved: None,
            })))),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load_plain(bytes: &[u8]) -> Result<Value> {
        load(bytes, &mut NoPersistentLoad, &NoReducers)
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
            b"\x80\x02N\x85R.",
            b"\x80\x02K\x01)b.",
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

    #[test]
    fn hooks_are_asked_in_order_and_unknown_classes_stay_inert() {
        struct Answer;
        impl Reducers for Answer {
            fn reduce(&self, class: &ClassName, call: &mut Call<'_, '_>) -> Option<Result<Value>> {
                (class.name == "answer").then(|| Ok(Value::Int(call.len() as i64 * 21)))
            }
        }
        let hooks: [&dyn Reducers; 2] = [&NoReducers, &Answer];
        // (m.answer(1, 2), m.other())
        let bytes = b"\x80\x02cm\nanswer\nK\x01K\x02\x86Rcm\nother\n)R\x86.";
        let value = load(bytes, &mut NoPersistentLoad, &&hooks[..]).unwrap();
        let Value::Tuple(items) = value else { panic!("{value:?}") };
        assert_eq!(items[0], Value::Int(42));
        assert!(matches!(&items[1], Value::Object(o) if o.name == "other"));
    }
}
