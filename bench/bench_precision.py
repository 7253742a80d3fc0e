"""`cargo xtask bench precision`: `--precision bf16` against fp32 on the CPU, per vision family and
text model: each whole command's seconds and the drift (per row, the cosine similarity between
the two runs' embeddings: minimum, median, mean), through bench/precision_drift.py.

Vision: N generated photo-like JPEGs (bench/make_dataset.py) and random weights per family, in
the format a run of it reads. Text: the generated corpus (bench/make_text_dataset.py) with the
real all-MiniLM-L6-v2 (mbert) and a GPT-2-sized random model (gpt2). On a GPU machine the same drift, for fp16 and
bf16, comes from `cargo xtask gpu-check`.
"""

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# One version of every family (DenseNet through a DeepTune checkpoint with two added layers, as
# DeepTune embeds it). SigLIP (`siglip`: so400m's size, 384x384 images) takes about 4 s an image
# on 2 cores, so it is left to `--models` and the GPU check.
FAMILIES = "resnet18,resnet50,efficientnet_b0,vgg11,vit_b_16,swin_t,densenet121"


def drift(deepembed, label, work, args):
    subprocess.run([sys.executable, HERE / "precision_drift.py", deepembed, label, work / "drift", "--precisions", "bf16",
                    "--", *args], check=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepembed", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--texts", type=int, default=512, help="0: no all-MiniLM-L6-v2 run")
    p.add_argument("--gpt2_texts", type=int, default=128, help="GPT-2-sized runs take longer on a CPU (0: none)")
    p.add_argument("--models", default=FAMILIES, help="comma-separated vision families (empty: text only)")
    p.add_argument("--batch_size", type=int, default=32)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    flags = ["--device", "cpu", "--batch_size", str(args.batch_size)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; batch size {args.batch_size}, CPU; whole commands\n")
    print("| model | precision | rows | fp32 seconds | seconds | min cosine | median | mean |")
    print("|---|---|---:|---:|---:|---:|---:|---:|", flush=True)
    for model in filter(None, args.models.split(",")):
        made = subprocess.run([sys.executable, HERE / "make_dataset.py", work, str(args.images), model], check=True,
                              capture_output=True, text=True)
        data, weights, use_case = made.stdout.split()
        drift(args.deepembed, model, work, ["embed", "vision", "--df", data, "--model_version", model, "--model_weights",
                                            weights, "--use_case", use_case, *flags])
    for plugin, n in (("mbert", args.texts), ("gpt2", args.gpt2_texts)):
        if n == 0:
            continue
        made = subprocess.run([sys.executable, HERE / "make_text_dataset.py", work, str(n)], check=True,
                              capture_output=True, text=True)
        data, gpt2_dir, minilm = made.stdout.split()
        label, model = ("all-MiniLM-L6-v2", minilm) if plugin == "mbert" else ("GPT-2 124M (random)", gpt2_dir)
        drift(args.deepembed, label, work, ["embed", plugin, "--df", data, "--model_weights", model, *flags])


if __name__ == "__main__":
    main()
