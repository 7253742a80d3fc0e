"""Running a benchmarked command: wall time, peak RSS of the child, its stderr and, on request,
the peak GPU memory in use while it ran. Every bench script measures commands through here.

stderr goes to a file, not a pipe: a pipe nobody reads while the command runs fills up and blocks
it (libtorch's CUDA warnings did exactly that once).
"""

import os
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
