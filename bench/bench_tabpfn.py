"""`cargo xtask bench tabpfn`: deepembed's tabpfn plugin against tabpfn's own Python path as
DeepTune runs it (load_fitted_tabpfn_model on the CPU, then
TabPFNEmbedding(n_fold=0).get_embeddings(X_train, y_train, X_eval, data_source="test")[0], a
DataFrame and Parquet), on a generated classification table (numeric columns, one with missing
values, and text and integer categories), for each training size against one evaluation table.
Prints seconds, eval rows/s and peak RSS of each whole command, then checks that the outputs
agree.

The checkpoint is random, made with tabpfn's own classes as tests/python/gen_tabpfn.py makes
them, at the size of the v2.5 defaults (ModelConfig: emsize 192, 6 heads, 12 layers, feature
groups of 2) plus thinking rows, which v2.5 checkpoints carry (their count cannot be checked
without the real weights: --thinking_rows). ModelConfig's seed is 0: with emsize 192 and seed 42
tabpfn swaps in the column embeddings packaged in its wheel, which deepembed refuses. It is then
fitted with tabpfn's default settings (v2.5 inference config, 8 ensemble members) and saved with
save_fitted_tabpfn_model, as DeepTune's trainer does.

What each side computes: tabpfn's get_embeddings runs all 8 members over every evaluation row
(DeepTune keeps member 0); deepembed runs member 0 only. Their costs grow with the evaluation
rows times the training rows (every evaluation row attends to every training row) plus the
square of the training rows (the context, once per member), so at the issue's sizes
(--train_rows 1000,10000 --eval_rows 100000) the Python side takes about 4.5 hours on two cores
and deepembed about an hour. The defaults (1000 and 5000 training rows, 2000 evaluation rows)
take about 10 minutes. --deepembed_only times deepembed alone, for the sizes where the Python
side would not finish in a working session; compare the two at a smaller evaluation table with
the same training rows (each evaluation row's cost does not depend on the others).

The tabpfn reference stack (tabpfn 6.2, tabpfn-extensions) is not in the main venv: its Python
runs in child processes with PYTHONPATH=--tabpfn_libs (`.venv-tabpfn`, which xtask installs),
TABPFN_DISABLE_TELEMETRY=1, TABPFN_ALLOW_CPU_LARGE_DATASET=1 (tabpfn refuses more than 1000
training rows on a CPU otherwise) and CUDA hidden (on a GPU tabpfn uses fp16 autocast).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench_vision import compare, measure

HERE = Path(__file__).resolve().parent
TARGET = "outcome"

# v2.5-sized: ModelConfig's defaults (the real v2.5 values cannot be read without its weights).
ARCH = dict(emsize=192, nhead=6, nlayers=12, features_per_group=2, nhid_factor=4, seed=0)

# DeepTune's embed path: argv model.tabpfn_fit train.parquet eval.parquet target out.parquet
PYTHON_SIDE = r"""
import sys, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
import pandas as pd
from tabpfn.model_loading import load_fitted_tabpfn_model
from tabpfn_extensions.embedding import TabPFNEmbedding
model, train, evaluation, target, out = sys.argv[1:]
train_df, eval_df = pd.read_parquet(train), pd.read_parquet(evaluation)
clf = load_fitted_tabpfn_model(model, device="cpu")
X_train, y_train = train_df.drop(columns=[target]), train_df[target]
emb = TabPFNEmbedding(tabpfn_clf=clf, n_fold=0).get_embeddings(
    X_train, y_train, eval_df.drop(columns=[target]), data_source="test")[0]
result = pd.DataFrame(emb, columns=[str(i) for i in range(emb.shape[1])])
result["label"] = eval_df[target].to_numpy()
result.to_parquet(out, index=False)
"""

# argv: dir arch(json) thinking_rows eval_rows train_rows...; writes eval.parquet, model.ckpt and
# per training size train_<n>.parquet and fit_<n>.tabpfn_fit. The checkpoint as gen_tabpfn.py
# builds it; the fit as DeepTune's trainer does it.
MAKE = r"""
import sys, os, json, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
from dataclasses import asdict
import numpy as np, pandas as pd, torch
from tabpfn import TabPFNClassifier
from tabpfn.architectures import base as arch_base
from tabpfn.architectures.base.config import ModelConfig
from tabpfn.model_loading import save_fitted_tabpfn_model
out, arch, thinking, n_eval = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
train_sizes = [int(s) for s in sys.argv[5:]]
TARGET = "outcome"

