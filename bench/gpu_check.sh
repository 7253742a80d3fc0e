#!/usr/bin/env bash
# GPU check: everything the device check measures, as one script that fits in 8 minutes on an
# H100. Run it on the GPU machine with deepembed built elsewhere and carried over:
#
#   bench/gpu_check.sh [path/to/deepembed] [images]
#
# It uses that machine's own Python and torch (its lib directory goes first on LD_LIBRARY_PATH)
# and generates the data there. Needs pandas, pyarrow, pillow and torchvision in that Python, and
# the examples model_only and device_preprocess in examples/ next to the binary (`cargo xtask
# gpu-check` builds them). Sections, most important first, each timed:
#
# 1. Preprocessing on the device (examples/device_preprocess), when PREPROCESS_FIXTURES names the
#    test generator's vision directory (images.parquet, preprocessed.f32): bytes resized on the
#    CPU and normalised on the GPU must equal torchvision + Pillow's floats bit for bit.
# 2. Decoding without a model (examples/decode_scaling): images/s of decoding and resizing at 1,
#    4 and all the cores' threads, free, in windows one at a time, and in windows with the
#    next started ahead (as a run decodes), and the Parquet read on one thread. It tells a
#    machine that does not scale (shared cores, hyperthreads) from a pipeline that does not.
# 3. The table (bench/model_only.py): per model and precision, the model alone on random tensors
#    against the whole command on `images` JPEGs (default 20480, about 500x375; read up to 4 times
#    over, so that the model alone would take MODEL_SECONDS, default 8, and start-up, about a
#    second, is a small part of the run), and against the pipeline's own span (first window to
#    last emit: the feeding, without start-up), with the seconds outside it and where they went
#    (the host's DEEPEMBED_LOG=debug timeline: before main, to the inputs opened with CUDA
#    loaded, the model, the first window, the end; and the first chunk's model run, with what the
#    device does once), cores, peak RSS and peak GPU memory. MODELS,
#    PRECISIONS and BATCH override the defaults.
# 3b. GPU decoding (`--decode gpu`: nvJPEG, and the resize on the device): the resize's own
#    cost per chunk (examples/device_resize, by tile size), its drift against the
#    bit-identical default (cosine similarity per row, ResNet-50, 1024 images, then 1024 of which
#    a quarter are greyscale, with the run's own count of images decoded on the device), then the table of
#    section 3 for ResNet-50 and ResNet-18 with `--decode gpu`. The drift runs first: it shows at once whether
#    nvJPEG loads and decodes there.
# 3c. Starting the device early (bench/warm_up.py): a 1024-image ResNet-50 run with the CUDA
#    warm-up thread on and off, 3 alternating rounds, each run's start-up split as in section 3.
# 4. Text (bench/text_gpu.py): deepembed's whole command and its pipeline (in half precision also
#    with cuDNN's attention first, libtorch's own order) against transformers loops at the same
#    precision (padding to 256; sorted, padding to the longest, also with cuDNN's attention off;
#    the model alone), MiniLM- and BERT-base-sized models, TEXTS (default 20000) notes of median
#    ~31 tokens, batch 64, fp32 and fp16.
# 5. Tabular (bench/gandalf_gpu.py), when GANDALF_MODEL names a trained benchmark GANDALF
#    directory: GANDALF_ROWS (default 1M) rows on the GPU and on the CPU.
# 6. Drift against fp32 (bench/precision_drift.py) of each of DRIFT_PRECISIONS (default fp16 and
#    bf16): the minimum cosine similarity over a real run, for each vision family (DRIFT_MODELS),
#    the text section's two models (run text with it) and a GPT-2-sized model.
#
# ONLY (comma-separated: preprocessing,decoding,vision,gpudecode,warmup,text,tabular,drift) runs just
# those sections. The last lines are a table of each section's seconds.
# DEVICE (default cuda:0) lets the script be tried on the CPU (with PRECISIONS=fp32; the drift
# section is skipped there).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(realpath "${1:-$here/../target/release/deepembed}")"
images="${2:-20480}"
example="$(dirname "$bin")/examples/model_only"
py="${PYTHON:-python3}"
models="${MODELS:-resnet18,resnet50,vit_b_16}"
precisions="${PRECISIONS:-fp32,fp16}"
batch="${BATCH:-256}"
# One version of every family, with random weights in the format its runs read (make_dataset.py:
# DenseNet as a DeepTune checkpoint with two added layers, SigLIP as so400m's Hugging Face
# directory).
drift_models="${DRIFT_MODELS:-resnet50 efficientnet_b0 vit_b_16 swin_t vgg11 densenet121 siglip}"
drift_precisions="${DRIFT_PRECISIONS:-fp16,bf16}"
device="${DEVICE:-cuda:0}"
texts="${TEXTS:-20000}"
torch_lib="$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS
failed=()
timings=()
# Runs one section; a failing section is reported and the next ones still run (the device time
# is short and a rerun costs minutes).
section() {
    local key="$1" title="$2"
    shift 2
    [[ -z "${ONLY:-}" || ",$ONLY," == *",$key,"* ]] || return 0
    echo
    echo "## $title"
    echo "(at $((SECONDS - started)) s)"
    local began=$SECONDS
    "$@" || { echo "SECTION FAILED: $title"; failed+=("$title"); }
    timings+=("| $key | $((SECONDS - began)) |")
}

