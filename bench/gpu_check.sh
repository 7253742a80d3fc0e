#!/usr/bin/env bash
# GPU check: everything the device check measures, as one script that fits in 8 minutes on an
# H100. Run it on the GPU machine with deepembed built elsewhere and carried over:
#
#   bench/gpu_check.sh [path/to/deepembed] [images]
#
# It uses that machine's own Python and torch (its lib directory goes first on LD_LIBRARY_PATH)
# and generates the data there. Needs pandas, pyarrow, pillow and torchvision in that Python, and
# target/release/examples/model_only next to the binary (`cargo build --release -p
# deepembed-vision --example model_only`; `cargo xtask gpu-check` builds it).
#
# 1. The table (bench/model_only.py): per model and precision, the model alone on random tensors
#    against the whole command on `images` JPEGs (default 20480, about 500x375), with cores, peak
#    RSS and peak GPU memory. MODELS, PRECISIONS and BATCH override the defaults.
# 2. Text (bench/text_gpu.py): deepembed's whole command against transformers loops (padding to
#    256; sorted, padding to the longest; the model alone), MiniLM- and BERT-base-sized models,
#    TEXTS (default 20000) notes of median ~31 tokens, batch 64, fp32 and fp16.
# 3. fp16 drift against fp32 (bench/precision_drift.py): the minimum cosine similarity over a
#    real run, for each vision family (DRIFT_MODELS) and both text models.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(realpath "${1:-$here/../target/release/deepembed}")"
images="${2:-20480}"
example="$(dirname "$bin")/examples/model_only"
py="${PYTHON:-python3}"
models="${MODELS:-resnet18,resnet50,vit_b_16}"
precisions="${PRECISIONS:-fp32,fp16}"
batch="${BATCH:-256}"
drift_models="${DRIFT_MODELS:-resnet50 efficientnet_b0 vit_b_16 swin_t vgg11 densenet121}"
torch_lib="$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin" plugins | head -3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "## model alone against the whole command"
"$py" "$here/model_only.py" --deepembed "$bin" --example "$example" --work "$work" --images "$images" \
    --models "$models" --precisions "$precisions" --batch_size "$batch" --device cuda:0 --rounds 1 --seconds 8

echo
echo "## text"
"$py" "$here/text_gpu.py" --deepembed "$bin" --work "$work" --texts "${TEXTS:-20000}" --batch_size 64 \
    --device cuda:0 --precisions "$precisions" 2>/dev/null

echo
echo "## fp16 against fp32: cosine similarity per row (1024 images; the text corpus)"
echo "| model | rows | min | median | mean |"
echo "|---|---:|---:|---:|---:|"
for model in $drift_models; do
    mapfile -t made < <("$py" "$here/make_dataset.py" "$work" 1024 "$model")
    "$py" "$here/precision_drift.py" "$bin" "$model" "$work/drift" -- embed vision --df "${made[0]}" \
        --model_version "$model" --model_weights "${made[1]}" --device cuda:0 --batch_size 128
done
for name in all-MiniLM-L6-v2-sized BERT-base-sized; do
    "$py" "$here/precision_drift.py" "$bin" "$name" "$work/drift" -- embed mbert --df "$work/texts_${TEXTS:-20000}.parquet" \
        --model_weights "$work/text-$name" --device cuda:0 --batch_size 64
done