def table(n, seed):
    # 10 numeric columns (one with 10% missing, one skewed), two text categories, a 3-valued
    # integer category (tabpfn infers it categorical), 3 classes.
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    df = pd.DataFrame({f"lab_{i}": z @ rng.normal(size=4) + 0.5 * rng.normal(size=n) for i in range(8)})
    df["lab_8"] = np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))
    df["lab_9"] = rng.exponential(size=n) * 20
    df["site"] = rng.choice([f"site_{i}" for i in range(6)], size=n)
    df["sex"] = rng.choice(np.array(["F", "M", None], dtype=object), size=n, p=[0.48, 0.48, 0.04])
    df["smoker"] = rng.integers(0, 3, size=n)
    df[TARGET] = (z[:, 0] > 0).astype(int) + (z[:, 1] + 0.5 * (df["smoker"] == 2) > 0.8)
    return df

table(n_eval, 1).to_parquet(os.path.join(out, "eval.parquet"), index=False)

torch.manual_seed(0)
cfg = ModelConfig(**arch, num_thinking_rows=thinking, max_num_classes=10, num_buckets=0)
model = arch_base.get_architecture(cfg, n_out=cfg.max_num_classes, cache_trainset_representation=False)
# tabpfn zero-initialises the attention output projections and mlp.linear2 (every layer would be
# an identity + LayerNorm): give them random values, as gen_tabpfn.py does.
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("_w_out") or name.endswith("mlp.linear2.weight"):
            p.uniform_(-0.3, 0.3)
ckpt = os.path.join(out, "model.ckpt")
torch.save({"state_dict": dict(model.state_dict()), "config": asdict(cfg), "architecture_name": "base"}, ckpt)

for n in train_sizes:
    train = os.path.join(out, f"train_{n}.parquet")
    table(n, 100 + n).to_parquet(train, index=False)
    df = pd.read_parquet(train)
    clf = TabPFNClassifier(model_path=ckpt, device="cpu")
    clf.fit(df.drop(columns=[TARGET]), df[TARGET])
    save_fitted_tabpfn_model(clf, os.path.join(out, f"fit_{n}.tabpfn_fit"))
"""


def reference_vars(libs: Path) -> list:
    """NAME=value for the reference stack's Python (see the module docstring)."""
    return [f"PYTHONPATH={libs}", "TABPFN_DISABLE_TELEMETRY=1", "TABPFN_ALLOW_CPU_LARGE_DATASET=1", "CUDA_VISIBLE_DEVICES="]


def reference_env(libs: Path) -> dict:
    return {**os.environ, **dict(v.split("=", 1) for v in reference_vars(libs))}


def dataset(work: Path, libs: Path, thinking: int, eval_rows: int, train_sizes) -> Path:
    """The tables, checkpoint and fitted models for these sizes, made once and kept in `work`."""
    made = work / f"eval{eval_rows}_train{'-'.join(map(str, train_sizes))}_thinking{thinking}"
    if not (made / "done").exists():
        shutil.rmtree(made, ignore_errors=True)
        made.mkdir(parents=True)
        subprocess.run([sys.executable, "-c", MAKE, made, json.dumps(ARCH), str(thinking), str(eval_rows), *map(str, train_sizes)],
                       check=True, env=reference_env(libs))
        (made / "done").touch()
    return made


def output_parquet(out: Path) -> Path:
    found = list(out.glob("*/*.parquet"))
    if len(found) != 1:
        sys.exit(f"expected one Parquet file of embeddings under {out}, found {found}")
    return found[0]


