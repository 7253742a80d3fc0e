"""The drift of reduced precision (`--precision fp16`, `bf16`) against fp32, or of any other flag's
values against a baseline value (`--decode gpu` against `cpu`): runs deepembed on the same data,
same model and device, once with the baseline and once per value asked for, and prints the
minimum, median and mean cosine similarity between each row's embeddings in the two runs (the
issue's measure: the minimum over a real run).

Usage: precision_drift.py DEEPEMBED LABEL WORK_DIR [--precisions fp16,bf16]
                          [--flag decode --baseline cpu --values gpu] [--show TEXT]
                          -- embed <plugin> <flags...>
(the flags without the compared one and --out). Prints one table row per value, with each
whole command's seconds:
| label | value | rows | baseline seconds | seconds | min | median | mean |
and, with --show, the log lines of the compared runs that contain TEXT, after the table row.
"""

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def embeddings(deepembed, args, flag, value, out, show=None):
    """The run's embeddings as float64 rows, and the whole command's seconds; with `show`, the
    run's log lines containing it are printed."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    quiet = [] if show else ["--quiet"]
    run = subprocess.run([deepembed, *args, f"--{flag}", value, "--out", str(out), *quiet], stderr=subprocess.PIPE,
                         text=True)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        sys.exit(f"deepembed --{flag} {value} failed:\n{run.stderr}")
    shown = [line for line in run.stderr.splitlines() if show and show in line]
    # Warnings always: a fallback to another path would otherwise pass unseen.
    shown += [line for line in run.stderr.splitlines() if re.search(r"\b(warning|error):", line) and line not in shown]
    (file,) = [f for f in Path(out).rglob("*.parquet")]
    table = pq.read_table(file)
    # Embedding columns, in order: "0".."N-1" (vision, tabular, gpt2), embed0000.. (mbert).
    names = [c for c in table.column_names if c.isdigit() or (c.startswith("embed") and c[5:].isdigit())]
    return np.stack([table.column(c).to_numpy() for c in names], axis=1).astype(np.float64), seconds, shown


def main():
    split = sys.argv.index("--")
    deepembed, label, work, *options = sys.argv[1:split]
    args = sys.argv[split + 1:]
    p = argparse.ArgumentParser(usage=__doc__)
    p.add_argument("--precisions", help="the same as --flag precision --baseline fp32 --values ...")
    p.add_argument("--flag", default="precision")
    p.add_argument("--baseline", default="fp32")
    p.add_argument("--values", default="fp16")
    p.add_argument("--show", help="print the compared runs' log lines that contain this text")
    o = p.parse_args(options)
    values = (o.precisions or o.values).split(",")
    work = Path(work)
    a, a_seconds, _ = embeddings(deepembed, args, o.flag, o.baseline, work / o.baseline)
    for value in values:
        b, b_seconds, shown = embeddings(deepembed, args, o.flag, value, work / value, o.show)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        print(f"| {label} | {value} | {len(cos)} | {a_seconds:.1f} | {b_seconds:.1f} | {cos.min():.6f} | "
              f"{np.median(cos):.6f} | {cos.mean():.6f} |", flush=True)
        for line in shown:
            print(f"    {line}", flush=True)


if __name__ == "__main__":
    main()
