"""`cargo xtask bench timeseries`: deepembed's deepar plugin against pytorch-forecasting's own
inference path for a DeepAR (DeepAR.load_from_checkpoint, TimeSeriesDataSet.from_parameters with
the checkpoint's dataset parameters, the model's forward batch by batch with a hook on its RNN, each
sample mapped back to its (group, time_idx) row, then a DataFrame and Parquet), on a generated
hourly clinical-style table of many series. deepembed runs twice: on the table as written (each
series in time order) and on a copy with its rows shuffled, which takes its out-of-core sort path
(with a small --sort_memory_mb, so that a large table is sorted in runs on disk and merged).
Prints rows/s and peak RSS of each whole command, then checks that the outputs agree.

The model is trained as DeepTune's trainers/timeseries/train_deepar.py does (LSTM, hidden_size
30, rnn_layers 2, TorchNormalizer target, NormalDistributionLoss), but on a small slice of the
table and for one epoch of a few batches: the benchmark measures inference, not training.
`--normalizer encoder` trains with an EncoderNormalizer on the target instead (pytorch-forecasting's
default for long windows), which both tools fit afresh on every window.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench_vision import compare

HERE = Path(__file__).resolve().parent

# pytorch-forecasting's path, every sample kept: argv data.parquet model_dir batch_size out.parquet
PYTHON_SIDE = r"""
import sys, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
from pathlib import Path
import numpy as np, pandas as pd, torch
from pytorch_forecasting import DeepAR, TimeSeriesDataSet
data, model_dir, batch_size, out = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
TIME, TARGET = "timestamp", "hr"
df = pd.read_parquet(data)
# DeepTune's preparation (train_deepar.py), with the input position kept to map samples back.
frame = df.assign(__row=np.arange(len(df)))
frame[TIME] = pd.to_datetime(frame[TIME])
frame = frame.sort_values(TIME, kind="stable")
frame["time_idx"] = ((frame[TIME] - frame[TIME].min()).dt.total_seconds() // 3600).astype(int)
frame[TARGET] = frame[TARGET].astype(np.float64)

model = DeepAR.load_from_checkpoint(str(sorted(model_dir.glob("*.ckpt"))[0]), weights_only=False)
model.eval()
ds = TimeSeriesDataSet.from_parameters(model.dataset_parameters, frame, predict=False, stop_randomization=True)
calls = []
hook = model.rnn.register_forward_hook(lambda module, args, output: calls.append(output))
embs, index = [], []
with torch.no_grad():
    for x, _ in ds.to_dataloader(train=False, batch_size=batch_size, num_workers=0):
        calls.clear()
        model(x)
        embs.append(calls[-1][0][:, 0].numpy())  # the decoder step's top-layer output
        index.append(ds.x_to_index(x))
hook.remove()

hidden = model.hparams.hidden_size
samples = pd.concat(index, ignore_index=True)
samples["__sample"] = np.arange(len(samples))
keys = list(ds.group_ids) + ["time_idx"]
rows = frame[keys + ["__row"]].merge(samples, on=keys, how="inner", validate="one_to_one")
emb = np.zeros((len(df), hidden), dtype=np.float32)
padded = np.ones(len(df), dtype=bool)
if embs:
    emb[rows["__row"].to_numpy()] = np.concatenate(embs)[rows["__sample"].to_numpy()]
    padded[rows["__row"].to_numpy()] = False
result = pd.DataFrame(emb, columns=[f"emb_{j}" for j in range(hidden)])
result[TARGET] = df[TARGET].to_numpy(dtype=np.float32)
result["is_padded"] = padded
result.to_parquet(out, index=False)
"""

# argv: dir rows series normalizer; writes data.parquet, shuffled.parquet (+ shuffled_order.npy)
# and model/
MAKE = r"""
import sys, os, io, contextlib, tempfile, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
import numpy as np, pandas as pd
import lightning.pytorch as pl
from pytorch_forecasting import DeepAR, TimeSeriesDataSet
from pytorch_forecasting.data.encoders import EncoderNormalizer, TorchNormalizer
from pytorch_forecasting.metrics import NormalDistributionLoss
out, n, series, normalizer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
TIME, TARGET, ENCODER = "timestamp", "hr", 30
rng = np.random.default_rng(0)
wards = np.array(["A", "B", "C", "D", "E"])

# Each series hourly from its own start, about 1% of hours missing (allow_missing_timesteps).
lengths = np.full(series, n // series) + (np.arange(series) < n % series)
sid = np.repeat(np.arange(series), lengths)
first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
def within(values):  # cumulative sums restarting at each series
    total = np.cumsum(values)
    return total - np.repeat(total[first] - values[first], lengths)
step = np.where(rng.random(n) < 0.01, 2, 1)
step[first] = 0
hours = rng.integers(0, 48, series)[sid] + within(step)
ts = pd.Timestamp("2024-01-01") + pd.to_timedelta(hours, unit="h")
ward = wards[np.arange(series) % len(wards)]  # every ward among the first series
dose = rng.normal(2.0, 1.0, n)
hr = 70.0 + 3.0 * dose + 0.5 * within(rng.normal(0, 1, n)) + rng.normal(0, 1, n)
hr += np.arange(series)[sid] % 7 - 3.0 + np.select([ward[sid] == "A", ward[sid] == "E"], [-5.0, 5.0], 0.0)
df = pd.DataFrame({
    "patient": pd.Series([f"p{i:05d}" for i in range(series)])[sid].to_numpy(),
    TIME: ts.astype("datetime64[ns]"),
    "dose": dose,
    "ward": ward[sid],
    "shift": np.where((ts.hour >= 7) & (ts.hour < 19), "day", "night"),
    TARGET: hr,
})
df.to_parquet(os.path.join(out, "data.parquet"), index=False)
order = rng.permutation(n)
df.iloc[order].to_parquet(os.path.join(out, "shuffled.parquet"), index=False)
np.save(os.path.join(out, "shuffled_order.npy"), order)

# DeepTune's training, on the first 25 series' first 300 rows, one epoch of 3 batches, CPU.
small = df[(sid < 25) & (np.arange(n) - first[sid] < 300)].copy()
small[TIME] = pd.to_datetime(small[TIME])
small = small.sort_values(TIME, kind="stable")
small["time_idx"] = ((small[TIME] - small[TIME].min()).dt.total_seconds() // 3600).astype(int)
small[TARGET] = small[TARGET].astype(np.float64)
cutoff = int(small["time_idx"].max() * 0.8)
training = TimeSeriesDataSet(
    small[small["time_idx"] <= cutoff], time_idx="time_idx", target=TARGET,
    max_prediction_length=1, max_encoder_length=ENCODER,
    static_categoricals=["ward"], time_varying_known_categoricals=["shift"],
    time_varying_known_reals=["dose"], time_varying_unknown_reals=[TARGET],
    group_ids=["patient"], allow_missing_timesteps=True,
    target_normalizer=EncoderNormalizer() if normalizer == "encoder" else TorchNormalizer(),
)
validation = TimeSeriesDataSet.from_dataset(training, small, min_prediction_idx=cutoff + 1, stop_randomization=True)
pl.seed_everything(0, verbose=False)
net = DeepAR.from_dataset(
    training, learning_rate=0.01, hidden_size=30, rnn_layers=2, cell_type="LSTM",
    loss=NormalDistributionLoss(), optimizer="Adam",
)
trainer = pl.Trainer(
    accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=1, deterministic=True,
    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
)
cwd = os.getcwd()
with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
    os.chdir(scratch)  # Lightning writes into the working directory
    try:
        trainer.fit(
            net,
            train_dataloaders=training.to_dataloader(train=True, batch_size=32, num_workers=0),
            val_dataloaders=validation.to_dataloader(train=False, batch_size=64, num_workers=0),
        )
    finally:
        os.chdir(cwd)
os.makedirs(os.path.join(out, "model"), exist_ok=True)
trainer.save_checkpoint(os.path.join(out, "model", "deepar.ckpt"))
"""


def dataset(work: Path, rows: int, series: int, normalizer: str) -> Path:
    """The table, its shuffled copy and the model for these sizes, made once and kept in `work`."""
    made = work / f"rows{rows}_series{series}" / normalizer
    if not (made / "done").exists():
        shutil.rmtree(made, ignore_errors=True)
        made.mkdir(parents=True)
        subprocess.run([sys.executable, "-c", MAKE, made, str(rows), str(series), normalizer], check=True)
        (made / "done").touch()
    return made


def output_parquet(out: Path) -> Path:
    found = [p for p in out.glob("*/*.parquet")]
    if len(found) != 1:
        sys.exit(f"expected one Parquet file of embeddings under {out}, found {found}")
    return found[0]


def check(name: str, got: pd.DataFrame, want: pd.DataFrame) -> bool:
    emb = [c for c in want.columns if c.startswith("emb_")]
    if list(got.columns) != list(want.columns) or len(got) != len(want):
        print(f"{name}: columns or rows differ from python's: {list(got.columns)} ({len(got)} rows)")
        return False
    diff = float(np.abs(got[emb].to_numpy() - want[emb].to_numpy()).max()) if len(want) else 0.0
    padded = int((got["is_padded"].to_numpy() != want["is_padded"].to_numpy()).sum())
    target = bool(np.array_equal(got["hr"].to_numpy(), want["hr"].to_numpy()))
    ok = diff <= 1e-4 and padded == 0 and target
    print(f"{name} vs python: max |emb diff| {diff:.2e}, is_padded differs on {padded} rows, "
          f"hr {'identical' if target else 'DIFFERS'}: {'ok' if ok else 'MISMATCH'}")
    return ok


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepembed", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--series", type=int, default=1_000)
    p.add_argument("--batch_size", type=int, default=1024)
    p.add_argument("--sort_memory_mb", type=int, default=8,
                   help="deepembed's sort memory for the shuffled rows (40 bytes a row here; the plugin's default is 512)")
    p.add_argument("--normalizer", choices=["torch", "encoder"], default="torch",
                   help="the target normaliser: DeepTune's TorchNormalizer, or an EncoderNormalizer fitted on each window")
    args = p.parse_args()
    if not 0 < args.series <= args.rows:
        sys.exit("--series must be between 1 and --rows")
    work = Path(args.work).resolve() / "timeseries"
    made = dataset(work, args.rows, args.series, args.normalizer)
    n = args.rows

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    target = {"torch": "TorchNormalizer", "encoder": "EncoderNormalizer (fitted per window)"}[args.normalizer]
    print(f"DeepAR: LSTM, 2 layers, hidden 30, encoder length 30, {target} target; {n} rows over {args.series} hourly series "
          f"(static category, known category, known real); batch size {args.batch_size}, CPU; "
          f"shuffled rows sorted within {args.sort_memory_mb} MiB\n")
    print("| rows | tool | seconds | rows/s | peak RSS (MiB) |")
    print("|---:|---|---:|---:|---:|")
    outs = {"deepembed": made / "out_sorted", "deepembed (shuffled rows)": made / "out_shuffled"}
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    python_out = made / "python.parquet"

    def ours(data, out, *more):
        return [args.deepembed, "embed", "deepar", "--df", data, "--model_weights", made / "model",
                "--time_idx_column", "timestamp", "--target_column", "hr", "--group_ids", "patient",
                "--batch_size", str(args.batch_size), "--device", "cpu", "--out", out, "--quiet", *more]

    python = [sys.executable, "-c", PYTHON_SIDE, made / "data.parquet", made / "model", str(args.batch_size), python_out]
    results = compare(n, n, (
        ("deepembed", ours(made / "data.parquet", outs["deepembed"])),
        ("python (pytorch-forecasting)", python),
        ("deepembed (shuffled rows)", ours(made / "shuffled.parquet", outs["deepembed (shuffled rows)"], "--sort_memory_mb", str(args.sort_memory_mb))),
    ))
    b = results["python (pytorch-forecasting)"][0]
    print(f"| {n} | deepembed (shuffled rows) / python (pytorch-forecasting) | | "
          f"{b / results['deepembed (shuffled rows)'][0]:.2f}x | |\n", flush=True)

    want = pd.read_parquet(python_out)
    print(f"python: {int(want['is_padded'].sum())} of {len(want)} rows padded (no sample ends at them)")
    ok = check("deepembed", pd.read_parquet(output_parquet(outs["deepembed"])), want)
    shuffled = pd.read_parquet(output_parquet(outs["deepembed (shuffled rows)"]))
    # Row i of the shuffled output is row order[i] of the table: put it back in table order.
    order = np.load(made / "shuffled_order.npy")
    unshuffled = shuffled.iloc[np.argsort(order)].reset_index(drop=True)
    ok = check("deepembed (shuffled rows)", unshuffled, want) and ok
    if not ok:
        sys.exit("deepembed's embeddings differ from pytorch-forecasting's")


if __name__ == "__main__":
    main()
