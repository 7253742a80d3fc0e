"""The demo's sample dataset: 48 images (JPEG and PNG, assorted sizes and modes) with labels and
a patient id, and a random-weight torchvision ResNet-18 weights file (nothing can be downloaded,
so the weights are random; name a real torchvision file with --model_weights for real features).
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision

from gen_vision import encode, picture

SPECS = [(500, 375, "RGB", "JPEG", {"quality": 90}), (375, 500, "RGB", "JPEG", {"quality": 85}),
         (640, 480, "L", "JPEG", {"quality": 90}), (300, 200, "RGBA", "PNG", {}), (256, 256, "P", "PNG", {})]


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    specs = [SPECS[i % len(SPECS)] for i in range(48)]
    images = [encode(picture(rng, w, h), mode, fmt, **save) for (w, h, mode, fmt, save) in specs]
    df = pd.DataFrame({
        "images": images,
        "labels": rng.integers(0, 2, size=len(images)),
        "patient_id": [f"patient-{i // 3:03d}" for i in range(len(images))],
    })
    df.to_parquet(out / "images.parquet", index=False)
    model = torchvision.models.resnet18(weights=None).eval()
    torch.save(model.state_dict(), out / "resnet18-random-weights.pth")
    print(f"demo dataset: {len(images)} images in {out / 'images.parquet'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
