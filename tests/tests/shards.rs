//! `--shard I/N` and `deepembed merge`: N shard runs merged give the unsharded run's rows, in
//! order, with the same columns; merge refuses shards that miss or repeat rows, or that come
//! from different arguments, naming what is wrong; a plugin whose rows depend on other rows
//! refuses --shard.

use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch};
use deepembed_tests::*;
use parquet::arrow::ArrowWriter;

/// The vision fixture rewritten with row groups of `group` rows, so shard cuts can align.
fn input_with_row_groups(work: &Path, group: usize) -> PathBuf {
    let table = read_parquet(&fixtures().join("vision").join("images.parquet"));
    let path = work.join("images.parquet");
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), table.schema(), None).unwrap();
    for start in (0..table.num_rows()).step_by(group) {
        writer.write(&table.slice(start, group.min(table.num_rows() - start))).unwrap();
        // Each flush closes a row group.
        writer.flush().unwrap();
    }
    writer.close().unwrap();
    path
}

/// A vision run over `df` (`extra` flags added); its run directory.
fn run(df: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    embed_resnet18(df, out, &[&["--batch_size", "3"], extra].concat())
}

fn merge(dirs: &[&PathBuf], out: &Path) -> std::process::Output {
    let mut args = vec!["merge".to_string()];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap().to_string()));
    args.extend(["--out".to_string(), out.to_str().unwrap().to_string(), "--json".to_string()]);
    deepembed(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Same schema, same non-embedding columns exactly, embeddings within 1e-5 of the largest value
/// (a shard's batches hold other images beside each one; libtorch may pick other kernels).
fn assert_same_table(merged: &RecordBatch, whole: &RecordBatch) {
    assert_eq!(merged.schema(), whole.schema());
    assert_eq!(merged.num_rows(), whole.num_rows());
    for (field, (a, b)) in merged.schema().fields().iter().zip(merged.columns().iter().zip(whole.columns())) {
        if field.name().parse::<usize>().is_ok() {
            let (a, b) = (a.as_any().downcast_ref::<arrow::array::Float32Array>(), b.as_any().downcast_ref());
            let (a, b): (&arrow::array::Float32Array, &arrow::array::Float32Array) = (a.unwrap(), b.unwrap());
            for (x, y) in a.values().iter().zip(b.values()) {
                assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "column {}: {x} against {y}", field.name());
            }
        } else {
            assert_eq!(a.to_data(), b.to_data(), "column {}", field.name());
        }
    }
}

#[test]
fn merged_shards_are_the_unsharded_run() {
    let work = scratch("shards");
    let input = input_with_row_groups(&work, 2);
    let whole = read_parquet(&output_parquet(&run(&input, &work.join("whole"), &[])));
    let shards: Vec<PathBuf> =
        (0..3).map(|i| run(&input, &work.join("shards"), &["--shard", &format!("{i}/3")])).collect();
    let details: Vec<serde_json::Value> = shards.iter().map(|d| json(&d.join("embedding_details.json"))).collect();
    let total: u64 = details.iter().map(|d| d["shard"]["rows"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, whole.num_rows());
    // Cuts on row-group boundaries (groups of 2 rows).
    assert!(details.iter().all(|d| d["shard"]["first_row"].as_u64().unwrap() % 2 == 0), "{details:?}");

    // Given in any order.
    let output = merge(&[&shards[2], &shards[0], &shards[1]], &work.join("merged"));
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let dir = PathBuf::from(summary["output_dir"].as_str().unwrap());
    assert_same_table(&read_parquet(&output_parquet(&dir)), &whole);
    let merged = json(&dir.join("embedding_details.json"));
    assert_eq!(merged["rows"].as_u64().unwrap() as usize, whole.num_rows());
    assert!(merged.get("shard").is_none() && merged["merged_shards"].as_array().unwrap().len() == 3);
    let arguments = json(&dir.join("cli_arguments.json"));
    assert!(arguments.get("shard").is_none() && arguments["model_version"] == "resnet18");
}

#[test]
fn shards_without_rows_succeed_and_merge() {
    // 3 rows in 5 shards: shards 0 and 2 get none (a Slurm array larger than a small table).
    let work = scratch("shards-empty");
    let input = work.join("three.parquet");
    write_parquet(&input, &read_parquet(&fixtures().join("vision").join("images.parquet")).slice(0, 3));
    let whole = read_parquet(&output_parquet(&run(&input, &work.join("whole"), &[])));
    let shards: Vec<PathBuf> =
        (0..5).map(|i| run(&input, &work.join("shards"), &["--shard", &format!("{i}/5")])).collect();
    for (i, dir) in shards.iter().enumerate() {
        let details = json(&dir.join("embedding_details.json"));
        let rows = details["shard"]["rows"].as_u64().unwrap();
        assert_eq!(rows == 0, i == 0 || i == 2, "shard {i}: {details}");
        let files = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "parquet"))
            .count();
        assert_eq!(files, usize::from(rows > 0), "shard {i}: an embeddings file only with rows");
    }
    let output = merge(&shards.iter().collect::<Vec<_>>(), &work.join("merged"));
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_same_table(&read_parquet(&output_parquet(Path::new(summary["output_dir"].as_str().unwrap()))), &whole);

    // Only empty shards: nothing to merge, said so.
    let output = merge(&[&shards[0], &shards[2]], &work.join("merged"));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("in no shard"), "{}", stderr(&output));
}

