//! pandas objects inside pickles (joblib `.sav` files, Lightning checkpoints), as inert data:
//! `Index` (and `RangeIndex`, `MultiIndex`), `Series` and `DataFrame` with numpy-backed columns.
//!
//! pandas pickles a frame as an object whose state holds a block manager: the axes (column labels,
//! row index) and blocks, each a 2-D numpy array of some columns plus the column positions it
//! holds. pandas 2 writes the manager with `__reduce__` (`BlockManager(blocks, axes)`, each block
//! `_unpickle_block(values, placement, ndim)`); older pandas and every `SingleBlockManager` write a
//! state tuple whose fourth item is `{"0.14.1": {"axes": ..., "blocks": [...]}}`. Both are read.
//! Nullable integer, float and boolean columns and indexes (pandas' masked arrays: `Int64`,
//! `UInt32`, `boolean`, ...) and pandas' own strings (`string[python]`) are read, missing values
//! as `None`; other extension arrays (categoricals, Arrow strings) are refused with the array's
//! class name.

use std::collections::HashMap;

use crate::error::{data_err, data_error, Result, ResultExt};

use crate::pickle::{Object, Value};

/// The most labels a `RangeIndex` or a block placement `slice` (which the pickle describes by
/// their bounds only) is expanded to: 2^24. Larger ones are refused rather than allocated.
pub const MAX_MATERIALISED_LABELS: usize = 1 << 24;

/// A pandas `Index`: its name and its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub name: Value,
    pub values: Vec<Value>,
}

/// A pandas `Series`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: Value,
    pub index: Index,
    pub values: Vec<Value>,
}

/// A pandas `DataFrame`: a row index and labelled columns, in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFrame {
    pub index: Index,
    pub columns: Vec<(Value, Vec<Value>)>,
}

impl Index {
    /// Reads `_new_Index(cls, {"data": ..., "name": ...})` (or a `RangeIndex`'s start, stop, step).
    pub fn from_value(value: &Value) -> Result<Index> {
        let object = expect_object(value, "a pandas Index")?;
        if object.name != "_new_Index" {
            data_err!("expected a pandas Index, got {}.{}", object.module, object.name);
        }
        let [Value::Global { name: class, .. }, fields] = object.args.as_slice() else {
            data_err!("pandas _new_Index takes (class, dict), got {} arguments", object.args.len());
        };
        let name = fields.get("name").cloned().unwrap_or(Value::None);
        let values = match class.as_str() {
            "RangeIndex" => {
                let int = |key: &str, default: i64| match fields.get(key) {
                    None | Some(Value::None) => Ok(default),
                    Some(v) => v.as_i64().ok_or_else(|| data_error!("RangeIndex {key} is a {}", v.type_name())),
                };
                let (start, stop, step) = (int("start", 0)?, int("stop", 0)?, int("step", 1)?);
                if step == 0 {
                    data_err!("RangeIndex with step 0");
                }
                // In i128: no bound or step of i64 overflows it.
                let (start, stop, step) = (start as i128, stop as i128, step as i128);
                let len = if (step > 0 && stop > start) || (step < 0 && stop < start) {
                    ((stop - start).abs() + step.abs() - 1) / step.abs()
                } else {
                    0
                };
                if len > MAX_MATERIALISED_LABELS as i128 {
                    data_err!("pandas RangeIndex of {len} labels: more than {MAX_MATERIALISED_LABELS} are not read");
                }
                (0..len).map(|i| Value::Int((start + i * step) as i64)).collect()
            }
            // pandas < 2 had a class per dtype; all hold a plain numpy array.
            "Index" | "Int64Index" | "UInt64Index" | "Float64Index" | "NumericIndex" => {
                let data = fields.get("data").ok_or_else(|| data_error!("pandas Index without data"))?;
                numpy_values(data).context("reading a pandas Index")?
            }
            "MultiIndex" => return multi_index(fields),
            other => {
                data_err!("pandas {other} is not supported (only plain Index, RangeIndex and MultiIndex labels are)")
            }
        };
        Ok(Index { name, values })
    }
}

