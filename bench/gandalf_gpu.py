"""GANDALF throughput at scale, for the GPU check (issue 12's tabular target): deepembed's whole
command on a generated clinical-style table of `--rows` rows (1M by default), per device,
precision and batch size, with rows/s, peak RSS and peak GPU memory.

The model is `cargo xtask bench tabular`'s GANDALF (12 continuous + 4 categorical columns, 6 GFLU
stages). Training it needs pytorch-tabular, which a GPU machine may lack: `--model DIR` takes one
trained elsewhere (`cargo xtask gpu-check` trains it before the check), and only when DIR does
not exist is it trained here.

Usage: gandalf_gpu.py --deepembed BIN --work DIR --model DIR [--rows 1000000]
                      [--devices cuda:0,cpu] [--precisions fp32,fp16] [--batch_sizes 1024,8192]
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_only import library_env  # noqa: E402
from runner import run_measured  # noqa: E402
from tabular_data import clinical_table  # noqa: E402


def run(deepembed, data, model, device, precision, batch, out, env):
    shutil.rmtree(out, ignore_errors=True)
    cmd = [deepembed, "embed", "gandalf", "--df", data, "--model_weights", model, "--batch_size", str(batch),
           "--device", device, "--precision", precision, "--out", str(out), "--quiet"]
    run = run_measured(cmd, env, gpu=device.startswith("cuda"))
    return run.seconds, run.rss_mib, run.peak_gpu_mib


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepembed", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--devices", default="cuda:0,cpu")
    p.add_argument("--precisions", default="fp32,fp16")
    p.add_argument("--batch_sizes", default="1024,8192")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model)
    if not model.exists():
        from bench_tabular import make_model

        make_model(model.parent, [])
    data = work / f"table_{args.rows}.parquet"
    if not data.exists():
        clinical_table(np.random.default_rng(1), args.rows).to_parquet(data, index=False)

    cores = len(os.sched_getaffinity(0))
    print(f"GANDALF (12 continuous + 4 categorical columns, 6 GFLU stages), {args.rows} rows, {cores} cores\n")
    print("| device | precision | batch | seconds | rows/s | peak RSS (MiB) | peak GPU memory (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for device in args.devices.split(","):
        env = library_env(sys.executable, device)
        for precision in args.precisions.split(","):
            if device == "cpu" and precision != "fp32":
                continue
            for batch in map(int, args.batch_sizes.split(",")):
                seconds, rss, gpu = run(args.deepembed, data, model, device, precision, batch, work / "out", env)
                gpu_text = f"{gpu}" if gpu is not None else "-"
                print(f"| {device} | {precision} | {batch} | {seconds:.1f} | {args.rows / seconds:.0f} | {rss:.0f} | {gpu_text} |",
                      flush=True)


if __name__ == "__main__":
    main()
