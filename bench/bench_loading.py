"""Loading a model: how long it takes and how much memory it needs, per model, on one-row inputs
(so the run is start-up and loading, and the peak RSS is the loading's, not the data's).

Models (random weights, saved in their real formats): torchvision ViT-B/16 and VGG-16 (`.pth`,
346 and 553 MB) through the vision plugin, and a BERT-base-sized Hugging Face directory
(`model.safetensors`, 345 MB) through mbert. For each, ROUNDS runs of the whole command on
the CPU; with `--plugins DIR` each round also runs another build's plugins (DEEPEMBED_PLUGIN_PATH,
searched before the binary's own), alternating, to compare two builds on one machine and minute.

Prints a table: model, file size, build, median seconds of the whole command, median seconds of
the loading (the host's DEEPEMBED_LOG=debug timeline: from the inputs opened to the pipeline
started), and the median peak RSS.

Usage: bench_loading.py --deepembed BIN --work DIR [--rounds 5] [--plugins DIR]
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import milestones, run_measured  # noqa: E402


def loading_seconds(stderr: str) -> float:
    """From the inputs opened to the pipeline started, in the debug timeline."""
    at = milestones(stderr)
    return at["pipeline starts"] - at["inputs open"] if {"inputs open", "pipeline starts"} <= at.keys() else float("nan")


def vision_case(work: Path, version: str):
    """bench/make_dataset.py's one-row set and random weights for `version`."""
    from make_dataset import main as make_dataset
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        make_dataset(work, 1, version)
    data, weights, _ = printed.getvalue().split()
    return Path(weights), ["embed", "vision", "--df", data, "--model_version", version, "--model_weights", weights]


def text_case(work: Path):
    """A BERT-base-sized model (its vocabulary trained on 2,000 generated notes), one note."""
    import pandas as pd
    from make_text_dataset import write_corpus
    from text_gpu import make_model

    texts = pd.read_parquet(write_corpus(work, 2000))["text"].tolist()
    one = work / "texts_one.parquet"
    pd.DataFrame({"text": texts[:1]}).to_parquet(one)
    model = make_model(work, "BERT-base-sized", texts)
    return model / "model.safetensors", ["embed", "mbert", "--df", str(one), "--model_weights", str(model)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--deepembed", required=True)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plugins", help="another build's plugin directory, alternated with the binary's own")
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work / "loading"
    work.mkdir(parents=True, exist_ok=True)
    # The models are made in a process of its own: a child's peak RSS counts its parent's memory
    # up to the exec, and a process that made them holds torch and transformers.
    if args.prepare:
        with contextlib.redirect_stdout(sys.stderr):
            cases = [("vit_b_16", *vision_case(work, "vit_b_16")), ("vgg16", *vision_case(work, "vgg16")),
                     ("BERT-base-sized", *text_case(work))]
        print(json.dumps([(name, str(weights), cmd) for name, weights, cmd in cases]))
        return
    prepared = subprocess.run([sys.executable, __file__, "--deepembed", args.deepembed, "--work", str(args.work),
                               "--prepare"], check=True, stdout=subprocess.PIPE, text=True).stdout
    cases = json.loads(prepared)
    builds = [("this build", None)] + ([("--plugins", args.plugins)] if args.plugins else [])
    print("| model | file (MB) | build | seconds | loading (s) | peak RSS (MiB) |")
    print("|---|---:|---|---:|---:|---:|")
    for name, weights, cmd in cases:
        runs = {label: [] for label, _ in builds}
        for _ in range(args.rounds):
            for label, plugins in builds:
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                env = dict(os.environ, DEEPEMBED_LOG="debug")
                if plugins:
                    env["DEEPEMBED_PLUGIN_PATH"] = plugins
                else:
                    env.pop("DEEPEMBED_PLUGIN_PATH", None)
                run = run_measured([args.deepembed, *cmd, "--device", "cpu", "--out", str(out)], env=env)
                runs[label].append((run.seconds, loading_seconds(run.stderr), run.rss_mib))
        for label, _ in builds:
            seconds, loading, rss = (statistics.median(column) for column in zip(*runs[label]))
            size = Path(weights).stat().st_size / 1e6
            print(f"| {name} | {size:.0f} | {label} | {seconds:.2f} | {loading:.2f} | {rss:.0f} |", flush=True)


if __name__ == "__main__":
    main()
