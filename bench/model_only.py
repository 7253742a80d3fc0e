"""`cargo xtask bench vision --model-only` and the GPU check's table: for each model and
precision, the model alone (random tensors already in memory, the plugin's own loader and forward:
`examples/model_only`) against deepembed's whole command on a JPEG dataset, same model, batch,
device and precision, in the same run on the same machine.

Each pair is measured `--rounds` times, alternating, and the medians are reported: shared
machines drift by 10% between minutes, and alternating puts both sides under the same drift.

With --model_seconds S, the whole command reads the JPEGs several times over (hard links to the
same file, at most --max_copies) so that the model alone would take at least S seconds: start-up,
about a second on a GPU, would otherwise be a third of a 20,480-image run of a fast model.

Prints one Markdown table: model, precision, batch, the whole command's rows, model-only rows/s,
end-to-end rows/s, their ratio, the pipeline's own rows/s and ratio (the model's thread from its first window to its last
emit, from the pipeline's closing log line: what feeding the model achieves, without start-up),
the seconds outside the pipeline (process start, plugin and libtorch loading, device and model
set-up, closing the output) and where they went (the host's timeline at DEEPEMBED_LOG=debug),
cores, peak RSS of the end-to-end command, and (on CUDA) the peak GPU
memory in use.
"""

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional
from pathlib import Path

import pyarrow.parquet as pq

from runner import run_measured, start_up

HERE = Path(__file__).resolve().parent


