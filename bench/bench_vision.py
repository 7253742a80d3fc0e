"""`cargo xtask bench vision`: deepembed against a DeepTune-like Python pipeline on the same
generated JPEG dataset and the same model, then again on a dataset ten times larger to show
whether peak memory grows with the dataset. Prints images/s and peak RSS of each command.

Each command runs as a child process; wall time covers the whole command (start-up, model
loading, decoding, inference, writing Parquet), and peak RSS is the child's ru_maxrss.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from runner import run_measured  # noqa: E402


def measure(cmd, env=None):
    """Seconds and peak RSS (MiB) of `cmd` (bench/runner.py)."""
    run = run_measured(cmd, env)
    return run.seconds, run.rss_mib


def compare(label, n, commands):
    """Runs each (tool, command), prints a table row per tool and one with the first tool's
    throughput relative to the second's; returns {tool: (seconds, peak RSS)}."""
    results = {}
    for tool, cmd in commands:
        seconds, rss = measure(cmd)
        results[tool] = (seconds, rss)
        print(f"| {label} | {tool} | {seconds:.1f} | {n / seconds:.1f} | {rss:.0f} |", flush=True)
    (first, (a, _)), (second, (b, _)) = list(results.items())[:2]
    print(f"| {label} | {first} / {second} | | {b / a:.2f}x | |", flush=True)
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepembed", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--scale", type=int, default=10, help="size factor of the second dataset (1: one dataset only)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch_size", type=int, default=32)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"model {args.model}, batch size {args.batch_size}, CPU\n")
    print("| images | tool | seconds | images/s | peak RSS (MiB) |")
    print("|---:|---|---:|---:|---:|")
    rows = {}
    sizes = (args.images,) if args.scale <= 1 else (args.images, args.images * args.scale)
    for n in sizes:
        made = subprocess.run([sys.executable, HERE / "make_dataset.py", work, str(n), args.model], check=True, capture_output=True, text=True)
        data, weights, _ = made.stdout.split()
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        ours = [args.deepembed, "embed", "vision", "--df", data, "--model_version", args.model, "--model_weights", weights,
                "--batch_size", str(args.batch_size), "--device", "cpu", "--out", str(out), "--quiet"]
        python = [sys.executable, HERE / "deeptune_like.py", data, weights, args.model, str(args.batch_size), str(work / "python.parquet")]
        for tool, result in compare(n, n, (("deepembed", ours), ("python (DeepTune-like)", python))).items():
            rows[(n, tool)] = result
    print()
    for n in sizes:
        (a, ra), (b, rb) = rows[(n, "deepembed")], rows[(n, "python (DeepTune-like)")]
        print(f"{n} images: deepembed {b / a:.2f}x the Python throughput; peak RSS {ra:.0f} vs {rb:.0f} MiB")
    if len(sizes) == 1:
        return
    small, large = sizes
    print(f"peak RSS growth from {small} to {large} images: deepembed {rows[(large, 'deepembed')][1] - rows[(small, 'deepembed')][1]:+.0f} MiB, "
          f"python {rows[(large, 'python (DeepTune-like)')][1] - rows[(small, 'python (DeepTune-like)')][1]:+.0f} MiB")


if __name__ == "__main__":
    main()
