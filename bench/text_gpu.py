"""Text throughput against the best Python loops, for the GPU check (issue 12's text target), on
any device: an all-MiniLM-L6-v2-shaped and a BERT-base-shaped model (random weights, a WordPiece
vocabulary trained on the corpus: the machine may have no network), N generated notes of median
about 31 tokens, batch 64.

Per model and precision it prints deepembed's whole command (start-up and model loading
included) and its pipeline alone (first window to last emit, from its closing log line, with
where the model's thread spent that time) beside transformers loops over the same texts, each
timed over the loop alone (model loaded, warmed up): DeepTune's (padding every batch to 256,
fp32; timed on a quarter of the texts, since every such batch costs the same), one that sorts the texts by length and pads each batch to its longest, and the model alone
(that sorted loop's batches tokenized and on the device before the clock starts). fp16 and bf16
loops run under torch.autocast, as deepembed does; for them, on CUDA, the sorted loop runs a
second time with cuDNN's attention backend off, and deepembed a second time with cuDNN's attention
first (TORCH_CUDNN_SDPA_DEPRIORITIZED=0: libtorch 2.11's own order on Hopper; deepembed puts it
last by default, host/src/device.rs).

Usage: text_gpu.py --deepembed BIN --work DIR [--texts 20000] [--batch_size 64] [--device cuda:0]
                   [--precisions fp32,fp16]
"""

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_text_dataset import write_corpus  # noqa: E402
from runner import start_up  # noqa: E402

SHAPES = {
    "all-MiniLM-L6-v2-sized": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "BERT-base-sized": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def make_model(work: Path, name: str, corpus: list) -> Path:
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = work / f"text-{name}"
    if (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(corpus, vocab_size=2000, min_frequency=1)
    wordpiece.save_model(str(out))
    BertTokenizerFast(vocab_file=str(out / "vocab.txt")).save_pretrained(out)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=wordpiece.get_vocab_size(), **SHAPES[name])).save_pretrained(out)
    return out


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def python_loops(model_dir: Path, texts: list, batch: int, device: str, precision: str):
    """texts/s of the pad-to-256 loop (fp32 only: DeepTune's), the sorted loop, and the model
    alone, at `precision` (fp16 and bf16 under torch.autocast, as deepembed runs them); for a
    half precision also the sorted loop with cuDNN's attention switched off, which tells whether
    that backend (picked per shape) is what a half-precision run waits on."""
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir).eval().to(device)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    autocast = torch.autocast(kind, dtype=HALF[precision]) if precision in HALF else contextlib.nullcontext()
    rates = {}
    with torch.no_grad(), autocast:
        def padded(chunk, **kw):
            return {k: v.to(device) for k, v in tokenizer(chunk, truncation=True, max_length=256, return_tensors="pt", **kw).items()}

        def timed(loop, n=len(texts)):
            sync(device)
            start = time.perf_counter()
            loop()
            sync(device)
            return n / (time.perf_counter() - start)

        model(**padded(texts[:batch], padding="longest"))  # warm-up
        if precision == "fp32":
            # Every batch padded to 256 costs the same, so a quarter of the texts gives the rate
            # (and saves the GPU check half a minute).
            few = texts[:max(16 * batch, len(texts) // 4)]
            rates["pad256"] = timed(lambda: [model(**padded(few[i:i + batch], padding="max_length")).last_hidden_state[:, 0].cpu()
                                             for i in range(0, len(few), batch)], len(few))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        ordered = [texts[i] for i in order]

        def sorted_loop():
            for i in range(0, len(ordered), batch):
                model(**padded(ordered[i:i + batch], padding="longest")).last_hidden_state[:, 0].float().cpu()

        rates["sorted"] = timed(sorted_loop)
        if precision in HALF and kind == "cuda":
            torch.backends.cuda.enable_cudnn_sdp(False)
            rates["sorted_no_cudnn"] = timed(sorted_loop)
            torch.backends.cuda.enable_cudnn_sdp(True)
        batches = [padded(ordered[i:i + batch], padding="longest") for i in range(0, len(ordered), batch)]
        rates["model"] = timed(lambda: [model(**inputs).last_hidden_state[:, 0] for inputs in batches])
    return rates


def deepembed_rate(deepembed: str, data: Path, model_dir: Path, batch: int, device: str, precision: str, out: Path, n: int,
                   env=None):
    """texts/s of the whole command, and of its pipeline (first window to last emit, from the
    closing log line) with that line's split of the model's thread, and where start-up went
    (runner.start_up)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    run = subprocess.run([deepembed, "embed", "mbert", "--df", str(data), "--model_weights", str(model_dir), "--batch_size", str(batch),
                          "--device", device, "--precision", precision, "--out", str(out)], capture_output=True, text=True,
                         env={**os.environ, "DEEPEMBED_LOG": "debug", **(env or {})})
    seconds = time.perf_counter() - start
    whole = n / seconds
    if run.returncode != 0:
        sys.exit(f"deepembed failed:\n{run.stderr[-3000:]}")
    stages = re.search(r"waited ([0-9.]+) s for prepared rows \(([0-9]+)%\), sent chunks ([0-9.]+) s, "
                       r"read back ([0-9.]+) s \(waiting for the device\), emitted ([0-9.]+) s", run.stderr)
    split = "/".join(stages.group(i) for i in (1, 3, 4, 5)) if stages else "?"
    piped = n / sum(float(stages.group(i)) for i in (1, 3, 4, 5)) if stages else None
    return whole, piped, f"{split}; start-up {start_up(seconds, run.stderr)}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepembed", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--texts", type=int, default=20000)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--precisions", default="fp32")
    args = p.parse_args()
    work = Path(args.work)
    data = write_corpus(work, args.texts)
    texts = pd.read_parquet(data)["text"].tolist()
    print(f"{args.texts} texts, batch {args.batch_size}, device {args.device}; Python loops timed without start-up or model load\n")
    print("| model | precision | deepembed (whole command) | deepembed pipeline | model's thread: rows/send/device/emit (s); start-up: before main/to inputs/model/first window/end (first chunk) (s) "
          "| deepembed, cuDNN attention first | Python, pad to 256 (fp32) | Python, sorted, pad to longest "
          "| the same, cuDNN attention off | model alone |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for name in SHAPES:
        model_dir = make_model(work, name, texts)
        pad256 = None
        for precision in args.precisions.split(","):
            loops = python_loops(model_dir, texts, args.batch_size, args.device, precision)
            pad256 = loops.get("pad256", pad256)
            whole, piped, split = deepembed_rate(args.deepembed, data, model_dir, args.batch_size, args.device, precision,
                                                 work / "out", args.texts)
            cudnn_first = None
            if precision in HALF and args.device.startswith("cuda"):
                cudnn_first, _, _ = deepembed_rate(args.deepembed, data, model_dir, args.batch_size, args.device, precision,
                                                   work / "out", args.texts, env={"TORCH_CUDNN_SDPA_DEPRIORITIZED": "0"})
            fmt = lambda v: f"{v:.0f}" if v else "-"  # noqa: E731
            print(f"| {name} | {precision} | {whole:.0f} | {fmt(piped)} | {split} | {fmt(cudnn_first)} | {fmt(pad256)} | {fmt(loops['sorted'])} "
                  f"| {fmt(loops.get('sorted_no_cudnn'))} | {fmt(loops['model'])} |", flush=True)

if __name__ == "__main__":
    main()
