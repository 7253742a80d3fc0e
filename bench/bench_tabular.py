"""`cargo xtask bench tabular`: deepembed against pytorch-tabular's own inference path for a
GANDALF (load_model, the saved datamodule's preprocessing, embedding layer and backbone batch by
batch, as DeepTune's script runs them, then a DataFrame and Parquet), on generated clinical-style
tables of two sizes. Prints rows/s and peak RSS of each whole command.

The Python side is the correct pytorch-tabular path (saved codes and scaler, every batch kept),
not DeepTune's, which keeps only the last batch.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from bench_vision import compare

HERE = Path(__file__).resolve().parent

PYTHON_SIDE = r"""
import sys, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
import numpy as np, pandas as pd, torch
from pytorch_tabular import TabularModel
data, model_dir, batch_size, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
df = pd.read_parquet(data)
model = TabularModel.load_model(model_dir)
net = model.model.eval()
parts = []
with torch.no_grad():
    for batch in model.datamodule.prepare_inference_dataloader(df, batch_size=batch_size):
        parts.append(net.compute_backbone(net.embed_input(batch)).numpy())
emb = pd.DataFrame(np.vstack(parts))
emb.columns = [str(c) for c in emb.columns]
emb["label"] = df["outcome"].values
emb.to_parquet(out, index=False)
"""

MAKE = r"""
import sys, os, io, contextlib, tempfile, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
import numpy as np, pandas as pd
from pytorch_tabular import TabularModel
from pytorch_tabular.config import DataConfig, OptimizerConfig, TrainerConfig
from pytorch_tabular.models import GANDALFConfig
work, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]
sys.path.insert(0, os.environ["DEEPEMBED_BENCH_DIR"])
from tabular_data import CATEGORIES as cats, CONTINUOUS as cont, clinical_table
rng = np.random.default_rng(0)
def rows(n):
    return clinical_table(rng, n)
model = TabularModel(
    data_config=DataConfig(target=["outcome"], continuous_cols=cont, categorical_cols=list(cats)),
    model_config=GANDALFConfig(task="classification", gflu_stages=6),
    optimizer_config=OptimizerConfig(),
    trainer_config=TrainerConfig(max_epochs=1, batch_size=256, accelerator="cpu", progress_bar="none", checkpoints=None, load_best=False, early_stopping=None),
    verbose=False)
cwd = os.getcwd()
with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
    os.chdir(scratch)
    model.fit(train=rows(5000), seed=0)
    os.chdir(cwd)
model.save_model(os.path.join(work, "model"))
for n in sizes:
    rows(n).to_parquet(os.path.join(work, f"table_{n}.parquet"), index=False)
"""


def make_model(work, sizes):
    """Trains the benchmark's GANDALF into work/model and writes a table of each size."""
    env = dict(os.environ, DEEPEMBED_BENCH_DIR=str(HERE))
    subprocess.run([sys.executable, "-c", MAKE, work, *map(str, sizes)], check=True, env=env)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepembed", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--scale", type=int, default=10, help="size factor of the second table")
    p.add_argument("--batch_size", type=int, default=1024)
    args = p.parse_args()
    work = Path(args.work) / "tabular"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sizes = [args.rows, args.rows * args.scale]
    make_model(work, sizes)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"GANDALF: 12 continuous + 4 categorical columns, 6 GFLU stages; batch size {args.batch_size}, CPU\n")
    print("| rows | tool | seconds | rows/s | peak RSS (MiB) |")
    print("|---:|---|---:|---:|---:|")
    for n in sizes:
        data = work / f"table_{n}.parquet"
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        ours = [args.deepembed, "embed", "gandalf", "--df", data, "--model_weights", work / "model", "--batch_size", str(args.batch_size),
                "--device", "cpu", "--out", out, "--quiet"]
        python = [sys.executable, "-c", PYTHON_SIDE, data, work / "model", str(args.batch_size), work / "python.parquet"]
        compare(n, n, (("deepembed", ours), ("python (pytorch-tabular)", python)))


if __name__ == "__main__":
    main()