def torch_lib(python):
    out = subprocess.run([python, "-c", "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def library_env(python, device):
    """The environment both binaries run under: that Python's libtorch first on the library path
    and, for CUDA, libtorch_cuda.so loaded before main (the host loads it itself; the example
    cannot)."""
    env = dict(os.environ)
    lib = torch_lib(python)
    env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    if device.startswith("cuda"):
        env["LD_PRELOAD"] = os.path.join(lib, "libtorch_cuda.so")
    # The attention kernels' order the host sets for itself (host/src/device.rs), so that the
    # example runs ViT's attention on the same kernel as the whole command.
    env.setdefault("TORCH_CUDNN_SDPA_DEPRIORITIZED", "1")
    return env


def model_only(example, model, weights, batch, device, precision, seconds, env):
    cmd = [example, "--model_version", model, "--model_weights", weights, "--batch_size", str(batch),
           "--device", device, "--precision", precision, "--seconds", str(seconds)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["rows_per_second"]


def copies_of(data: Path, copies: int) -> Path:
    """A directory holding `copies` hard links to the Parquet file `data` (symbolic links where the
    file system refuses), which deepembed reads as one table of `copies` times the rows: a larger
    input without writing or storing more JPEGs."""
    if copies <= 1:
        return data
    folder = data.parent / f"{data.stem}_x{copies}"
    folder.mkdir(exist_ok=True)
    for i in range(copies):
        link = folder / f"part-{i:03d}.parquet"
        if link.exists() and not os.path.samefile(link, data):
            link.unlink()  # a link to an earlier version of the file
        if not link.exists():
            try:
                os.link(data, link)
            except OSError:
                link.symlink_to(data.resolve())
    return folder


def end_to_end(deepembed, data, model, weights, batch, device, precision, decode, out, env):
    """rows/s of the whole command (start-up, loading, decoding, writing), its peak RSS (MiB),
    the peak GPU memory (MiB) while it ran, the share of the run the model's thread waited for
    prepared images (from the pipeline's closing log line; high means bound by decoding) and the
    cores it kept busy on average (CPU time over wall time: far below the cores it has, while
    the model waits, means decoding does not scale)."""
    shutil.rmtree(out, ignore_errors=True)
    # As a user runs it: the host loads libtorch's CUDA library itself (no LD_PRELOAD, which the
    # example needs), and logs its timeline.
    env = {k: v for k, v in env.items() if k != "LD_PRELOAD"}
    env["DEEPEMBED_LOG"] = "debug"
    cmd = [deepembed, "embed", "vision", "--df", str(data), "--model_version", model, "--model_weights", weights,
           "--batch_size", str(batch), "--device", device, "--precision", precision, "--decode", decode, "--out", str(out)]
    run = run_measured(cmd, env, gpu=device.startswith("cuda"))
    stages = re.search(r"waited ([0-9.]+) s for prepared rows \(([0-9]+)%\), sent chunks ([0-9.]+) s, "
                       r"read back ([0-9.]+) s \(waiting for the device\), emitted ([0-9.]+) s", run.stderr)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in (sorted(Path(data).glob("*.parquet")) if Path(data).is_dir() else [data]))
    # The model's thread is busy from the first window to the last emit: waiting for rows,
    # sending chunks, reading back (waiting for the device) or emitting. Its sum is the
    # pipeline's span.
    pipeline = sum(float(stages.group(i)) for i in (1, 3, 4, 5)) if stages else None
    split = "/".join(stages.group(i) for i in (1, 3, 4, 5)) if stages else "?"
    return Run(rows, rows / run.seconds, rows / pipeline if pipeline else None,
               run.seconds - pipeline if pipeline else None, run.rss_mib, run.peak_gpu_mib,
               stages.group(2) if stages else "?", split, run.cpu_seconds / run.seconds, start_up(run.seconds, run.stderr))


@dataclass
class Run:
    rows: int
    rate: float
    pipeline_rate: Optional[float]
    outside_s: Optional[float]
    rss_mib: float
    peak_gpu_mib: Optional[float]
    waited: str
    # Seconds of the model's thread: waiting for rows / sending / reading back / emitting.
    split: str
    cores_busy: float
    # Seconds before main/to inputs/model/first window/end (first chunk) (runner.start_up).
    start_up: str


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepembed", required=True)
    p.add_argument("--example", required=True, help="the model_only example binary")
    p.add_argument("--work", required=True)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--models", default="resnet18")
    p.add_argument("--precisions", default="fp32")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0, help="model-only measuring time per round")
    p.add_argument("--model_seconds", type=float, default=0.0,
                   help="read the JPEGs again (up to --max_copies times) until the model alone would take this long, "
                        "so start-up (about a second on a GPU) is a small part of the whole command")
    p.add_argument("--max_copies", type=int, default=4)
    p.add_argument("--decode", default="cpu", help="the whole command's --decode (cpu: the bit-identical default)")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = library_env(sys.executable, args.device)
    cores = len(os.sched_getaffinity(0))

    print(f"machine: {platform.machine()}, {cores} cores, {platform.platform()}; device {args.device}; "
          f"{args.images} JPEGs of 400x300 to 640x480; medians of {args.rounds} alternating rounds; --decode {args.decode}\n")
    print("| model | precision | batch | rows | model-only rows/s | end-to-end rows/s | ratio | pipeline rows/s | pipeline ratio | outside the pipeline (s) | start-up: before main/to inputs/model/first window/end (first chunk) (s) | model waited | model's thread: rows/send/device/emit (s) | cores | cores busy | peak RSS (MiB) | peak GPU memory (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        made = subprocess.run([sys.executable, HERE / "make_dataset.py", work, str(args.images), model],
                              check=True, capture_output=True, text=True)
        data, weights, _ = made.stdout.split()
        for precision in args.precisions.split(","):
            alone, runs = [], []
            source = Path(data)
            for _ in range(args.rounds):
                alone.append(model_only(args.example, model, weights, args.batch_size, args.device, precision, args.seconds, env))
                if len(alone) == 1:
                    copies = math.ceil(alone[0] * args.model_seconds / args.images)
                    source = copies_of(Path(data), min(max(copies, 1), args.max_copies))
                runs.append(end_to_end(args.deepembed, source, model, weights, args.batch_size, args.device, precision,
                                       args.decode, work / "out", env))
            a, w = statistics.median(alone), statistics.median(r.rate for r in runs)
            piped = [r.pipeline_rate for r in runs if r.pipeline_rate]
            outside = [r.outside_s for r in runs if r.outside_s is not None]
            p_text = f"{statistics.median(piped):.1f} | {statistics.median(piped) / a:.2f}" if piped else "? | ?"
            o_text = f"{statistics.median(outside):.1f}" if outside else "?"
            gpu = [r.peak_gpu_mib for r in runs if r.peak_gpu_mib is not None]
            gpu_text = f"{max(gpu)}" if gpu else "-"
            waited = "/".join(r.waited + "%" for r in runs)
            split = ", ".join(r.split for r in runs)
            start = ", ".join(r.start_up for r in runs)
            busy = statistics.median(r.cores_busy for r in runs)
            rss = max(r.rss_mib for r in runs)
            print(f"| {model} | {precision} | {args.batch_size} | {runs[0].rows} | {a:.1f} | {w:.1f} | {w / a:.2f} | {p_text} | {o_text} | {start} | {waited} | {split} | {cores} | {busy:.1f} | {rss:.0f} | {gpu_text} |",
                  flush=True)

if __name__ == "__main__":
    main()