/// A `MultiIndex` from its `levels` (one Index each) and `codes` (positions into each level, -1
/// for a missing label): each label a tuple, one item per level. Its name is the list of the
/// levels' names.
fn multi_index(fields: &Value) -> Result<Index> {
    let list = |key: &str| match fields.get(key) {
        Some(Value::List(items) | Value::Tuple(items)) => Ok(items.as_slice()),
        other => data_err!("pandas MultiIndex {key} is {}", other.map_or("missing".into(), Value::type_name)),
    };
    let levels = list("levels")?.iter().map(Index::from_value).collect::<Result<Vec<_>>>()?;
    let codes = list("codes")?
        .iter()
        .map(|c| numpy_values(c).context("reading MultiIndex codes"))
        .collect::<Result<Vec<_>>>()?;
    if levels.len() != codes.len() || levels.is_empty() {
        data_err!("pandas MultiIndex with {} levels and {} code arrays", levels.len(), codes.len());
    }
    let len = codes[0].len();
    if codes.iter().any(|c| c.len() != len) {
        data_err!("pandas MultiIndex code arrays of different lengths");
    }
    let mut values = Vec::with_capacity(len);
    for row in 0..len {
        let mut label = Vec::with_capacity(levels.len());
        for (level, codes) in levels.iter().zip(&codes) {
            label.push(match codes[row].as_i64() {
                Some(-1) => Value::None,
                Some(code) => {
                    usize::try_from(code).ok().and_then(|c| level.values.get(c)).cloned().ok_or_else(|| {
                        data_error!("pandas MultiIndex code {code} beyond its level of {} labels", level.values.len())
                    })?
                }
                None => data_err!("pandas MultiIndex code {:?}", codes[row]),
            });
        }
        values.push(Value::Tuple(label));
    }
    let name = Value::List(levels.into_iter().map(|l| l.name).collect());
    Ok(Index { name, values })
}

impl Series {
    pub fn from_value(value: &Value) -> Result<Series> {
        let (state, manager) = unpack(value, "Series")?;
        let [index] = <[Index; 1]>::try_from(manager.axes)
            .map_err(|a| data_error!("a Series manager has {} axes, expected 1", a.len()))?;
        let values = match manager.blocks.as_slice() {
            [] => vec![],
            [block] => block.values.clone(),
            blocks => data_err!("a Series manager has {} blocks, expected 1", blocks.len()),
        };
        if values.len() != index.values.len() {
            data_err!("a Series has {} values and {} index labels", values.len(), index.values.len());
        }
        // pandas keeps the name as `_name` (its `_metadata`).
        let name = state.get("_name").or_else(|| state.get("name")).cloned().unwrap_or(Value::None);
        Ok(Series { name, index, values })
    }
}

impl DataFrame {
    pub fn from_value(value: &Value) -> Result<DataFrame> {
        let (_, manager) = unpack(value, "DataFrame")?;
        let [labels, index] = <[Index; 2]>::try_from(manager.axes)
            .map_err(|a| data_error!("a DataFrame manager has {} axes, expected 2", a.len()))?;
        let rows = index.values.len();
        let mut columns: Vec<Option<Vec<Value>>> = vec![None; labels.values.len()];
        for block in manager.blocks {
            let width = block.positions.len();
            if Some(block.values.len()) != width.checked_mul(rows) {
                data_err!("a DataFrame block holds {} values for {width} columns of {rows} rows", block.values.len());
            }
            // Block values are (columns, rows), row-major.
            for (i, &position) in block.positions.iter().enumerate() {
                let slot = columns.get_mut(position).ok_or_else(|| {
                    data_error!("a DataFrame block names column {position} of {}", labels.values.len())
                })?;
                *slot = Some(block.values[i * rows..(i + 1) * rows].to_vec());
            }
        }
        let columns = labels
            .values
            .into_iter()
            .zip(columns)
            .map(|(label, values)| {
                values
                    .map(|v| (label.clone(), v))
                    .ok_or_else(|| data_error!("DataFrame column {label:?} is in no block"))
            })
            .collect::<Result<_>>()?;
        Ok(DataFrame { index, columns })
    }

