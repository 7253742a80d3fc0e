"""Running a benchmarked command: wall time, peak RSS of the child, its stderr and, on request,
the peak GPU memory in use while it ran. Every bench script measures commands through here.

stderr goes to a file, not a pipe: a pipe nobody reads while the command runs fills up and blocks
it (libtorch's CUDA warnings did exactly that once).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import NamedTuple


class GpuMemory:
    """Peak memory in use on the GPUs while it runs, sampled with nvidia-smi (None without it)."""

    def __init__(self, enabled):
        self.peak = None
        self.proc = None
        if enabled and shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "100"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                value = int(line.strip())
            except ValueError:
                continue
            self.peak = value if self.peak is None else max(self.peak, value)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            self.thread.join(timeout=2)
        return self.peak


class Measured(NamedTuple):
    seconds: float
    # CPU time (user + system) of the command: over `seconds`, how many cores it kept busy.
    cpu_seconds: float
    rss_mib: float
    peak_gpu_mib: object  # int, or None without a GPU or nvidia-smi
    stderr: str


def run_measured(cmd, env=None, gpu=False) -> Measured:
    """Runs `cmd` to the end (exiting with its stderr if it fails) and measures it."""
    memory = GpuMemory(gpu)
    err_file = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err_file)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    peak_gpu = memory.stop()
    err_file.seek(0)
    err = err_file.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"command failed: {' '.join(map(str, cmd))}\n{err}")
    return Measured(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, peak_gpu, err)


# The host's log lines that mark where start-up goes, at DEEPEMBED_LOG=debug (each line then
# starts with the seconds since main began).
MILESTONES = {
    "inputs open": r"\] \S+: \d+ rows from ",
    "pipeline starts": r"pipeline: starting",
    "first window": r"pipeline: first window prepared",
    "first chunk": r"pipeline: first chunk read back",
    "pipeline ends": r"pipeline: preparing ",
    "exit": r"exiting with status",
}


def milestones(stderr: str) -> dict:
    """The seconds since main began at which each of MILESTONES first appears in a
    DEEPEMBED_LOG=debug log."""
    at = {}
    for line in stderr.splitlines():
        m = re.match(r"\s*([0-9.]+) s ", line)
        if not m:
            continue
        for name, pattern in MILESTONES.items():
            if name not in at and re.search(pattern, line):
                at[name] = float(m.group(1))
    return at


def start_up(seconds: float, stderr: str) -> str:
    """Where a run's time outside its pipeline went, from its wall `seconds` and its
    DEEPEMBED_LOG=debug log, as seconds
    "before main/to inputs/model/first window/end (first chunk)": before main (process start and
    loading libtorch, from the wall time), to the inputs opened (plugins, the device: loading
    CUDA), the model loaded, the first window prepared, and from the pipeline's end to exit
    (closing the output); then, inside the pipeline, the first chunk's model run (from the first
    window to its embeddings read back: one batch's work plus what the device does once). "?"
    where a line is missing."""
    at = milestones(stderr)
    if "exit" not in at:
        return "?"

    def span(a, b):
        return f"{at[b] - at[a]:.2f}" if a in at and b in at else "?"

    at["main"] = 0.0
    before_main = f"{seconds - at['exit']:.2f}"
    outside = "/".join([before_main, span("main", "inputs open"), span("inputs open", "pipeline starts"),
                        span("pipeline starts", "first window"), span("pipeline ends", "exit")])
    return f"{outside} ({span('first window', 'first chunk')})"
