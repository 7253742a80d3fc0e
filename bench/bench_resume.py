"""`cargo xtask bench resume`: what resume and shards cost (issue 13's benchmark).

1. Merge speed: `deepembed merge` on the vision output of 100,000 rows in 4 shards (ResNet-50
   width, 2048 float32 columns plus label and id). Four real shard runs on a small JPEG dataset
   give the layout and JSON files; each shard's Parquet file is then grown to 25,000 rows by
   repeating its rows, in row groups of the size deepembed writes. Rows/s and MB/s of the merge.
2. Resume pick-up: a GANDALF run over 1M generated rows is killed (SIGKILL) halfway, then
   resumed. The resumed command's time is set against a fresh run over the rows it had left
   (the same rows, in a file of their own): the difference is what picking up costs (finding
   the run, checking the fingerprint, seeking past the committed rows, putting more pieces
   together).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_vision import measure  # noqa: E402
from tabular_data import clinical_table  # noqa: E402

SHARDS = 4
MERGE_ROWS = 100_000
GANDALF_ROWS = 1_000_000


def grow(shard_dir: Path, index: int, rows: int):
    """The shard's Parquet file grown to `rows` rows (embeddings drawn at random, so they
    compress as real ones do, hardly at all; the other columns repeated); its JSON files say so."""
    (file,) = shard_dir.glob("*.parquet")
    table = pq.read_table(file)
    rng = np.random.default_rng(index)
    columns = []
    for field in table.schema:
        if field.name.isdigit():
            columns.append(pa.array(rng.standard_normal(rows, dtype=np.float32)))
        else:
            reps = -(-rows // table.num_rows)
            columns.append(pa.concat_arrays([table.column(field.name).combine_chunks()] * reps).slice(0, rows))
    grown = pa.Table.from_arrays(columns, schema=table.schema)
    # deepembed closes a row group every 16 MiB: 2048 rows of 8 KiB.
    pq.write_table(grown, file, compression="snappy", row_group_size=2048, use_dictionary=False)
    details_path = shard_dir / "embedding_details.json"
    details = json.loads(details_path.read_text())
    details["rows"] = rows
    details["shard"].update(first_row=index * rows, rows=rows, input_rows=SHARDS * rows)
    details_path.write_text(json.dumps(details, indent=2))


def merge_speed(deepembed, work: Path):
    made = subprocess.run([sys.executable, HERE / "make_dataset.py", work, "64", "resnet50"],
                          check=True, capture_output=True, text=True).stdout.split()
    data, weights, _ = made
    shards = work / "shards"
    shutil.rmtree(shards, ignore_errors=True)
    for i in range(SHARDS):
        subprocess.run([deepembed, "embed", "vision", "--df", data, "--model_version", "resnet50", "--model_weights", weights,
                        "--shard", f"{i}/{SHARDS}", "--device", "cpu", "--batch_size", "16", "--out", shards, "--quiet"],
                       check=True)
    for i, shard in enumerate(sorted(shards.iterdir())):
        grow(shard, i, MERGE_ROWS // SHARDS)
    size = sum(f.stat().st_size for f in shards.rglob("*.parquet"))
    print(f"\n### Merge: {MERGE_ROWS} rows of 2048 float32 columns in {SHARDS} shards, {size / 1e6:.0f} MB of Parquet\n")
    print("| round | seconds | rows/s | MB/s | peak RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    for round in range(1, 4):
        out = work / "merged"
        shutil.rmtree(out, ignore_errors=True)
        seconds, rss = measure([deepembed, "merge", shards, "--out", out, "--quiet"])
        print(f"| {round} | {seconds:.2f} | {MERGE_ROWS / seconds:,.0f} | {size / 1e6 / seconds:,.0f} | {rss:.0f} |", flush=True)


def killed_halfway(args, tab: Path) -> int:
    """Runs `args` until the host has done half the rows (it stalls there: a test hook), kills it
    with SIGKILL, and returns how many rows it had committed."""
    out = Path(args[args.index("--out") + 1])
    shutil.rmtree(out, ignore_errors=True)
    log = tab / "stall.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err,
                                env=dict(os.environ, DEEPEMBED_TEST_STALL=f"rows:{GANDALF_ROWS // 2}"))
        while "stalled at" not in log.read_text():
            if proc.poll() is not None:
                sys.exit(f"the run ended before it stalled:\n{log.read_text()}")
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    (run_dir,) = out.iterdir()
    progress = json.loads((run_dir / ".progress.json").read_text())
    return sum(p["input_rows"] for p in progress["pieces"])


def resume_pickup(deepembed, work: Path, rounds: int):
    from bench_tabular import make_model

    tab = work / "gandalf"
    if not (tab / "model").exists():
        make_model(tab, [])
    table = clinical_table(np.random.default_rng(2), GANDALF_ROWS)
    data = tab / "table_1m.parquet"
    table.to_parquet(data, index=False)
    common = ["--model_weights", tab / "model", "--batch_size", "1024", "--device", "cpu", "--quiet"]
    args = [deepembed, "embed", "gandalf", "--df", data, *common, "--out", tab / "killed"]
    whole, _ = measure([*args[:-1], tab / "whole"])
    print(f"\n### Resume pick-up: GANDALF, {GANDALF_ROWS} rows, killed (SIGKILL) after half of them\n")
    print(f"The whole run, uninterrupted: {whole:.2f} s.\n")
    print("| round | rows committed before the kill | `--resume` (s) | fresh run over the same remaining rows (s) | pick-up cost (s) |")
    print("|---:|---:|---:|---:|---:|")
    for round in range(1, rounds + 1):
        committed = killed_halfway(args, tab)
        rest = tab / "rest.parquet"
        table.iloc[committed:].to_parquet(rest, index=False)
        resumed, _ = measure([*args, "--resume"])
        fresh, _ = measure([deepembed, "embed", "gandalf", "--df", rest, *common, "--out", tab / f"fresh{round}"])
        print(f"| {round} | {committed} | {resumed:.2f} | {fresh:.2f} | {resumed - fresh:+.2f} |", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepembed", required=True)
    p.add_argument("--work", required=True)
    args = p.parse_args()
    work = Path(args.work) / "resume"
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    merge_speed(args.deepembed, work)
    resume_pickup(args.deepembed, work, rounds=3)


if __name__ == "__main__":
    main()