def check(n_train: int, got: pd.DataFrame, want: pd.DataFrame, tolerance: float) -> bool:
    if list(got.columns) != list(want.columns) or len(got) != len(want):
        print(f"{n_train} training rows: deepembed's columns or rows differ from python's: "
              f"{list(got.columns)[:3]}...{list(got.columns)[-2:]} ({len(got)} rows)")
        return False
    emb = [c for c in want.columns if c != "label"]
    diff = np.abs(got[emb].to_numpy(np.float64) - want[emb].to_numpy(np.float64))
    worst = float(diff.max()) if diff.size else 0.0
    rows_off = int((diff.max(axis=1) > tolerance).sum()) if diff.size else 0
    label = bool(np.array_equal(got["label"].to_numpy(), want["label"].to_numpy()))
    ok = rows_off == 0 and label
    print(f"{n_train} training rows: max |emb diff| {worst:.2e} (mean {float(diff.mean()):.1e}), "
          f"{rows_off} of {len(want)} rows beyond {tolerance:g}, label {'identical' if label else 'DIFFERS'}: "
          f"{'ok' if ok else 'MISMATCH'}")
    return ok


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepembed", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--train_rows", default="1000,5000",
                   help="comma-separated training sizes (the issue's: 1000,10000)")
    p.add_argument("--eval_rows", type=int, default=2000, help="evaluation rows (the issue's: 100000)")
    p.add_argument("--batch_size", type=int, default=1024, help="deepembed's evaluation rows per batch")
    p.add_argument("--thinking_rows", type=int, default=64, help="the checkpoint's num_thinking_rows")
    p.add_argument("--tabpfn_libs", default=str(HERE.parent / ".venv-tabpfn"),
                   help="the tabpfn reference stack, put on PYTHONPATH (xtask installs it)")
    p.add_argument("--deepembed_only", action="store_true",
                   help="time deepembed alone (for sizes where tabpfn's side takes hours: see the module docstring)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest |difference| accepted: from 1000 training rows up the SVD columns (ARPACK in "
                        "tabpfn) flip a few rows' fingerprints, each flipped training row moving every embedding "
                        "by about 1e-4, a flipped evaluation row its own by about 1e-2")
    args = p.parse_args()
    libs = Path(args.tabpfn_libs).resolve()
    if not (libs / "tabpfn").is_dir() or not (libs / "tabpfn_extensions").is_dir():
        sys.exit(f"tabpfn's reference stack is not in {libs}: run `cargo xtask bench tabpfn` (it installs "
                 f"tests/python/requirements-tabpfn.txt there) or pass --tabpfn_libs")
    train_sizes = [int(s) for s in args.train_rows.split(",") if s]
    if not train_sizes or min(train_sizes) < 1 or args.eval_rows < 1:
        sys.exit("--train_rows and --eval_rows must be positive")
    work = Path(args.work).resolve() / "tabpfn"
    made = dataset(work, libs, args.thinking_rows, args.eval_rows, train_sizes)
    n = args.eval_rows

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"TabPFN classifier, random checkpoint: emsize {ARCH['emsize']}, {ARCH['nhead']} heads, "
          f"{ARCH['nlayers']} layers, feature groups of {ARCH['features_per_group']}, {args.thinking_rows} thinking rows; "
          f"v2.5 default inference config (8 members: tabpfn computes all 8, deepembed member 0); "
          f"13 features (10 numeric, 3 categorical), 3 classes; {n} evaluation rows; "
          f"deepembed batch size {args.batch_size}; CPU\n")
    print("| training rows | tool | seconds | eval rows/s | peak RSS (MiB) |")
    print("|---:|---|---:|---:|---:|")
    results = {}
    for t in train_sizes:
        out = work / f"out_{t}"
        shutil.rmtree(out, ignore_errors=True)
        python_out = work / f"python_{t}.parquet"
        ours = [args.deepembed, "embed", "tabpfn", "--train_df", made / f"train_{t}.parquet", "--eval_df", made / "eval.parquet",
                "--model_weights", made / f"fit_{t}.tabpfn_fit", "--target_column", TARGET, "--mode", "cls",
                "--batch_size", str(args.batch_size), "--device", "cpu", "--out", out, "--quiet"]
        # `env` execs python in its own process, so the measured child is python itself.
        python = ["env", *reference_vars(libs), sys.executable, "-c", PYTHON_SIDE, made / f"fit_{t}.tabpfn_fit", made / f"train_{t}.parquet",
                  made / "eval.parquet", TARGET, python_out]
        if args.deepembed_only:
            seconds, rss = measure(ours)
            print(f"| {t} | deepembed | {seconds:.1f} | {n / seconds:.1f} | {rss:.0f} |", flush=True)
            continue
        results[t] = compare(t, n, (("deepembed", ours), ("python (tabpfn)", python)))
    if args.deepembed_only:
        return
    print()
    for t, r in results.items():
        (a, _), (b, _) = r["deepembed"], r["python (tabpfn)"]
        print(f"{t} training rows: deepembed {a / n * 1e3:.2f} ms, python {b / n * 1e3:.2f} ms per evaluation row (whole command)")
    print()
    ok = True
    for t in train_sizes:
        ok = check(t, pd.read_parquet(output_parquet(work / f"out_{t}")), pd.read_parquet(work / f"python_{t}.parquet"),
                   args.tolerance) and ok
    if not ok:
        sys.exit("deepembed's embeddings differ from tabpfn's")


if __name__ == "__main__":
    main()
