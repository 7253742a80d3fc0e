"""Text throughput against the best Python loops, for the GPU check (issue 12's text target), on
any device: an all-MiniLM-L6-v2-shaped and a BERT-base-shaped model (random weights, a WordPiece
vocabulary trained on the corpus: the machine may have no network), N generated notes of median
about 31 tokens, batch 64.

Per model it prints deepembed's whole command (start-up and model loading included) beside three
transformers loops over the same texts, each timed over the loop alone (model loaded, warmed up):
DeepTune's (padding every batch to 256), one that sorts the texts by length and pads each batch
to its longest, and the model alone (that sorted loop's batches tokenized and on the device
before the clock starts).

Usage: text_gpu.py --deepembed BIN --work DIR [--texts 20000] [--batch_size 64] [--device cuda:0]
"""

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_text_dataset import write_corpus  # noqa: E402

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


def python_loops(model_dir: Path, texts: list, batch: int, device: str):
    """texts/s of the pad-to-256 loop, the sorted loop, and the model alone."""
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir).eval().to(device)
    rates = {}
    with torch.no_grad():
        def padded(chunk, **kw):
            return {k: v.to(device) for k, v in tokenizer(chunk, truncation=True, max_length=256, return_tensors="pt", **kw).items()}

        model(**padded(texts[:batch], padding="longest"))  # warm-up
        sync(device)
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            model(**padded(texts[i:i + batch], padding="max_length")).last_hidden_state[:, 0].cpu()
        sync(device)
        rates["pad256"] = len(texts) / (time.perf_counter() - start)

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        ordered = [texts[i] for i in order]
        start = time.perf_counter()
        for i in range(0, len(ordered), batch):
            model(**padded(ordered[i:i + batch], padding="longest")).last_hidden_state[:, 0].cpu()
        sync(device)
        rates["sorted"] = len(texts) / (time.perf_counter() - start)

        batches = [padded(ordered[i:i + batch], padding="longest") for i in range(0, len(ordered), batch)]
        sync(device)
        start = time.perf_counter()
        for inputs in batches:
            model(**inputs).last_hidden_state[:, 0]
        sync(device)
        rates["model"] = len(texts) / (time.perf_counter() - start)
    return rates


def deepembed_rate(deepembed: str, data: Path, model_dir: Path, batch: int, device: str, precision: str, out: Path, n: int):
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([deepembed, "embed", "mbert", "--df", str(data), "--model_weights", str(model_dir), "--batch_size", str(batch),
                    "--device", device, "--precision", precision, "--out", str(out), "--quiet"], check=True)
    return n / (time.perf_counter() - start)


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
    print("| model | precision | deepembed (whole command) | Python, pad to 256 | Python, sorted, pad to longest | model alone (fp32) |")
    print("|---|---|---:|---:|---:|---:|")
    for name in SHAPES:
        model_dir = make_model(work, name, texts)
        loops = python_loops(model_dir, texts, args.batch_size, args.device)
        for precision in args.precisions.split(","):
            ours = deepembed_rate(args.deepembed, data, model_dir, args.batch_size, args.device, precision, work / "out", args.texts)
            print(f"| {name} | {precision} | {ours:.0f} | {loops['pad256']:.0f} | {loops['sorted']:.0f} | {loops['model']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
