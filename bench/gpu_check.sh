#!/usr/bin/env bash
# GPU check: extraction with --device cuda on a machine with an NVIDIA GPU and PyTorch 2.11.
#
#   bench/gpu_check.sh [path/to/deepembed] [images]
#
# Uses that machine's own torch: its lib directory goes on LD_LIBRARY_PATH, ahead of the path
# baked into the binary. Needs pandas, pyarrow, pillow and torchvision in the same Python to
# generate the dataset. Prints images/s for each of MODELS (default: one version of each
# torchvision family) on cuda, and on cpu (256 images) for scale. DEVICES="cuda cpu" by default.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../target/release/deepembed}"
images="${2:-2048}"
py="${PYTHON:-python3}"
devices="${DEVICES:-cuda cpu}"
models="${MODELS:-resnet18 resnet50 vgg11 efficientnet_b0 vit_b_16 swin_t}"
torch_lib="$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin" plugins | head -3
for model in $models; do
    for device in $devices; do
        n="$images"; [ "$device" = cpu ] && n=256
        mapfile -t made < <("$py" "$here/make_dataset.py" "$work" "$n" "$model")
        "$bin" embed vision --df "${made[0]}" --model_version "$model" --model_weights "${made[1]}" \
            --device "$device" --batch_size 128 --out "$work/out" --quiet --json > "$work/summary.json"
        "$py" - "$work/summary.json" "$model" <<'PY'
import json, os, sys
summary = json.load(open(sys.argv[1]))
d = json.load(open(os.path.join(summary["output_dir"], "embedding_details.json")))
print(f"{sys.argv[2]:9s} {d['device']:7s} {d['rows']:6d} images  {d['rows_per_second']:8.1f} images/s  ({d['total_duration_seconds']:.1f} s)")
PY
    done
done
