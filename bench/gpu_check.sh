#!/usr/bin/env bash
# GPU check: extraction with --device cuda on a machine with an NVIDIA GPU and PyTorch 2.11.
#
#   bench/gpu_check.sh [path/to/deepembed] [images]
#
# Uses that machine's own torch (its lib directory goes on LD_LIBRARY_PATH, ahead of the path
# baked into the binary) and needs pandas, pyarrow, pillow and torchvision in the same Python to
# generate the dataset. Prints images/s for ResNet-18 and ResNet-50 on cuda, and on cpu for scale.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../target/release/deepembed}"
images="${2:-2048}"
py="${PYTHON:-python3}"
torch_lib="$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin" plugins >/dev/null
for model in resnet18 resnet50; do
    mapfile -t made < <("$py" "$here/make_dataset.py" "$work" "$images" "$model")
    for device in cuda cpu; do
        n="$images"
        [ "$device" = cpu ] && n=256 && mapfile -t made < <("$py" "$here/make_dataset.py" "$work" 256 "$model")
        "$bin" embed vision --df "${made[0]}" --model_version "$model" --model_weights "${made[1]}" \
            --device "$device" --batch_size 128 --out "$work/out" --quiet --json > "$work/summary.json"
        dir="$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["output_dir"])' "$work/summary.json")"
        "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(f"{sys.argv[2]:9s} {d[\"device\"]:7s} {d[\"rows\"]:6d} images  {d[\"rows_per_second\"]:8.1f} images/s  ({d[\"total_duration_seconds\"]:.1f} s)")' "$dir/embedding_details.json" "$model"
        mapfile -t made < <("$py" "$here/make_dataset.py" "$work" "$images" "$model")
    done
done
