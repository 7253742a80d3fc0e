"""The drift of `--precision fp16` against fp32: runs deepembed twice on the same data, same model
and device, and prints the minimum, median and mean cosine similarity between the two runs'
embeddings of each row (the issue's measure: the minimum over a real run).

Usage: precision_drift.py DEEPEMBED LABEL WORK_DIR -- embed <plugin> <flags...>
(the flags without --precision and --out)
"""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def embeddings(deepembed, args, precision, out):
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([deepembed, *args, "--precision", precision, "--out", str(out), "--quiet"], check=True)
    (file,) = [f for f in Path(out).rglob("*.parquet")]
    table = pq.read_table(file)
    # Embedding columns: "0".."N-1" (vision, tabular) or emb_0.. (others), in order.
    names = [c for c in table.column_names if c.isdigit() or c.startswith("emb_")]
    return np.stack([table.column(c).to_numpy() for c in names], axis=1).astype(np.float64)


def main():
    deepembed, label, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    args = sys.argv[sys.argv.index("--") + 1:]
    a = embeddings(deepembed, args, "fp32", work / "fp32")
    b = embeddings(deepembed, args, "fp16", work / "fp16")
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"| {label} | {len(cos)} | {cos.min():.6f} | {np.median(cos):.6f} | {cos.mean():.6f} |", flush=True)


if __name__ == "__main__":
    main()