preprocessing() {
    mkdir -p "$work/jpegs"
    "$py" -c 'import pyarrow.parquet as pq, sys, os
for i, b in enumerate(pq.read_table(sys.argv[1], columns=["images"]).column(0).to_pylist()):
    open(os.path.join(sys.argv[2], f"{i:06d}.img"), "wb").write(b)' "$PREPROCESS_FIXTURES/images.parquet" "$work/jpegs"
    # The example, unlike the host, cannot load libtorch_cuda.so itself before its first tensor.
    local preload=""
    [[ "$device" == cpu ]] || preload="$torch_lib/libtorch_cuda.so"
    LD_PRELOAD="$preload" "$(dirname "$bin")/examples/device_preprocess" --images "$work/jpegs" \
        --reference "$PREPROCESS_FIXTURES/preprocessed.f32" --device "$device"
}

decoding() {
    local made
    mapfile -t made < <("$py" "$here/make_dataset.py" "$work" "$images" resnet18)
    # 2048 of the images: each measurement is a warm-up pass and then 3 s of passes, and one
    # pass over all 20,480 takes 40 s on one thread (the first H200 check spent 7 minutes here).
    # One thread, four, and all of them: the H200 check showed the machine scaling (16 threads
    # did 13.9 times one thread's work), so the counts between add minutes, not answers.
    "$(dirname "$bin")/examples/decode_scaling" --parquet "${made[0]}" --window "$batch" --seconds 3 --images 2048 \
        --threads "$(printf '%s\n' 1 4 "$(nproc)" | awk -v cores="$(nproc)" '$1 <= cores' | sort -nu | paste -sd,)"
}

vision_table() {
    "$py" "$here/model_only.py" --deepembed "$bin" --example "$example" --work "$work" --images "$images" \
        --models "$models" --precisions "$precisions" --batch_size "$batch" --device "$device" --rounds 1 --seconds 8 \
        --model_seconds "${MODEL_SECONDS:-8}" --max_copies 4
}

gpu_decode() {
    local made
    # What the exact float64 resize costs the device per chunk of 256 (about 500x375 to 224),
    # by tile size (224: the whole weight matrix), beside the model's own ms per chunk above.
    LD_PRELOAD="$torch_lib/libtorch_cuda.so" "$(dirname "$bin")/examples/device_resize" --device "$device" \
        --images "$batch" --rounds 10 --tiles 32,16,64,224 || return 1
    mapfile -t made < <("$py" "$here/make_dataset.py" "$work" 1024 resnet50)
    echo "| model | decode | rows | cpu seconds | seconds | min | median | mean |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    "$py" "$here/precision_drift.py" "$bin" resnet50 "$work/decode-drift" --flag decode --baseline cpu --values gpu \
        --show "decode gpu" -- embed vision --df "${made[0]}" --model_version resnet50 --model_weights "${made[1]}" \
        --device "$device" --batch_size 128 || return 1
    # A quarter of them greyscale JPEGs (as X-rays often are), which nvJPEG decodes in batches of
    # their own: the log lines say how many went to the device.
    mapfile -t made < <("$py" "$here/make_dataset.py" "$work" 1024 resnet50 0.25)
    "$py" "$here/precision_drift.py" "$bin" "resnet50, 1/4 grey" "$work/decode-drift" --flag decode --baseline cpu \
        --values gpu --show "decode gpu" -- embed vision --df "${made[0]}" --model_version resnet50 \
        --model_weights "${made[1]}" --device "$device" --batch_size 128 || return 1
    echo
    "$py" "$here/model_only.py" --deepembed "$bin" --example "$example" --work "$work" --images "$images" \
        --models "${DECODE_MODELS:-resnet50,resnet18}" --precisions "$precisions" --batch_size "$batch" --device "$device" --rounds 1 \
        --seconds 8 --model_seconds "${MODEL_SECONDS:-8}" --max_copies 4 --decode gpu
}