    /// The values of the column labelled `label`.
    pub fn column(&self, label: &str) -> Option<&[Value]> {
        self.columns.iter().find(|(l, _)| l.as_str() == Some(label)).map(|(_, v)| v.as_slice())
    }
}

/// A value as Python's `==` and `hash` see it, for looking up labels the way a dict or a pandas
/// index does: `1`, `1.0` and `True` are one key; `"1"` is another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PyKey {
    None,
    Int(i64),
    /// A float that is not a whole number, by its bits (NaN never equals itself in Python, so
    /// NaN keys are not looked up).
    Float(u64),
    Str(String),
    /// A tuple of keys: a `MultiIndex` label.
    Tuple(Vec<PyKey>),
}

impl PyKey {
    pub fn of(value: &Value) -> Option<PyKey> {
        Some(match value {
            Value::None => PyKey::None,
            Value::Bool(b) => PyKey::Int(*b as i64),
            Value::Int(i) => PyKey::Int(*i),
            Value::Float(f) => PyKey::float(*f)?,
            Value::Str(s) => PyKey::Str(s.clone()),
            Value::Array(a) if a.shape.is_empty() => return PyKey::of(a.to_values().ok()?.first()?),
            Value::Tuple(items) => PyKey::Tuple(items.iter().map(PyKey::of).collect::<Option<_>>()?),
            _ => return None,
        })
    }

    /// `None` for NaN, which matches nothing.
    pub fn float(f: f64) -> Option<PyKey> {
        if f.is_nan() {
            None
        } else if f.fract() == 0.0 && f.abs() < 9.2e18 {
            Some(PyKey::Int(f as i64))
        } else {
            Some(PyKey::Float(f.to_bits()))
        }
    }
}

/// As Python prints the key: `None`, `3`, `0.5`, `'ward A'`, `(0, 'a')`.
impl std::fmt::Display for PyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PyKey::None => f.write_str("None"),
            PyKey::Int(i) => write!(f, "{i}"),
            PyKey::Float(bits) => write!(f, "{}", f64::from_bits(*bits)),
            PyKey::Str(s) => write!(f, "'{s}'"),
            PyKey::Tuple(items) => {
                let items: Vec<String> = items.iter().map(PyKey::to_string).collect();
                write!(f, "({})", items.join(", "))
            }
        }
    }
}

/// A lookup table from a Series (index label -> value), as `Series.map(series)` uses it.
pub fn series_lookup(series: &Series) -> Result<HashMap<PyKey, Value>> {
    let mut table = HashMap::with_capacity(series.values.len());
    for (label, value) in series.index.values.iter().zip(&series.values) {
        let key = PyKey::of(label).ok_or_else(|| data_error!("index label {label:?} cannot be used as a key"))?;
        // Like pandas' hash lookup, the first occurrence of a duplicated label wins.
        table.entry(key).or_insert_with(|| value.clone());
    }
    Ok(table)
}

/// One block: the column positions it holds and its values, row-major over (columns, rows).
struct Block {
    positions: Vec<usize>,
    values: Vec<Value>,
}

struct BlockManager {
    axes: Vec<Index>,
    blocks: Vec<Block>,
}

