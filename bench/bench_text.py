"""`cargo xtask bench text`: deepembed against a DeepTune-like Python pipeline (transformers
tokenizer, padding to 256, same model) on one generated corpus of mixed lengths, for the real
all-MiniLM-L6-v2 (BERT, [CLS]) and a GPT-2-sized random model (mean pooling). Prints texts/s and
peak RSS of each command (whole command, child's ru_maxrss).
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepembed", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--texts", type=int, default=512)
    p.add_argument("--gpt2_texts", type=int, default=128, help="GPT-2-sized runs take longer on a CPU")
    p.add_argument("--batch_size", type=int, default=32)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; batch size {args.batch_size}, CPU\n")
    print("| model | texts | tool | seconds | texts/s | peak RSS (MiB) |")
    print("|---|---:|---|---:|---:|---:|")
    for kind, plugin, n in (("bert", "mbert", args.texts), ("gpt2", "gpt2", args.gpt2_texts)):
        made = subprocess.run([sys.executable, HERE / "make_text_dataset.py", work, str(n)], check=True, capture_output=True, text=True)
        data, gpt2_dir, minilm = made.stdout.split()
        model = minilm if kind == "bert" else gpt2_dir
        label = "all-MiniLM-L6-v2" if kind == "bert" else "GPT-2 124M (random)"
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        ours = [args.deepembed, "embed", plugin, "--df", data, "--model_weights", model, "--batch_size", str(args.batch_size),
                "--device", "cpu", "--out", str(out), "--quiet"]
        python = [sys.executable, HERE / "text_like_deeptune.py", kind, data, model, str(args.batch_size), str(work / "python.parquet")]
        compare(f"{label} | {n}", n, (("deepembed", ours), ("python (DeepTune-like)", python)))


if __name__ == "__main__":
    main()