warm_up() {
    local made
    mapfile -t made < <("$py" "$here/make_dataset.py" "$work" 1024 resnet50)
    "$py" "$here/warm_up.py" "$bin" 3 -- embed vision --df "${made[0]}" --model_version resnet50 \
        --model_weights "${made[1]}" --device "$device" --batch_size 128
}

text() {
    "$py" "$here/text_gpu.py" --deepembed "$bin" --work "$work" --texts "$texts" --batch_size 64 \
        --device "$device" --precisions "$precisions" 2>"$work/text.log" || { tail -20 "$work/text.log"; return 1; }
}

tabular() {
    local devices="$device"
    [[ "$device" == cpu ]] || devices="$device,cpu"
    "$py" "$here/gandalf_gpu.py" --deepembed "$bin" --work "$work/tabular" --model "$GANDALF_MODEL" \
        --rows "${GANDALF_ROWS:-1000000}" --devices "$devices" --precisions "$precisions" --batch_sizes 4096
}

drift() {
    echo "| model | precision | rows | fp32 seconds | seconds | min | median | mean |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    local model name
    for model in $drift_models; do
        mapfile -t made < <("$py" "$here/make_dataset.py" "$work" 1024 "$model")
        "$py" "$here/precision_drift.py" "$bin" "$model" "$work/drift" --precisions "$drift_precisions" -- embed vision --df "${made[0]}" \
            --model_version "$model" --model_weights "${made[1]}" --use_case "${made[2]}" --device "$device" \
            --batch_size 128 || return 1
    done
    # The text section's models (it runs before, in the same run).
    for name in all-MiniLM-L6-v2-sized BERT-base-sized; do
        "$py" "$here/precision_drift.py" "$bin" "$name" "$work/drift" --precisions "$drift_precisions" -- embed mbert --df "$work/texts_$texts.parquet" \
            --model_weights "$work/text-$name" --device "$device" --batch_size 64 || return 1
    done
    # GPT-2 (124M, random weights, a tokenizer trained on the same corpus).
    mapfile -t made < <("$py" "$here/make_text_dataset.py" "$work" "$texts")
    "$py" "$here/precision_drift.py" "$bin" "GPT-2-sized" "$work/drift" --precisions "$drift_precisions" -- embed gpt2 --df "${made[0]}" \
        --model_weights "${made[1]}" --device "$device" --batch_size 64 || return 1
}

"$bin" plugins | head -3
"$py" -c 'import torch, torchvision, transformers; print("torch", torch.__version__, "torchvision", torchvision.__version__, "transformers", transformers.__version__)'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
lscpu | grep -E "^Model name|^CPU\(s\)|^Thread\(s\) per core|^Core\(s\) per socket|^Socket\(s\)" || true
# A CPU quota (cgroup v2, then v1) caps the cores busy below the cores listed.
echo "nproc $(nproc); cgroup cpu.max: $(cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || echo none)"

[[ -z "${PREPROCESS_FIXTURES:-}" ]] || section preprocessing "preprocessing on the device against torchvision + Pillow" preprocessing
section decoding "decoding and resizing without a model, by threads" decoding
section vision "model alone against the whole command" vision_table
[[ "$device" == cpu ]] || section gpudecode "--decode gpu: drift against the default, and the whole command" gpu_decode
[[ "$device" == cpu ]] || section warmup "starting the device early: the CUDA warm-up on and off" warm_up
section text "text" text
[[ -z "${GANDALF_MODEL:-}" ]] || section tabular "GANDALF" tabular
[[ "$device" == cpu ]] || section drift "$drift_precisions against fp32: cosine similarity per row (1024 images; the text corpus)" drift

echo
echo "done in $((SECONDS - started)) s"
# Each section's seconds, to see which to trim when the whole check runs over 8 minutes.
echo "| section | seconds |"
echo "|---|---:|"
printf '%s\n' "${timings[@]}"
if ((${#failed[@]})); then
    echo "failed: ${failed[*]}"
    exit 1
fi