impl BlockManager {
    fn from_value(value: &Value) -> Result<BlockManager> {
        let object = expect_object(value, "a pandas block manager")?;
        if !object.name.ends_with("BlockManager") {
            data_err!("expected a pandas block manager, got {}.{}", object.module, object.name);
        }
        // pandas 2's BlockManager: __reduce__ gives (blocks, axes) as constructor arguments.
        if let [Value::Tuple(blocks), Value::List(axes)] = object.args.as_slice() {
            let axes = axes.iter().map(Index::from_value).collect::<Result<_>>()?;
            let blocks = blocks.iter().map(unpickled_block).collect::<Result<_>>()?;
            return Ok(BlockManager { axes, blocks });
        }
        // The state form: (axes, values, items, {"0.14.1": {"axes": [...], "blocks": [...]}}).
        let Some(Value::Tuple(state)) = &object.state else {
            data_err!("pandas {} without a state this reader knows", object.name)
        };
        let current = state
            .get(3)
            .and_then(|extra| extra.get("0.14.1"))
            .ok_or_else(|| data_error!("pandas {} state predates pandas 0.14.1", object.name))?;
        let axes = match current.get("axes") {
            Some(Value::List(axes)) | Some(Value::Tuple(axes)) => {
                axes.iter().map(Index::from_value).collect::<Result<_>>()?
            }
            other => data_err!("pandas block manager axes are {}", other.map_or("missing".into(), Value::type_name)),
        };
        let blocks = match current.get("blocks") {
            Some(Value::List(blocks)) | Some(Value::Tuple(blocks)) => blocks
                .iter()
                .map(|b| {
                    let values = b.get("values").ok_or_else(|| data_error!("a pandas block without values"))?;
                    let locs = b.get("mgr_locs").ok_or_else(|| data_error!("a pandas block without mgr_locs"))?;
                    block(values, locs)
                })
                .collect::<Result<_>>()?,
            other => data_err!("pandas block manager blocks are {}", other.map_or("missing".into(), Value::type_name)),
        };
        Ok(BlockManager { axes, blocks })
    }
}

/// `_unpickle_block(values, placement, ndim)`.
fn unpickled_block(value: &Value) -> Result<Block> {
    let object = expect_object(value, "a pandas block")?;
    match object.args.as_slice() {
        [values, placement, ..] => block(values, placement),
        args => data_err!("pandas {} takes (values, placement, ndim), got {} arguments", object.name, args.len()),
    }
}

fn block(values: &Value, placement: &Value) -> Result<Block> {
    let values = numpy_values(values).context("reading a pandas block")?;
    Ok(Block { positions: positions(placement)?, values })
}

/// Column positions from a `slice(start, stop, step)`, an integer array or a `BlockPlacement`.
fn positions(placement: &Value) -> Result<Vec<usize>> {
    match placement {
        Value::Array(array) => array
            .to_values()?
            .iter()
            .map(|v| {
                v.as_i64().and_then(|i| usize::try_from(i).ok()).ok_or_else(|| data_error!("block placement {v:?}"))
            })
            .collect(),
        Value::Object(o) if o.name == "slice" => {
            let part = |i: usize, default: i64| match o.args.get(i) {
                None | Some(Value::None) => Ok(default),
                Some(v) => v.as_i64().ok_or_else(|| data_error!("slice bound is a {}", v.type_name())),
            };
            let (start, stop, step) = (part(0, 0)?, part(1, 0)?, part(2, 1)?);
            if step <= 0 || start < 0 {
                data_err!("unsupported block placement slice({start}, {stop}, {step})");
            }
            let count = if stop > start { (stop - start - 1) / step + 1 } else { 0 };
            if count > MAX_MATERIALISED_LABELS as i64 {
                data_err!("block placement slice({start}, {stop}, {step}) of {count} columns: more than {MAX_MATERIALISED_LABELS} are not read");
            }
            Ok((start..stop).step_by(step as usize).map(|i| i as usize).collect())
        }
        Value::Object(o) if o.name == "BlockPlacement" => {
            positions(o.args.first().ok_or_else(|| data_error!("empty BlockPlacement"))?)
        }
        other => data_err!("unsupported pandas block placement {}", other.type_name()),
    }
}

/// pandas' masked arrays: numpy `_data` with a boolean `_mask` of missing values.
const MASKED_ARRAYS: [&str; 3] = ["IntegerArray", "FloatingArray", "BooleanArray"];