#[test]
fn merge_refuses_missing_repeated_or_foreign_shards() {
    let work = scratch("shards-bad");
    let input = input_with_row_groups(&work, 2);
    let shard = |i: usize, n: usize, extra: &[&str]| {
        let spec = format!("{i}/{n}");
        run(&input, &work.join("runs"), &[&["--shard", spec.as_str()], extra].concat())
    };
    let (a, c) = (shard(0, 3, &[]), shard(2, 3, &[]));
    let refused = |dirs: &[&PathBuf], says: &str| {
        let out = work.join("merged");
        let output = merge(dirs, &out);
        let err = stderr(&output);
        assert!(!output.status.success(), "merge of {dirs:?} was accepted");
        assert!(err.contains(says), "expected '{says}' in:\n{err}");
        assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(), "a refused merge left output");
    };
    refused(&[&a, &c], "are in no shard");
    refused(&[&a, &a, &c], "more than one shard");
    let b_other = shard(1, 3, &["--label_column", "site"]);
    refused(&[&a, &b_other, &c], "--label_column");
    let whole = run(&input, &work.join("whole"), &[]);
    refused(&[&whole], "is not a shard");
}

#[test]
fn a_bad_shard_spec_is_an_error_naming_the_flag() {
    let df = fixtures().join("vision").join("images.parquet");
    for bad in ["3/3", "x", "1/0"] {
        let output = deepembed(&[
            "embed",
            "vision",
            "--df",
            df.to_str().unwrap(),
            "--model_version",
            "resnet18",
            "--shard",
            bad,
        ]);
        let err = stderr(&output);
        assert!(!output.status.success() && err.contains(&format!("--shard {bad}")), "{err}");
    }
}

/// DeepAR embeds a row from its series' history: a range of rows alone would give other
/// embeddings, so --shard is refused before anything is read.
#[test]
fn a_plugin_whose_rows_depend_on_other_rows_refuses_shards() {
    let output =
        deepembed(&["embed", "deepar", "--df", "absent.parquet", "--model_weights", "absent.ckpt", "--shard", "0/2"]);
    let err = stderr(&output);
    assert!(!output.status.success() && err.contains("--shard 0/2") && err.contains("deepar"), "{err}");
}

