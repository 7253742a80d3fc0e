"""A benchmark dataset: N JPEGs of mixed sizes around 500x375 (photo-like content), with labels
and an id column, plus random weights for the model (seeded) in the format a run of it reads:
- torchvision versions: torchvision's weights file (`--use_case pretrained`);
  BatchNorm statistics are those of random images run through the random model (see
  `calibrated`), so that activations keep the scale of a trained model's;
- DenseNets, which DeepTune embeds only through its added fc1: a DeepTune checkpoint of the
  adjusted model with two added layers (`--use_case finetuned`);
- `siglip`: a Hugging Face directory of a SiglipVisionModel the size of DeepTune's
  so400m-patch14-384 (`--use_case pretrained`).
With GREY (a fraction, 0 to 1), that share of the images are greyscale JPEGs (as X-rays often are).

Usage: make_dataset.py OUT_DIR N [MODEL] [GREY]
Prints three lines: the dataset's path, the weights' path and the `--use_case` they are for.
"""

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
import torchvision
from PIL import Image

# The test generators' model of DeepTune's checkpoints (tests/python/vision_families).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))

# Rows per row group, and so at most per Parquet page. pandas' default (pages of 1024 rows,
# about 87 MB of these JPEGs) would make the input's pages, which a reader holds whole, the
# largest memory cost and a function of the dataset's size up to 1024 rows (README, memory).
ROWS_PER_GROUP = 256
# The DeepTune checkpoints' added layers: fc1's width (the embedding) and fc2's classes.
EMBED_SIZE = 512
CLASSES = 5


def jpeg(rng, w, h, grey=False):
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255.0 / w, y * 255.0 / h, (x + y) * 127.0 / (w + h)], axis=-1)
    img += rng.normal(0, 20, size=(h, w, 3))
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    (image.convert("L") if grey else image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def main(out: Path, n: int, model: str, grey: float = 0.0):
    out.mkdir(parents=True, exist_ok=True)
    data = out / (f"images_{n}.parquet" if grey == 0 else f"images_{n}_grey{round(grey * 100)}.parquet")
    if not data.exists() or pq.ParquetFile(data).metadata.row_group(0).num_rows != min(n, ROWS_PER_GROUP):
        rng = np.random.default_rng(n)
        # A pool of distinct images, repeated: encoding thousands of JPEGs would dominate set-up.
        pool = [jpeg(rng, int(rng.integers(400, 640)), int(rng.integers(300, 480)),
                     # Drawn only when asked for, so that the colour datasets stay as they were.
                     grey > 0 and rng.random() < grey)
                for _ in range(min(n, 256))]
        images = [pool[i % len(pool)] for i in range(n)]
        df = pd.DataFrame({"images": images, "labels": rng.integers(0, 5, size=n), "id": np.arange(n)})
        df.to_parquet(data, index=False, row_group_size=ROWS_PER_GROUP)
    weights, use_case = random_weights(out, model)
    print(data)
    print(weights)
    print(use_case)


def calibrated(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with BatchNorm running statistics measured on random inputs.

    Fresh statistics (mean 0, variance 1) leave a random network's activations shrinking layer
    after layer: EfficientNet-B0's output is about 1e-13, below fp16's range, so a drift
    measurement in fp16 would compare zeros. A trained model's BatchNorm layers keep activations
    of order one; these statistics do the same for random weights."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(16, 3, 224, 224))
    return model.eval()


def random_weights(out: Path, model: str):
    """The model's random weights (made once, seed 0) and the use case they are for."""
    torch.manual_seed(0)
    if model == "siglip":
        weights = out / "siglip-so400m-random"
        if not (weights / "config.json").exists():
            from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel
            config = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                        num_attention_heads=16, patch_size=14, image_size=384)
            SiglipVisionModel(config).save_pretrained(weights)
            SiglipImageProcessor(size={"height": 384, "width": 384}).save_pretrained(weights)
        return weights, "pretrained"
    if model.startswith("densenet"):
        # DeepTune's adjusted model, as the test generators build it.
        from vision_families.common import Adjusted
        weights = out / f"{model}-deeptune-random" / "model_weights.pth"
        if not weights.exists():
            backbone = calibrated(getattr(torchvision.models, model)(weights=None))
            adjusted = Adjusted(backbone, "classifier", backbone.classifier.in_features, 2, EMBED_SIZE, CLASSES)
            weights.parent.mkdir(parents=True, exist_ok=True)
            torch.save(adjusted.state_dict(), weights)
        return weights, "finetuned"
    weights = out / f"{model}-random.pth"
    if not weights.exists():
        torch.save(calibrated(getattr(torchvision.models, model)(weights=None)).state_dict(), weights)
    return weights, "pretrained"


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "resnet18",
         float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
