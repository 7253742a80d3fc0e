//! Resume (`--resume`, `--commit_rows`): a run killed with SIGKILL at three points (before its
//! first commit, between commits, while the finished file is put together) and resumed gives the
//! uninterrupted run's file, same rows, order, schema and values; SIGTERM keeps committed work;
//! a changed argument or input is refused, naming it; a finished run resumed does nothing.
//!
//! The host stalls at a chosen point when DEEPEMBED_TEST_STALL says so, so the kill lands
//! exactly there rather than at a time that depends on the machine's speed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deepembed_tests::*;
use serde_json::Value;

/// 120 images, batch 8, a commit every 16 rows: 8 pieces.
fn args(df: &Path, out: &Path) -> Vec<String> {
    let args = ["embed", "vision", "--df", df.to_str().unwrap(), "--model_version", "resnet18"];
    let more = ["--batch_size", "8", "--device", "cpu", "--commit_rows", "16", "--out", out.to_str().unwrap()];
    args.iter().chain(&more).map(|s| s.to_string()).collect()
}

fn command(args: &[String], stall: Option<&str>, stderr_file: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env("TORCH_HOME", vision_torch_home())
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("DEEPEMBED_PLUGIN_PATH")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr_file).unwrap());
    if let Some(stall) = stall {
        cmd.env("DEEPEMBED_TEST_STALL", stall);
    }
    cmd
}

/// Starts a run that stalls at `stall` and waits until it got there.
fn start_stalled(args: &[String], stall: &str, work: &Path) -> Child {
    let log = work.join(format!("stall-{}.log", stall.replace(':', "-")));
    let mut child = command(args, Some(stall), &log).spawn().unwrap();
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("stalled at") {
            return child;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before stalling at {stall}:\n{text}");
        }
        assert!(started.elapsed() < Duration::from_secs(300), "never stalled at {stall}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(args: &[String], work: &Path) -> (bool, String) {
    let log = work.join("run.log");
    let status = command(args, None, &log).status().unwrap();
    (status.success(), std::fs::read_to_string(&log).unwrap())
}

fn run_dirs(out: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    dirs
}

/// The input rows an unfinished run's progress file lists as committed.
fn committed_rows(dir: &Path) -> u64 {
    let progress: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(".progress.json")).unwrap()).unwrap();
    progress["pieces"].as_array().unwrap().iter().map(|p| p["input_rows"].as_u64().unwrap()).sum()
}

fn details(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("embedding_details.json")).unwrap()).unwrap()
}

#[test]
fn a_run_killed_at_three_points_resumes_to_the_uninterrupted_output() {
    let work = scratch("resume-kill");
    let df = fixtures().join("vision").join("images_120.parquet");
    let whole = embed_resnet18(&df, &work.join("whole"), &["--batch_size", "8"]);
    let expected = read_parquet(&output_parquet(&whole));
    assert_eq!(expected.num_rows(), 120);

    for (point, committed_when_killed) in [("rows:8", 0), ("rows:56", 48), ("assembling", 120)] {
        let out = work.join(point.replace(':', "-"));
        let args = args(&df, &out);
        let mut child = start_stalled(&args, point, &work);
        child.kill().unwrap(); // SIGKILL: no handler runs
        child.wait().unwrap();
        let [dir] = &run_dirs(&out)[..] else { panic!("{point}: expected one run directory") };
        assert!(
            !dir.join(expected_file(&whole)).exists(),
            "{point}: a killed run's directory must not hold the finished file"
        );
        assert_eq!(committed_rows(dir), committed_when_killed, "{point}: rows committed before the kill");

        let (ok, log) = run(&[&args[..], &["--resume".to_string()]].concat(), &work);
        assert!(ok, "{point}: resuming failed:\n{log}");
        assert_eq!(run_dirs(&out), vec![dir.clone()], "{point}: the run continued in its own directory");
        let resumed = read_parquet(&output_parquet(dir));
        assert_eq!(resumed, expected, "{point}: the resumed file differs from the uninterrupted run's");
        let names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(!names.iter().any(|n| n.starts_with('.')), "{point}: hidden files left behind: {names:?}");
        let details = details(dir);
        assert_eq!(details["resumed"], true, "{point}");
        assert_eq!(details["rows"], 120, "{point}");
        let attempts = details["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{point}: {attempts:?}");
        assert_eq!(attempts[0]["input_rows"], committed_when_killed, "{point}: {attempts:?}");
        assert_eq!(attempts[1]["input_rows"], 120 - committed_when_killed, "{point}: {attempts:?}");
    }

    // A finished run resumed (a requeued Slurm task that had finished): nothing to do.
    let out = work.join("rows-8");
    let (ok, log) = run(&[&args(&df, &out)[..], &["--resume".to_string()]].concat(), &work);
    assert!(ok && log.contains("finished already"), "{log}");
    assert_eq!(run_dirs(&out).len(), 1, "resuming a finished run must not start another");
}