/// `--shard slurm` takes I and N from the array task's environment (arrays may start at 1), and
/// merge takes the directory the tasks shared as their `--out`.
#[test]
fn slurm_array_tasks_shard_and_merge_by_directory() {
    let work = scratch("shards-slurm");
    let input = input_with_row_groups(&work, 3);
    let whole = read_parquet(&output_parquet(&run(&input, &work.join("whole"), &[])));
    let home = vision_torch_home();
    let home = home.to_str().unwrap();
    let tasks = work.join("tasks");
    for id in ["1", "2"] {
        let args = ["embed", "vision", "--df", input.to_str().unwrap(), "--model_version", "resnet18"];
        let output = deepembed_env(
            &[&args[..], &["--shard", "slurm", "--out", tasks.to_str().unwrap(), "--device", "cpu", "--quiet"]]
                .concat(),
            &[
                ("TORCH_HOME", home),
                ("SLURM_ARRAY_TASK_ID", id),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_MAX", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ],
        );
        assert!(output.status.success(), "task {id}: {}", stderr(&output));
    }
    let output = merge(&[&tasks], &work.join("merged"));
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let merged = read_parquet(&output_parquet(Path::new(summary["output_dir"].as_str().unwrap())));
    assert_same_table(&merged, &whole);
}

/// The test cluster (tests/slurm/cluster.sh): started on creation, stopped when dropped.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn start(dir: PathBuf) -> Cluster {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("slurm").join("cluster.sh");
        let output = std::process::Command::new("bash").arg(&script).arg("start").arg(&dir).output().unwrap();
        assert!(
            output.status.success(),
            "the Slurm test cluster did not start (cargo xtask test installs slurm-wlm as root):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let conf = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim().to_string());
        Cluster { dir, conf }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("slurm").join("cluster.sh");
        let _ = std::process::Command::new("bash").arg(script).arg("stop").arg(&self.dir).output();
    }
}

/// `deepembed slurm` on a real single-node Slurm: it submits an array of shards and a merge job
/// that waits for them, and the merged run is the unsharded one. `--dry-run` prints the scripts.
#[test]
fn deepembed_slurm_runs_an_array_and_a_merge_on_a_real_cluster() {
    let work = scratch("slurm");
    let input = input_with_row_groups(&work, 2);
    let whole = read_parquet(&output_parquet(&run(&input, &work.join("whole"), &[])));
    let home = vision_torch_home();
    let home = home.to_str().unwrap();
    let results = work.join("results");
    let command = |extra: &[&str]| {
        let mut args = vec!["slurm", "--shards", "3", "--time=10"];
        args.extend_from_slice(extra);
        args.extend(["--", "embed", "vision", "--df", input.to_str().unwrap(), "--model_version", "resnet18"]);
        args.extend(["--device", "cpu", "--out", results.to_str().unwrap()]);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };

    let dry = deepembed(&command(&["--dry-run"]).iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{}", stderr(&dry));
    for expected in ["--array=0-2", "--requeue", "--time=10", "--shard slurm", "--dependency=afterok:", " merge "] {
        assert!(text.contains(expected), "--dry-run output lacks '{expected}':\n{text}");
    }
    assert!(!results.exists(), "--dry-run created {}", results.display());

    // A fixed directory, so a cluster left by an interrupted run is stopped before this one starts.
    let cluster = Cluster::start(fixtures().join("slurm-cluster"));
    let output = std::process::Command::new(binary())
        .args(command(&[]))
        .current_dir(&work)
        .env("SLURM_CONF", &cluster.conf)
        .env("TORCH_HOME", home)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(output.status.success(), "deepembed slurm failed:\n{}", stderr(&output));
    let ids: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect();
    assert_eq!(ids.len(), 2, "expected the array and merge job ids on stdout, got {ids:?}");

    // The merge job's run directory appears in --out when every shard is done and merged.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let merged = loop {
        let done = std::fs::read_dir(&results).ok().and_then(|entries| {
            entries.map(|e| e.unwrap().path()).find(|p| {
                p.file_name().unwrap().to_string_lossy().starts_with("embed_output_")
                    && p.join("embedding_details.json").exists()
            })
        });
        if let Some(dir) = done {
            break dir;
        }
        let logs: Vec<String> = std::fs::read_dir(&work)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "out"))
            .map(|p| format!("{}:\n{}", p.display(), std::fs::read_to_string(&p).unwrap_or_default()))
            .collect();
        assert!(std::time::Instant::now() < deadline, "no merged run after 300 s; job logs:\n{}", logs.join("\n"));
        std::thread::sleep(std::time::Duration::from_secs(2));
    };
    assert_same_table(&read_parquet(&output_parquet(&merged)), &whole);
    let details = json(&merged.join("embedding_details.json"));
    assert_eq!(details["merged_shards"].as_array().unwrap().len(), 3, "{details}");
}