/// The elements of a numpy array or a masked array (missing ones `None`); anything else (another
/// pandas extension array) is refused by name.
fn numpy_values(value: &Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(array) => array.to_values(),
        Value::Object(o) if o.module.starts_with("pandas.core.arrays") && MASKED_ARRAYS.contains(&o.name.as_str()) => {
            let state = o.state.as_ref().ok_or_else(|| data_error!("pandas {} without state", o.name))?;
            let field = |key: &str| state.get(key).ok_or_else(|| data_error!("pandas {} without {key}", o.name));
            let data = numpy_values(field("_data")?)?;
            let mask = numpy_values(field("_mask")?)?;
            if mask.len() != data.len() {
                data_err!("pandas {}: {} values but a mask of {}", o.name, data.len(), mask.len());
            }
            Ok(data.into_iter().zip(mask).map(|(v, m)| if m == Value::Bool(true) { Value::None } else { v }).collect())
        }
        Value::Object(o) if is_string_array(o) => {
            // `BUILD` with `(dtype, ndarray, attributes)`; the array holds str and pd.NA.
            let array = match o.state.as_ref() {
                Some(Value::Tuple(items)) if items.len() >= 2 => &items[1],
                _ => data_err!("pandas StringArray without its (dtype, values) state"),
            };
            Ok(numpy_values(array)?.into_iter().map(|v| if is_missing(&v) { Value::None } else { v }).collect())
        }
        Value::Object(o) => {
            // Cython classes pickle as `__pyx_unpickle_<Base>(class, checksum, state)`.
            let class = match o.args.first() {
                Some(Value::Global { module, name }) if o.name.starts_with("__pyx_unpickle") => {
                    format!("{module}.{name}")
                }
                _ => format!("{}.{}", o.module, o.name),
            };
            data_err!(
                "values stored as {class} (a pandas extension array) are not supported; plain numpy-backed columns are"
            )
        }
        other => data_err!("expected a numpy array, got {}", other.type_name()),
    }
}

/// pandas' `StringArray` (dtype `string[python]`), pickled by its Cython base class as
/// `__pyx_unpickle_NDArrayBacked(StringArray, checksum, None)`.
fn is_string_array(o: &Object) -> bool {
    o.name == "__pyx_unpickle_NDArrayBacked"
        && matches!(o.args.first(), Some(Value::Global { module, name })
            if module == "pandas.core.arrays.string_" && name == "StringArray")
}

/// A missing value in an object array: `None`, NaN or `pd.NA`.
fn is_missing(v: &Value) -> bool {
    match v {
        Value::None => true,
        Value::Float(f) => f.is_nan(),
        Value::Global { module, name } => module == "pandas._libs.missing" && name == "NA",
        _ => false,
    }
}

/// A pickled Series or DataFrame (`class`): its state and the block manager in it (`_mgr`;
/// `_data` before pandas 1.1).
fn unpack<'a>(value: &'a Value, class: &str) -> Result<(&'a Value, BlockManager)> {
    let object = expect_object(value, &format!("a pandas {class}"))?;
    if object.name != class {
        data_err!("expected a pandas {class}, got {}.{}", object.module, object.name);
    }
    let state = object.state.as_ref().ok_or_else(|| data_error!("pandas {class} without state"))?;
    let manager = state
        .get("_mgr")
        .or_else(|| state.get("_data"))
        .ok_or_else(|| data_error!("pandas {class} state without a block manager"))?;
    Ok((state, BlockManager::from_value(manager)?))
}

fn expect_object<'a>(value: &'a Value, what: &str) -> Result<&'a Object> {
    match value {
        Value::Object(o) => Ok(o),
        other => data_err!("expected {what}, got {}", other.type_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_as_python_does() {
        let one = PyKey::of(&Value::Int(1));
        assert_eq!(one, PyKey::of(&Value::Float(1.0)));
        assert_eq!(one, PyKey::of(&Value::Bool(true)));
        assert_ne!(one, PyKey::of(&Value::Str("1".into())));
        assert_ne!(PyKey::of(&Value::Float(1.5)), one);
        assert_eq!(PyKey::of(&Value::Float(-0.0)), PyKey::of(&Value::Int(0)));
        assert_eq!(PyKey::float(f64::NAN), None);
    }
}