fn expected_file(dir: &Path) -> String {
    output_parquet(dir).file_name().unwrap().to_string_lossy().into_owned()
}

/// SIGTERM (Slurm's pre-emption) after a commit keeps the committed pieces; the run resumes.
#[test]
fn a_terminated_run_keeps_its_committed_pieces() {
    let work = scratch("resume-term");
    let df = fixtures().join("vision").join("images_120.parquet");
    let out = work.join("out");
    let args = args(&df, &out);
    let child = start_stalled(&args, "rows:40", &work);
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    let log = std::fs::read_to_string(work.join("stall-rows-40.log")).unwrap();
    assert!(log.contains("kept") && log.contains("--resume"), "{log}");
    let [dir] = &run_dirs(&out)[..] else { panic!("the committed run must stay") };
    assert!(dir.join(".progress.json").exists());

    let (ok, log) = run(&[&args[..], &["--resume".into(), dir.to_string_lossy().into_owned()]].concat(), &work);
    assert!(ok, "{log}");
    assert!(log.contains("32 rows committed"), "{log}");
    assert_eq!(read_parquet(&output_parquet(dir)).num_rows(), 120);
}

#[test]
fn resume_refuses_a_changed_argument_and_a_changed_input() {
    let work = scratch("resume-refuse");
    let df = work.join("images.parquet");
    std::fs::copy(fixtures().join("vision").join("images_120.parquet"), &df).unwrap();
    let out = work.join("out");
    let args = args(&df, &out);
    let mut child = start_stalled(&args, "rows:24", &work);
    child.kill().unwrap();
    child.wait().unwrap();
    let [dir] = &run_dirs(&out)[..] else { panic!("expected one run directory") };
    let progress_before = std::fs::read(dir.join(".progress.json")).unwrap();

    // Another batch size.
    let mut changed = args.clone();
    let at = changed.iter().position(|a| a == "--batch_size").unwrap();
    changed[at + 1] = "4".into();
    let (ok, log) = run(&[&changed[..], &["--resume".to_string()]].concat(), &work);
    assert!(!ok, "a changed argument must be refused:\n{log}");
    assert!(log.contains("--batch_size: 8 when the run started, 4 now"), "{log}");

    // The input rewritten in place (other rows, same path).
    std::fs::copy(fixtures().join("vision").join("images.parquet"), &df).unwrap();
    let (ok, log) = run(&[&args[..], &["--resume".to_string()]].concat(), &work);
    assert!(!ok, "a changed input must be refused:\n{log}");
    assert!(log.contains(&format!("--df: {} changed", df.display())) && log.contains("Parquet footer"), "{log}");

    // Refusals leave the run as it was.
    assert_eq!(run_dirs(&out), vec![dir.clone()]);
    assert_eq!(std::fs::read(dir.join(".progress.json")).unwrap(), progress_before);
}

/// Resume across the files of a partitioned input, in a shard: the committed rows end inside
/// the second of three files, and the shard starts inside the second too.
#[test]
fn a_shard_of_a_partitioned_input_resumes() {
    let work = scratch("resume-parts");
    let file = fixtures().join("vision").join("images_120.parquet");
    let table = read_parquet(&file);
    let dataset = work.join("dataset");
    std::fs::create_dir_all(&dataset).unwrap();
    for p in 0..3 {
        write_parquet(&dataset.join(format!("part-{p}.parquet")), &table.slice(p * 40, 40));
    }
    let whole = read_parquet(&output_parquet(&embed_resnet18(&file, &work.join("whole"), &["--batch_size", "8"])));

    let out = work.join("out");
    let args = [args(&dataset, &out), vec!["--shard".into(), "1/2".into()]].concat();
    let mut child = start_stalled(&args, "rows:40", &work);
    child.kill().unwrap();
    child.wait().unwrap();
    let [dir] = &run_dirs(&out)[..] else { panic!("expected one run directory") };
    // Batches end at file boundaries too, so commits fall where the windows do: some rows, not all.
    let committed = committed_rows(dir);
    assert!(committed > 0 && committed < 60, "{committed} rows committed");
    let (ok, log) = run(&[&args[..], &["--resume".to_string()]].concat(), &work);
    assert!(ok, "{log}");
    assert!(log.contains(&format!("{committed} rows committed")), "{log}");
    // Shard 1/2 of 120 rows is rows 60..120 (no row-group boundary is near enough to 60).
    assert_eq!(read_parquet(&output_parquet(dir)), whole.slice(60, 60));
    assert_eq!(details(dir)["shard"]["first_row"], 60);
}
