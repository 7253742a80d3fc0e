//! Shared helpers for the end-to-end tests: where fixtures and binaries are, running the
//! `deepembed` binary, reading Parquet and raw f32 references.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Fixtures written by the Python generators (`cargo xtask test` sets this).
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("DEEPEMBED_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("work"));
    require(dir.is_dir(), &format!("test fixtures missing at {}", dir.display()));
    dir
}

/// The release binary, with plugins installed beside it by `cargo xtask`.
pub fn binary() -> PathBuf {
    let bin = std::env::var_os("DEEPEMBED_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/deepembed"));
    require(bin.is_file(), &format!("deepembed binary missing at {}", bin.display()));
    bin
}

/// Under `cargo xtask test` (which sets DEEPEMBED_TEST_DATA) a missing fixture or binary fails
/// the test. Under a plain `cargo test` on a fresh clone, where nothing was generated yet, this
/// test binary says so in one line and stops without failing.
fn require(present: bool, what: &str) {
    if present {
        return;
    }
    if std::env::var_os("DEEPEMBED_TEST_DATA").is_some() {
        panic!("{what}: `cargo xtask test` should have made it");
    }
    eprintln!("skipped: {what}; run `cargo xtask test`, which sets up, generates the fixtures and runs every test");
    std::process::exit(0);
}

/// The Python of the reference venv.
pub fn python() -> PathBuf {
    std::env::var_os("DEEPEMBED_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

/// A fresh, empty scratch directory for one test.
pub fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("deepembed-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// A test's scratch directory. It is removed when the test passes, because a full run writes
/// gigabytes of outputs and CI disks are small; a failing test keeps it, for a look at what the
/// run left.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for a look at the failure", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn deepembed(args: &[&str]) -> Output {
    deepembed_env(args, &[])
}

pub fn deepembed_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args).env_remove("DEEPEMBED_PLUGIN_PATH").env_remove("LD_LIBRARY_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running deepembed")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs deepembed and returns the output directory it reports (via --json), failing loudly.
pub fn embed_ok(args: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let mut full = vec!["embed"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--json", "--quiet", "--device", "cpu"]);
    let out = deepembed_env(&full, env);
    assert!(out.status.success(), "deepembed {:?} failed:\n{}", full, stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON on stdout");
    PathBuf::from(summary["output_dir"].as_str().unwrap())
}

/// The vision fixtures' TORCH_HOME, which holds torchvision's pretrained weights files.
pub fn vision_torch_home() -> PathBuf {
    fixtures().join("vision").join("torch_home")
}

/// A pretrained ResNet-18 vision run on the CPU over `df` into `out`, with the fixtures'
/// TORCH_HOME and `env`, as the command ends (success or not).
pub fn run_resnet18(df: &Path, out: &Path, env: &[(&str, &str)]) -> Output {
    let home = vision_torch_home();
    let args = ["embed", "vision", "--df", df.to_str().unwrap(), "--model_version", "resnet18", "--device", "cpu"];
    let env = [&[("TORCH_HOME", home.to_str().unwrap())], env].concat();
    deepembed_env(&[&args[..], &["--out", out.to_str().unwrap()]].concat(), &env)
}

/// A pretrained ResNet-18 vision run over `df` into `out`, with `extra` flags (the batch size,
/// say); returns its run directory.
pub fn embed_resnet18(df: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let home = vision_torch_home();
    let args = ["vision", "--df", df.to_str().unwrap(), "--model_version", "resnet18", "--out", out.to_str().unwrap()];
    embed_ok(&[&args[..], extra].concat(), &[("TORCH_HOME", home.to_str().unwrap())])
}

pub fn read_parquet(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    // The file's schema, with its metadata (pandas' among it), which the batches do not carry.
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// The single Parquet file in an output directory.
pub fn output_parquet(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(files.len(), 1, "expected one parquet file in {}: {files:?}", dir.display());
    files[0].clone()
}

/// The generator's `cases.json` of one modality's fixtures (`vision`, `text`, `tabular`, ...):
/// what each case is, with its flags and shapes.
pub fn fixture_cases(modality: &str) -> serde_json::Value {
    let path = fixtures().join(modality).join("cases.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Embedding columns `"0"`..`"dims-1"` as a row-major matrix.
pub fn embedding_matrix(batch: &RecordBatch, dims: usize) -> Vec<f32> {
    named_matrix(batch, &(0..dims).map(|d| d.to_string()).collect::<Vec<_>>())
}

/// The named Float32 columns as a row-major matrix.
pub fn named_matrix(batch: &RecordBatch, names: &[String]) -> Vec<f32> {
    let cols: Vec<_> = names
        .iter()
        .map(|d| {
            batch
                .column_by_name(d)
                .unwrap_or_else(|| panic!("column \"{d}\" missing"))
                .as_primitive::<Float32Type>()
                .clone()
        })
        .collect();
    let mut out = Vec::with_capacity(batch.num_rows() * names.len());
    for r in 0..batch.num_rows() {
        for c in &cols {
            assert!(!c.is_null(r));
            out.push(c.value(r));
        }
    }
    out
}

/// Largest absolute difference, and where.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).enumerate().fold((0.0, 0), |(m, at), (i, (x, y))| {
        let d = (x - y).abs();
        if d > m || d.is_nan() {
            (d, i)
        } else {
            (m, at)
        }
    })
}

/// Our tokenizers give transformers' ids, id for id, truncated at 256, on the hard texts.
pub fn check_token_ids(kind: &str, tokenize: impl Fn(&Path, Vec<&str>) -> Vec<Vec<i64>>) {
    let dir = fixtures().join("text");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("token_ids.json")).unwrap()).unwrap();
    let input = read_parquet(&dir.join("texts.parquet"));
    let column =
        arrow::compute::cast(input.column_by_name("text").unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
    let texts: Vec<&str> = column.as_string::<i32>().iter().map(|t| t.unwrap()).collect();
    let mut checked = 0;
    for (name, entry) in expected
        .as_object()
        .unwrap()
        .iter()
        .filter(|(n, _)| n.starts_with(kind) || (kind == "bert" && n.as_str() == "minilm"))
    {
        let ours = tokenize(Path::new(entry["dir"].as_str().unwrap()), texts.clone());
        let theirs: Vec<Vec<i64>> = entry["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect())
            .collect();
        assert_eq!(ours.len(), theirs.len());
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a, b, "{name}: text {i} ({:?}) tokenizes differently", texts[i]);
        }
        checked += 1;
    }
    assert!(checked >= 2, "too few {kind} tokenizers checked");
}

/// Writes `batch` as a Parquet file (for inputs a test builds).
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// `batch` with column `name` replaced by `values`, its field taking their type (for inputs a
/// test builds from a fixture).
pub fn replace_column(batch: &RecordBatch, name: &str, values: arrow::array::ArrayRef) -> RecordBatch {
    let at = batch.schema().index_of(name).unwrap_or_else(|_| panic!("no column '{name}'"));
    let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
    fields[at] = std::sync::Arc::new(fields[at].as_ref().clone().with_data_type(values.data_type().clone()));
    let mut columns = batch.columns().to_vec();
    columns[at] = values;
    RecordBatch::try_new(std::sync::Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap()
}
