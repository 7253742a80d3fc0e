"""What starting the CUDA device early saves (host/src/warm_up.rs): runs the same short vision
command with the warm-up on and off (DEEPEMBED_CUDA_WARM_UP=0), alternating, and prints each
run's wall seconds, where its start-up went (runner.start_up's split: before main/to
inputs/model/first window/end, and the first chunk's model run), and when the warm-up thread was
done (seconds since main began) and how long it took.

Usage: warm_up.py DEEPEMBED ROUNDS -- embed vision <flags...> (without --out)
Prints a table: | warm-up | round | seconds | before main/to inputs/model/first window/end (first chunk) | warm-up done at (took) |
"""

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from runner import run_measured, start_up


def main():
    split = sys.argv.index("--")
    deepembed, rounds = sys.argv[1], int(sys.argv[2])
    args = sys.argv[split + 1:]
    work = Path(tempfile.mkdtemp())
    print("| warm-up | round | seconds | before main/to inputs/model/first window/end (first chunk) | warm-up done at (took) |")
    print("|---|---:|---:|---|---|")
    try:
        for round in range(1, rounds + 1):
            for switch in ("1", "0"):
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                env = dict(os.environ, DEEPEMBED_LOG="debug", DEEPEMBED_CUDA_WARM_UP=switch)
                run = run_measured([deepembed, *args, "--out", str(out)], env=env, gpu=False)
                label = "on" if switch == "1" else "off"
                done = re.search(r"^\s*([0-9.]+) s .*ready: context and cuBLAS in ([0-9.]+) s", run.stderr, re.M)
                warm = f"{done.group(1)} ({done.group(2)})" if done else "-"
                print(f"| {label} | {round} | {run.seconds:.2f} | {start_up(run.seconds, run.stderr)} | {warm} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
